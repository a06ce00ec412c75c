"""The baselines SqueezeNet is compared against: AlexNet, VGG19 (plain, batch-norm, squeezed) and a plain CNN.

ImageNet versions (``alexnet``, ``vgg19``, ``vgg19_bn``) have torchvision's layer layout and
``state_dict`` keys, so torchvision checkpoints load with ``strict=True`` and give identical outputs.

Small-input versions (``*_cifar`` for 3x32x32, ``*_mnist`` for 1x28x28; the two share one
architecture and differ only in their default config) keep each network's layer plan but:

* AlexNet: the 11x11/4 first conv becomes 3x3/1 and the three 3x3/2 max pools become 2x2/2 pools
  rounding up, so 32x32 and 28x28 both end at a 4x4x256 map (4,096 features) before the three fully
  connected layers, which keep AlexNet's 4096 width.
* VGG19: the five 2x2/2 pools round up (32 -> 16 -> 8 -> 4 -> 2 -> 1 and 28 -> 14 -> 7 -> 4 -> 2 -> 1)
  and the classifier is three fully connected layers of 512 units on the 1x1x512 map.

Every network ends its features with an adaptive average pool to the map size it was designed for
(as torchvision does), so other input sizes work too.
"""

from __future__ import annotations

from typing import Sequence, cast

import torch
import torch.nn as nn

from .registry import CIFAR10_CFG, IMAGENET_CFG, MNIST_CFG, register_model

POOL = "M"
VGG19_PLAN = (
    64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL
)
INPUT_SCALES = ("imagenet", "small")


def _classifier(
    in_features: int, hidden: int, num_classes: int, dropout: float, dropout_first: bool
) -> nn.Sequential:
    """Three fully connected layers with ReLU and dropout; ``dropout_first`` gives AlexNet's order
    (dropout before each hidden layer), otherwise VGG's (dropout after each hidden ReLU)."""
    layers: list[nn.Module] = []
    for fan_in in (in_features, hidden):
        hidden_layer = [nn.Linear(fan_in, hidden), nn.ReLU(inplace=True)]
        drop = nn.Dropout(p=dropout)
        layers.extend([drop, *hidden_layer] if dropout_first else [*hidden_layer, drop])
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)


def _check_input_scale(input_scale: str) -> None:
    if input_scale not in INPUT_SCALES:
        raise ValueError(f"input_scale must be one of {INPUT_SCALES}, got {input_scale!r}")


