"""Training checkpoints: a model file (``models/files.py`` format) plus the state needed to resume.

Everything stored is tensors or plain containers, so checkpoints load with ``weights_only=True``. Random
state is not stored: every random stream is re-seeded from ``(seed, epoch)`` at the start of each epoch (see
``squeezelab.data.loaders``), so resuming at an epoch boundary reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.models.files import MODEL_FILE_FORMAT, model_from_record, model_record
from squeezelab.models.registry import create_model
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
    record = safe_torch_load(path)
    if not isinstance(record, dict) or "state_dict" not in record:
        raise ValueError(f"{path}: not a squeezelab checkpoint (no state_dict)")
    return record


def load_weights(model: nn.Module, record: dict[str, Any], source: str) -> None:
    """Load a checkpoint's weights into ``model`` strictly, with a one-line error naming the file."""
    try:
        model.load_state_dict(record["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit the model: {str(exc).splitlines()[0]}") from None


def load_trained_model(path: str | Path, model_name: str | None = None, num_classes: int | None = None) -> nn.Module:
    """A model from a squeezelab model file or checkpoint, or from a bare ``state_dict`` file and ``model_name``.

    Model files carry their architecture; a bare ``state_dict`` (e.g. torchvision's weights) needs the
    registered ``model_name`` (and ``num_classes`` if it differs from the model's default).
    """
    return trained_model_from_record(safe_torch_load(path), str(path), model_name, num_classes)


def trained_model_from_record(
    record: Any, path: str, model_name: str | None = None, num_classes: int | None = None
) -> nn.Module:
    """:func:`load_trained_model` for an already loaded file (``path`` names it in errors)."""
    if isinstance(record, dict) and record.get("format") == MODEL_FILE_FORMAT:
        spec_name = record["model_spec"]["name"]
        if model_name is not None and model_name != spec_name:
            raise ValueError(f"{path}: holds a {spec_name!r} model, not {model_name!r}")
        return model_from_record(record, str(path))
    state_dict = record.get("state_dict", record) if isinstance(record, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: neither a squeezelab model file nor a state_dict")
    if model_name is None:
        raise ValueError(f"{path}: holds bare weights without an architecture; name the model (e.g. squeezenet1_1)")
    model = create_model(model_name, num_classes=num_classes)
    load_weights(model, {"state_dict": state_dict}, str(path))
    return model


def training_config_of(path: str | Path) -> TrainConfig | None:
    """The :class:`TrainConfig` a ``squeezelab train`` checkpoint (``best.pt``, ``last.pt``) was trained with;
    None for files that record none (model files, bare state dicts)."""
    record = safe_torch_load(path)
    config = record.get("config") if isinstance(record, dict) else None
    return TrainConfig.from_dict(config, str(path)) if isinstance(config, dict) else None
