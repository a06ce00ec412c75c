"""Pick and prepare an inference backend for a model file, caching its ONNX exports next to it.

Backends, fastest first on this project's reference CPU (see ``docs/interop.md``): ``openvino_int8``
(OpenVINO running squeezelab's int8 QDQ file), ``int8`` (the same file on onnxruntime), ``openvino``
(OpenVINO fp32), ``onnx`` (onnxruntime fp32), ``eager`` (PyTorch). ``auto`` takes the fastest one whose runtime
is installed, at equal accuracy: both int8 backends run the same file, both fp32 ones compute in fp32. The
exports are cached as ``<model file>.onnx`` and ``<model file>.int8.onnx`` (OpenVINO reads them directly);
each records the SHA-256 of the model file it came from, so a changed model file is re-exported instead of
silently served stale. Exported files (``.onnx``, OpenVINO ``.xml``, ExecuTorch ``.pte``) run as they are.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch.nn as nn

from squeezelab.data.cache import cache_root
from squeezelab.models import ModelConfig
from squeezelab.models.pretrained import WEIGHTS_DIR, list_pretrained
from squeezelab.models.registry import model_config

from .executorch_pte import ExecuTorchModel
from .loading import load_model, model_file
from .onnx_export import export_onnx, onnx_metadata
from .openvino_ir import OpenVinoModel
from .quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch, quantize_int8
from .runtime import OnnxModel

BACKENDS = ("auto", "openvino_int8", "int8", "openvino", "onnx", "eager")
# Which cached export each ONNX-file backend runs, and on which runtime.
SIDECAR_OF = {"openvino_int8": "int8", "int8": "int8", "openvino": "onnx", "onnx": "onnx"}
OPENVINO_BACKENDS = ("openvino_int8", "openvino")
DESCRIPTIONS = {
    "openvino_int8": "OpenVINO int8",
    "int8": "onnxruntime int8",
    "openvino": "OpenVINO fp32",
    "onnx": "onnxruntime fp32",
    "executorch": "ExecuTorch (XNNPACK)",
    "eager": "PyTorch eager fp32",
}
SOURCE_KEY = "squeezelab.source_sha256"
CALIBRATION_KEY = "squeezelab.calibration_id"


@dataclass
class Deployment:
    """A ready-to-run model (``nn.Module`` taking normalised batches), its backend and preprocessing."""

    model: nn.Module
    backend: str
    cfg: ModelConfig
    artifact: Path | None = None

    def describe(self) -> str:
        where = f" ({self.artifact})" if self.artifact is not None else ""
        return f"{DESCRIPTIONS[self.backend]}{where}"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_paths(model_path: str | os.PathLike) -> dict[str, Path]:
    """Where the cached exports of ``model_path`` live: ``{"onnx": ..., "int8": ...}``; next to the file, except
    for the pretrained weights shipped in the package, whose exports go to the user cache (``exports/``)."""
    path = Path(model_path)
    folder = cache_root() / "exports" if path.resolve().parent == WEIGHTS_DIR else path.parent
    return {"onnx": folder / (path.name + ".onnx"), "int8": folder / (path.name + ".int8.onnx")}


def calibration_id(calibration: str | os.PathLike | Sequence[str | os.PathLike], count: int) -> str:
    """Names the calibration set (its paths and image count), so a cached int8 export made from other images
    is rebuilt instead of silently reused."""
    paths = [calibration] if isinstance(calibration, (str, os.PathLike)) else list(calibration)
    text = "\n".join(sorted(str(Path(p).resolve()) for p in paths)) + f"\n{count}"
    return hashlib.sha256(text.encode()).hexdigest()


def _is_fresh(artifact: Path, source_hash: str, calibration: str | None = None) -> bool:
    if not artifact.is_file():
        return False
    try:
        metadata = onnx_metadata(artifact)
    except Exception:  # a damaged cache file is rebuilt, whatever onnx says about it
        return False
    return metadata.get(SOURCE_KEY) == source_hash and calibration in (None, metadata.get(CALIBRATION_KEY))


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def onnx_backend(precision: str, openvino: bool) -> str:
    """The backend running an ONNX file of ``precision`` ("int8" or "fp32") on OpenVINO or onnxruntime."""
    if precision == "int8":
        return "openvino_int8" if openvino else "int8"
    return "openvino" if openvino else "onnx"


def fastest_backend(precision: str) -> str:
    """The fastest installed runtime for an ONNX file of ``precision``, as ``benchmarks/bench_runtimes.py``
    measured it (benchmarks/results/runtimes): int8 on OpenVINO when installed (3.6x onnxruntime's int8 on
    SqueezeNet v1.0 at batch 1, 2 threads), fp32 on onnxruntime (OpenVINO's f32 ran at 0.64-1.10x of it, below 1x in 10 of 12 settings)."""
    return onnx_backend(precision, precision == "int8" and openvino_available())


def deploy(
    model_path: str | os.PathLike,
    backend: str = "auto",
    arch: str | None = None,
    calibration: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
    threads: int | None = None,
    progress: bool = True,
) -> Deployment:
    """Load ``model_path`` on ``backend`` (see ``BACKENDS``), exporting/quantizing and caching as needed.

    ``auto`` takes int8 when a fresh int8 export is cached or ``calibration`` images are given, else fp32, each
    on the fastest installed runtime (:func:`fastest_backend`); PyTorch when none is. Exported files run as they are.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = model_file(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (nor a pretrained tag: {', '.join(list_pretrained())})")
    if path.suffix in (".onnx", ".xml", ".pte"):
        return _deploy_exported(path, backend, threads)
    if backend == "eager" or (backend == "auto" and not onnxruntime_available()):
        eager = load_model(path, arch=arch)
        return Deployment(eager, "eager", model_config(eager))
    source_hash = file_sha256(path)
    sidecars = sidecar_paths(path)
    chosen = backend
    if backend == "auto":
        int8 = calibration is not None or _is_fresh(sidecars["int8"], source_hash)
        chosen = fastest_backend("int8" if int8 else "fp32")
    kind = SIDECAR_OF[chosen]
    calibrated_with = calibration_id(calibration, calibration_count) if calibration is not None else None
    if not _is_fresh(sidecars[kind], source_hash, calibrated_with if kind == "int8" else None):
        try:
            _build_sidecars(path, arch, kind, sidecars, source_hash, calibration, calibration_count, progress)
        except PermissionError:
            if backend != "auto":
                raise
            return deploy(path, "eager", arch)  # read-only model folder: nowhere to cache the export
    return _deployment(sidecars[kind], chosen, threads)


def _deploy_exported(path: Path, backend: str, threads: int | None) -> Deployment:
    """An exported file runs on the runtime its format needs; an ONNX file on the fastest one installed
    (``auto``) or the one asked for."""
    if path.suffix == ".pte":
        model = ExecuTorchModel(path, threads=threads)
        return Deployment(model, "executorch", model.default_cfg, path)
    if path.suffix == ".xml":
        model_xml = OpenVinoModel(path, threads=threads)
        return Deployment(model_xml, "openvino_int8" if model_xml.precision == "int8" else "openvino", model_xml.default_cfg, path)
    precision = "int8" if onnx_metadata(path).get("squeezelab.precision") == "int8" else "fp32"
    if backend in ("auto", "eager"):  # (PyTorch cannot run an ONNX file)
        return _deployment(path, fastest_backend(precision), threads)
    return _deployment(path, onnx_backend(precision, openvino=backend in OPENVINO_BACKENDS), threads)


def _deployment(onnx_path: Path, backend: str, threads: int | None) -> Deployment:
    model: OnnxModel | OpenVinoModel
    model = OpenVinoModel(onnx_path, threads=threads) if backend in OPENVINO_BACKENDS else OnnxModel(onnx_path, threads=threads)
    return Deployment(model, backend, model.default_cfg, onnx_path)


def _build_sidecars(
    path: Path,
    arch: str | None,
    kind: str,
    sidecars: dict[str, Path],
    source_hash: str,
    calibration,
    calibration_count: int,
    progress: bool,
) -> None:
    model = load_model(path, arch=arch)
    stamp = {SOURCE_KEY: source_hash}
    if not _is_fresh(sidecars["onnx"], source_hash):
        export_onnx(model, sidecars["onnx"], metadata=stamp)
    if kind == "int8":
        if calibration is None:
            raise ValueError(
                f"{path}: no int8 export cached at {sidecars['int8']}; give calibration images (--calibration DIR) "
                "to build it"
            )
        batch = calibration_batch(calibration, model_config(model), calibration_count, progress=progress)
        quantize_int8(
            sidecars["onnx"],
            sidecars["int8"],
            batch,
            metadata={**stamp, CALIBRATION_KEY: calibration_id(calibration, calibration_count)},
        )
