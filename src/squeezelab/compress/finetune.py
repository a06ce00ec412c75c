"""Fine-tuning compressed models: with labels through ``squeezelab.train.fit`` (masks and shared centroids
are parametrizations, so ``fit`` trains them like any model: pruned weights stay zero, each centroid gets
the summed gradient of the weights sharing it), without labels by distillation from the original model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from squeezelab.data import DatasetSplits, Loaders, build_datasets, dataset_options_from_config
from squeezelab.models.registry import model_config
from squeezelab.train import FitResult, TrainConfig, fit

from .sensitivity import predict
from .stages import has_checkpoint

# Fine-tuning starts from trained weights: a small constant-then-decaying learning rate, no warm-up.
FINETUNE_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "lr": 0.001, "schedule": "cosine", "weight_decay": 5e-4, "warmup_epochs": 0.0}


# What fine-tuning takes over from the dense model's own training run (Han et al. retrain with the original
# settings but the learning rate): its validation split, so that no image the dense model learned from picks a
# stage's best epoch or scores a sensitivity sweep, and its data and loss regularisation.
INHERITED = ("val_fraction", "seed", "augment", "cutout", "label_smoothing")


def finetune_config(
    epochs: int, base: TrainConfig | None = None, *, training: TrainConfig | None = None, **changes
) -> TrainConfig:
    """A fine-tuning :class:`TrainConfig`: ``base`` (or the defaults above) with ``epochs``, the data split,
    augmentation and label smoothing of the dense model's ``training`` config, and ``changes`` (None values
    ignored)."""
    if base is None:
        base = TrainConfig(**FINETUNE_DEFAULTS)
    inherited = {name: getattr(training, name) for name in INHERITED} if training is not None else {}
    return base.updated(epochs=epochs, **{**inherited, **{k: v for k, v in changes.items() if v is not None}})


def inherited_summary(training: TrainConfig) -> str:
    """``val_fraction 0.05, seed 0, ...``: what fine-tuning takes over from ``training``, for logs."""
    return ", ".join(f"{name} {getattr(training, name)}" for name in INHERITED)


def finetune_data(
    dataset: str, root: str | Path | None, model: nn.Module, config: TrainConfig, *, limit: int | None = None, progress: bool = True
) -> DatasetSplits:
    """``dataset`` preprocessed as ``model`` expects, split and augmented as the fine-tuning ``config`` says
    (validation fraction and seed, augmentation, Cutout)."""
    return build_datasets(
        dataset, root, limit=limit, progress=progress, val_fraction=config.val_fraction, seed=config.seed,
        augment=config.augment, cutout=config.cutout, **dataset_options_from_config(model_config(model)),
    )  # fmt: skip


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

    With ``resume``, training continues from the checkpoint in ``run_dir`` if it holds one. With
    ``config.distill`` > 0, ``teacher`` (typically the dense model before compression) adds its soft targets
    to the labels."""
    run_path = Path(run_dir) if run_dir is not None else None
    resume = resume and has_checkpoint(run_path)
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
