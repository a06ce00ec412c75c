"""OpenVINO: IR export (fp32, int8 from squeezelab's QDQ file or from NNCF) and an ``nn.Module`` runtime.

OpenVINO reads squeezelab's ONNX exports instead of converting the PyTorch model itself: one export path
(the ONNX one, parity-tested) feeds every runtime, and OpenVINO's ONNX frontend turns the int8 QDQ pairs into
FakeQuantize nodes that its CPU plugin runs with int8 kernels, so the int8 recipe of
:mod:`squeezelab.interop.quantize` carries over unchanged.

Precision: on CPUs with AMX or AVX512-BF16 OpenVINO's CPU plugin runs float layers in bfloat16 unless told
otherwise (``INFERENCE_PRECISION_HINT``), which moves logits by about 1e-2. squeezelab asks for ``f32``
explicitly, so "fp32" means fp32 (logits within 1e-5 of PyTorch); ``bf16`` is an explicit choice.

The squeezelab metadata of the ONNX file (preprocessing config, model spec, source hash, precision) is kept
in the IR's ``rt_info`` under ``squeezelab``, so an ``.xml`` file alone is enough to classify images.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from squeezelab.models import ModelConfig
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.optional import require

from .onnx_export import metadata_config, onnx_metadata

PRECISIONS = ("f32", "bf16")
RT_INFO_SECTION = "squeezelab"
SUFFIXES = (".xml", ".onnx")  # an IR, or an ONNX file OpenVINO reads directly


@functools.lru_cache(maxsize=1)
def openvino_core() -> Any:
    """One ``openvino.Core`` per process: creating it loads the device plugins (tens of milliseconds)."""
    return require("openvino").Core()


def read_openvino_model(path: str | os.PathLike) -> Any:
    """An ``openvino.Model`` from an IR ``.xml`` or an ONNX file; unreadable files fail with one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: OpenVINO reads .xml (IR) or .onnx files")
    try:
        return openvino_core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses for damaged or foreign files
        raise DamagedFileError(f"{path}: OpenVINO cannot read it ({first_line(exc)})") from None


def openvino_metadata(path: str | os.PathLike) -> dict[str, str]:
    """squeezelab's metadata of an IR (from ``rt_info``) or of an ONNX file."""
    if Path(path).suffix == ".onnx":
        return onnx_metadata(path)
    return _rt_metadata(read_openvino_model(path))


def _rt_metadata(model: Any) -> dict[str, str]:
    if not model.has_rt_info([RT_INFO_SECTION]):
        return {}
    section = model.get_rt_info([RT_INFO_SECTION])
    return {str(key): value.astype(str) for key, value in section.astype(dict).items()}


def _set_rt_metadata(model: Any, entries: dict[str, str]) -> None:
    for key, value in entries.items():
        model.set_rt_info(value, [RT_INFO_SECTION, key])


def export_openvino(onnx_path: str | os.PathLike, out_path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Convert a squeezelab ONNX export (fp32, or int8 QDQ) to an OpenVINO IR ``.xml`` + ``.bin`` pair.

    Weights stay float32 (``compress_to_fp16=False``: OpenVINO's default halves the file but moves the logits).
    """
    model = read_openvino_model(onnx_path)
    _set_rt_metadata(model, {**onnx_metadata(onnx_path), **(metadata or {})})
    return _save_ir(model, out_path)


def quantize_openvino(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    metadata: dict[str, str] | None = None,
) -> Path:
    """int8 IR by NNCF post-training quantization (its defaults: symmetric, per-channel weights, fast bias
    correction) of an fp32 ONNX or IR file, on a calibration batch from
    :func:`~squeezelab.interop.quantize.calibration_batch`."""
    nncf = require("nncf")

    model = read_openvino_model(fp32_path)
    source_metadata = openvino_metadata(fp32_path)
    # One image per item, so subset_size counts images (NNCF's unit is the dataset item).
    images = [image[None] for image in calibration]
    quantized = nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))
    entries = {**source_metadata, "squeezelab.precision": "int8", "squeezelab.quantizer": "nncf", **(metadata or {})}
    _set_rt_metadata(quantized, entries)
    return _save_ir(quantized, out_path)


def _save_ir(model: Any, out_path: str | os.PathLike) -> Path:
    """Save ``.xml`` and ``.bin`` atomically: both are written to a temporary folder beside the target, then
    moved (the ``.bin`` first, so a reader never finds a new ``.xml`` next to an old ``.bin``)."""
    ov = require("openvino")

    out = Path(out_path)
    if out.suffix != ".xml":
        raise ValueError(f"{out}: an OpenVINO IR file name ends in .xml")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".squeezelab-ir-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(staged, out)
    return out


def ir_file_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of a model file, counting an IR's ``.bin`` with its ``.xml``."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.is_file() else 0)


class OpenVinoModel(nn.Module):
    """Runs an OpenVINO IR (or ONNX file) on the CPU behind an ``nn.Module`` interface (inference only).

    The graph is compiled once with the file's dynamic batch axis. (Reshaping to a static batch, which lets
    the CPU plugin pre-plan memory, crashed OpenVINO 2026.4 with a segmentation fault on the int8 QDQ graph
    of ``squeezenet_fast_cifar``: a crash cannot be caught, so squeezelab does not do it.)
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision: str = "f32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.path = str(path)
        model = read_openvino_model(path)
        metadata = _rt_metadata(model) if Path(path).suffix == ".xml" else onnx_metadata(path)
        self.default_cfg: ModelConfig = metadata_config(metadata, path)
        self.precision = metadata.get("squeezelab.precision", "fp32")
        self.file_bytes = ir_file_bytes(path)
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            self.request = openvino_core().compile_model(model, "CPU", config).create_infer_request()
        except Exception as exc:  # a graph the CPU plugin cannot compile
            raise ValueError(f"{path}: OpenVINO cannot compile it ({first_line(exc)})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        self.request.infer({0: array}, share_inputs=True)
        # The output buffer belongs to the request and is overwritten by its next call: copy it out.
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())
