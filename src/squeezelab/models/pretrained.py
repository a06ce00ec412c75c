"""Pretrained weights shipped inside the package, named with timm-style tags (``<model>.<tag>``).

Each tag names a file in ``squeezelab/models/weights`` (package data, so the wheel carries it and nothing is
downloaded). The files describe themselves: architecture, preprocessing, class names, and a ``provenance``
record (``.pt`` files) or ``pretrained`` metadata (``.sqz``) with the command and seed that made them and
the figures measured on them. This module only knows the names and where the files are; reading them is
``squeezelab.load_model``'s job (``.sqz`` decoding lives in ``squeezelab.compress``).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from .registry import ModelConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PROVENANCE_KEY = "provenance"  # in default_cfg.extra


@dataclass(frozen=True)
class PretrainedWeights:
    """One shipped file: its tag, the file in ``WEIGHTS_DIR``, and what it is in one line."""

    tag: str
    file: str
    summary: str
    licence: str | None = None  # licence file in WEIGHTS_DIR, for weights made by others

    @property
    def architecture(self) -> str:
        return self.tag.split(".", 1)[0]

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


PRETRAINED: dict[str, PretrainedWeights] = {
    entry.tag: entry
    for entry in (
        PretrainedWeights(
            "squeezenet1_0.dc_in1k",
            "squeezenet1_0.dc_in1k.sqz",
            "ImageNet-1k, the Deep Compression release (Han et al. 2016) re-encoded by squeezelab; Caffe BGR 0-255 input",
            licence="LICENCE-deep-compression",
        ),
        PretrainedWeights(
            "squeezenet_fast_cifar.sl_cifar10",
            "squeezenet_fast_cifar.sl_cifar10.pt",
            "CIFAR-10, squeezelab's fast recipe (experiments/train/cifar10_fast.yaml), float16 weights",
        ),
        PretrainedWeights(
            "squeezenet_tiny_cifar.sl_mnist",
            "squeezenet_tiny_cifar.sl_mnist.pt",
            "MNIST, experiments/train/mnist.yaml (the 4-fire tiny SqueezeNet with batch norm, 28x28), float16 weights",
        ),
    )
}


class UnknownPretrainedError(ValueError):
    """A tag that names no shipped weights; the message lists the known ones."""


def list_pretrained(pattern: str = "*") -> list[str]:
    """Tags of the shipped pretrained weights matching a shell-style ``pattern`` (sorted)."""
    return sorted(tag for tag in PRETRAINED if fnmatch.fnmatch(tag, pattern))


def is_pretrained_tag(name: str) -> bool:
    return name in PRETRAINED


def pretrained_weights(tag: str) -> PretrainedWeights:
    """The entry of ``tag``; an unknown tag raises :class:`UnknownPretrainedError` listing the known ones."""
    try:
        return PRETRAINED[tag]
    except KeyError:
        close = difflib.get_close_matches(tag, PRETRAINED, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownPretrainedError(f"unknown pretrained weights {tag!r}; {hint}known: {', '.join(list_pretrained())}") from None


def provenance(model: nn.Module) -> dict[str, Any]:
    """How a model's weights were made and measured, as its file records it in ``default_cfg.extra``:
    ``command``, ``seed``, ``data`` (what the figures were measured on), ``metrics`` (``top1``, ``top5``,
    ``top1_tta`` in percent), ``measured_by`` (the command that measured them). Empty if the file says nothing."""
    cfg = getattr(model, "default_cfg", None)
    record = cfg.extra.get(PROVENANCE_KEY) if isinstance(cfg, ModelConfig) else None
    return record if isinstance(record, dict) else {}