class AlexNet(nn.Module):
    """AlexNet with torchvision's attribute names: ``features``, ``avgpool``, ``classifier``.

    Args:
        input_scale: ``"imagenet"`` (torchvision's network) or ``"small"`` (32x32 / 28x28 inputs).
        num_classes, in_chans: output classes and input channels.
        dropout: dropout probability before the two hidden fully connected layers.
    """

    def __init__(
        self, input_scale: str = "imagenet", num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        _check_input_scale(input_scale)
        small = input_scale == "small"
        first_conv = (
            nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1)
            if small
            else nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        )

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True) if small else nn.MaxPool2d(3, stride=2)

        self.features = nn.Sequential(
            first_conv,
            nn.ReLU(inplace=True),
            pool(),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            pool(),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            pool(),
        )
        map_size = 4 if small else 6
        self.avgpool = nn.AdaptiveAvgPool2d((map_size, map_size))
        self.classifier = _classifier(256 * map_size * map_size, 4096, num_classes, dropout, dropout_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg_features(
    plan: Sequence[int | str],
    in_chans: int = 3,
    batch_norm: bool = False,
    squeezed: bool = False,
    ceil_mode: bool = False,
) -> nn.Sequential:
    """VGG convolution stack in torchvision's layout (conv, [batch norm], ReLU, ..., 2x2/2 max pool).

    ``squeezed`` turns every 3x3 conv into a 1x1 conv except those of the last block (the convs after the
    last-but-one pool), where the map is smallest and a 3x3 conv is cheapest.
    """
    last_block = sum(1 for item in plan if item == POOL) - 1
    layers: list[nn.Module] = []
    channels, block = in_chans, 0
    for item in plan:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            block += 1
            continue
        kernel = 1 if squeezed and block < last_block else 3
        layers.append(nn.Conv2d(channels, int(item), kernel_size=kernel, padding=kernel // 2))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(item)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG with torchvision's attribute names and initialisation: ``features``, ``avgpool``, ``classifier``.

    Args:
        features: the convolution stack (see :func:`vgg_features`), ending with 512 channels.
        map_size: side of the adaptive average pool's output (7 as torchvision, 1 for small inputs).
        hidden: width of the two hidden fully connected layers (4096 as torchvision).
        num_classes, dropout: output classes and dropout probability after each hidden layer.
    """

    def __init__(
        self,
        features: nn.Sequential,
        map_size: int = 7,
        hidden: int = 4096,
        num_classes: int = 1000,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((map_size, map_size))
        self.classifier = _classifier(512 * map_size * map_size, hidden, num_classes, dropout, dropout_first=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(cast(torch.Tensor, module.bias))  # VGG's convolutions have biases (vgg_features)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_vgg19(
    input_scale: str = "imagenet",
    batch_norm: bool = False,
    squeezed: bool = False,
    num_classes: int = 1000,
    in_chans: int = 3,
    dropout: float = 0.5,
) -> VGG:
    """VGG19 (configuration E) for ImageNet-size or small inputs, optionally with batch norm or squeezed."""
    _check_input_scale(input_scale)
    small = input_scale == "small"
    features = vgg_features(VGG19_PLAN, in_chans, batch_norm=batch_norm, squeezed=squeezed, ceil_mode=small)
    if small:
        return VGG(features, map_size=1, hidden=512, num_classes=num_classes, dropout=dropout)
    return VGG(features, num_classes=num_classes, dropout=dropout)


class PlainCNN(nn.Module):
    """Two blocks of 5x5 conv (64 filters) + ReLU + 3x3/2 max pool, then fully connected 384 -> 192 -> classes.

    The classic CIFAR-10 network of the TensorFlow tutorial, without its local response normalisation.
    ``map_size`` is the side of the map after the two pools (8 for 32x32 inputs, 7 for 28x28).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, map_size: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((map_size, map_size))
        self.classifier = nn.Sequential(
            nn.Linear(64 * map_size * map_size, 384),
            nn.ReLU(inplace=True),
            nn.Linear(384, 192),
            nn.ReLU(inplace=True),
            nn.Linear(192, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model(IMAGENET_CFG)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet as torchvision (61,100,840 parameters); torchvision checkpoints load unchanged."""
    return AlexNet("imagenet", **kwargs)


@register_model(IMAGENET_CFG)
def vgg19(**kwargs) -> VGG:
    """VGG19 as torchvision (143,667,240 parameters); torchvision checkpoints load unchanged."""
    return build_vgg19("imagenet", **kwargs)


@register_model(IMAGENET_CFG)
def vgg19_bn(**kwargs) -> VGG:
    """VGG19 with batch norm after every conv, as torchvision's ``vgg19_bn``."""
    return build_vgg19("imagenet", batch_norm=True, **kwargs)


@register_model(IMAGENET_CFG)
def vgg19_squeezed(**kwargs) -> VGG:
    """VGG19 with 1x1 convs in blocks 1-4 and 3x3 convs only in block 5; ``batch_norm=True`` optional."""
    return build_vgg19("imagenet", squeezed=True, **kwargs)


@register_model(CIFAR10_CFG)
def alexnet_cifar(**kwargs) -> AlexNet:
    """AlexNet for 32x32 inputs: 3x3/1 first conv, 2x2 pools, 4x4x256 map, 4096-wide classifier."""
    return AlexNet("small", **kwargs)


@register_model(CIFAR10_CFG)
def vgg19_cifar(**kwargs) -> VGG:
    """VGG19 for 32x32 inputs: 1x1x512 map, classifier 512 -> 512 -> classes."""
    return build_vgg19("small", **kwargs)


@register_model(CIFAR10_CFG)
def vgg19_bn_cifar(**kwargs) -> VGG:
    """VGG19 with batch norm for 32x32 inputs."""
    return build_vgg19("small", batch_norm=True, **kwargs)


@register_model(CIFAR10_CFG)
def vgg19_squeezed_cifar(**kwargs) -> VGG:
    """Squeezed VGG19 for 32x32 inputs (1x1 convs except in block 5); ``batch_norm=True`` optional."""
    return build_vgg19("small", squeezed=True, **kwargs)


@register_model(CIFAR10_CFG)
def plain_cnn_cifar(**kwargs) -> PlainCNN:
    """Plain two-conv-block CNN for 32x32 inputs (8x8x64 map into the fully connected layers)."""
    return PlainCNN(map_size=8, **kwargs)


@register_model(MNIST_CFG)
def alexnet_mnist(**kwargs) -> AlexNet:
    """The small-input AlexNet with MNIST's default config (1x28x28 digits)."""
    return AlexNet("small", **kwargs)


@register_model(MNIST_CFG)
def vgg19_mnist(**kwargs) -> VGG:
    """The small-input VGG19 with MNIST's default config."""
    return build_vgg19("small", **kwargs)


@register_model(MNIST_CFG)
def vgg19_bn_mnist(**kwargs) -> VGG:
    """The small-input VGG19 with batch norm, MNIST's default config."""
    return build_vgg19("small", batch_norm=True, **kwargs)


@register_model(MNIST_CFG)
def vgg19_squeezed_mnist(**kwargs) -> VGG:
    """The small-input squeezed VGG19, MNIST's default config; ``batch_norm=True`` optional."""
    return build_vgg19("small", squeezed=True, **kwargs)


@register_model(MNIST_CFG)
def plain_cnn_mnist(**kwargs) -> PlainCNN:
    """Plain two-conv-block CNN for 28x28 digits (7x7x64 map into the fully connected layers)."""
    return PlainCNN(map_size=7, **kwargs)
