"""SqueezeNet v1.0/v1.1, the paper's metaparameter generator, bypass, batch-norm, small-input and tiny variants.

One network class serves every variant: a stem, a sequence of Fire modules (planned by the paper's
metaparameters, optionally each split into a squeeze-fire/expand-fire pair), max pools after chosen
fires, and the 1x1-conv + global-average-pool classifier. With default arguments the
``features``/``classifier`` layout and ``state_dict`` keys equal torchvision's, so torchvision
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn

from .fire import Fire, FirePair
from .registry import CIFAR10_CFG, IMAGENET_CFG, MNIST_CFG, register_model

FIRST_FIRE = 2  # the paper numbers fire modules fire2 .. fire9
BATCH_NORM_PLACEMENTS = ("none", "conv1", "fires", "all")


@dataclass(frozen=True)
class FireSpec:
    squeeze: int
    expand1x1: int
    expand3x3: int

    @property
    def out_channels(self) -> int:
        return self.expand1x1 + self.expand3x3


@dataclass(frozen=True)
class Layout:
    """Stem and pooling plan. ``pool_after`` names the fires (paper numbering) followed by a max pool."""

    stem_channels: int
    stem_kernel: int
    stem_stride: int
    stem_padding: int
    stem_pool: bool
    pool_after: tuple[int, ...]


LAYOUTS = {
    # As published: 7x7/2 conv with 96 filters; pools after conv1, fire4, fire8.
    "v1_0": Layout(96, 7, 2, 0, True, (4, 8)),
    # torchvision's v1.1: 3x3/2 conv with 64 filters; pools after conv1, fire3, fire5 (2.4x fewer MACs).
    "v1_1": Layout(64, 3, 2, 0, True, (3, 5)),
    # Small inputs (CIFAR 32x32, MNIST 28x28): a stride-1 3x3 stem and no stem pool, so the two remaining
    # pools leave an 8x8 (7x7 for MNIST) map at the classifier instead of torchvision's collapse to 1x1.
    "v1_0_small": Layout(96, 3, 1, 1, False, (4, 8)),
    "v1_1_small": Layout(64, 3, 1, 1, False, (3, 5)),
    # Tiny CIFAR net (four fires): 3x3/1 stem with 64 filters and a pool (32 -> 16), a pool after fire3
    # (16 -> 8), so fire4/fire5 and the classifier work on an 8x8 map.
    "tiny_cifar": Layout(64, 3, 1, 1, True, (3,)),
}


def fire_plan(
    base_e: int = 128,
    incr_e: int = 128,
    pct_3x3: float = 0.5,
    freq: int = 2,
    squeeze_ratio: float = 0.125,
    num_fires: int = 8,
) -> list[FireSpec]:
    """The paper's metaparameters -> Fire specs: e_i = base_e + incr_e * floor(i / freq), s_i = SR * e_i.

    Filter counts are rounded to the nearest integer (halves up) and each expand branch keeps at least
    one filter, so the whole sweep SR in [0.125, 1], pct_3x3 in [0.01, 0.99] is buildable.
    """
    if not 0.0 < pct_3x3 < 1.0:
        raise ValueError(f"pct_3x3 must be in (0, 1), got {pct_3x3}")
    if squeeze_ratio <= 0.0:
        raise ValueError(f"squeeze_ratio must be > 0, got {squeeze_ratio}")
    if base_e < 2 or incr_e < 0 or freq < 1 or num_fires < 1:
        raise ValueError(
            f"need base_e >= 2, incr_e >= 0, freq >= 1, num_fires >= 1; got {base_e}, {incr_e}, {freq}, {num_fires}"
        )
    specs = []
    for i in range(num_fires):
        expand = base_e + incr_e * (i // freq)
        expand3x3 = min(expand - 1, max(1, _round_half_up(expand * pct_3x3)))
        squeeze = max(1, _round_half_up(squeeze_ratio * expand))
        specs.append(FireSpec(squeeze, expand - expand3x3, expand3x3))
    return specs


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


class SqueezeNet(nn.Module):
    """A SqueezeNet-family network: stem -> fires with pools -> dropout -> 1x1 conv -> ReLU -> GAP.

    Args:
        fires: the Fire specs, in order; ``fire_numbers`` gives their paper names (default 2, 3, ...).
        layout: stem and pool plan (see ``LAYOUTS``).
        num_classes, in_chans: output classes and input channels.
        bypass: ``"none"``; ``"simple"`` (identity around fire3/5/7/9 where channels match) or
            ``"complex"`` (simple, plus a 1x1-conv bypass around every other fire), as in the paper.
        batch_norm: ``"none"``, ``"conv1"`` (after the stem conv), ``"fires"`` (inside every fire) or ``"all"``.
        dropout: dropout probability before the final conv (0.5 as published).
        final_conv_padding: 1 reproduces the Caffe release's conv10 (padding 1); 0 as torchvision.
        final_relu: the published ReLU on the class scores. ``False`` drops it (the key layout is kept):
            a class whose unit dies under a high learning rate can then recover.
        fire_pairing: ``None`` (plain Fires, torchvision keys) or a reduction factor r >= 1: every Fire
            becomes a :class:`~squeezelab.models.fire.FirePair` with squeeze widths divided by r.
    """

    def __init__(
        self,
        fires: Sequence[FireSpec],
        layout: Layout,
        num_classes: int = 1000,
        in_chans: int = 3,
        bypass: str = "none",
        batch_norm: str = "none",
        dropout: float = 0.5,
        final_conv_padding: int = 0,
        fire_numbers: Sequence[int] | None = None,
        fire_pairing: int | None = None,
        final_relu: bool = True,
    ) -> None:
        super().__init__()
        _check_fire_pairing(fire_pairing)
        if batch_norm not in BATCH_NORM_PLACEMENTS:
            raise ValueError(f"batch_norm must be one of {BATCH_NORM_PLACEMENTS}, got {batch_norm!r}")
        if bypass not in ("none", "simple", "complex"):
            raise ValueError(f"bypass must be 'none', 'simple' or 'complex', got {bypass!r}")
        numbers = list(fire_numbers) if fire_numbers is not None else list(range(FIRST_FIRE, FIRST_FIRE + len(fires)))
        if len(numbers) != len(fires):
            raise ValueError("fire_numbers and fires must have the same length")
        self.num_classes = num_classes
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chans,
                layout.stem_channels,
                kernel_size=layout.stem_kernel,
                stride=layout.stem_stride,
                padding=layout.stem_padding,
            )
        ]
        if batch_norm in ("conv1", "all"):
            layers.append(nn.BatchNorm2d(layout.stem_channels))
        layers.append(nn.ReLU(inplace=True))
        if layout.stem_pool:
            layers.append(_max_pool())
        channels = layout.stem_channels
        pools = _pool_positions(numbers, layout.pool_after)
        for number, spec, pool in zip(numbers, fires, pools):
            layers.append(
                _fire_module(
                    channels,
                    spec,
                    batch_norm=batch_norm in ("fires", "all"),
                    bypass=_bypass_for(bypass, number, channels, spec.out_channels),
                    fire_pairing=fire_pairing,
                )
            )
            channels = spec.out_channels
            if pool:
                layers.append(_max_pool())
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(channels, num_classes, kernel_size=1, padding=final_conv_padding)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            final_conv,
            nn.ReLU(inplace=True) if final_relu else nn.Identity(),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.num_features = channels
        self._init_weights(final_conv)

    def _init_weights(self, final_conv: nn.Conv2d) -> None:
        # As the paper's PyTorch port: Kaiming-uniform convs, N(0, 0.01) final conv, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is final_conv:
                    nn.init.normal_(module.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def _check_fire_pairing(fire_pairing: int | None) -> None:
    if fire_pairing is None:
        return
    if isinstance(fire_pairing, bool) or not isinstance(fire_pairing, int) or fire_pairing < 1:
        raise ValueError(f"fire_pairing must be None or an integer reduction factor >= 1, got {fire_pairing!r}")


def _fire_module(
    inplanes: int, spec: FireSpec, batch_norm: bool, bypass: str, fire_pairing: int | None
) -> Fire | FirePair:
    if fire_pairing is None:
        return Fire(inplanes, spec.squeeze, spec.expand1x1, spec.expand3x3, batch_norm=batch_norm, bypass=bypass)
    squeeze = max(1, _round_half_up(spec.squeeze / fire_pairing))
    return FirePair(inplanes, squeeze, spec.out_channels, batch_norm=batch_norm, bypass=bypass)


def _max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def _pool_positions(numbers: Sequence[int], pool_after: Sequence[int]) -> list[bool]:
    """Which fires carry a pool; a pool whose fire was removed moves to the nearest earlier fire kept."""
    pools = [False] * len(numbers)
    for target in pool_after:
        earlier = [i for i, number in enumerate(numbers) if number <= target]
        if earlier:
            pools[earlier[-1]] = True
    return pools


def _bypass_for(kind: str, number: int, in_channels: int, out_channels: int) -> str:
    if kind == "none":
        return "none"
    if in_channels == out_channels and number % 2 == 1:
        return "simple"
    return "complex" if kind == "complex" else "none"


def build_squeezenet(
    layout: str = "v1_0",
    num_classes: int = 1000,
    in_chans: int = 3,
    base_e: int = 128,
    incr_e: int = 128,
    pct_3x3: float = 0.5,
    freq: int = 2,
    squeeze_ratio: float = 0.125,
    bypass: str = "none",
    batch_norm: str = "none",
    remove_fires: Sequence[int] = (),
    dropout: float = 0.5,
    final_conv_padding: int = 0,
    num_fires: int = 8,
    fire_pairing: int | None = None,
    fire_specs: Sequence[Sequence[int]] | None = None,
    stem_channels: int | None = None,
    final_relu: bool = True,
) -> SqueezeNet:
    """SqueezeNet from the paper's metaparameters on a given layout, optionally without some fires.

    ``remove_fires`` takes paper fire numbers (for example ``(2, 5)``); the next fire takes the removed
    fire's input, and a pool that followed a removed fire moves to the previous fire kept.
    ``num_fires`` is the number of fires planned (8 as published; fires are numbered from 2).
    ``fire_pairing=r`` replaces every Fire by a squeeze-fire/expand-fire pair (see ``FirePair``).
    ``fire_specs`` gives explicit ``(squeeze, expand1x1, expand3x3)`` filter counts per planned fire instead
    of the metaparameters, and ``stem_channels`` the stem's filter count: how structurally pruned (shrunk)
    models are rebuilt from their spec.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if fire_specs is None:
        specs = fire_plan(base_e, incr_e, pct_3x3, freq, squeeze_ratio, num_fires)
    else:
        specs = [FireSpec(*(int(n) for n in spec)) for spec in fire_specs]
    numbers = list(range(FIRST_FIRE, FIRST_FIRE + len(specs)))
    removed = set(remove_fires)
    unknown = removed - set(numbers)
    if unknown:
        raise ValueError(f"remove_fires: no fire numbered {sorted(unknown)}; fires are {numbers[0]}..{numbers[-1]}")
    if removed == set(numbers):
        raise ValueError("remove_fires would remove every fire module")
    kept = [(n, s) for n, s in zip(numbers, specs) if n not in removed]
    stem = LAYOUTS[layout] if stem_channels is None else replace(LAYOUTS[layout], stem_channels=stem_channels)
    return SqueezeNet(
        [s for _, s in kept],
        stem,
        num_classes=num_classes,
        in_chans=in_chans,
        bypass=bypass,
        batch_norm=batch_norm,
        dropout=dropout,
        final_conv_padding=final_conv_padding,
        fire_numbers=[n for n, _ in kept],
        fire_pairing=fire_pairing,
        final_relu=final_relu,
    )


