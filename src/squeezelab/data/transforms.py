"""Transforms built from a model's :class:`~squeezelab.models.ModelConfig`.

The config says how the model was trained to see pixels (size, mean/std, RGB or Caffe's BGR on a
0-255 scale), so evaluation and inference apply it automatically.
"""

from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from squeezelab.models.registry import ModelConfig


class ToChannelOrder(torch.nn.Module):
    """Scale a [0, 1] RGB tensor by ``pixel_scale`` and reorder channels to ``order`` (RGB or BGR)."""

    def __init__(self, order: str = "RGB", pixel_scale: float = 1.0) -> None:
        super().__init__()
        if order not in ("RGB", "BGR"):
            raise ValueError(f"channel order must be 'RGB' or 'BGR', got {order!r}")
        self.order = order
        self.pixel_scale = pixel_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "BGR" and x.shape[-3] == 3:
            x = x.flip(-3)
        return x * self.pixel_scale if self.pixel_scale != 1.0 else x


class ConvertMode:
    """Convert a PIL image to grayscale ("L") for one-channel models, RGB otherwise (picklable)."""

    def __init__(self, in_chans: int) -> None:
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, image):
        return image.convert(self.mode) if image.mode != self.mode else image


def normalize_transforms(cfg: ModelConfig, from_uint8_tensor: bool = False) -> list:
    """ToTensor (or uint8 tensor -> [0, 1] floats), channel order / pixel scale, then mean/std as the config says."""
    steps: list = [T.ConvertImageDtype(torch.float32) if from_uint8_tensor else T.ToTensor()]
    if cfg.channel_order != "RGB" or cfg.pixel_scale != 1.0:
        steps.append(ToChannelOrder(cfg.channel_order, cfg.pixel_scale))
    steps.append(T.Normalize(cfg.mean, cfg.std))
    return steps


def resize_crop_steps(
    size: tuple[int, int], resize_size: int, interpolation: InterpolationMode, antialias: bool = True
) -> list:
    """Resize the shorter side to ``resize_size``, then centre crop to ``size`` (H, W): the evaluation geometry."""
    return [T.Resize(resize_size, interpolation=interpolation, antialias=antialias), T.CenterCrop(size)]


def eval_transform(cfg: ModelConfig) -> T.Compose:
    """PIL image -> normalised tensor: resize the shorter side, centre crop to the input size.

    With ``cfg.antialias`` False the resize runs on a uint8 tensor without a low-pass filter, as Caffe's
    OpenCV resize did (PIL always filters when it shrinks).
    """
    in_chans, height, width = cfg.input_size
    steps = resize_crop_steps((height, width), cfg.resize_size, InterpolationMode(cfg.interpolation), cfg.antialias)
    if cfg.antialias:
        return T.Compose([ConvertMode(in_chans), *steps, *normalize_transforms(cfg)])
    return T.Compose([ConvertMode(in_chans), T.PILToTensor(), *steps, *normalize_transforms(cfg, from_uint8_tensor=True)])
