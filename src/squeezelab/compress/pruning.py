"""Magnitude pruning as ``torch.nn.utils.parametrize`` masks: ``weight = original * mask``.

Fine-grained (single weights, Han et al.) or kernel-level (whole kh x kw kernels by their L2 norm, Mao et
al. 2017): below about a quarter of the weights, a fine-grained sparsity pattern costs more bytes in a
``.sqz`` file than the kept weights' cluster indices, and a kernel-level one about kh * kw times less.

Because the mask is a parametrization, any training loop (``squeezelab.train.fit`` included) fine-tunes
a pruned model with its pruned weights held at exactly zero, and the mask travels in the ``state_dict``.
:func:`bake` turns parametrized weights into plain ones (keeping the pruned / shared values);
:func:`strip` removes them and gives back the original weights.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Union

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from squeezelab.models.files import model_record
from squeezelab.models.registry import create_model
from squeezelab.utils.files import atomic_torch_save

from .layers import layer_weight, prunable_layers, resolve_per_layer, weight_parametrizations


@dataclass(frozen=True)
class StdThreshold:
    """Han et al.'s rule: prune the weights with ``|w| < scale * std(w)`` in each layer."""

    scale: float | Mapping[str, float]

    def __post_init__(self) -> None:
        # a scale <= 0 prunes nothing (no |w| lies below it) and NaN compares false with every weight
        for scale in _spec_values(self.scale):
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"std threshold scales must be finite numbers > 0 (<= 0 prunes nothing), got {scale}")


DensitySpec = Union[float, Mapping[str, float], StdThreshold]
GranularitySpec = Union[str, Mapping[str, str]]
GRANULARITIES = ("weight", "kernel")

# Layer densities close to the Deep Compression SqueezeNet v1.0 release (1x1 and stem layers are
# nearly dense there, 3x3 expands about a third dense, the classifier about a fifth).
DEEP_COMPRESSION_DENSITIES = {"stem": 1.0, "conv1x1": 1.0, "conv3x3": 0.33, "classifier": 0.2}


class PruningMask(nn.Module):
    """Parametrization ``weight = original * mask`` with a boolean mask buffer."""

    mask: torch.Tensor  # a buffer (declared for type checkers)

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _spec_values(spec: float | Mapping[str, float]) -> list[float]:
    return list(spec.values()) if isinstance(spec, Mapping) else [spec]


def current_mask(module: nn.Module) -> torch.Tensor:
    """The layer's current sparsity pattern: its parametrization's mask, else its non-zero weights."""
    if parametrize.is_parametrized(module, "weight"):
        for parametrization in weight_parametrizations(module):
            mask = getattr(parametrization, "mask", None)
            if mask is not None:
                return mask.clone()
    return layer_weight(module).detach() != 0


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"pruning granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")


def magnitude_mask(
    weight: torch.Tensor, density: float, allowed: torch.Tensor | None = None, granularity: str = "weight"
) -> torch.Tensor:
    """Keep exactly ``round(density * numel)`` largest-magnitude weights (among ``allowed`` ones), or with
    ``granularity="kernel"`` the ``round(density * kernels)`` kernels of largest L2 norm, whole (a layer
    whose kernels are single weights is pruned weight by weight either way)."""
    check_density(density)
    _check_granularity(granularity)
    taps = weight[0, 0].numel() if weight.dim() > 2 else 1
    if granularity == "weight" or taps == 1:
        scores = weight.detach().abs().flatten().float()
        return _largest(scores, density, None if allowed is None else allowed.flatten()).view_as(weight)
    kernels = weight.detach().float().reshape(-1, taps)
    kept = None if allowed is None else allowed.reshape(-1, taps).any(1)
    return _largest(kernels.norm(dim=1), density, kept)[:, None].expand(-1, taps).contiguous().view(weight.shape)


def _largest(scores: torch.Tensor, density: float, allowed: torch.Tensor | None) -> torch.Tensor:
    if allowed is not None:
        scores = torch.where(allowed, scores, torch.full_like(scores, -1.0))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[torch.topk(scores, round(density * scores.numel()), sorted=False).indices] = True
    return mask


