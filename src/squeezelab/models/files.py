"""Dense model files: architecture spec + metadata + ``state_dict``, loadable without running code.

A model file is a plain dict saved with ``torch.save`` and read with ``weights_only=True``::

    {"format": "squeezelab-model", "version": 1, "model_spec": {"name": ..., "kwargs": {...}},
     "default_cfg": {...}, "state_dict": {...}, ...}

Training checkpoints add their own keys (optimizer, epoch, ...) to the same dict, so
:func:`model_from_record` reads a training checkpoint as well as an exported model (``squeezelab.load_model``
reads these and every other format). The writer adds a SHA-256
digest of the record (``"sha256"``), which loading verifies and removes (see ``squeezelab.utils.digest``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import atomic_torch_save

from .registry import ModelConfig, create_model, model_skeleton, set_model_config

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
    """Rebuild the architecture from a record's spec and load its weights strictly.

    The record comes from a file, so it is checked before anything is built: its header, its spec (a registered
    model with sane arguments, built first on the meta device, see :func:`~.registry.model_skeleton`), the names
    and shapes of its weights against that skeleton, their values (finite) and its config. A bad record raises
    :class:`~squeezelab.utils.errors.DamagedFileError`, one line naming ``source``.
    """
    if not isinstance(record, dict) or record.get("format") != MODEL_FILE_FORMAT:
        raise DamagedFileError(f"{source}: not a squeezelab model file (no '{MODEL_FILE_FORMAT}' header)")
    version = record.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise DamagedFileError(f"{source}: invalid model file version {str(version)[:40]!r}")
    if version > MODEL_FILE_VERSION:
        raise DamagedFileError(f"{source}: model file version {version} is newer than this squeezelab reads")
    state = record.get("state_dict")
    try:
        skeleton = model_skeleton(record.get("model_spec"))
        cfg = ModelConfig.from_dict(record["default_cfg"]) if record.get("default_cfg") else None
    except ValueError as exc:
        raise DamagedFileError(f"{source}: {first_line(exc)}") from None
    spec = record["model_spec"]  # checked by model_skeleton
    name = spec["name"]
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) and value.layout == torch.strided for key, value in state.items()
    ):  # sparse tensors, which a crafted file can hold, have no place in a model's state
        raise DamagedFileError(f"{source}: its state_dict is not a mapping of names to dense tensors")
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    misfits = (
        [f"{key} is missing" for key in sorted(expected.keys() - state.keys())]
        + [f"unexpected {key}" for key in sorted(state.keys() - expected.keys())]
        + [f"{key} has shape {tuple(state[key].shape)}, not {expected[key]}"
           for key in sorted(expected.keys() & state.keys()) if tuple(state[key].shape) != expected[key]]
    )  # fmt: skip
    if misfits:
        more = f" (and {len(misfits) - 1} more)" if len(misfits) > 1 else ""
        raise DamagedFileError(f"{source}: weights do not fit {name}: {misfits[0]}{more}")
    # NaN or infinite weights (a diverged run, or damage) would only give NaN outputs: refused with their name
    non_finite = next((key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()), None)
    if non_finite is not None:
        raise DamagedFileError(f"{source}: {non_finite} holds non-finite values")
    model = create_model(name, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # an exotic tensor a crafted file holds (sparse, quantized, ...)
        raise DamagedFileError(f"{source}: weights do not fit {name}: {first_line(exc)}") from None
    if cfg is not None:
        set_model_config(model, cfg)
    return model
