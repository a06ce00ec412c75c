"""SqueezeNext (Gholami et al. 2018, "SqueezeNext: Hardware-Aware Neural Network Design") and the
high-performance CIFAR-10 SqueezeNext family.

Follows the authors' Caffe prototxts (github.com/amirgholami/SqueezeNext, ``1.0-SqNxt-23`` and
``1.0-SqNxt-23v5``):

* block with ``C`` output channels: 1x1 conv to C/2 -> 1x1 conv to C/4 -> 3x1 conv to C/2 -> 1x3 conv
  to C/2 -> 1x1 conv to C, every conv bias-free and followed by batch norm + activation; the shortcut is
  the identity, or a 1x1 conv + batch norm + activation when the stride or the channel count changes;
  the sum goes through one more activation. The order of the 3x1 and 1x3 convs alternates from block
  to block (3x1 first in the 1st, 3rd, ... block of the network).
* stages of 32, 64, 128, 256 channels (times the width multiplier); the first block of stages 2-4 has
  stride 2 (in its first 1x1 conv and its shortcut).
* ImageNet stem: 7x7/2 conv (64 filters, no padding) + 3x3/2 max pool rounding up (Caffe pooling);
  CIFAR stem: 3x3/1 conv with padding 1 and no pool, so a 32x32 image reaches stage 4 at 4x4.
* head: 1x1 conv to 128 channels + batch norm + activation, global average pool, fully connected layer
  without bias (as the prototxt's ``fc1000``).

Parameter counts (1000 classes) are in ``docs/models.md`` next to the paper's.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from .registry import CIFAR10_CFG, IMAGENET_CFG, register_model

STAGE_CHANNELS = (32, 64, 128, 256)
STEM_CHANNELS = 64
HEAD_CHANNELS = 128
DEPTHS = {
    "23": (6, 6, 8, 1),
    "23v5": (2, 4, 14, 1),
    # High-performance CIFAR-10 SqueezeNext: one block per stage.
    "hp": (1, 1, 1, 1),
}
STEMS = ("imagenet", "cifar")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU}


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[name](inplace=True)


class ConvBNAct(nn.Sequential):
    """Bias-free convolution -> batch norm -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                act=_activation(activation),
            )
        )


INNER_CONVS = ("squeeze1", "squeeze2", "separable1", "separable2")


