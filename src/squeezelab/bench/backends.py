"""Inference backends for benchmarking: PyTorch (eager, channels_last, bf16, torch.compile) and onnxruntime
(fp32, int8). Every backend is an ``nn.Module`` taking a normalised NCHW float batch and returning logits."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence, cast

import torch
import torch.nn as nn

from squeezelab.interop.onnx_export import export_onnx
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch, quantize_int8
from squeezelab.interop.runtime import OnnxModel
from squeezelab.models.registry import model_config
from squeezelab.utils.errors import first_line

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
    """One model's ONNX exports per input size, built on first use and shared by the onnxruntime backends.

    int8 calibration images are preprocessed at each size from ``calibration`` (a folder or file list).
    """

    model: nn.Module
    workdir: Path
    threads: int | None = None
    calibration: str | Path | Sequence[str | Path] | None = None
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    progress: bool = True
    _paths: dict[tuple[str, tuple[int, ...]], Path] = field(default_factory=dict)

    def fp32_onnx(self, size: tuple[int, ...]) -> Path:
        key = ("fp32", tuple(size))
        if key not in self._paths:
            self._paths[key] = export_onnx(self.model, self.workdir / f"fp32_{_tag(size)}.onnx", input_size=size)
        return self._paths[key]

    def int8_onnx(self, size: tuple[int, ...]) -> Path:
        if self.calibration is None:
            raise BackendUnavailable("int8 needs calibration images (--calibration DIR)")
        key = ("int8", tuple(size))
        if key not in self._paths:
            # (a (C, H, W) size: the cast only tells mypy the length)
            cfg = replace(model_config(self.model), input_size=cast(tuple[int, int, int], tuple(size)))
            batch = calibration_batch(self.calibration, cfg, self.calibration_count, progress=self.progress)
            self._paths[key] = quantize_int8(self.fp32_onnx(size), self.workdir / f"int8_{_tag(size)}.onnx", batch)
        return self._paths[key]


def _tag(size: Sequence[int]) -> str:
    return "x".join(map(str, size))


def _compiled(artifacts: ModelArtifacts, size: tuple[int, ...]) -> nn.Module:
    try:
        # (typed as returning any callable; given a module it returns a module, an OptimizedModule)
        return cast(nn.Module, torch.compile(artifacts.model))
    except Exception as exc:  # torch.compile raises many backend-specific types; all mean "not available here"
        raise BackendUnavailable(f"torch.compile failed: {first_line(exc)}") from None


_BUILDERS: dict[str, Callable[[ModelArtifacts, tuple[int, ...]], nn.Module]] = {
    "eager": lambda a, size: a.model,
    "channels_last": lambda a, size: ChannelsLast(a.model),
    "bf16": lambda a, size: Bfloat16Autocast(a.model),
    "compile": _compiled,
    "onnx": lambda a, size: OnnxModel(a.fp32_onnx(size), threads=a.threads),
    "int8": lambda a, size: OnnxModel(a.int8_onnx(size), threads=a.threads),
}


def build_backend(name: str, artifacts: ModelArtifacts, input_size: tuple[int, ...]) -> nn.Module:
    """The model on backend ``name`` for (C, H, W) inputs (raises :class:`BackendUnavailable` with the reason)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return _BUILDERS[name](artifacts, tuple(input_size)).eval()
