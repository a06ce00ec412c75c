"""Dense model files: architecture spec + metadata + ``state_dict``, loadable without running code.

A model file is a plain dict saved with ``torch.save`` and read with ``weights_only=True``::

    {"format": "squeezelab-model", "version": 1, "model_spec": {"name": ..., "kwargs": {...}},
     "default_cfg": {...}, "state_dict": {...}, ...}

Training checkpoints add their own keys (optimizer, epoch, ...) to the same dict, so
:func:`load_model` reads a training checkpoint as well as an exported model.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from squeezelab.utils.files import atomic_torch_save, safe_torch_load

from .registry import ModelConfig, create_model, set_model_config

MODEL_FILE_FORMAT = "squeezelab-model"
MODEL_FILE_VERSION = 1


def model_record(model: nn.Module, half: bool = False) -> dict[str, Any]:
    """The parts of a model file that describe and hold the model (spec, metadata, weights).

    ``half`` stores floating-point tensors as float16 (half the bytes; loading converts them back to the
    model's own dtype), for weights shipped with the package.
    """
    spec = getattr(model, "model_spec", None)
    if spec is None:
        raise ValueError("model has no model_spec: build it with squeezelab.create_model")
    cfg = getattr(model, "default_cfg", None)
    return {
        "format": MODEL_FILE_FORMAT,
        "version": MODEL_FILE_VERSION,
        "model_spec": spec,
        "default_cfg": cfg.to_dict() if cfg is not None else None,
        "state_dict": {k: _stored(v.detach().cpu(), half) for k, v in model.state_dict().items()},
    }


def _stored(tensor: torch.Tensor, half: bool) -> torch.Tensor:
    return tensor.half() if half and tensor.is_floating_point() else tensor


def save_model(model: nn.Module, path: str | os.PathLike, *, half: bool = False, **extra: Any) -> None:
    """Write ``model`` (and JSON-like ``extra`` entries) atomically to ``path``; ``half``: float16 weights."""
    atomic_torch_save({**model_record(model, half), **extra}, path)


def model_from_record(record: dict[str, Any], source: str = "model file") -> nn.Module:
    """Rebuild the architecture from a record's spec and load its weights strictly."""
    if not isinstance(record, dict) or record.get("format") != MODEL_FILE_FORMAT:
        raise ValueError(f"{source}: not a squeezelab model file (no '{MODEL_FILE_FORMAT}' header)")
    if record.get("version", 0) > MODEL_FILE_VERSION:
        raise ValueError(f"{source}: model file version {record['version']} is newer than this squeezelab reads")
    spec = record["model_spec"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit {spec['name']}: {str(exc).splitlines()[0]}") from None
    if record.get("default_cfg"):
        set_model_config(model, ModelConfig.from_dict(record["default_cfg"]))
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a model file or training checkpoint written by squeezelab (never executes code)."""
    return model_from_record(safe_torch_load(path), source=str(path))
