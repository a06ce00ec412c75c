"""Structured (filter) pruning of SqueezeNet-family models that really shrinks the layers.

Filters are ranked by the L1 norm of their weights (Li et al., 2017) and the weakest removed per layer.
The Fire module's wiring is respected: a squeeze layer's filters feed both expand layers; the expand1x1
and expand3x3 filters, concatenated in that order, feed the next fire's squeeze (and its bypass
convolution) or the classifier; a complex bypass convolution's filters are cut like the concatenation
they are added to. The result is a new model built by the registry from the same name with explicit
``fire_specs`` / ``stem_channels``, so its ``model_spec`` (stored in every model and ``.sqz`` file)
rebuilds it anywhere, and it trains, saves and loads like any other model.

Models with a simple (identity) bypass only have their squeeze layers and stem pruned: an identity
bypass needs a fire's input and output channels to stay aligned.

In a SqueezeNext block the four inner convolutions (two squeezes and the two separable convolutions)
are pruned, each removing the matching input columns of the next; the expand convolution keeps its
outputs, which the residual shortcut adds to. The smaller model is rebuilt with explicit ``block_widths``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn

from squeezelab.models.fire import Fire, FirePair
from squeezelab.models.registry import create_model, model_spec
from squeezelab.models.squeezenet import FIRST_FIRE, SqueezeNet
from squeezelab.models.squeezenext import INNER_CONVS, SqueezeNext, SqueezeNextBlock

from .layers import layer_weight, resolve_per_layer
from .pruning import plain_state_dict

Slices = dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]  # module -> (kept outputs, kept inputs)


def prune_filters(model: nn.Module, keep: float | Mapping[str, float]) -> nn.Module:
    """A smaller copy of ``model`` keeping the given fraction of filters per layer (L1-norm ranking).

    ``keep`` is one fraction for every prunable layer or a mapping by layer name / kind (``stem``,
    ``conv1x1``, ``conv3x3``, ...; see :mod:`.layers`). The classifier keeps its outputs (the classes);
    every layer keeps at least one filter. ``model`` is not changed.
    """
    if isinstance(model, SqueezeNext) and hasattr(model, "model_spec"):
        return _prune_squeezenext(model, keep)
    squeezenet = _squeezenet(model)
    fires = _fires(squeezenet)
    prunable = _prunable_convs(squeezenet, fires)
    kept = _kept_filters(squeezenet, prunable, keep)
    kwargs = dict(model_spec(squeezenet).get("kwargs", {}))
    kwargs["fire_specs"] = [[len(kept[f"{p}.squeeze"]), *_expand_counts(fire, p, kept)] for p, fire in fires]
    kwargs["stem_channels"] = len(kept["features.0"])
    kwargs["fire_specs"] = _with_removed_fires(kwargs["fire_specs"], kwargs.get("remove_fires", ()))
    return _rebuilt(squeezenet, kwargs, _slices(squeezenet, fires, kept))


def _prune_squeezenext(model: SqueezeNext, keep: float | Mapping[str, float]) -> nn.Module:
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, SqueezeNextBlock)]
    prunable = [f"{name}.body.{conv}.conv" for name, _ in blocks for conv in INNER_CONVS]
    kept = _kept_filters(model, prunable, keep)
    slices: Slices = {}
    for name, _ in blocks:
        previous = None
        for conv in INNER_CONVS:
            outputs = kept[f"{name}.body.{conv}.conv"]
            slices[f"{name}.body.{conv}.conv"] = (outputs, previous)
            slices[f"{name}.body.{conv}.bn"] = (outputs, None)
            previous = outputs
        slices[f"{name}.body.expand.conv"] = (None, previous)
    kwargs = dict(model_spec(model).get("kwargs", {}))
    kwargs["block_widths"] = [[len(kept[f"{name}.body.{conv}.conv"]) for conv in INNER_CONVS] for name, _ in blocks]
    return _rebuilt(model, kwargs, slices)


def _kept_filters(model: nn.Module, prunable: list[str], keep: float | Mapping[str, float]) -> dict[str, torch.Tensor]:
    """The indices of the filters each prunable layer keeps (all of them where ``keep`` says nothing)."""
    fractions = {name: f for name, f in resolve_per_layer(model, keep, "keep_filters").items() if name in prunable}
    for name, fraction in fractions.items():
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"keep fraction for {name} must be in (0, 1], got {fraction}")
    # module.weight is the effective (masked / shared) weight, as in plain_state_dict, without copying the model
    return {name: _strongest_filters(layer_weight(model.get_submodule(name)), fractions.get(name, 1.0)) for name in prunable}


def _rebuilt(model: nn.Module, kwargs: dict, slices: Slices) -> nn.Module:
    """The registry's model of the same name built with ``kwargs``, holding ``model``'s sliced weights."""
    smaller = create_model(model_spec(model)["name"], **kwargs)
    smaller.load_state_dict(_sliced_state(plain_state_dict(model), slices, smaller.state_dict()))
    smaller.default_cfg = model.default_cfg
    return smaller.train(model.training)


def _squeezenet(model: nn.Module) -> SqueezeNet:
    if not isinstance(model, SqueezeNet) or not hasattr(model, "model_spec"):
        raise ValueError("structured pruning needs a SqueezeNet or SqueezeNext model built by squeezelab.create_model")
    return model


def _fires(model: SqueezeNet) -> list[tuple[str, Fire]]:
    if any(isinstance(m, FirePair) for m in model.features):
        raise ValueError("structured pruning supports plain Fire modules only (not fire_pairing models)")
    fires = [(f"features.{i}", m) for i, m in enumerate(model.features) if isinstance(m, Fire)]
    _stem(model)  # raises unless features.0 is a convolution
    return fires


def _stem(model: SqueezeNet) -> nn.Conv2d:
    stem = model.features[0]
    if not isinstance(stem, nn.Conv2d):
        raise ValueError("structured pruning expects the stem convolution at features.0")
    return stem


def _prunable_convs(model: nn.Module, fires: list[tuple[str, Fire]]) -> list[str]:
    identity_bypass = any(fire.bypass_kind == "simple" for _, fire in fires)
    names = ["features.0"]
    for prefix, fire in fires:
        names.append(f"{prefix}.squeeze")
        if not identity_bypass:
            names += [f"{prefix}.{branch}" for branch in ("expand1x1", "expand3x3") if getattr(fire, branch) is not None]
    return names


def _strongest_filters(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    count = max(1, round(fraction * weight.shape[0]))
    norms = weight.detach().abs().flatten(1).sum(1)
    return torch.topk(norms, count).indices.sort().values


def _all(count: int) -> torch.Tensor:
    return torch.arange(count)


def _slices(model: SqueezeNet, fires: list[tuple[str, Fire]], kept: dict[str, torch.Tensor]) -> Slices:
    """Which output and input channels of every conv / batch norm survive, following the data flow."""
    slices: Slices = {}
    stem = _stem(model)
    flowing = kept.get("features.0", _all(stem.out_channels))
    slices["features.0"] = (flowing, None)
    if isinstance(model.features[1], nn.BatchNorm2d):
        slices["features.1"] = (flowing, None)
    for prefix, fire in fires:
        squeeze = kept.get(f"{prefix}.squeeze", _all(fire.squeeze.out_channels))
        slices[f"{prefix}.squeeze"] = (squeeze, flowing)
        slices[f"{prefix}.squeeze_bn"] = (squeeze, None)
        outputs, offset = [], 0
        for branch in ("expand1x1", "expand3x3"):
            conv = getattr(fire, branch)
            if conv is None:
                continue
            branch_kept = kept.get(f"{prefix}.{branch}", _all(conv.out_channels))
            slices[f"{prefix}.{branch}"] = (branch_kept, squeeze)
            slices[f"{prefix}.{branch}_bn"] = (branch_kept, None)
            outputs.append(branch_kept + offset)
            offset += conv.out_channels
        concatenated = torch.cat(outputs)
        slices[f"{prefix}.bypass"] = (concatenated, flowing)
        flowing = concatenated
    slices["classifier.1"] = (None, flowing)
    return slices


def _expand_counts(fire: Fire, prefix: str, kept: dict[str, torch.Tensor]) -> list[int]:
    return [
        len(kept[f"{prefix}.{branch}"]) if f"{prefix}.{branch}" in kept else (conv.out_channels if conv is not None else 0)
        for branch, conv in (("expand1x1", fire.expand1x1), ("expand3x3", fire.expand3x3))
    ]


def _with_removed_fires(specs: list[list[int]], removed: Sequence[int]) -> list[list[int]]:
    """``fire_specs`` lists every planned fire; removed fires keep a placeholder spec (they are not built)."""
    full = [list(spec) for spec in specs]
    for number in sorted(removed):
        full.insert(number - FIRST_FIRE, [1, 1, 1])
    return full


def _sliced_state(state: dict[str, torch.Tensor], slices: Slices, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sliced = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        out_idx, in_idx = slices.get(module, (None, None))
        if out_idx is not None and tensor.dim() >= 1 and leaf != "num_batches_tracked":
            tensor = tensor.index_select(0, out_idx)
        if in_idx is not None and tensor.dim() >= 2:
            tensor = tensor.index_select(1, in_idx)
        sliced[key] = tensor
    mismatched = [k for k, v in sliced.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        raise RuntimeError(f"structured pruning produced mismatched shapes for {mismatched[:3]}")
    return sliced
