"""Pick and prepare an inference backend for a model file, caching its ONNX exports next to it.

Backends, fastest first on this project's reference CPU (see ``docs/interop.md``): ``int8`` (onnxruntime,
static int8 QDQ), ``onnx`` (onnxruntime fp32), ``eager`` (PyTorch). The exports are cached as
``<model file>.onnx`` and ``<model file>.int8.onnx``; each records the SHA-256 of the model file it came
from, so a changed model file is re-exported instead of silently served stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch.nn as nn

from squeezelab.models import ModelConfig
from squeezelab.models.registry import model_config

from .loading import load_any_model
from .onnx_export import export_onnx, onnx_metadata
from .quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch, quantize_int8
from .runtime import OnnxModel

BACKENDS = ("auto", "int8", "onnx", "eager")
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
        names = {"int8": "onnxruntime int8", "onnx": "onnxruntime fp32", "eager": "PyTorch eager fp32"}
        return f"{names[self.backend]}{where}"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_paths(model_path: str | os.PathLike) -> dict[str, Path]:
    """Where the cached exports of ``model_path`` live: ``{"onnx": ..., "int8": ...}``."""
    path = Path(model_path)
    return {"onnx": path.with_name(path.name + ".onnx"), "int8": path.with_name(path.name + ".int8.onnx")}


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

    ``auto`` takes int8 when a fresh int8 export is cached or ``calibration`` images are given, else
    onnxruntime fp32 when onnxruntime is installed, else PyTorch. ``.onnx`` files run as they are.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".onnx":
        model = OnnxModel(path, threads=threads)
        precision = onnx_metadata(path).get("squeezelab.precision", "fp32")
        return Deployment(model, "int8" if precision == "int8" else "onnx", model.default_cfg, path)
    if backend == "eager" or (backend == "auto" and not onnxruntime_available()):
        eager = load_any_model(path, arch=arch)
        return Deployment(eager, "eager", model_config(eager))
    source_hash = file_sha256(path)
    sidecars = sidecar_paths(path)
    chosen = backend
    if backend == "auto":
        chosen = "int8" if calibration is not None or _is_fresh(sidecars["int8"], source_hash) else "onnx"
    calibrated_with = calibration_id(calibration, calibration_count) if calibration is not None else None
    if not _is_fresh(sidecars[chosen], source_hash, calibrated_with if chosen == "int8" else None):
        try:
            _build_sidecars(path, arch, chosen, sidecars, source_hash, calibration, calibration_count, progress)
        except PermissionError:
            if backend != "auto":
                raise
            return deploy(path, "eager", arch)  # read-only model folder: nowhere to cache the export
    model = OnnxModel(sidecars[chosen], threads=threads)
    return Deployment(model, chosen, model.default_cfg, sidecars[chosen])


def _build_sidecars(
    path: Path,
    arch: str | None,
    backend: str,
    sidecars: dict[str, Path],
    source_hash: str,
    calibration,
    calibration_count: int,
    progress: bool,
) -> None:
    model = load_any_model(path, arch=arch)
    stamp = {SOURCE_KEY: source_hash}
    if not _is_fresh(sidecars["onnx"], source_hash):
        export_onnx(model, sidecars["onnx"], metadata=stamp)
    if backend == "int8":
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
