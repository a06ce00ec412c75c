"""``evaluate``: top-1/top-5 accuracy, loss, per-class accuracy, confusion matrix and throughput of a classifier."""

from __future__ import annotations

import time
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .device import autocast

TTA_MODES = ("none", "mirror", "mirror_translate")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "eval",
    tta: str = "none",
) -> dict[str, Any]:
    """Evaluate any classifier returning ``(N, num_classes)`` logits on ``(images, labels)`` batches.

    Returns ``top1``, ``top5`` and ``loss`` (mean cross-entropy), ``per_class`` accuracy (None for classes
    without images), the ``confusion`` matrix (rows: true class, columns: predicted), ``constant_outputs``
    (classes whose logit was the same for every image: dead output units), ``images``, ``seconds``
    and end-to-end ``images_per_s`` (loading included). Percentages are in [0, 100]. A loader whose
    ``sharded`` attribute is True (a distributed evaluation loader) has its counts summed over processes.
    ``tta`` averages the logits over test-time augmentations (see :func:`tta_logits`). The model's
    train/eval mode is restored afterwards.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    tally = _Tally(device)
    start = time.perf_counter()
    try:
        for images, labels in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = tta_logits(model, images, tta, channels_last)
            tally.add(logits.float(), labels.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    if getattr(loader, "sharded", False):
        tally.all_reduce()
    return tally.summary(time.perf_counter() - start)


def tta_logits(model: nn.Module, images: torch.Tensor, tta: str = "none", channels_last: bool = False) -> torch.Tensor:
    """The model's logits averaged over test-time augmentations (airbench's levels 0-2).

    ``"mirror"``: the image and its mirror image. ``"mirror_translate"``: half of that, plus half the mean over
    the image shifted by one pixel up-left and down-right (reflected borders), each with its mirror image.
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last) if channels_last else x).float()

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (run(x) + run(x.flip(-1)))

    if tta == "none":
        return run(images)
    if images.dim() != 4 or min(images.shape[-2:]) < 2:
        raise ValueError(f"tta: needs image batches (N x C x H x W, H and W >= 2), got shape {tuple(images.shape)}")
    if tta == "mirror":
        return mirrored(images)
    h, w = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = (padded[..., 0:h, 0:w], padded[..., 2 : h + 2, 2 : w + 2])
    return 0.5 * mirrored(images) + 0.25 * (mirrored(shifted[0]) + mirrored(shifted[1]))


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class _Tally:
    """Running sums kept on the device (one host sync at the end instead of one per batch)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.confusion: torch.Tensor | None = None
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top5 = torch.zeros((), dtype=torch.int64, device=device)
        # per-class extremes of the logits, sized at the first batch (when the class count is known)
        self.logit_min = torch.empty(0, device=device)
        self.logit_max = torch.empty(0, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if logits.dim() != 2:
            raise ValueError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
        classes = logits.shape[1]
        if self.confusion is None:
            self.confusion = torch.zeros((classes, classes), dtype=torch.int64, device=self.device)
            self.logit_min = torch.full((classes,), float("inf"), device=self.device)
            self.logit_max = torch.full((classes,), float("-inf"), device=self.device)
        if labels.numel() and int(labels.max()) >= classes:
            raise ValueError(f"label {int(labels.max())} is out of range: the model outputs {classes} classes")
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        predicted = logits.argmax(1)
        self.confusion += torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)
        top = logits.topk(min(5, classes), dim=1).indices
        self.top5 += (top == labels[:, None]).any(1).sum()
        if len(logits):
            self.logit_min = torch.minimum(self.logit_min, logits.min(0).values)
            self.logit_max = torch.maximum(self.logit_max, logits.max(0).values)

    def all_reduce(self) -> None:
        if self.confusion is None:
            raise ValueError("evaluation loader is empty on this process")
        for tensor in (self.confusion, self.loss_sum, self.top5):
            dist.all_reduce(tensor)
        dist.all_reduce(self.logit_min, op=dist.ReduceOp.MIN)
        dist.all_reduce(self.logit_max, op=dist.ReduceOp.MAX)

    def summary(self, seconds: float) -> dict[str, Any]:
        if self.confusion is None:
            raise ValueError("evaluation loader gave no batches")
        confusion = self.confusion.cpu()
        images = int(confusion.sum())
        per_class_total = confusion.sum(1)
        per_class = [
            100.0 * int(confusion[c, c]) / int(total) if int(total) else None for c, total in enumerate(per_class_total)
        ]
        return {
            "top1": 100.0 * int(confusion.diagonal().sum()) / images,
            "top5": 100.0 * int(self.top5) / images,
            "loss": float(self.loss_sum) / images,
            "per_class": per_class,
            "confusion": confusion.tolist(),
            "constant_outputs": [] if images < 2 else torch.nonzero(self.logit_min == self.logit_max).flatten().tolist(),
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else float("inf"),
        }
