"""Inference backends for benchmarking: PyTorch (eager, channels_last, bf16, torch.compile), onnxruntime (fp32,
int8) and the peer runtimes a deployment could use instead (OpenVINO with NNCF, ExecuTorch with XNNPACK,
ncnn). Every backend is an ``nn.Module`` taking a normalised NCHW float batch and returning logits; a runtime
that is not installed or cannot convert the model raises :class:`BackendUnavailable` saying why."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence, cast

import numpy as np
import torch
import torch.nn as nn

from squeezelab.interop.executorch_pte import ConversionError, ExecuTorchModel, export_executorch
from squeezelab.interop.ncnn_model import INT8_UNAVAILABLE, NcnnModel, export_ncnn
from squeezelab.interop.onnx_export import export_onnx
from squeezelab.interop.openvino_ir import OpenVinoModel, quantize_openvino
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT, calibration_batch, quantize_int8
from squeezelab.interop.runtime import OnnxModel
from squeezelab.models.registry import model_config
from squeezelab.utils.errors import first_line
from squeezelab.utils.optional import MissingDependency

BACKENDS = (
    "eager",
    "channels_last",
    "bf16",
    "compile",
    "onnx",
    "int8",
    "openvino",
    "openvino_bf16",
    "openvino_int8",
    "openvino_nncf",
    "executorch",
    "executorch_int8",
    "ncnn",
    "ncnn_int8",
    "litert",
)
DEFAULT_BACKENDS = ("eager", "channels_last", "onnx", "int8")
BASELINE = "onnx"  # a plain fp32 onnxruntime session: the reference every speed-up is measured against
# Backends running squeezelab's own int8 recipe (calibration mosaics, float head, shared Concat ranges); every
# other backend is what a user gets from a runtime's own tools, the peers squeezelab has to beat.
SQUEEZELAB_RECIPE = ("int8", "openvino_int8")
LITERT_UNAVAILABLE = (
    "LiteRT's runtime (ai-edge-litert) installs, but converting PyTorch models needs litert-torch, which pulls "
    "jax and transformers and downgrades typing_extensions; not installed"
)
DESCRIPTIONS = {
    "eager": "PyTorch fp32, NCHW",
    "channels_last": "PyTorch fp32, channels_last (NHWC) memory format",
    "bf16": "PyTorch bfloat16 autocast, channels_last",
    "compile": "torch.compile (inductor), fp32",
    "onnx": "onnxruntime fp32, plain session (default options)",
    "int8": "onnxruntime int8 static QDQ, per-channel weights, graph optimisation ALL (squeezelab's recipe)",
    "openvino": "OpenVINO CPU, fp32 (precision hint f32), on squeezelab's fp32 ONNX file",
    "openvino_bf16": "OpenVINO CPU with its default precision on AMX/AVX512-BF16 CPUs: bfloat16",
    "openvino_int8": "OpenVINO CPU on squeezelab's int8 QDQ ONNX file (squeezelab's recipe)",
    "openvino_nncf": "OpenVINO CPU, int8 by NNCF post-training quantization (its defaults), same calibration images",
    "executorch": "ExecuTorch, XNNPACK delegate, fp32",
    "executorch_int8": "ExecuTorch, XNNPACK delegate, int8 by XNNPACKQuantizer (per-channel), same calibration images",
    "ncnn": "ncnn via pnnx, default options (fp16 storage on x86 with F16C), one image per call",
    "ncnn_int8": "ncnn int8 (needs ncnn2table/ncnn2int8)",
    "litert": "LiteRT (TFLite) interpreter",
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
    _batches: dict[tuple[str, tuple[int, ...]], np.ndarray] = field(default_factory=dict)

    def fp32_onnx(self, size: tuple[int, ...]) -> Path:
        return self._built(("fp32", size), lambda: export_onnx(self.model, self.workdir / f"fp32_{_tag(size)}.onnx", input_size=size))

    def int8_onnx(self, size: tuple[int, ...]) -> Path:
        return self._built(
            ("int8", size),
            lambda: quantize_int8(self.fp32_onnx(size), self.workdir / f"int8_{_tag(size)}.onnx", self.calibration_batch(size)),
        )

    def nncf_ir(self, size: tuple[int, ...]) -> Path:
        return self._built(
            ("nncf", size),
            lambda: quantize_openvino(self.fp32_onnx(size), self.workdir / f"nncf_{_tag(size)}.xml", self.calibration_batch(size)),
        )

    def executorch_pte(self, size: tuple[int, ...], int8: bool) -> Path:
        precision = "int8" if int8 else "fp32"
        calibration = self.calibration_batch(size) if int8 else None
        path = self.workdir / f"executorch_{precision}_{_tag(size)}.pte"
        return self._built((f"executorch_{precision}", size), lambda: export_executorch(self.model, path, size, calibration))

    def ncnn_param(self, size: tuple[int, ...]) -> Path:
        return self._built(("ncnn", size), lambda: export_ncnn(self.model, self.workdir / f"ncnn_{_tag(size)}", size))

    def calibration_batch(self, size: tuple[int, ...]) -> np.ndarray:
        """The same calibration images for every int8 path (onnxruntime, NNCF, XNNPACK), preprocessed once."""
        if self.calibration is None:
            raise BackendUnavailable("int8 needs calibration images (--calibration DIR)")
        key = ("calibration", size)
        if key not in self._batches:
            # (a (C, H, W) size: the cast only tells mypy the length)
            cfg = replace(model_config(self.model), input_size=cast(tuple[int, int, int], tuple(size)))
            self._batches[key] = calibration_batch(self.calibration, cfg, self.calibration_count, progress=self.progress)
        return self._batches[key]

    def _built(self, key: tuple[str, tuple[int, ...]], build: Callable[[], Path]) -> Path:
        """Build an artifact once per kind and input size; a conversion failure becomes the row's reason."""
        key = (key[0], tuple(key[1]))
        if key not in self._paths:
            try:
                self._paths[key] = build()
            except (MissingDependency, ConversionError) as exc:
                raise BackendUnavailable(str(exc)) from None
        return self._paths[key]


