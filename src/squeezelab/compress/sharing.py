"""Trained quantization (weight sharing) as a parametrization: ``weight = codebook[indices] * mask``.

The codebook is the layer's trainable parameter, so any training loop fine-tunes the centroids while the
sparsity pattern and the assignments stay fixed. Each centroid's gradient groups those of the weights
sharing it: by default their mean (``centroid_update="mean"``), so a centroid shared by thousands of
weights takes steps the size of one weight's at the same learning rate; ``"sum"`` is Han et al.'s
update (what the gather's backward gives), whose steps, and a layer's effective learning rate, grow
with the cluster's size (on CIFAR-10 at lr 0.01 it knocked a SqueezeNet from 87% to 14% train top-1).

Fine-tuning only the centroids keeps every weight in the cluster k-means gave it. With few bits that costs
accuracy that no centroid move recovers, so ``shared_training="latent"`` fine-tunes quantization-aware instead
(:class:`LatentWeightSharing`): the dense weights stay trainable and every step uses their nearest centroids;
:func:`fix_assignments` then turns the result into plain weight sharing for the file.
"""

from __future__ import annotations

import math
from typing import Mapping, TypeVar

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .kmeans import kmeans_1d_many
from .layers import layer_weight, prunable_layers, resolve_per_layer, weight_parametrizations
from .pruning import bake_module, current_mask

MAX_BITS = 16
CENTROID_UPDATES = ("sum", "mean")
SHARED_TRAININGS = ("centroids", "latent")
P = TypeVar("P", bound=nn.Module)


class _ScaledGradient(torch.autograd.Function):
    """Identity whose backward multiplies the gradient by ``scale`` (the values stay bit-exact)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class WeightSharing(nn.Module):
    """Parametrization ``weight = codebook[indices] * mask`` (the input weight is ignored); ``centroid_update``
    is ``"mean"`` or ``"sum"`` (Han et al.) of the gradients of the weights sharing a centroid."""

    # buffers (declared for type checkers)
    indices: torch.Tensor
    mask: torch.Tensor
    gradient_scale: torch.Tensor

    def __init__(
        self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, centroid_update: str = "mean"
    ) -> None:
        super().__init__()
        if centroid_update not in CENTROID_UPDATES:
            raise ValueError(f"centroid_update must be one of {', '.join(CENTROID_UPDATES)}, got {centroid_update!r}")
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("indices", indices.to(torch.long))
        self.register_buffer("mask", mask.to(torch.bool))
        self.centroid_update = centroid_update
        self.register_buffer("gradient_scale", self._inverse_cluster_sizes(), persistent=False)
        # a checkpoint brings its own assignment (a resumed compression run): the cluster sizes follow it
        self.register_load_state_dict_post_hook(WeightSharing._recount_clusters)

    def _recount_clusters(self, _incompatible_keys) -> None:
        self.gradient_scale.copy_(self._inverse_cluster_sizes())

    def _inverse_cluster_sizes(self) -> torch.Tensor:
        counts = torch.bincount(self.indices[self.mask], minlength=len(self.codebook)).clamp(min=1)
        return 1.0 / counts.to(self.codebook.dtype)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        codebook = self.codebook
        if self.centroid_update == "mean":
            codebook = _ScaledGradient.apply(codebook, self.gradient_scale)
        return codebook[self.indices].to(weight.dtype) * self.mask


class LatentWeightSharing(nn.Module):
    """Parametrization ``weight = codebook[nearest centroid of the latent weight] * mask`` for quantization-aware
    fine-tuning: the input (latent, full-precision) weight trains, its gradient is the shared weight's (passed
    straight through the rounding), and every training forward first moves each centroid to the mean of the
    latent weights nearest to it (a k-means step), so the codebook follows the weights. In eval mode nothing
    moves, and :meth:`assign` gives the indices the forward uses.
    """

    # buffers (declared for type checkers)
    codebook: torch.Tensor
    mask: torch.Tensor

    def __init__(self, codebook: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        # sorted, nearest-centroid assignment is a search between midpoints; a k-means step keeps the order
        self.register_buffer("codebook", torch.sort(codebook.detach().float()).values)
        self.register_buffer("mask", mask.to(torch.bool))

    def assign(self, weight: torch.Tensor) -> torch.Tensor:
        """Index of each weight's nearest centroid."""
        midpoints = (self.codebook[1:] + self.codebook[:-1]) / 2
        return torch.bucketize(weight.detach().float().contiguous(), midpoints)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._kmeans_step(weight.detach()[self.mask])
        shared = self.codebook[self.assign(weight)].to(weight.dtype)
        # straight-through: the value is exactly the shared one (w + (s - w) can round away from s), the
        # gradient goes to the latent weight
        return (shared + (weight - weight.detach())) * self.mask

    @torch.no_grad()
    def _kmeans_step(self, kept: torch.Tensor) -> None:
        labels = self.assign(kept)
        sums = torch.zeros_like(self.codebook).index_add_(0, labels, kept.float())
        counts = torch.bincount(labels, minlength=len(self.codebook))
        self.codebook.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), self.codebook))


def weight_sharing(module: nn.Module) -> WeightSharing | None:
    return _weight_parametrization(module, WeightSharing)


def _weight_parametrization(module: nn.Module, kind: type[P]) -> P | None:
    if parametrize.is_parametrized(module, "weight"):
        for parametrization in weight_parametrizations(module):
            if isinstance(parametrization, kind):
                return parametrization
    return None


