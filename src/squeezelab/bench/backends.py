"""Inference backends for benchmarking: PyTorch (eager, channels_last, bf16, torch.compile) and onnxruntime
(fp32, int8). Every backend is an ``nn.Module`` taking a normalised NCHW float batch and returning logits."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from squeezelab.interop.onnx_export import export_onnx
from squeezelab.interop.quantize import quantize_int8
from squeezelab.interop.runtime import OnnxModel

BACKENDS = ("eager", "channels_last", "bf16", "compile", "onnx", "int8")
DEFAULT_BACKENDS = ("eager", "channels_last", "onnx", "int8")
BASELINE = "onnx"  # a plain fp32 onnxruntime session: the reference every speed-up is measured against
DESCRIPTIONS = {
    "eager": "PyTorch fp32, NCHW",
    "channels_last": "PyTorch fp32, channels_last (NHWC) memory format",
    "bf16": "PyTorch bfloat16 autocast, channels_last",
    "compile": "torch.compile (inductor), fp32",
    "onnx": "onnxruntime fp32, plain session (default options)",
    "int8": "onnxruntime int8 static QDQ, per-channel weights, graph optimisation ALL",
}


class BackendUnavailable(RuntimeError):
    """The backend cannot run for this model or setup; the message says why (shown instead of numbers)."""


class ChannelsLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class Bfloat16Autocast(ChannelsLast):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return super().forward(x).float()


@dataclass
class ModelArtifacts:
    """One model's exports, built on first use and shared by the onnxruntime backends."""

    model: nn.Module
    workdir: Path
    threads: int | None = None
    calibration: np.ndarray | None = None
    _paths: dict[str, Path] = field(default_factory=dict)

    def fp32_onnx(self) -> Path:
        if "fp32" not in self._paths:
            self._paths["fp32"] = export_onnx(self.model, self.workdir / "model.onnx", dynamic_size=True)
        return self._paths["fp32"]

    def int8_onnx(self) -> Path:
        if self.calibration is None:
            raise BackendUnavailable("int8 needs calibration images (--calibration DIR)")
        if "int8" not in self._paths:
            self._paths["int8"] = quantize_int8(self.fp32_onnx(), self.workdir / "model.int8.onnx", self.calibration)
        return self._paths["int8"]


def _compiled(artifacts: ModelArtifacts) -> nn.Module:
    try:
        return torch.compile(artifacts.model)
    except Exception as exc:  # torch.compile raises many backend-specific types; all mean "not available here"
        raise BackendUnavailable(f"torch.compile failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


_BUILDERS: dict[str, Callable[[ModelArtifacts], nn.Module]] = {
    "eager": lambda a: a.model,
    "channels_last": lambda a: ChannelsLast(a.model),
    "bf16": lambda a: Bfloat16Autocast(a.model),
    "compile": _compiled,
    "onnx": lambda a: OnnxModel(a.fp32_onnx(), threads=a.threads),
    "int8": lambda a: OnnxModel(a.int8_onnx(), threads=a.threads),
}


def build_backend(name: str, artifacts: ModelArtifacts) -> nn.Module:
    """The model running on backend ``name`` (raises :class:`BackendUnavailable` with the reason)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return _BUILDERS[name](artifacts).eval()