@register_model(IMAGENET_CFG)
def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.0 as published (1,248,424 parameters, 0.82 GMACs at 224x224)."""
    return build_squeezenet("v1_0", **kwargs)


@register_model(IMAGENET_CFG)
def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet v1.1 (1,235,496 parameters, 0.35 GMACs at 224x224)."""
    return build_squeezenet("v1_1", **kwargs)


@register_model(IMAGENET_CFG)
def squeezenet_generator(**kwargs) -> SqueezeNet:
    """The paper's design-space generator: base_e, incr_e, pct_3x3, freq, squeeze_ratio (SR), layout.

    Defaults reproduce SqueezeNet v1.0 exactly.
    """
    return build_squeezenet(**kwargs)


@register_model(IMAGENET_CFG)
def squeezenet1_0_simple_bypass(**kwargs) -> SqueezeNet:
    """v1.0 with identity bypass around fire3, fire5, fire7, fire9 (no extra parameters)."""
    return build_squeezenet("v1_0", bypass="simple", **kwargs)


@register_model(IMAGENET_CFG)
def squeezenet1_0_complex_bypass(**kwargs) -> SqueezeNet:
    """v1.0 with simple bypass plus 1x1-conv bypass around fire2, fire4, fire6, fire8."""
    return build_squeezenet("v1_0", bypass="complex", **kwargs)