class SqueezeNextBlock(nn.Module):
    """Two-stage squeeze, separable 3x1/1x3 convs, 1x1 expand, plus a residual shortcut.

    ``vertical_first`` puts the 3x1 conv before the 1x3 conv. ``widths`` gives the output channels of
    the four inner convs (:data:`INNER_CONVS`); default: the paper's half, quarter, half, half of
    ``out_channels`` (structured pruning makes them narrower).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        vertical_first: bool,
        activation: str = "relu",
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if out_channels < 4:
            raise ValueError(f"a SqueezeNext block needs at least 4 output channels, got {out_channels}")
        if widths is None:
            widths = (out_channels // 2, out_channels // 4, out_channels // 2, out_channels // 2)
        if len(widths) != len(INNER_CONVS) or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"block widths must be {len(INNER_CONVS)} positive channel counts, got {list(widths)}")
        squeeze1, squeeze2, separable1, separable2 = widths
        kernels = [((3, 1), (1, 0)), ((1, 3), (0, 1))]
        if not vertical_first:
            kernels.reverse()
        (kernel1, pad1), (kernel2, pad2) = kernels
        self.body = nn.Sequential(
            OrderedDict(
                squeeze1=ConvBNAct(in_channels, squeeze1, 1, stride=stride, activation=activation),
                squeeze2=ConvBNAct(squeeze1, squeeze2, 1, activation=activation),
                separable1=ConvBNAct(squeeze2, separable1, kernel1, padding=pad1, activation=activation),
                separable2=ConvBNAct(separable1, separable2, kernel2, padding=pad2, activation=activation),
                expand=ConvBNAct(separable2, out_channels, 1, activation=activation),
            )
        )
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ConvBNAct(in_channels, out_channels, 1, stride=stride, activation=activation)
            if needs_projection
            else nn.Identity()
        )
        self.activation = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))


class SqueezeNext(nn.Module):
    """SqueezeNext network: ``features`` (stem, stage1..stage4, final 1x1 conv), ``avgpool``, ``classifier``.

    Args:
        depths: blocks per stage, e.g. ``(6, 6, 8, 1)`` for SqNxt-23.
        width: width multiplier applied to the stem, every stage and the head (0.5, 1.0, 1.5, 2.0, ...).
        num_classes, in_chans: output classes and input channels.
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 pool) or ``"cifar"`` (3x3/1 conv, no pool).
        activation: ``"relu"`` (as published) or ``"elu"``.
        block_widths: inner widths of every block, in order (see :class:`SqueezeNextBlock`); default: the paper's.
    """

    def __init__(
        self,
        depths: Sequence[int],
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        activation: str = "relu",
        block_widths: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(depths, width, stem, activation)
        if block_widths is not None and len(block_widths) != sum(depths):
            raise ValueError(f"block_widths: expected one entry per block ({sum(depths)}), got {len(block_widths)}")
        self.num_classes = num_classes
        stem_channels = int(STEM_CHANNELS * width)
        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_stem(stem, in_chans, stem_channels, activation))
        channels = stem_channels
        block_index = 0
        for stage, (depth, stage_channels) in enumerate(zip(depths, STAGE_CHANNELS), start=1):
            out_channels = int(stage_channels * width)
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 1 and i == 0 else 1
                widths = block_widths[block_index] if block_widths is not None else None
                blocks.append(
                    SqueezeNextBlock(channels, out_channels, stride, block_index % 2 == 0, activation, widths)
                )
                channels = out_channels
                block_index += 1
            layers[f"stage{stage}"] = nn.Sequential(*blocks)
        self.num_features = int(HEAD_CHANNELS * width)
        layers["final_conv"] = ConvBNAct(channels, self.num_features, 1, activation=activation)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(self.num_features, num_classes, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _check_arguments(depths: Sequence[int], width: float, stem: str, activation: str) -> None:
    if len(depths) != len(STAGE_CHANNELS) or any(d < 1 for d in depths):
        raise ValueError(f"depths must be {len(STAGE_CHANNELS)} positive block counts, got {tuple(depths)}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")


def _stem(kind: str, in_chans: int, channels: int, activation: str) -> nn.Sequential:
    if kind == "cifar":
        return nn.Sequential(ConvBNAct(in_chans, channels, 3, padding=1, activation=activation))
    return nn.Sequential(
        ConvBNAct(in_chans, channels, 7, stride=2, activation=activation),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
    )


def build_squeezenext(
    depths: str | Sequence[int] = "23",
    width: float = 1.0,
    num_classes: int = 1000,
    in_chans: int = 3,
    stem: str = "imagenet",
    activation: str = "relu",
    block_widths: Sequence[Sequence[int]] | None = None,
) -> SqueezeNext:
    """SqueezeNext from a depth name (``"23"``, ``"23v5"``, ``"hp"``) or explicit blocks per stage."""
    if isinstance(depths, str):
        if depths not in DEPTHS:
            raise ValueError(f"depths must be one of {sorted(DEPTHS)} or four block counts, got {depths!r}")
        depths = DEPTHS[depths]
    return SqueezeNext(depths, width, num_classes, in_chans, stem, activation, block_widths)


@register_model(IMAGENET_CFG)
def squeezenext_generator(**kwargs) -> SqueezeNext:
    """Any SqueezeNext: ``depths`` (name or four block counts), ``width``, ``stem``, ``activation``."""
    return build_squeezenext(**kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23_w0_5(**kwargs) -> SqueezeNext:
    """0.5-SqNxt-23: blocks [6, 6, 8, 1], half width."""
    return build_squeezenext("23", 0.5, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23_w1(**kwargs) -> SqueezeNext:
    """1.0-SqNxt-23: blocks [6, 6, 8, 1] of 32/64/128/256 channels (717,280 parameters)."""
    return build_squeezenext("23", 1.0, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23_w1_5(**kwargs) -> SqueezeNext:
    """1.5-SqNxt-23: blocks [6, 6, 8, 1], 1.5x width."""
    return build_squeezenext("23", 1.5, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23_w2(**kwargs) -> SqueezeNext:
    """2.0-SqNxt-23: blocks [6, 6, 8, 1], double width."""
    return build_squeezenext("23", 2.0, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23v5_w0_5(**kwargs) -> SqueezeNext:
    """0.5-SqNxt-23v5: blocks [2, 4, 14, 1], half width."""
    return build_squeezenext("23v5", 0.5, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23v5_w1(**kwargs) -> SqueezeNext:
    """1.0-SqNxt-23v5: blocks [2, 4, 14, 1] (more blocks where the maps are small)."""
    return build_squeezenext("23v5", 1.0, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23v5_w1_5(**kwargs) -> SqueezeNext:
    """1.5-SqNxt-23v5: blocks [2, 4, 14, 1], 1.5x width."""
    return build_squeezenext("23v5", 1.5, **kwargs)


@register_model(IMAGENET_CFG)
def sqnxt23v5_w2(**kwargs) -> SqueezeNext:
    """2.0-SqNxt-23v5: blocks [2, 4, 14, 1], double width."""
    return build_squeezenext("23v5", 2.0, **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23_w0_5_cifar(**kwargs) -> SqueezeNext:
    """0.5-SqNxt-23 with the CIFAR stem (3x3/1 conv, no pool; 32 -> 32/16/8/4 across the stages)."""
    return build_squeezenext("23", 0.5, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23_w1_cifar(**kwargs) -> SqueezeNext:
    """1.0-SqNxt-23 with the CIFAR stem."""
    return build_squeezenext("23", 1.0, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23_w1_5_cifar(**kwargs) -> SqueezeNext:
    """1.5-SqNxt-23 with the CIFAR stem."""
    return build_squeezenext("23", 1.5, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23_w2_cifar(**kwargs) -> SqueezeNext:
    """2.0-SqNxt-23 with the CIFAR stem."""
    return build_squeezenext("23", 2.0, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23v5_w0_5_cifar(**kwargs) -> SqueezeNext:
    """0.5-SqNxt-23v5 with the CIFAR stem."""
    return build_squeezenext("23v5", 0.5, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23v5_w1_cifar(**kwargs) -> SqueezeNext:
    """1.0-SqNxt-23v5 with the CIFAR stem."""
    return build_squeezenext("23v5", 1.0, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23v5_w1_5_cifar(**kwargs) -> SqueezeNext:
    """1.5-SqNxt-23v5 with the CIFAR stem."""
    return build_squeezenext("23v5", 1.5, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def sqnxt23v5_w2_cifar(**kwargs) -> SqueezeNext:
    """2.0-SqNxt-23v5 with the CIFAR stem."""
    return build_squeezenext("23v5", 2.0, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def hp_sqnxt_w0_5_cifar(**kwargs) -> SqueezeNext:
    """High-performance CIFAR SqueezeNext, one block per stage, half width; ``activation="elu"`` optional."""
    return build_squeezenext("hp", 0.5, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def hp_sqnxt_w0_75_cifar(**kwargs) -> SqueezeNext:
    """High-performance CIFAR SqueezeNext, one block per stage, 0.75x width; ``activation="elu"`` optional."""
    return build_squeezenext("hp", 0.75, stem="cifar", **kwargs)


@register_model(CIFAR10_CFG)
def hp_sqnxt_w1_cifar(**kwargs) -> SqueezeNext:
    """High-performance CIFAR SqueezeNext, one block per stage, full width; ``activation="elu"`` optional."""
    return build_squeezenext("hp", 1.0, stem="cifar", **kwargs)
