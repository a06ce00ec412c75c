"""The Fire module: squeeze 1x1 -> (expand 1x1 || expand 3x3), concatenated; and the squeeze/expand Fire pair.

Attribute names follow torchvision (``squeeze``, ``expand1x1``, ``expand3x3`` and their ``*_activation``)
so that torchvision SqueezeNet checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

BYPASS_KINDS = ("none", "simple", "complex")


class Fire(nn.Module):
    """Fire module with optional batch norm and bypass.

    Args:
        inplanes: input channels.
        squeeze_planes: 1x1 squeeze filters (s_1x1).
        expand1x1_planes: 1x1 expand filters (e_1x1); may be 0 for a 3x3-only expand.
        expand3x3_planes: 3x3 expand filters (e_3x3); may be 0 for a 1x1-only expand.
        batch_norm: batch norm after each convolution, before its ReLU.
        bypass: ``"none"``; ``"simple"`` adds the input (needs ``inplanes == out_channels``);
            ``"complex"`` adds a 1x1 convolution of the input (used where channel counts differ).
    """

    def __init__(
        self,
        inplanes: int,
        squeeze_planes: int,
        expand1x1_planes: int,
        expand3x3_planes: int,
        batch_norm: bool = False,
        bypass: str = "none",
    ) -> None:
        super().__init__()
        if squeeze_planes < 1 or expand1x1_planes < 0 or expand3x3_planes < 0:
            raise ValueError(
                f"Fire needs squeeze >= 1 and expand >= 0 filters, got "
                f"s={squeeze_planes}, e1={expand1x1_planes}, e3={expand3x3_planes}"
            )
        if expand1x1_planes + expand3x3_planes == 0:
            raise ValueError("Fire needs at least one expand filter")
        self.inplanes = inplanes
        self.out_channels = expand1x1_planes + expand3x3_planes
        self.bypass_kind = bypass
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_bn = nn.BatchNorm2d(squeeze_planes) if batch_norm else None
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = self._expand(squeeze_planes, expand1x1_planes, 1)
        self.expand1x1_bn = nn.BatchNorm2d(expand1x1_planes) if batch_norm and expand1x1_planes else None
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = self._expand(squeeze_planes, expand3x3_planes, 3)
        self.expand3x3_bn = nn.BatchNorm2d(expand3x3_planes) if batch_norm and expand3x3_planes else None
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.bypass = make_bypass(bypass, inplanes, self.out_channels)

    @staticmethod
    def _expand(inplanes: int, planes: int, kernel_size: int) -> nn.Conv2d | None:
        if planes == 0:
            return None
        return nn.Conv2d(inplanes, planes, kernel_size=kernel_size, padding=kernel_size // 2)

    @staticmethod
    def _conv_bn_relu(x: torch.Tensor, conv: nn.Conv2d, bn: nn.Module | None, act: nn.Module) -> torch.Tensor:
        x = conv(x)
        if bn is not None:
            x = bn(x)
        return act(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self._conv_bn_relu(x, self.squeeze, self.squeeze_bn, self.squeeze_activation)
        branches = []
        if self.expand1x1 is not None:
            branches.append(self._conv_bn_relu(s, self.expand1x1, self.expand1x1_bn, self.expand1x1_activation))
        if self.expand3x3 is not None:
            branches.append(self._conv_bn_relu(s, self.expand3x3, self.expand3x3_bn, self.expand3x3_activation))
        out = branches[0] if len(branches) == 1 else torch.cat(branches, 1)
        return add_bypass(out, x, self.bypass_kind, self.bypass)


def make_bypass(kind: str, inplanes: int, out_channels: int) -> nn.Conv2d | None:
    """Check a bypass request; the 1x1 convolution a ``"complex"`` bypass needs, else ``None``."""
    if kind not in BYPASS_KINDS:
        raise ValueError(f"bypass must be one of {BYPASS_KINDS}, got {kind!r}")
    if kind == "simple" and inplanes != out_channels:
        raise ValueError(f"simple bypass needs equal input and output channels, got {inplanes} -> {out_channels}")
    return nn.Conv2d(inplanes, out_channels, kernel_size=1) if kind == "complex" else None


def add_bypass(out: torch.Tensor, x: torch.Tensor, kind: str, conv: nn.Conv2d | None) -> torch.Tensor:
    """The module output plus its bypass: the input itself (simple) or its 1x1 convolution (complex)."""
    if kind == "simple":
        return out + x
    if conv is not None:
        return out + conv(x)
    return out


class FirePair(nn.Module):
    """A Fire module split in two: a 1x1 "squeeze fire" followed by a 3x3 "expand fire".

    For a Fire with squeeze width ``s`` and ``e = e_1x1 + e_3x3`` output channels, and a reduction factor
    ``r``, the pair is::

        squeeze_fire = Fire(inplanes, s', e, 0)   # squeeze to s', expand with 1x1 filters only
        expand_fire  = Fire(e, s', 0, e)         # squeeze to s', expand with 3x3 filters only
        s' = max(1, round(s / r))

    so the pair maps ``inplanes -> e`` channels like the Fire it replaces and the rest of the network is
    unchanged. The 1x1 and 3x3 expand filters no longer run side by side on one squeeze output: the
    channel mixing (1x1) and the spatial filtering (3x3) each get their own squeeze, which doubles the
    depth, while ``r`` narrows both squeezes to pay for it. With pct_3x3=0.5 a pair holds about 2x the
    Fire's parameters at r=1, about the same at r=2 and about half at r=4 (whole SqueezeNet v1.0:
    1,988,584 / 1,260,456 / 896,392 parameters against 1,248,424). A bypass, when asked for, goes
    around the pair.
    """

    def __init__(
        self,
        inplanes: int,
        squeeze_planes: int,
        out_planes: int,
        batch_norm: bool = False,
        bypass: str = "none",
    ) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.out_channels = out_planes
        self.bypass_kind = bypass
        self.squeeze_fire = Fire(inplanes, squeeze_planes, out_planes, 0, batch_norm=batch_norm)
        self.expand_fire = Fire(out_planes, squeeze_planes, 0, out_planes, batch_norm=batch_norm)
        self.bypass = make_bypass(bypass, inplanes, out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand_fire(self.squeeze_fire(x))
        return add_bypass(out, x, self.bypass_kind, self.bypass)