def check_density(density: float) -> None:
    """Refuse a density outside (0, 1] (the fraction of weights kept)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")


def resolve_densities(model: nn.Module, spec: DensitySpec) -> dict[str, float]:
    """Per-layer densities from a spec; a single float is one global magnitude threshold over all layers."""
    layers = prunable_layers(model)
    if isinstance(spec, StdThreshold):
        scales = resolve_per_layer(model, spec.scale, "std threshold")
        return {name: _std_density(layer_weight(layers[name]), scale) for name, scale in scales.items()}
    if isinstance(spec, Mapping):
        densities = resolve_per_layer(model, spec, "density")
        for density in densities.values():
            check_density(density)
        return densities
    return _global_densities(layers, float(spec))


def _std_density(weight: torch.Tensor, scale: float) -> float:
    weight = weight.detach()
    kept = int((weight.abs() >= scale * weight.std()).sum())
    return max(kept, 1) / weight.numel()


def _global_densities(layers: Mapping[str, nn.Module], density: float) -> dict[str, float]:
    check_density(density)
    magnitudes = torch.cat([layer_weight(m).detach().abs().flatten() for m in layers.values()])
    keep = torch.zeros_like(magnitudes, dtype=torch.bool)
    keep[torch.topk(magnitudes, round(density * magnitudes.numel()), sorted=False).indices] = True
    densities, start = {}, 0
    for name, module in layers.items():
        count = layer_weight(module).numel()
        densities[name] = max(int(keep[start : start + count].sum()), 1) / count
        start += count
    return densities


def prune(model: nn.Module, spec: DensitySpec, granularity: GranularitySpec = "weight") -> dict[str, float]:
    """Magnitude-prune every layer the spec covers, in place; returns the densities reached.

    Already-pruned weights stay pruned (densities only go down), so calling this repeatedly with
    falling targets, with fine-tuning in between, is Han et al.'s iterative pruning. ``granularity``
    (one value or per layer, as densities are given): ``"weight"`` or ``"kernel"``, see :func:`magnitude_mask`.
    """
    layers = prunable_layers(model)
    densities = resolve_densities(model, spec)
    granularities = resolve_per_layer(model, granularity, "granularity")
    reached = {}
    for name, density in densities.items():
        module = layers[name]
        allowed = current_mask(module)
        kept = allowed.float().mean().item()
        mask = magnitude_mask(layer_weight(module), min(density, kept), allowed, granularities.get(name, "weight"))
        set_mask(module, mask)
        reached[name] = mask.float().mean().item()
    return reached


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Give ``module.weight`` the pruning mask ``mask`` (replacing any mask it already has)."""
    if parametrize.is_parametrized(module, "weight"):
        for parametrization in weight_parametrizations(module):
            if isinstance(parametrization, PruningMask):
                parametrization.mask.copy_(mask)
                return
        bake_module(module)
    parametrize.register_parametrization(module, "weight", PruningMask(mask.to(layer_weight(module).device)))


def iterative_prune(
    model: nn.Module,
    spec: DensitySpec,
    steps: int,
    fine_tune: Callable[[nn.Module, int], object],
    granularity: GranularitySpec = "weight",
) -> dict[str, float]:
    """Prune to ``spec`` in ``steps`` geometric steps, calling ``fine_tune(model, step)`` after each."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    targets = resolve_densities(model, spec)
    reached: dict[str, float] = {}
    for step in range(1, steps + 1):
        reached = prune(model, {name: density ** (step / steps) for name, density in targets.items()}, granularity)
        fine_tune(model, step)
    return reached


def densities(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero weights of every prunable layer."""
    return {name: current_mask(m).float().mean().item() for name, m in prunable_layers(model).items()}


def bake_module(module: nn.Module) -> None:
    _remove_parametrizations(module, leave_parametrized=True)


def strip_module(module: nn.Module) -> None:
    _remove_parametrizations(module, leave_parametrized=False)


def _remove_parametrizations(module: nn.Module, leave_parametrized: bool) -> None:
    for tensor_name in list(getattr(module, "parametrizations", {})):
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=leave_parametrized)
        # weight sharing freezes the dense weight it ignores; as a plain weight again it trains
        getattr(module, tensor_name).requires_grad_(True)


def bake(model: nn.Module) -> nn.Module:
    """Replace parametrized weights by their current values (pruned zeros, shared centroids), in place."""
    return _for_every_module(model, bake_module)


def strip(model: nn.Module) -> nn.Module:
    """Remove every parametrization, giving back the weights from before pruning / sharing, in place."""
    return _for_every_module(model, strip_module)


def _for_every_module(model: nn.Module, change: Callable[[nn.Module], None]) -> nn.Module:
    for module in list(model.modules()):
        change(module)
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``state_dict`` the model would have after :func:`bake`, without changing the model.

    (Baking a ``copy.deepcopy`` instead is unsafe: the copy shares the parametrized module classes,
    and removing a parametrization deletes the property from that shared class.)
    """
    state = {key: value for key, value in model.state_dict().items() if ".parametrizations." not in key}
    for name, module in model.named_modules():
        for tensor_name in getattr(module, "parametrizations", {}):
            prefix = f"{name}." if name else ""
            state[f"{prefix}{tensor_name}"] = getattr(module, tensor_name).detach()
    return state


def save_plain_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a model file (``squeezelab.models.files`` format) of the model's current, plain weights:
    loadable by ``load_model`` into the unparametrized architecture."""
    record = model_record(model)
    record["state_dict"] = {key: value.detach().cpu() for key, value in plain_state_dict(model).items()}
    atomic_torch_save(record, path)


def plain_copy(model: nn.Module) -> nn.Module:
    """A new model, rebuilt from ``model.model_spec``, holding ``model``'s current weights without
    parametrizations (safe to modify: ``copy.deepcopy`` of a parametrized model is not)."""
    spec = getattr(model, "model_spec", None)
    if spec is None:
        raise ValueError("model has no model_spec: build it with squeezelab.create_model")
    copy = create_model(spec["name"], **spec.get("kwargs", {}))
    copy.load_state_dict(plain_state_dict(model))
    copy.default_cfg = model.default_cfg
    parameter = next(model.parameters(), None)
    return copy.to(parameter.device if parameter is not None else "cpu").train(model.training)
