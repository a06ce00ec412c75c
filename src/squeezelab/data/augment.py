"""Batched augmentation and normalisation of uint8 image batches, run as the ``DataLoader``'s ``collate_fn``.

Every data set yields uint8 ``C x H x W`` images; the collate function turns a batch into normalised floats
and, for training on in-memory data, applies random crop-with-padding and horizontal flip to the whole batch
with a few tensor operations. Its random generator is re-seeded every epoch (see ``EpochLoader.set_epoch``),
so augmentation is reproducible and a resumed run sees the same crops as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        # __call__ divides by it: a model file's pixel_scale of 0 (or NaN) must not reach the pixels
        if not math.isfinite(self.pixel_scale) or self.pixel_scale <= 0:
            raise ValueError(f"pixel_scale must be a finite number > 0, got {self.pixel_scale}")
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


TRANSLATE_MODES = ("zeros", "reflect")
FLIP_MODES = ("random", "alternate", "none")


@dataclass(frozen=True)
class BatchAugment:
    """Random translation by up to ``padding`` pixels (the border filled with zeros or, with
    ``translate_mode="reflect"``, mirrored), horizontal flip, and Cutout (DeVries & Taylor 2017) of a
    ``cutout`` x ``cutout`` square when ``cutout`` > 0.

    ``flip="random"`` flips each image with probability 0.5 in every epoch. ``flip="alternate"`` (airbench)
    flips a fixed random half of the images in even epochs and the other half in odd epochs, so that every
    image is seen both ways in any two consecutive epochs; it needs each image's index in the data set.
    """

    padding: int = 4
    flip: bool = True
    cutout: int = 0
    translate_mode: str = "zeros"
    flip_mode: str = "random"

    def __post_init__(self) -> None:
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0 pixels, got {self.cutout}")
        if self.padding < 0:
            raise ValueError(f"translate must be >= 0 pixels, got {self.padding}")
        if self.translate_mode not in TRANSLATE_MODES:
            raise ValueError(f"translate_mode must be one of {', '.join(TRANSLATE_MODES)}, got {self.translate_mode!r}")
        if self.flip_mode not in FLIP_MODES:
            raise ValueError(f"flip must be one of {', '.join(FLIP_MODES)}, got {self.flip_mode!r}")

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None = None, epoch: int = 0, seed: int = 0
    ) -> torch.Tensor:
        if self.padding:
            images = random_crop(images, self.padding, generator, self.translate_mode)
        if not self.flip or self.flip_mode == "none":
            return images
        if self.flip_mode == "alternate":
            if indices is None:
                raise ValueError("the alternating flip needs in-memory data (each image's index)")
            flip = (hashed_bits(indices, seed) ^ (epoch % 2)).bool()
        else:
            flip = torch.rand(len(images), generator=generator) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)

    def erase(self, normalized: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Cutout on normalised images, so the square holds the data set's mean (0), not black."""
        return cutout(normalized, self.cutout, generator) if self.cutout else normalized


def hashed_bits(indices: torch.Tensor, seed: int) -> torch.Tensor:
    """One pseudo-random bit per index, fixed for a given ``seed`` (a 32-bit integer hash, no state to keep)."""
    mask = 0xFFFFFFFF
    x = (indices.to(torch.int64) ^ (seed & mask)) & mask
    for _ in range(2):  # two rounds of the "xorshift-multiply" integer hash; products stay below 2^59
        x = (((x >> 16) ^ x) * 0x45D9F3B) & mask
    return ((x >> 16) ^ x) & 1


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


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Each image shifted by an independent random offset in [-padding, padding] (one gather); the border is
    zero-filled, or with ``mode="reflect"`` mirrored without repeating the edge pixel (as ``F.pad`` reflect)."""
    n, c, h, w = images.shape
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    if mode == "reflect":
        if padding >= min(h, w):
            raise ValueError(f"a reflected translation of {padding} pixels needs images larger than {h}x{w}")
        rows = _reflect(dy - padding + torch.arange(h), h).view(n, 1, h, 1)
        cols = _reflect(dx - padding + torch.arange(w), w).view(n, 1, 1, w)
        return images[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = (dy + torch.arange(h)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w)).view(n, 1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


def _reflect(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Positions outside [0, size) mirrored back inside (edge not repeated): -1 -> 1, size -> size - 2."""
    positions = positions.abs()
    return torch.where(positions >= size, 2 * (size - 1) - positions, positions)


class BatchCollate:
    """``collate_fn``: stack uint8 samples (or take a pre-gathered batch), augment, normalise."""

    def __init__(self, normalization: Normalization, augment: BatchAugment | None = None) -> None:
        self.normalization = normalization
        self.augment = augment
        self.generator = torch.Generator()
        self._worker_seed: int | None = None
        self.epoch = 0
        self.run_seed = 0

    def set_seed(self, seed: int, epoch: int = 0, run_seed: int = 0) -> None:
        """Seed this epoch's augmentation; ``epoch`` and ``run_seed`` drive the alternating flip."""
        self.generator.manual_seed(seed)
        self.epoch, self.run_seed = epoch, run_seed

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets, indices = _stack(batch)
        if self.augment is None:
            return self.normalization(images), targets
        generator = self._generator()
        augmented = self.augment(images, generator, indices, self.epoch, self.run_seed)
        return self.augment.erase(self.normalization(augmented), generator), targets

    def _generator(self) -> torch.Generator:
        # In a worker process every worker holds a copy of the same generator; seed it from the worker's own
        # seed (derived by DataLoader from the epoch's seed and the worker id) so workers do not repeat crops.
        info = get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            self.generator.manual_seed(info.seed)
        return self.generator


def _stack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(images, targets, indices)``: indices only where the data set gathered the batch itself."""
    if isinstance(batch, tuple) and isinstance(batch[0], torch.Tensor) and batch[0].dim() == 4:
        return batch  # already gathered by InMemoryImages.__getitems__
    images: list[torch.Tensor] = [item[0] for item in batch]
    return torch.stack(images), torch.as_tensor([int(item[1]) for item in batch], dtype=torch.int64), None
