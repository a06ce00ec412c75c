"""Classify image files with a deployed model: top-k classes with probabilities, bad files reported by name."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from squeezelab.data.folders import is_image_file
from squeezelab.data.images import ImageDecodeError, load_pil_image
from squeezelab.data.transforms import eval_transform
from squeezelab.models import ModelConfig
from squeezelab.models.registry import model_config

from .classes import config_class_names


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: tuple[tuple[str, float], ...]  # (class name, probability), most likely first


@dataclass
class ClassifyResult:
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one message per file that could not be classified


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to the image files inside them (recursively, sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
            if not found:
                raise ValueError(f"{path}: folder holds no image files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def classify_files(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    cfg: ModelConfig | None = None,
    topk: int = 5,
    batch_size: int = 16,
    class_names: Sequence[str] | None = None,
) -> ClassifyResult:
    """Top-``topk`` predictions for each image; unreadable files go to ``failures`` and are skipped.

    ``cfg`` (default ``model.default_cfg``) gives the preprocessing; ``model`` may be a PyTorch model or an
    :class:`~squeezelab.interop.runtime.OnnxModel`.
    """
    cfg = cfg or model_config(model)
    names = tuple(class_names) if class_names is not None else config_class_names(cfg)
    transform = eval_transform(cfg)
    result = ClassifyResult()
    batch: list[tuple[Path, torch.Tensor]] = []
    for item in paths:
        path = Path(item)
        try:
            batch.append((path, transform(load_pil_image(path, cfg.input_size[0]))))
        except (ImageDecodeError, FileNotFoundError) as exc:
            result.failures.append(str(exc))
        if len(batch) == batch_size:
            result.predictions += _predict(model, batch, names, topk)
            batch = []
    if batch:
        result.predictions += _predict(model, batch, names, topk)
    return result


@torch.inference_mode()
def _predict(model: nn.Module, batch: list[tuple[Path, torch.Tensor]], names: Sequence[str], topk: int) -> list[Prediction]:
    logits = model(torch.stack([tensor for _, tensor in batch])).float()
    if logits.shape[1] != len(names):
        raise ValueError(f"the model outputs {logits.shape[1]} classes but has {len(names)} class names")
    probabilities = logits.softmax(1)
    values, indices = probabilities.topk(min(topk, logits.shape[1]), dim=1)
    return [
        Prediction(path, tuple((names[i], float(p)) for p, i in zip(v.tolist(), idx.tolist())))
        for (path, _), v, idx in zip(batch, values, indices)
    ]
