"""Trained quantization (weight sharing) as a parametrization: ``weight = codebook[indices] * mask``.

The codebook is the layer's trainable parameter. The gather's backward adds up the gradients of all
weights that share a centroid, which is exactly Han et al.'s grouped centroid update, so any training
loop fine-tunes the centroids while the sparsity pattern and the assignments stay fixed.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .kmeans import kmeans_1d
from .layers import parse_per_layer, prunable_layers, resolve_per_layer
from .pruning import bake_module, current_mask

MAX_BITS = 16


class WeightSharing(nn.Module):
    """Parametrization ``weight = codebook[indices] * mask`` (the input weight is ignored)."""

    def __init__(self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("indices", indices.to(torch.long))
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.indices].to(weight.dtype) * self.mask


def parse_bits_spec(text: str) -> int | dict[str, int]:
    """``6`` for every layer or ``conv=8,classifier=5`` by layer name / kind."""
    return parse_per_layer(text, int, "--bits")


def weight_sharing(module: nn.Module) -> WeightSharing | None:
    if parametrize.is_parametrized(module, "weight"):
        for parametrization in module.parametrizations.weight:
            if isinstance(parametrization, WeightSharing):
                return parametrization
    return None


def share_weights(module: nn.Module, bits: int, init: str = "optimal") -> WeightSharing:
    """Cluster the layer's surviving weights into at most ``2**bits`` shared values (k-means)."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    mask = current_mask(module)
    weight = module.weight.detach()
    codebook, labels = kmeans_1d(weight[mask].cpu().numpy(), 1 << bits, init=init)
    indices = torch.zeros(weight.shape, dtype=torch.long)
    indices[mask.cpu()] = torch.from_numpy(labels)
    return set_weight_sharing(module, torch.from_numpy(codebook), indices, mask)


def set_weight_sharing(
    module: nn.Module, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor
) -> WeightSharing:
    """Replace the layer's parametrizations by weight sharing with the given codebook and assignment."""
    bake_module(module)
    device = module.weight.device
    sharing = WeightSharing(codebook.to(device), indices.to(device), mask.to(device))
    parametrize.register_parametrization(module, "weight", sharing)
    return sharing


def quantize(model: nn.Module, bits: int | Mapping[str, int], init: str = "optimal") -> dict[str, int]:
    """Weight-share every layer ``bits`` covers (pruned weights stay zero); returns codebook sizes."""
    layers = prunable_layers(model)
    return {
        name: len(share_weights(layers[name], layer_bits, init).codebook)
        for name, layer_bits in resolve_per_layer(model, bits, "bits").items()
    }


def index_bits(codebook_size: int) -> int:
    """Bits of a fixed-length index into a codebook of this size (what "n-bit quantization" names)."""
    return max(1, math.ceil(math.log2(max(codebook_size, 1))))


def shared_layers(model: nn.Module) -> dict[str, WeightSharing]:
    found = {name: weight_sharing(m) for name, m in prunable_layers(model).items()}
    return {name: sharing for name, sharing in found.items() if sharing is not None}


def codebook_as_numpy(sharing: WeightSharing) -> np.ndarray:
    return sharing.codebook.detach().cpu().float().numpy()
