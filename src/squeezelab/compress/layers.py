"""Which layers compress, what kind each is, and per-layer settings given by name, by kind or for all.

A per-layer setting (density, bits) is given as one value for every layer, or as a mapping whose keys
are layer names (``features.3.squeeze``), module prefixes (``features.stage3``), layer kinds (``stem``,
``classifier``, ``conv1x1``, ``conv3x3``, ``conv``, ``linear``) or ``default``; the most specific key wins
(name, then longest prefix, then kind in the order listed by :func:`layer_kinds`). On the command line the
same is written ``conv3x3=0.33,classifier=0.2``.
"""

from __future__ import annotations

import re
from typing import Mapping, TypeVar

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
T = TypeVar("T", int, float, str)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolution and linear layers with a weight, by module name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and name}


# Typed access to a layer's weight, bias and weight parametrizations: through nn.Module.__getattr__ type
# checkers see every attribute as ``Tensor | Module``.


def layer_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight``: the parameter, or the masked / shared tensor its parametrizations compute."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor")
    return weight


def layer_bias(module: nn.Module) -> torch.Tensor | None:
    """``module.bias`` (None for a layer built without one)."""
    bias = module.bias
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.bias is a {type(bias).__name__}, not a tensor")
    return bias


def weight_parametrizations(module: nn.Module) -> parametrize.ParametrizationList:
    """``module.parametrizations.weight`` of a layer whose weight is parametrized."""
    parametrizations = module.parametrizations
    if not isinstance(parametrizations, nn.ModuleDict):
        raise TypeError(f"{type(module).__name__}.parametrizations is not a ModuleDict")
    weight = parametrizations.weight
    if not isinstance(weight, parametrize.ParametrizationList):
        raise TypeError(f"{type(module).__name__} has no weight parametrizations")
    return weight


KIND_PATTERN = re.compile(r"stem|classifier|conv|conv\d+x\d+|linear|default")


def layer_kinds(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Kinds of each prunable layer, most specific first: the first layer is ``stem``, the last ``classifier``."""
    layers = prunable_layers(model)
    names = list(layers)
    kinds = {}
    for name, module in layers.items():
        role = ("stem",) if name == names[0] else ("classifier",) if name == names[-1] else ()
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            shape: tuple[str, ...] = (f"conv{kh}x{kw}", "conv")
        else:
            shape = ("linear",)
        kinds[name] = role + shape
    return kinds


def resolve_per_layer(model: nn.Module, spec: T | Mapping[str, T], what: str) -> dict[str, T]:
    """Per-layer values from one value or a mapping whose keys are layer names, module prefixes (e.g.
    ``features.stage3``: every layer inside), layer kinds or ``default``; a layer takes its own name first,
    then its longest matching prefix, then its first matching kind, then ``default``. Layers no key matches
    are left out."""
    kinds = layer_kinds(model)
    if not isinstance(spec, Mapping):
        return {name: spec for name in kinds}
    kind_names = {kind for ks in kinds.values() for kind in ks} | {"default"}
    # a kind the model lacks (conv1x1 in AlexNet) is no mistake: one recipe serves several architectures
    unknown = sorted(
        key for key in spec if not KIND_PATTERN.fullmatch(key) and not any(_inside(name, key) for name in kinds)
    )
    if unknown:
        raise ValueError(
            f"{what}: no layer, module or layer kind named {', '.join(unknown)}; "
            f"kinds are {sorted(kind_names)}, layers are {_abridged(list(kinds))}"
        )
    resolved: dict[str, T] = {}
    for name, layer_kind_list in kinds.items():
        prefixes = sorted((prefix for prefix in spec if _inside(name, prefix)), key=len, reverse=True)
        # concatenated, not star-unpacked: mypy cannot type the unpacking under the constrained TypeVar T
        for key in tuple(prefixes) + layer_kind_list + ("default",):
            if key in spec:
                resolved[name] = spec[key]
                break
    return resolved


def _abridged(names: list[str], shown: int = 6) -> str:
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown - 1])}, ..., {names[-1]} ({len(names)} in all; `squeezelab info MODEL` lists them)"


def _inside(layer: str, prefix: str) -> bool:
    """``layer`` is the module ``prefix`` or lies inside it (``a.b`` is inside ``a``, ``ab`` is not)."""
    return layer == prefix or layer.startswith(prefix + ".")

