"""``squeezenet_fast_cifar``: a Fire-module network laid out for time-to-accuracy on small inputs.

SqueezeNet's CIFAR variants keep SqueezeNet's ImageNet rhythm (fires at 32x32 and 16x16, the classifier on
an 8x8 map), so most of their compute goes to large maps. Fast CIFAR-10 training (Page's ResNet-9,
Keller Jordan's airbench) does the opposite: whiten 2x2 patches, then pool after the first convolution of
each of three groups (31 -> 15 -> 7 -> 3) and spend the width where the maps are small. This network is
that layout with Fire modules in place of the 3x3 convolutions:

* stem: a 2x2 convolution with ``2 * 3 * 2 * 2 = 24`` filters and a bias, meant to be initialised as a
  patch whitening (``TrainConfig.whitening``), then GELU; a plain 3x3 convolution to ``widths[0]`` as
  SqueezeNet's conv1;
* three groups; each: layer -> max pool 2 -> batch norm -> GELU -> Fire -> batch norm -> GELU, where the
  first layer of groups 2 and 3 is a Fire too. A Fire squeezes to ``squeeze_ratio`` of its output
  channels (1x1, batch norm, GELU), then expands with ``1 - pct_3x3`` 1x1 and ``pct_3x3`` 3x3 filters;
  with the defaults a 256-channel Fire costs a third of a 256-channel 3x3 convolution, which is what
  lets the groups be as wide as airbench94's (64, 256, 256) at 1.4x airbench93's multiply-adds and
  under 1M parameters. (``squeeze_ratio=0.25`` halves the Fires again: 406,616 parameters, 44.8 MMACs,
  but 1.7 points less test top-1 after 12 epochs of the fast recipe than airbench93's network);
* head: global max pool, a linear layer without bias, and a fixed ``1/9`` output scale (airbench: it
  keeps the logits small while the high learning rates move the weights).

Convolutions have no bias (batch norm follows each), so ``TrainConfig.init="dirac"`` turns every stack of
odd-kernel layers into an implicit residual. ``pool_early`` and ``linear_squeeze`` make the Fires cheaper (see
:class:`FastFire`); ``block="conv"`` replaces them with plain 3x3 convolutions (``airbench93_cifar``).
794,232 parameters and 76.1 MMACs at 32x32 with the defaults.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .registry import CIFAR10_CFG, register_model


class FastFire(nn.Module):
    """Fire module without biases: squeeze 1x1 -> BN -> GELU -> (expand 1x1 || expand 3x3).

    The output is left before normalisation, so that a max pool can come first (as in airbench's groups).
    With ``pool`` the squeezed map is max-pooled before the expand convolutions run on it (a quarter of
    their cost, and of the concatenated output's). With ``linear_squeeze`` the squeeze has no batch norm
    and no activation (a linear bottleneck, as in MobileNetV2): squeeze and expand together are a low-rank
    convolution, and the two element-wise passes they save are a sixth of a training step on a CPU.
    """

    def __init__(
        self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int, pool: bool = False,
        linear_squeeze: bool = False,
    ) -> None:
        super().__init__()
        if squeeze_planes < 1 or expand1x1_planes < 1 or expand3x3_planes < 1:
            raise ValueError(
                f"a fire needs squeeze and both expand widths >= 1, got s={squeeze_planes}, "
                f"e1={expand1x1_planes}, e3={expand3x3_planes}"
            )
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, 1, bias=False)
        self.squeeze_bn = None if linear_squeeze else nn.BatchNorm2d(squeeze_planes)
        self.squeeze_activation = None if linear_squeeze else nn.GELU()
        self.pool = nn.MaxPool2d(2) if pool else None
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, 1, bias=False)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        if self.squeeze_bn is not None and self.squeeze_activation is not None:
            s = self.squeeze_activation(self.squeeze_bn(s))
        if self.pool is not None:
            s = self.pool(s)
        return torch.cat((self.expand1x1(s), self.expand3x3(s)), 1)


class FastGroup(nn.Module):
    """``first -> max pool 2 -> BN -> GELU -> second -> BN -> GELU`` (no pool here if ``first`` pools itself)."""

    def __init__(self, first: nn.Module, channels: int, second: nn.Module, pool: bool = True) -> None:
        super().__init__()
        self.first = first
        self.pool = nn.MaxPool2d(2) if pool else None
        self.norm1 = nn.BatchNorm2d(channels)
        self.second = second
        self.norm2 = nn.BatchNorm2d(channels)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        if self.pool is not None:
            x = self.pool(x)
        x = self.activation(self.norm1(x))
        return self.activation(self.norm2(self.second(x)))


class SqueezeNetFast(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 256, 256),
        squeeze_ratio: float = 0.5,
        pct_3x3: float = 0.5,
        whiten_kernel: int = 2,
        output_scale: float = 1 / 9,
        block: str = "fire",
        pool_early: bool = False,
        linear_squeeze: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 2:
            raise ValueError(f"widths must be three channel counts >= 2, got {tuple(widths)}")
        if not 0.0 < squeeze_ratio <= 1.0 or not 0.0 < pct_3x3 < 1.0:
            raise ValueError(f"squeeze_ratio must be in (0, 1] and pct_3x3 in (0, 1), got {squeeze_ratio}, {pct_3x3}")
        if whiten_kernel < 1:
            raise ValueError(f"whiten_kernel must be >= 1, got {whiten_kernel}")
        if block not in ("fire", "conv"):
            raise ValueError(f"block must be 'fire' or 'conv', got {block!r}")

        def layer(inplanes: int, planes: int, pool: bool = False) -> nn.Module:
            if block == "conv":
                return nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
            expand3x3 = max(1, round(planes * pct_3x3))
            return FastFire(inplanes, max(1, round(planes * squeeze_ratio)), planes - expand3x3, expand3x3, pool, linear_squeeze)

        def group(inplanes: int, planes: int) -> FastGroup:
            early = pool_early and block == "fire"
            return FastGroup(layer(inplanes, planes, early), planes, layer(planes, planes), pool=not early)

        whiten_width = 2 * in_chans * whiten_kernel**2
        self.whiten = nn.Conv2d(in_chans, whiten_width, whiten_kernel, bias=True)
        self.whiten_activation = nn.GELU()
        w1, w2, w3 = widths
        self.group1 = FastGroup(nn.Conv2d(whiten_width, w1, 3, padding=1, bias=False), w1, layer(w1, w1))
        self.group2 = group(w1, w2)
        self.group3 = group(w2, w3)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(w3, num_classes, bias=False)
        self.output_scale = output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.whiten_activation(self.whiten(x))
        x = self.group3(self.group2(self.group1(x)))
        return self.classifier(self.pool(x).flatten(1)) * self.output_scale


@register_model(CIFAR10_CFG)
def squeezenet_fast_cifar(**kwargs) -> SqueezeNetFast:
    """Fire modules in airbench's fast-training layout for 32x32 inputs (see the module docstring)."""
    return SqueezeNetFast(**kwargs)


@register_model(CIFAR10_CFG)
def airbench93_cifar(**kwargs) -> SqueezeNetFast:
    """airbench93's network (Keller Jordan, KellerJordan/cifar10-airbench), the fast-training reference:
    the same layout with plain 3x3 convolutions of widths (64, 128, 128), 569,656 parameters. Not a
    SqueezeNet; registered so that the same recipe can be run on both (train it with the fast recipe's
    batch-norm settings: ``bn_momentum: 0.4``, ``bn_weight_frozen: true``)."""
    return SqueezeNetFast(**{"block": "conv", "widths": (64, 128, 128), **kwargs})
