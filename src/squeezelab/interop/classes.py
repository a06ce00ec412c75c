"""Class names: ImageNet-1k names and WordNet ids, and the names recorded in a model's config."""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

from squeezelab.data.folders import read_class_table, torchvision_imagenet_categories
from squeezelab.models import ModelConfig

IMAGENET_NUM_CLASSES = 1000


def _imagenet_table(path: str | os.PathLike) -> list[tuple[str, str]]:
    table = read_class_table(Path(path))
    if len(table) != IMAGENET_NUM_CLASSES:
        raise ValueError(f"{path}: {len(table)} classes, expected the {IMAGENET_NUM_CLASSES} of ImageNet-1k")
    return table


def imagenet_class_names(path: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names from ``path`` (an ``index<TAB>wnid<TAB>name`` file) or torchvision's list."""
    if path is None:
        return tuple(torchvision_imagenet_categories())
    return tuple(name for _, name in _imagenet_table(path))


def imagenet_wnids(path: str | os.PathLike) -> tuple[str, ...]:
    """The WordNet ids (``n01440764`` ...) of the 1000 classes, in class-index order."""
    return tuple(wnid for wnid, _ in _imagenet_table(path))


def config_class_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The config's class names; ImageNet names for unnamed 1000-way models; else ``class 0``, ``class 1`` ..."""
    if cfg.class_names:
        return tuple(cfg.class_names)
    if cfg.num_classes == IMAGENET_NUM_CLASSES:
        return imagenet_class_names()
    return tuple(f"class {i}" for i in range(cfg.num_classes))


def model_class_names(model: nn.Module) -> tuple[str, ...]:
    """:func:`config_class_names` of ``model.default_cfg``."""
    cfg = getattr(model, "default_cfg", None)
    if cfg is None:
        raise ValueError("model has no default_cfg: build it with squeezelab.create_model or load a model file")
    return config_class_names(cfg)
