"""One export entry point for every deployment format: ONNX (fp32, int8), OpenVINO IR (fp32, int8) and
ExecuTorch ``.pte`` with the XNNPACK delegate (fp32, int8).

ONNX is the hub: OpenVINO formats are converted from squeezelab's ONNX export (the int8 IR from squeezelab's
QDQ file, or by NNCF from the fp32 one), so the int8 recipe of :mod:`squeezelab.interop.quantize` is written
once. ExecuTorch starts from the PyTorch model (``torch.export``) and uses XNNPACK's own quantizer, since
ExecuTorch cannot read ONNX.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.nn as nn

from .executorch_pte import export_executorch
from .onnx_export import DEFAULT_OPSET, export_onnx
from .openvino_ir import export_openvino, quantize_openvino
from .quantize import quantize_int8

FORMATS = ("onnx", "onnx-int8", "openvino", "openvino-int8", "executorch", "executorch-int8")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte"}
QUANTIZERS = ("squeezelab", "nncf")  # for openvino-int8: squeezelab's QDQ recipe, or NNCF's own


def is_int8(fmt: str) -> bool:
    return fmt.endswith("-int8")


def format_suffix(fmt: str) -> str:
    """The file name ending a format's file must have (the runtimes and ``classify`` go by it)."""
    return SUFFIXES[fmt.removesuffix("-int8")]


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: str,
    input_size: Sequence[int] | None = None,
    calibration: np.ndarray | None = None,
    quantizer: str = "squeezelab",
    opset: int = DEFAULT_OPSET,
    dynamic_size: bool = False,
) -> Path:
    """Write ``model`` in format ``fmt`` (see ``FORMATS``) to ``out``; int8 formats need ``calibration`` (a
    float32 batch from :func:`~squeezelab.interop.quantize.calibration_batch` at the export's input size)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
    out = Path(out)
    if out.suffix != format_suffix(fmt):
        raise ValueError(f"{out}: format {fmt} writes a {format_suffix(fmt)} file")
    if is_int8(fmt) and calibration is None:
        raise ValueError(f"format {fmt} needs calibration images (--calibration DIR)")
    if fmt.startswith("executorch"):
        return export_executorch(model, out, input_size, calibration if is_int8(fmt) else None)
    if fmt == "onnx":
        return export_onnx(model, out, input_size=input_size, opset=opset, dynamic_size=dynamic_size)
    with tempfile.TemporaryDirectory(prefix="squeezelab-export-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", input_size=input_size, opset=opset, dynamic_size=dynamic_size)
        if calibration is None or not is_int8(fmt):
            return export_openvino(fp32, out)
        if fmt == "openvino-int8" and quantizer == "nncf":
            return quantize_openvino(fp32, out, calibration)
        int8 = quantize_int8(fp32, out if fmt == "onnx-int8" else Path(tmp) / "int8.onnx", calibration)
        return int8 if fmt == "onnx-int8" else export_openvino(int8, out)