def _tag(size: Sequence[int]) -> str:
    return "x".join(map(str, size))


def _compiled(artifacts: ModelArtifacts, size: tuple[int, ...]) -> nn.Module:
    try:
        # (typed as returning any callable; given a module it returns a module, an OptimizedModule)
        return cast(nn.Module, torch.compile(artifacts.model))
    except Exception as exc:  # torch.compile raises many backend-specific types; all mean "not available here"
        raise BackendUnavailable(f"torch.compile failed: {first_line(exc)}") from None


def _unavailable(reason: str) -> Callable[[ModelArtifacts, tuple[int, ...]], nn.Module]:
    def build(artifacts: ModelArtifacts, size: tuple[int, ...]) -> nn.Module:
        raise BackendUnavailable(reason)

    return build


_BUILDERS: dict[str, Callable[[ModelArtifacts, tuple[int, ...]], nn.Module]] = {
    "eager": lambda a, size: a.model,
    "channels_last": lambda a, size: ChannelsLast(a.model),
    "bf16": lambda a, size: Bfloat16Autocast(a.model),
    "compile": _compiled,
    "onnx": lambda a, size: OnnxModel(a.fp32_onnx(size), threads=a.threads),
    "int8": lambda a, size: OnnxModel(a.int8_onnx(size), threads=a.threads),
    "openvino": lambda a, size: OpenVinoModel(a.fp32_onnx(size), threads=a.threads),
    "openvino_bf16": lambda a, size: OpenVinoModel(a.fp32_onnx(size), threads=a.threads, precision="bf16"),
    "openvino_int8": lambda a, size: OpenVinoModel(a.int8_onnx(size), threads=a.threads),
    "openvino_nncf": lambda a, size: OpenVinoModel(a.nncf_ir(size), threads=a.threads),
    "executorch": lambda a, size: ExecuTorchModel(a.executorch_pte(size, int8=False), threads=a.threads),
    "executorch_int8": lambda a, size: ExecuTorchModel(a.executorch_pte(size, int8=True), threads=a.threads),
    "ncnn": lambda a, size: NcnnModel(a.ncnn_param(size), threads=a.threads),
    "ncnn_int8": _unavailable(INT8_UNAVAILABLE),
    "litert": _unavailable(LITERT_UNAVAILABLE),
}


def build_backend(name: str, artifacts: ModelArtifacts, input_size: tuple[int, ...]) -> nn.Module:
    """The model on backend ``name`` for (C, H, W) inputs (raises :class:`BackendUnavailable` with the reason)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    try:
        return _BUILDERS[name](artifacts, tuple(input_size)).eval()
    except MissingDependency as exc:  # a runtime's package is not installed: the row says which extra brings it
        raise BackendUnavailable(str(exc)) from None
