"""Decoded images as uint8 tensors: file decoding that names bad files, resizing, channel conversion, statistics.

Small data sets live in memory as one ``N x C x H x W`` uint8 tensor (CIFAR-10 is 150 MB): batches are then
slices of that tensor, and augmentation runs on whole batches (see :mod:`squeezelab.data.augment`), which on
a 2-core machine is much cheaper than per-image PIL transforms in worker processes.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from .transforms import ConvertMode

# ITU-R 601 luma weights, the same PIL uses for convert("L").
_LUMA = (0.299, 0.587, 0.114)


class ImageDecodeError(ValueError):
    """An image file that cannot be read or decoded; the message names the file."""


def read_image(path: str | os.PathLike, in_chans: int) -> torch.Tensor:
    """Decode one image file into a ``C x H x W`` uint8 tensor with ``in_chans`` channels (1 or 3)."""
    return pil_to_tensor(load_pil_image(path, in_chans))


def load_pil_image(path: str | os.PathLike, in_chans: int) -> Image.Image:
    """``ImageFolder``-style loader (grayscale or RGB for ``in_chans``) whose errors name the file."""
    try:
        with Image.open(path) as image:
            return ConvertMode(in_chans)(image).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from None


def convert_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Convert an ``N x C x H x W`` uint8 batch between grayscale and RGB as the model's ``in_chans`` needs."""
    channels = images.shape[1]
    if channels == in_chans:
        return images
    if channels == 3 and in_chans == 1:
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        return _chunked(images, lambda x: (x.float() * weights).sum(1, keepdim=True).round_().to(torch.uint8))
    if channels == 1 and in_chans == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"cannot convert {channels}-channel images to in_chans={in_chans} (supported: 1 and 3)")


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an ``N x C x H x W`` uint8 batch to ``size`` (H, W) with antialiased bilinear interpolation."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images

    def resize(x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    return _chunked(images, resize)


def _chunked(images: torch.Tensor, fn, chunk: int = 4096) -> torch.Tensor:
    # Converting 50k images to float at once would need 4x their memory; chunks keep the peak small.
    return torch.cat([fn(images[i : i + chunk]) for i in range(0, len(images), chunk)]) if len(images) else images


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of a uint8 batch, on the [0, 1] pixel scale."""
    if len(images) == 0:
        raise ValueError("cannot compute statistics of an empty image set")
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(images), 4096):
        x = images[start : start + 4096].to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


class InMemoryImages(Dataset):
    """Images held as one uint8 ``N x C x H x W`` tensor with int64 targets.

    Indexing one item gives ``(C x H x W uint8, int)``; ``__getitems__`` (used by ``DataLoader`` for batched
    fetching) returns the whole batch as ``(N x C x H x W uint8, N int64 targets, N int64 indices)`` with one
    tensor gather; the indices let batched augmentation treat each image by its identity (alternating flip).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"InMemoryImages needs an N x C x H x W uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets.to(torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[index], self.targets[index], index

    def subset(self, indices: torch.Tensor) -> "InMemoryImages":
        return InMemoryImages(self.images[indices], self.targets[indices])
