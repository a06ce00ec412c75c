"""ncnn (Tencent's mobile runtime) as a benchmark peer: conversion with pnnx and an ``nn.Module`` runtime.

pnnx traces the model with TorchScript and writes ``.ncnn.param`` / ``.ncnn.bin``. The runtime keeps ncnn's
default options, as ncnn's own benchmark tables do: on x86 CPUs with F16C that stores weights and activations
as float16, which moves logits by about 1e-3 (the benchmark reports accuracy next to speed). ncnn takes one
image per call, so a batch is run image by image. Its int8 path needs the ``ncnn2table``/``ncnn2int8`` tools,
which the ``ncnn`` and ``pnnx`` wheels do not ship.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from squeezelab.models.registry import model_config
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.optional import require

from .executorch_pte import ConversionError, model_name

INT8_UNAVAILABLE = "ncnn int8 needs the ncnn2table/ncnn2int8 tools, which the ncnn and pnnx wheels do not ship"


def export_ncnn(model: nn.Module, out_dir: str | os.PathLike, input_size: Sequence[int] | None = None) -> Path:
    """Convert ``model`` with pnnx; returns the ``.ncnn.param`` path (its ``.ncnn.bin`` is beside it).

    pnnx writes several intermediate files next to the TorchScript file it is given, so it works in a
    temporary folder and only the two ncnn files are kept.
    """
    pnnx = require("pnnx")

    size = tuple(input_size or model_config(model).input_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squeezelab-pnnx-") as tmp:
        traced = Path(tmp) / "model.pt"
        try:
            pnnx.export(model.eval(), str(traced), (torch.zeros(1, *size),))
        except Exception as exc:  # pnnx fails with RuntimeError or a non-zero exit of its converter binary
            raise ConversionError(f"ncnn (pnnx) cannot convert {model_name(model)}: {first_line(exc)}") from None
        param = out / "model.ncnn.param"
        for suffix in (".ncnn.bin", ".ncnn.param"):
            source = traced.with_suffix(suffix)
            if not source.is_file():
                raise ConversionError(f"ncnn (pnnx) cannot convert {model_name(model)}: pnnx wrote no {suffix} file")
            os.replace(source, out / f"model{suffix}")
    return param


class NcnnModel(nn.Module):
    """Runs an ncnn ``.param``/``.bin`` pair written by :func:`export_ncnn` (CPU, inference only)."""

    def __init__(self, param_path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        ncnn = require("ncnn")

        self.path = str(param_path)
        weights = Path(param_path).with_suffix(".bin")
        self.net = ncnn.Net()
        if threads is not None:
            self.net.opt.num_threads = threads
        if self.net.load_param(str(param_path)) != 0 or self.net.load_model(str(weights)) != 0:
            raise DamagedFileError(f"{param_path}: ncnn cannot load it (or its {weights.name})")
        self.file_bytes = Path(param_path).stat().st_size + weights.stat().st_size
        self.input_name = self.net.input_names()[0]
        self.output_name = self.net.output_names()[0]
        self._mat = ncnn.Mat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(np.stack([self._one(image) for image in images]))

    def _one(self, image: np.ndarray) -> np.ndarray:
        extractor = self.net.create_extractor()
        # ncnn.Mat wraps the numpy buffer without copying: ``image`` must stay alive until extraction is done.
        extractor.input(self.input_name, self._mat(image))
        status, output = extractor.extract(self.output_name)
        if status != 0:
            raise RuntimeError(f"{self.path}: ncnn inference failed (status {status})")
        return np.array(output).reshape(-1).copy()
