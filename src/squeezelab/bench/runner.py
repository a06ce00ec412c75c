"""``bench_models``: latency, throughput, size, MACs, achieved GFLOP/s and accuracy of models on backends.

Column names follow timm's benchmark script (``infer_samples_per_sec``, ``infer_step_time``,
``infer_batch_size``, ``infer_img_size``, ``infer_gmacs``, ``param_count`` in millions).
"""

from __future__ import annotations

import importlib.metadata
import platform
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from squeezelab.interop.evaluate import labelled_images, topk_accuracies
from squeezelab.interop.loading import detect_format, load_model, model_file
from squeezelab.interop.onnx_export import random_images
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT
from squeezelab.models import count_macs, count_params, create_model, list_models
from squeezelab.models.profile import MB
from squeezelab.models.registry import model_config, model_spec
from squeezelab.utils.errors import first_line
from squeezelab.utils.optional import require

from .backends import BASELINE, DEFAULT_BACKENDS, BackendUnavailable, ModelArtifacts, build_backend
from .peak import measure_peak_gflops
from .timing import interleaved_timings

COMPRESSED_FORMATS = ("squeezelab-compressed", "caffe-deep-compression")


@dataclass
class BenchSettings:
    """What to measure. ``input_size`` (H, W) None means each model's own; ``threads`` None keeps torch's."""

    input_size: tuple[int, int] | None = None
    batch_sizes: tuple[int, ...] = (1, 8)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    warmup: int = 5
    iters: int = 30
    rounds: int = 5
    threads: int | None = None
    thread_counts: tuple[int, ...] = ()  # several thread counts in one run (rows get a "threads" column)
    calibration: str | Path | None = None
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    eval_data: str | Path | None = None
    eval_limit: int | None = None
    peak_size: int = 2048
    progress: bool = True


@dataclass
class BenchResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchModel:
    name: str
    model: nn.Module
    compressed_bytes: int | None = None
    trained: bool = True  # False for registered names built with random weights: no accuracy for those


def resolve_model(ref: str) -> BenchModel:
    """A model file (real weights) or a registered model name (random weights: speed and size only)."""
    path = model_file(ref)  # a pretrained tag is its shipped file
    if path.is_file():
        model = load_model(path)
        kind = detect_format(path)
        compressed = path.stat().st_size if kind in COMPRESSED_FORMATS else None
        return BenchModel(f"{model_spec(model)['name']} ({path.name})", model, compressed)
    if ref in list_models():
        return BenchModel(ref, create_model(ref).eval(), trained=False)
    raise ValueError(f"{ref}: neither a model file nor a registered model name (see 'squeezelab models')")


def bench_models(refs: Sequence[str], settings: BenchSettings, workdir: str | Path | None = None) -> BenchResult:
    """Benchmark every model in ``refs`` on every backend of ``settings``; one row per model/backend/batch."""
    if not refs:
        raise ValueError("no models to benchmark")
    if min(settings.batch_sizes, default=0) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {settings.batch_sizes}")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    result = BenchResult(environment=_environment(settings))
    with tempfile.TemporaryDirectory(prefix="squeezelab-bench-", dir=workdir) as tmp:
        for index, ref in enumerate(refs):
            model_dir = Path(tmp) / f"model{index}"
            model_dir.mkdir()
            result.rows += _bench_one(resolve_model(ref), settings, model_dir)
    # Measured before and after the models: on a shared machine one of the two may land in a busy phase.
    peak = max(result.environment["peak_gflops"], measure_peak_gflops(settings.peak_size))
    result.environment["peak_gflops"] = peak
    for row in result.rows:
        if "infer_gflops" in row:
            row["peak_fraction"] = round(row["infer_gflops"] / peak, 3)
    return result


def _environment(settings: BenchSettings) -> dict[str, Any]:
    onnxruntime = require("onnxruntime")

    return {
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "runtimes": _runtime_versions(),
        "peak_gflops": measure_peak_gflops(settings.peak_size),
        "peak_method": f"best of 2x8 fp32 {settings.peak_size}x{settings.peak_size} torch.mm, before and after",
        "warmup": settings.warmup,
        "iters": settings.iters,
    }