def share_weights(
    module: nn.Module, bits: int, init: str = "optimal", centroid_update: str = "mean", shared_training: str = "centroids"
) -> WeightSharing | LatentWeightSharing:
    """Cluster the layer's surviving weights into at most ``2**bits`` shared values (k-means); what
    fine-tuning then trains: see :func:`quantize`."""
    return _share_all([module], [bits], init, centroid_update, shared_training)[0]


def _share_all(
    modules: list[nn.Module], bits: list[int], init: str, centroid_update: str, shared_training: str
) -> list[WeightSharing | LatentWeightSharing]:
    if shared_training not in SHARED_TRAININGS:
        raise ValueError(f"shared_training must be one of {', '.join(SHARED_TRAININGS)}, got {shared_training!r}")
    plans = planned_sharing(modules, bits, init)
    if shared_training == "latent":
        return [set_latent_sharing(module, plan.codebook, plan.mask) for module, plan in zip(modules, plans)]
    return [set_weight_sharing(module, plan.codebook, plan.indices, plan.mask, centroid_update) for module, plan in zip(modules, plans)]


def planned_sharing(modules: list[nn.Module], bits: list[int], init: str = "optimal") -> list[WeightSharing]:
    """The weight sharing each layer would get (k-means of its surviving weights), without installing it:
    to measure its coded size, for example."""
    for value in bits:
        if not 1 <= value <= MAX_BITS:
            raise ValueError(f"bits must be in 1..{MAX_BITS}, got {value}")
    masks = [current_mask(module).cpu() for module in modules]
    kept = [layer_weight(module).detach().cpu()[mask].numpy() for module, mask in zip(modules, masks)]
    clusterings = kmeans_1d_many(kept, [1 << value for value in bits], init=init)
    planned = []
    for mask, (codebook, labels) in zip(masks, clusterings):
        indices = torch.zeros(mask.shape, dtype=torch.long)
        indices[mask] = torch.from_numpy(labels)
        planned.append(WeightSharing(torch.from_numpy(codebook), indices, mask))
    return planned


def set_weight_sharing(
    module: nn.Module, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor, centroid_update: str = "mean"
) -> WeightSharing:
    """Replace the layer's parametrizations by weight sharing with the given codebook and assignment."""
    bake_module(module)
    device = layer_weight(module).device
    sharing = WeightSharing(codebook.to(device), indices.to(device), mask.to(device), centroid_update)
    parametrize.register_parametrization(module, "weight", sharing)
    # the codebook replaces the ignored dense weight; a trainable but unused parameter would also stop
    # DistributedDataParallel ("parameters that were not used in producing loss")
    weight_parametrizations(module).original.requires_grad_(False)
    return sharing


def set_latent_sharing(module: nn.Module, codebook: torch.Tensor, mask: torch.Tensor) -> LatentWeightSharing:
    """Replace the layer's parametrizations by quantization-aware weight sharing (:class:`LatentWeightSharing`)
    starting from ``codebook``; the current (masked) weight becomes the latent weight."""
    bake_module(module)
    device = layer_weight(module).device
    sharing = LatentWeightSharing(codebook.to(device), mask.to(device))
    parametrize.register_parametrization(module, "weight", sharing)
    return sharing


def fix_assignments(model: nn.Module, centroid_update: str = "mean") -> dict[str, WeightSharing]:
    """End quantization-aware fine-tuning: every :class:`LatentWeightSharing` layer becomes plain
    :class:`WeightSharing` with its current codebook and nearest-centroid assignment (the weights the model
    computed with in eval mode, exactly), which is what a ``.sqz`` file stores."""
    fixed = {}
    for name, module in prunable_layers(model).items():
        latent = _weight_parametrization(module, LatentWeightSharing)
        if latent is not None:
            indices = latent.assign(weight_parametrizations(module).original) * latent.mask
            fixed[name] = set_weight_sharing(module, latent.codebook, indices, latent.mask, centroid_update)
    return fixed


def quantize(
    model: nn.Module,
    bits: int | Mapping[str, int],
    init: str = "optimal",
    centroid_update: str = "mean",
    shared_training: str = "centroids",
) -> dict[str, int]:
    """Weight-share every layer ``bits`` covers (pruned weights stay zero); returns codebook sizes.

    What fine-tuning then trains, ``shared_training``: ``"centroids"`` (Han et al.; the assignment stays
    fixed, ``centroid_update`` as in :class:`WeightSharing`) or ``"latent"`` (quantization-aware, see
    :class:`LatentWeightSharing`; call :func:`fix_assignments` afterwards). All layers are clustered
    together (see :func:`.kmeans.kmeans_1d_many`), which is faster than one by one.
    """
    layers = prunable_layers(model)
    plan = resolve_per_layer(model, bits, "bits")
    shared = _share_all([layers[name] for name in plan], list(plan.values()), init, centroid_update, shared_training)
    return {name: len(sharing.codebook) for name, sharing in zip(plan, shared)}


def index_bits(codebook_size: int) -> int:
    """Bits of a fixed-length index into a codebook of this size (what "n-bit quantization" names)."""
    return max(1, math.ceil(math.log2(max(codebook_size, 1))))


def shared_layers(model: nn.Module) -> dict[str, WeightSharing]:
    found = {name: weight_sharing(m) for name, m in prunable_layers(model).items()}
    return {name: sharing for name, sharing in found.items() if sharing is not None}