@register_model(IMAGENET_CFG)
def squeezenet1_1_simple_bypass(**kwargs) -> SqueezeNet:
    """v1.1 with identity bypass around fire3, fire5, fire7, fire9."""
    return build_squeezenet("v1_1", bypass="simple", **kwargs)


@register_model(IMAGENET_CFG)
def squeezenet1_1_complex_bypass(**kwargs) -> SqueezeNet:
    """v1.1 with simple bypass plus 1x1-conv bypass around fire2, fire4, fire6, fire8."""
    return build_squeezenet("v1_1", bypass="complex", **kwargs)


@register_model(CIFAR10_CFG)
def squeezenet1_0_cifar(**kwargs) -> SqueezeNet:
    """v1.0 fires for 32x32 inputs: 3x3/1 stem with 96 filters, no stem pool, pools after fire4 and fire8
    (32 -> 16 -> 8), so the classifier sees an 8x8 map."""
    return build_squeezenet("v1_0_small", **kwargs)


@register_model(CIFAR10_CFG)
def squeezenet1_1_cifar(**kwargs) -> SqueezeNet:
    """v1.1 fires for 32x32 inputs: 3x3/1 stem with 64 filters, pools after fire3 and fire5 (32 -> 16 -> 8)."""
    return build_squeezenet("v1_1_small", **kwargs)


