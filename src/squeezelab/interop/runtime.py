"""onnxruntime sessions, and an ``nn.Module`` face for them so ONNX models plug into PyTorch code."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn

from squeezelab.utils.errors import first_line
from squeezelab.utils.optional import require

from .onnx_export import INPUT_NAME, onnx_config

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def ort_session(path: str | os.PathLike, threads: int | None = None, optimization: str = "all"):
    """A CPU ``InferenceSession``; ``threads`` None keeps onnxruntime's default (one per physical core)."""
    ort = require("onnxruntime")

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise ValueError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None


class OnnxModel(nn.Module):
    """Runs an ONNX classifier with onnxruntime behind an ``nn.Module`` interface (CPU, inference only).

    ``default_cfg`` comes from the metadata :func:`~squeezelab.interop.onnx_export.export_onnx` stores.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, optimization: str = "all") -> None:
        super().__init__()
        self.path = str(path)
        self.session = ort_session(path, threads=threads, optimization=optimization)
        self.file_bytes = os.path.getsize(path)
        self.default_cfg = onnx_config(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {INPUT_NAME: array})[0])
