"""Data-dependent and identity initialisation, and batch-norm settings, applied before training starts.

* Patch whitening (airbench; Page, "How to train your ResNet"): the first convolution's filters become
  the eigenvectors of the covariance of k x k training-image patches, scaled by the inverse square root of
  their eigenvalues, each with its negation, so the first layer outputs whitened patches from the start.
* Dirac (identity) initialisation: the first ``min(in, out)`` filters of every convolution with an odd
  kernel pass their input channel through unchanged, an implicit residual that lets deep plain stacks train
  at high learning rates.
"""

from __future__ import annotations

import torch
import torch.nn as nn

INIT_MODES = ("default", "dirac")
WHITENING_MODES = ("none", "frozen", "trainable")
WHITENING_EPS = 5e-4  # added to the eigenvalues: keeps the near-zero directions of the patches from exploding


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first ``Conv2d`` in module order (the layer a whitening initialisation replaces)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("whitening: the model has no convolution to initialise")
    return conv


def check_whitening_layer(conv: nn.Conv2d, channels: int) -> None:
    """A one-line error unless ``conv`` can hold a whitening of its input patches."""
    kh, kw = conv.kernel_size
    needed = 2 * channels * kh * kw
    if conv.groups != 1 or conv.in_channels != channels or conv.out_channels < needed:
        raise ValueError(
            f"whitening: the model's first layer is a {conv.in_channels}->{conv.out_channels} {kh}x{kw} convolution "
            f"(groups {conv.groups}); whitening {channels}-channel {kh}x{kw} patches needs at least {needed} filters"
        )


@torch.no_grad()
def fit_patch_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = WHITENING_EPS) -> None:
    """Set ``conv``'s first ``2 * C * kh * kw`` filters to whiten the patches of ``images`` (normalised
    ``N x C x H x W`` floats); the filters beyond them keep their initialisation."""
    check_whitening_layer(conv, images.shape[1])
    kh, kw = conv.kernel_size
    c = images.shape[1]
    patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
    covariance = patches.T.double() @ patches.double() / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).flip(0).float()
    filters = filters.reshape(c * kh * kw, c, kh, kw)
    count = 2 * len(filters)
    conv.weight[:count] = torch.cat((filters, -filters)).to(conv.weight.dtype)
    if conv.bias is not None:
        conv.bias[:count] = 0.0


@torch.no_grad()
def dirac_init(model: nn.Module) -> int:
    """Identity-initialise every ungrouped convolution with an odd square kernel; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1 and all(k % 2 for k in module.kernel_size):
            weight = module.weight
            nn.init.dirac_(weight[: min(weight.shape[0], weight.shape[1])])
            count += 1
    return count


def set_batch_norm(model: nn.Module, momentum: float | None, freeze_weight: bool) -> None:
    """Running-statistics ``momentum`` (PyTorch's convention; None keeps each layer's) and frozen scales."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                module.momentum = momentum
            if freeze_weight and module.weight is not None:
                module.weight.requires_grad_(False)
