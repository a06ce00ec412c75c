"""Optimisers and learning-rate schedules from a :class:`TrainConfig`.

Schedules advance once per optimizer step. All but one-cycle are a ``LambdaLR`` multiplier with optional
linear warm-up (the pattern of ``transformers.get_cosine_schedule_with_warmup``); one-cycle is torch's
``OneCycleLR`` (which has its own warm-up and cycles momentum).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from squeezelab.models.transfer import classifier_parameters

from .config import TrainConfig
from .muon import Muon

_NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def parameter_groups(model: nn.Module, weight_decay: float, lr: float, norm_lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters in three groups: matrices and kernels (more than one dimension) with weight
    decay; normalisation-layer parameters at ``lr * norm_lr_scale`` without weight decay; other biases (1-D)
    without weight decay.

    Decided by shape and module type, not by name, so it works for any module, including
    ``torch.nn.utils.parametrize`` ones.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORM_LAYERS) for p in m.parameters(recurse=False)}
    decay = [p for p in params if p.ndim > 1]
    norms = [p for p in params if p.ndim <= 1 and id(p) in norm_ids]
    biases = [p for p in params if p.ndim <= 1 and id(p) not in norm_ids]
    groups = (
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": norms, "weight_decay": 0.0, "lr": lr * norm_lr_scale},
        {"params": biases, "weight_decay": 0.0, "lr": lr},
    )
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> Optimizer:
    groups = parameter_groups(model, config.weight_decay, config.lr, config.norm_lr_scale)
    if config.optimizer == "muon":
        groups = muon_groups(groups, {"lr": config.muon_lr, "momentum": config.muon_momentum})
    if config.backbone_lr_scale != 1.0:
        groups = scaled_backbone(groups, {id(p) for p in classifier_parameters(model)}, config.backbone_lr_scale)
    if config.optimizer == "muon":
        return Muon(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_norm=config.muon_weight_norm)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=_betas(config))
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=_betas(config))
    return torch.optim.RMSprop(groups, lr=config.lr, momentum=config.momentum)


def muon_groups(groups: list[dict], filter_settings: dict) -> list[dict]:
    """``groups`` with the convolution filters (4-D) split off into a Muon group with ``filter_settings``
    (its lr and momentum); linear layers stay with SGD (Muon's authors keep classifier heads out of it)."""
    filters = [p for g in groups for p in g["params"] if p.ndim == 4]
    if not filters:
        raise ValueError("optimizer muon: the model has no trainable convolution filters")
    filter_ids = {id(p) for p in filters}
    decay = next(g for g in groups if any(id(p) in filter_ids for p in g["params"]))
    others = [{**g, "params": [p for p in g["params"] if id(p) not in filter_ids]} for g in groups]
    return [{**decay, **filter_settings, "params": filters, "muon": True}] + [g for g in others if g["params"]]


def scaled_backbone(groups: list[dict], classifier_ids: set[int], scale: float) -> list[dict]:
    """``groups`` with each split in two: its classifier parameters as they are, the rest (the backbone, when
    fine-tuning pretrained weights) at ``lr * scale``."""
    split = []
    for group in groups:
        backbone = [p for p in group["params"] if id(p) not in classifier_ids]
        head = [p for p in group["params"] if id(p) in classifier_ids]
        split += [{**group, "params": backbone, "lr": group["lr"] * scale}] if backbone else []
        split += [{**group, "params": head}] if head else []
    return split


def _betas(config: TrainConfig) -> tuple[float, float]:
    beta1, beta2 = config.betas
    return beta1, beta2


def optimizer_steps_per_epoch(batches_per_epoch: int, accumulate: int) -> int:
    return max(1, math.ceil(batches_per_epoch / accumulate))


def build_scheduler(optimizer: Optimizer, config: TrainConfig, steps_per_epoch: int) -> LRScheduler:
    """The configured schedule over ``config.epochs * steps_per_epoch`` optimizer steps."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        if config.onecycle_pct_start * total < 2:  # OneCycleLR would divide by a zero-length warm-up phase
            raise ValueError(
                f"schedule onecycle: {total} optimizer steps leave no warm-up at onecycle_pct_start="
                f"{config.onecycle_pct_start}; train for more steps or pick another schedule"
            )
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=config.onecycle_pct_start,
            # Cycling momentum (or Adam's beta1) is part of one-cycle, but must not add momentum where none was set.
            cycle_momentum=config.optimizer in ("adam", "adamw") or config.momentum > 0,
        )
    return LambdaLR(optimizer, partial(lr_multiplier, config=config, steps_per_epoch=steps_per_epoch))


def lr_multiplier(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Factor applied to the peak ``lr`` at optimizer step ``step`` (0-based)."""
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return config.warmup_start + (1.0 - config.warmup_start) * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    epoch = step // steps_per_epoch
    floor = config.min_lr_ratio
    if config.schedule == "step":
        return config.gamma ** (epoch // config.step_size)
    if config.schedule == "multistep":
        return config.gamma ** sum(epoch >= m for m in config.milestones)
    if config.schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.schedule == "poly":
        return floor + (1.0 - floor) * (1.0 - progress) ** config.power
    return 1.0
