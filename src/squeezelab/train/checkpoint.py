"""Training checkpoints: a model file (``models/files.py`` format) plus the state needed to resume.

Everything stored is tensors or plain containers, so checkpoints load with ``weights_only=True``; the
writer stores a digest of it that loading verifies (``squeezelab.utils.files``). Random
state is not stored: every random stream is re-seeded from ``(seed, epoch)`` at the start of each epoch (see
``squeezelab.data.loaders``), so resuming at an epoch boundary reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from squeezelab.models.files import model_record
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import atomic_torch_save, safe_torch_load

from .config import TrainConfig

STATE_FORMAT = "squeezelab-state"
LAST = "last.pt"
BEST = "best.pt"


def weights_record(model: nn.Module) -> dict[str, Any]:
    """A model file record for registry models; for any other module, its ``state_dict`` under its own format."""
    if getattr(model, "model_spec", None) is not None:
        return model_record(model)
    return {"format": STATE_FORMAT, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def save_checkpoint(path: Path, model: nn.Module, **state: Any) -> None:
    atomic_torch_save({**weights_record(model), **state}, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's record, checked to hold a ``state_dict`` of tensors (its other entries: :func:`resume_state`)."""
    record = safe_torch_load(path)
    if not isinstance(record, dict) or "state_dict" not in record:
        raise DamagedFileError(f"{path}: not a squeezelab checkpoint (no state_dict)")
    _check_field(record, "state_dict", _is_tensor_mapping, "a mapping of names to tensors", path)
    return record


def _is_tensor_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


# What resuming reads besides the weights: field -> (check, what it must be, required)
_RESUME_FIELDS: dict[str, tuple[Callable[[Any], bool], str, bool]] = {
    "optimizer": (lambda v: isinstance(v, dict), "a mapping", True),
    "scheduler": (lambda v: isinstance(v, dict), "a mapping", True),
    "scaler": (lambda v: isinstance(v, dict), "a mapping", True),
    "epoch": (_is_count, "a whole number >= 0", True),
    "history": (lambda v: isinstance(v, list) and all(isinstance(row, dict) for row in v), "a list of mappings", True),
    "best_epoch": (_is_count, "a whole number >= 0", True),
    "best_val_top1": (_is_number_or_none, "a number or null", True),
    "seconds": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number", False),
    "config": (lambda v: isinstance(v, dict), "a mapping", False),
    "training_weights": (_is_tensor_mapping, "a mapping of names to tensors", False),
    "weight_average": (lambda v: isinstance(v, dict), "a mapping", False),
}


def resume_state(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record`` (from :func:`load_checkpoint`), checked to hold what resuming a run reads, of the right kinds."""
    for name, (check, expected, required) in _RESUME_FIELDS.items():
        if name in record or required:
            _check_field(record, name, check, expected, path)
    return record


def _check_field(record: dict[str, Any], name: str, check: Callable[[Any], bool], expected: str, path: Path) -> None:
    if name not in record:
        raise DamagedFileError(f"{path}: not a resumable checkpoint: no {name!r}")
    if not check(record[name]):
        raise DamagedFileError(f"{path}: {name!r} must be {expected}, got {type(record[name]).__name__}")


def load_weights(model: nn.Module, record: dict[str, Any], source: str) -> None:
    """Load a checkpoint's weights into ``model`` strictly, with a one-line error naming the file."""
    try:
        model.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit the model: {first_line(exc)}") from None


def training_config_of(path: str | Path) -> TrainConfig | None:
    """The :class:`TrainConfig` a ``squeezelab train`` checkpoint (``best.pt``, ``last.pt``) was trained with;
    None for files that record none (model files, bare state dicts)."""
    record = safe_torch_load(path)
    config = record.get("config") if isinstance(record, dict) else None
    if config is None:
        return None
    if not isinstance(config, dict):
        raise DamagedFileError(f"{path}: 'config' must be a mapping of settings, got {type(config).__name__}")
    try:
        return TrainConfig.from_dict(config, str(path))
    except ValueError as exc:  # the file's own record is wrong, not a setting the user gave
        raise DamagedFileError(first_line(exc)) from None