# What the plain network lacks to train from scratch at SGD's usual learning rate (0.1): without batch norm
# it sits at chance for hundreds of steps, and behind the final ReLU a class unit pushed negative by one
# large step never gets a gradient again (on the 1,293 digits both killed every class output in 30 epochs).
TRAINABLE_SQUEEZENET_KWARGS = {"batch_norm": "all", "final_relu": False}


@register_model(CIFAR10_CFG)
def squeezenet_bn_cifar(**kwargs) -> SqueezeNet:
    """``squeezenet1_1_cifar`` built to train from scratch: batch norm after every convolution and linear
    class scores (no final ReLU). The default model of ``squeezelab train``; keyword arguments override
    either (the CIFAR-10 recipe adds ``bypass="simple", dropout=0.0``)."""
    return build_squeezenet("v1_1_small", **{**TRAINABLE_SQUEEZENET_KWARGS, **kwargs})


@register_model(MNIST_CFG)
def squeezenet1_0_mnist(**kwargs) -> SqueezeNet:
    """v1.0 fires for 28x28 one-channel digits: the small-input stem, pools after fire4 and fire8 (28 -> 14 -> 7)."""
    return build_squeezenet("v1_0_small", **kwargs)


@register_model(MNIST_CFG)
def squeezenet1_1_mnist(**kwargs) -> SqueezeNet:
    """v1.1 fires for 28x28 one-channel digits: pools after fire3 and fire5 (28 -> 14 -> 7)."""
    return build_squeezenet("v1_1_small", **kwargs)


@register_model(CIFAR10_CFG)
def squeezenet_tiny_cifar(**kwargs) -> SqueezeNet:
    """Tiny four-fire SqueezeNet for CIFAR-10 (122,986 parameters, 14.0 MMACs at 32x32).

    The small CIFAR-10 SqueezeNet of the public reproductions: conv 3x3/1 with 64 filters, max pool
    (32 -> 16), fire2 and fire3 (s=16, e1x1=e3x3=64), max pool (16 -> 8), fire4 and fire5 (s=32,
    e1x1=e3x3=128), then the 1x1 conv to the classes and global average pooling. The fires are the
    paper's metaparameters (base_e=128, incr_e=128, freq=2, SR=0.125, pct_3x3=0.5) with four fires,
    so the generator's keyword arguments (squeeze_ratio, pct_3x3, bypass, fire_pairing, ...) apply.
    """
    return build_squeezenet("tiny_cifar", num_fires=4, **kwargs)
