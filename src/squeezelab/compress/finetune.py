"""Fine-tuning compressed models with ``squeezelab.train.fit``: masks and shared centroids are
parametrizations, so ``fit`` trains them like any model (pruned weights stay zero, each centroid gets
the summed gradient of the weights sharing it)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch.nn as nn

from squeezelab.data import DatasetSplits, Loaders
from squeezelab.train import FitResult, TrainConfig, fit

# Fine-tuning starts from trained weights: a small constant-then-decaying learning rate, no warm-up.
FINETUNE_DEFAULTS = {"optimizer": "sgd", "lr": 0.001, "schedule": "cosine", "weight_decay": 5e-4, "warmup_epochs": 0.0}


def finetune_config(epochs: int, base: TrainConfig | None = None, **changes) -> TrainConfig:
    """A fine-tuning :class:`TrainConfig`: ``base`` (or the defaults above) with ``epochs`` and ``changes``."""
    if base is None:
        base = TrainConfig(**FINETUNE_DEFAULTS)
    return base.updated(epochs=epochs, **changes)


def finetune(
    model: nn.Module,
    data: DatasetSplits | Loaders,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """``fit`` the (pruned / weight-shared) model in place; returns fit's result (test metrics included)."""
    run_path = Path(run_dir) if run_dir is not None else None
    resume = resume and run_path is not None and (run_path / "last.pt").is_file()
    return fit(model, config, data, run_path, resume=resume, progress=progress, log=log)
