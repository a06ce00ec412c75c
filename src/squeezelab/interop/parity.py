"""Parity of an exported model with PyTorch: logits on random images, top-1 agreement on real ones.

Every export format is checked the same way, against the PyTorch model it came from: the largest logit
difference on a batch of random images normalised as the model's config says (inputs and logits at the scale
real images give), and, on real images, how often both pick the same class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from squeezelab.data.folders import FileImages, ImageList
from squeezelab.data.transforms import eval_transform
from squeezelab.models import ModelConfig

from .onnx_export import random_images


@dataclass(frozen=True)
class Agreement:
    images: int
    top1_agreement: float  # percent of images on which both models pick the same class
    max_abs_difference: float  # largest logit difference on these images


def logit_difference(reference: nn.Module, candidate: nn.Module, cfg: ModelConfig, batch_size: int = 2, seed: int = 0) -> float:
    """Largest absolute logit difference between two models on ``batch_size`` random images."""
    batch = random_images(cfg, batch_size, seed)
    with torch.inference_mode():
        expected = reference.eval()(batch).float().numpy()
        found = candidate(batch).float().numpy()
    return float(np.abs(found - expected).max())


@torch.inference_mode()
def top1_agreement(
    reference: nn.Module, candidate: nn.Module, images: Sequence[str | os.PathLike], cfg: ModelConfig, batch_size: int = 25
) -> Agreement:
    """How often two models agree on the top class of real image files (preprocessed as ``cfg`` says)."""
    if not images:
        raise ValueError("no images to compare on")
    files = ImageList(tuple(Path(p) for p in images), (0,) * len(images), ())
    data = FileImages(files, eval_transform(cfg), cfg.input_size[0])
    agree, largest = 0, 0.0
    for batch, _ in torch.utils.data.DataLoader(data, batch_size=batch_size):
        expected = reference.eval()(batch).float()
        found = candidate(batch).float()
        agree += int((expected.argmax(1) == found.argmax(1)).sum())
        largest = max(largest, float((expected - found).abs().max()))
    return Agreement(len(images), 100.0 * agree / len(images), largest)
