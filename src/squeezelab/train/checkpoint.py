"""Training checkpoints: a model file (``models/files.py`` format) plus the state needed to resume.

Everything stored is tensors or plain containers, so checkpoints load with ``weights_only=True``. Random
state is not stored: every random stream is re-seeded from ``(seed, epoch)`` at the start of each epoch (see
``squeezelab.data.loaders``), so resuming at an epoch boundary reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from squeezelab.models.files import model_record
from squeezelab.utils.files import atomic_torch_save, safe_torch_load

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
