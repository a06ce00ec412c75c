"""Batched augmentation and normalisation of uint8 image batches, run as the ``DataLoader``'s ``collate_fn``.

Every data set yields uint8 ``C x H x W`` images; the collate function turns a batch into normalised floats
and, for training on in-memory data, applies random crop-with-padding and horizontal flip to the whole batch
with a few tensor operations. Its random generator is re-seeded every epoch (see ``EpochLoader.set_epoch``),
so augmentation is reproducible and a resumed run sees the same crops as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import get_worker_info

from squeezelab.models.registry import ModelConfig


@dataclass(frozen=True)
class Normalization:
    """How pixels reach the model: ``(pixel / 255 * pixel_scale [RGB->BGR] - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    pixel_scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} have different lengths")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "Normalization":
        return cls(tuple(cfg.mean), tuple(cfg.std), cfg.channel_order, cfg.pixel_scale)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != len(self.mean):
            raise ValueError(f"images have {images.shape[1]} channels but the normalisation has {len(self.mean)}")
        x = images.float()
        if self.channel_order == "BGR":
            x = x.flip(1)
        # One fused multiply-add per pixel: (x * s/255 - mean) / std == x * a + b.
        scale = torch.tensor(self.std).mul(255.0 / self.pixel_scale).reciprocal().view(1, -1, 1, 1)
        shift = torch.tensor(self.mean).div(torch.tensor(self.std)).neg().view(1, -1, 1, 1)
        return torch.addcmul(shift, x, scale)


@dataclass(frozen=True)
class BatchAugment:
    """Random crop after zero padding by ``padding`` pixels, horizontal flip with probability 0.5, and
    Cutout (DeVries & Taylor 2017) of a ``cutout`` x ``cutout`` square when ``cutout`` > 0."""

    padding: int = 4
    flip: bool = True
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0 pixels, got {self.cutout}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.padding:
            images = random_crop(images, self.padding, generator)
        if self.flip:
            flip = torch.rand(len(images), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return images

    def erase(self, normalized: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Cutout on normalised images, so the square holds the data set's mean (0), not black."""
        return cutout(normalized, self.cutout, generator) if self.cutout else normalized


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each image with a ``size`` x ``size`` square set to 0, centred on a uniformly drawn pixel and clipped
    at the borders (so squares near an edge are smaller, as in the original Cutout)."""
    n, _, h, w = images.shape
    top = torch.randint(0, h, (n, 1, 1), generator=generator) - size // 2
    left = torch.randint(0, w, (n, 1, 1), generator=generator) - size // 2
    rows = torch.arange(h).view(1, h, 1) - top
    cols = torch.arange(w).view(1, 1, w) - left
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by an independent random offset in [-padding, padding], zero-filled (one gather)."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    rows = (dy + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w)).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


class BatchCollate:
    """``collate_fn``: stack uint8 samples (or take a pre-gathered batch), augment, normalise."""

    def __init__(self, normalization: Normalization, augment: BatchAugment | None = None) -> None:
        self.normalization = normalization
        self.augment = augment
        self.generator = torch.Generator()
        self._worker_seed: int | None = None

    def set_seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = _stack(batch)
        if self.augment is None:
            return self.normalization(images), targets
        generator = self._generator()
        return self.augment.erase(self.normalization(self.augment(images, generator)), generator), targets

    def _generator(self) -> torch.Generator:
        # In a worker process every worker holds a copy of the same generator; seed it from the worker's own
        # seed (derived by DataLoader from the epoch's seed and the worker id) so workers do not repeat crops.
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self.generator.manual_seed(info.seed)
        return self.generator


def _stack(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, tuple) and isinstance(batch[0], torch.Tensor) and batch[0].dim() == 4:
        return batch  # already gathered by InMemoryImages.__getitems__
    images: Sequence[torch.Tensor] = [item[0] for item in batch]
    return torch.stack(images), torch.as_tensor([int(item[1]) for item in batch], dtype=torch.int64)