def _runtime_versions() -> dict[str, str]:
    """Versions of the optional peer runtimes that are installed (the benchmark's rows depend on them)."""
    versions = {}
    for package in ("openvino", "nncf", "executorch", "torchao", "ncnn", "pnnx", "ai-edge-litert"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bench_one(entry: BenchModel, settings: BenchSettings, workdir: Path) -> list[dict[str, Any]]:
    cfg = model_config(entry.model)
    size = (cfg.input_size[0], *(settings.input_size or cfg.input_size[1:]))
    # One set of exports for every thread count: converting is slow (ExecuTorch, NNCF), running is what differs.
    artifacts = ModelArtifacts(
        entry.model, workdir, settings.threads, settings.calibration, settings.calibration_count, settings.progress
    )
    shared: dict[str, Any] = {
        "model": entry.name,
        "infer_img_size": f"{size[1]}x{size[2]}",
        "param_count": round(count_params(entry.model) / 1e6, 4),
        "fp32_mb": round(4 * count_params(entry.model) / MB, 3),
        "compressed_mb": round(entry.compressed_bytes / MB, 4) if entry.compressed_bytes else None,
        "infer_gmacs": round(count_macs(entry.model, size) / 1e9, 4),
    }
    rows: list[dict[str, Any]] = []
    accuracy: dict[str, dict[str, float]] | None = None
    for threads in settings.thread_counts or (settings.threads,):
        if threads is not None:
            torch.set_num_threads(threads)
        artifacts.threads = threads
        backends, unavailable = _build_backends(entry.name, settings, artifacts, size)
        if accuracy is None:  # once: accuracy does not depend on the thread count
            accuracy = {}
            if settings.eval_data is not None and entry.trained:
                # Accuracy at the model's own input size, as it was trained and published.
                native = backends if size == cfg.input_size else _build_backends(entry.name, settings, artifacts, cfg.input_size)[0]
                accuracy = _accuracies(native, cfg, settings.eval_data, settings)
        thread_columns = {"threads": torch.get_num_threads()} if settings.thread_counts else {}
        notes = {name: unavailable.get(name) or ("" if entry.trained else "random weights") for name in settings.backends}
        rows += _timed_rows(backends, {**shared, **thread_columns}, size, cfg, settings, accuracy, notes)
    return rows


def _timed_rows(
    backends: dict[str, nn.Module],
    shared: dict[str, Any],
    size: tuple[int, ...],
    cfg,
    settings: BenchSettings,
    accuracy: dict[str, dict[str, float]],
    notes: dict[str, str],
) -> list[dict[str, Any]]:
    # The size of what each runtime loads (the ONNX, IR, .pte or ncnn files); PyTorch backends have none.
    file_bytes = {name: getattr(module, "file_bytes", None) for name, module in backends.items()}
    rows = []
    for batch_size in settings.batch_sizes:
        timings, failures = _timings(backends, random_images(replace(cfg, input_size=size), batch_size), settings)
        baseline = timings.get(BASELINE)
        for name in settings.backends:
            row = {**shared, "backend": name, "infer_batch_size": batch_size, "file_bytes": file_bytes.get(name)}
            if name in timings:
                row.update(_speed_columns(timings[name], baseline, batch_size, shared["infer_gmacs"]))
            row.update(accuracy.get(name, {}))
            row["note"] = failures.get(name) or notes[name]
            rows.append(row)
    return rows


def _build_backends(label: str, settings: BenchSettings, artifacts: ModelArtifacts, size: tuple[int, ...]):
    backends, unavailable = {}, {}
    for name in tqdm(settings.backends, desc=f"{label}: preparing", disable=not settings.progress, leave=False):
        try:
            backends[name] = build_backend(name, artifacts, size)
        except BackendUnavailable as exc:
            unavailable[name] = str(exc)
    return backends, unavailable


def _timings(backends: dict[str, nn.Module], batch: torch.Tensor, settings: BenchSettings):
    calls, failures = {}, {}
    for name, module in backends.items():
        try:
            with torch.inference_mode():
                module(batch)  # first call: torch.compile compiles here, onnxruntime allocates
        except Exception as exc:  # a backend failing on this input is reported in its row, not fatal
            failures[name] = f"failed: {first_line(exc)}"
            continue
        calls[name] = _inference_call(module, batch)
    return interleaved_timings(calls, settings.warmup, settings.iters, settings.rounds) if calls else {}, failures


def _inference_call(module: nn.Module, batch: torch.Tensor):
    def call() -> None:
        with torch.inference_mode():
            module(batch)

    return call


def _speed_columns(timing, baseline, batch_size: int, gmacs: float) -> dict[str, Any]:
    return {
        "infer_samples_per_sec": round(batch_size / timing.median, 2),
        "infer_step_time": round(1e3 * timing.median, 3),
        "infer_step_time_p90": round(1e3 * timing.p90, 3),
        "infer_step_time_spread": round(timing.spread, 3),
        "infer_gflops": round(2.0 * gmacs * batch_size / timing.median, 2),
        "peak_fraction": None,  # filled in by bench_models once the peak is known
        "speedup_vs_onnx": round(baseline.median / timing.median, 3) if baseline is not None else None,
    }


def _accuracies(
    backends: dict[str, nn.Module], cfg, eval_data: str | Path, settings: BenchSettings
) -> dict[str, dict[str, float]]:
    images = labelled_images(eval_data)
    if settings.eval_limit is not None:
        images = images.select(range(min(settings.eval_limit, len(images))))
    scores = topk_accuracies(backends, images, cfg, progress=settings.progress)
    return {name: {"top1": round(s["top1"], 2), "top5": round(s["top5"], 2)} for name, s in scores.items()}
