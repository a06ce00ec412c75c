"""Fine-tuning compressed models: with labels through ``squeezelab.train.fit`` (masks and shared centroids
are parametrizations, so ``fit`` trains them like any model: pruned weights stay zero, each centroid gets
the summed gradient of the weights sharing it), without labels by distillation from the original model."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from squeezelab.data import DatasetSplits, Loaders
from squeezelab.train import FitResult, TrainConfig, fit

from .sensitivity import predict

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
    teacher: nn.Module | None = None,
) -> FitResult:
    """``fit`` the (pruned / weight-shared) model in place; returns fit's result (test metrics included).

    With ``config.distill`` > 0, ``teacher`` (typically the dense model before compression) adds its soft
    targets to the labels."""
    run_path = Path(run_dir) if run_dir is not None else None
    resume = resume and run_path is not None and (run_path / "last.pt").is_file()
    hint = f"rerun the same command to resume from the checkpoints in {run_path.parent}" if run_path else None
    return fit(model, config, data, run_path, resume=resume, progress=progress, log=log, teacher=teacher, resume_hint=hint)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    steps: int,
    *,
    lr: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``student`` (e.g. its shared centroids and biases) to match ``teacher``'s outputs on
    unlabelled ``images`` (normalised tensors): Adam on the KL divergence, ``steps`` batches.

    ``fit`` trains on labels; this is the label-free counterpart, for when only unlabelled images of
    the right kind are at hand. Both models run in eval mode (no dropout, batch-norm statistics kept).
    Returns the loss of every step.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"need steps >= 1 and batch_size >= 1, got {steps}, {batch_size}")
    device = next(student.parameters()).device
    targets = predict(teacher, images).log_softmax(1)
    parameters = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    was_training = student.training
    student.eval()
    losses = []
    try:
        for _ in tqdm(range(steps), desc="distill", unit="step", disable=not progress):
            batch = torch.randint(len(images), (batch_size,), generator=generator)
            logits = student(images[batch].to(device, torch.float32))
            loss = F.kl_div(logits.float().log_softmax(1), targets[batch].to(device), log_target=True, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        student.train(was_training)
    return losses
