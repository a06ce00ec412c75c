"""ONNX export with a dynamic batch axis, the model's metadata embedded, and onnxruntime parity checks.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: it is still supported by torch 2.x,
needs no extra package (the dynamo exporter needs ``onnxscript``), exports these CNNs in about a second and
gives graphs that onnxruntime's quantizer handles well.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from squeezelab.models import ModelConfig
from squeezelab.utils.files import atomic_write_bytes
from squeezelab.utils.optional import require

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_KEYS = ("squeezelab.default_cfg", "squeezelab.model_spec", "squeezelab.source_sha256")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
    dynamic_size: bool = False,
) -> Path:
    """Write ``model`` as ONNX (dynamic batch, fixed C x H x W) atomically; returns ``path``.

    ``input_size`` (C, H, W) defaults to the model's ``default_cfg``; ``dynamic_size`` also leaves H and W
    free (for models whose head pools globally). The preprocessing config and model spec are stored as
    ONNX metadata, so a runtime can preprocess images from the ``.onnx`` file alone.
    """
    onnx = require("onnx")

    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    cfg = _config_for(model, input_size)
    example = torch.zeros(1, *cfg.input_size)
    model = model.eval()
    buffer = _export_to_bytes(model, example, opset, dynamic_size)
    proto = onnx.load_from_string(buffer)
    entries = {
        "squeezelab.default_cfg": json.dumps(cfg.to_dict()),
        "squeezelab.model_spec": json.dumps(getattr(model, "model_spec", None)),
        **(metadata or {}),
    }
    set_metadata(proto, entries)
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def _config_for(model: nn.Module, input_size: Sequence[int] | None) -> ModelConfig:
    cfg = getattr(model, "default_cfg", None) or ModelConfig()
    if input_size is None:
        return cfg
    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        size = (cfg.input_size[0], *size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input size must be (C, H, W) or (H, W) of positive ints, got {tuple(input_size)}")
    return replace(cfg, input_size=size)


def _export_to_bytes(model: nn.Module, example: torch.Tensor, opset: int, dynamic_size: bool) -> bytes:
    import io

    input_axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated (see the module docstring for why it is used anyway).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects; the stubs say paths only
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: input_axes, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    return buffer.getvalue()


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Add or replace ``metadata_props`` entries of an ONNX ``ModelProto``."""
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (read without loading the weights into onnxruntime)."""
    onnx = require("onnx")

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def onnx_config(path: str | os.PathLike) -> ModelConfig:
    """The preprocessing config stored by :func:`export_onnx` (errors name the file)."""
    return metadata_config(onnx_metadata(path), path)


def metadata_config(metadata: dict[str, str], path: str | os.PathLike) -> ModelConfig:
    """The preprocessing config in squeezelab metadata (ONNX ``metadata_props``, OpenVINO ``rt_info``,
    ExecuTorch constant method: every exported format carries the same entries)."""
    text = metadata.get("squeezelab.default_cfg")
    if text is None:
        raise ValueError(f"{path}: file has no squeezelab metadata (export it with squeezelab export)")
    return ModelConfig.from_dict(json.loads(text))


def onnx_parity(
    model: nn.Module, path: str | os.PathLike, batch_size: int = 2, seed: int = 0, threads: int | None = None
) -> float:
    """Max absolute difference between PyTorch and onnxruntime logits on the same batch of random images
    (see :func:`squeezelab.interop.parity.logit_difference`)."""
    from .parity import logit_difference
    from .runtime import OnnxModel

    return logit_difference(model, OnnxModel(path, threads=threads), onnx_config(path), batch_size, seed)


def random_images(cfg: ModelConfig, batch_size: int, seed: int = 0) -> torch.Tensor:
    """A batch of uniform random pixels, normalised as ``cfg`` says (channel order, scale, mean/std)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch_size, *cfg.input_size, generator=generator) * cfg.pixel_scale
    mean = torch.tensor(cfg.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.std).view(1, -1, 1, 1)
    return (pixels - mean) / std
