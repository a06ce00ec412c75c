"""Batch norms as a model transform: which ones fold, the convolution that feeds each, and folding a batch norm
into the per-channel scale and shift it applies in eval mode (and back into running statistics that apply them).

``.sqz`` files store folded batch norms (see :func:`.sqz.save_compressed`); bias correction corrects a
convolution without a bias through the batch norm it feeds.
"""

from __future__ import annotations

from typing import Mapping, cast

import torch
import torch.fx
import torch.nn as nn

BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def batch_norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The batch norms with running statistics and an affine part: those whose eval-mode map can be folded."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.affine
    }


def sole_convolution_inputs(model: nn.Module, norms: Mapping[str, nn.Module], require_bias: bool = True) -> dict[str, str]:
    """For each batch norm in ``norms`` whose input is the output of a convolution (a biased one unless
    ``require_bias`` is False) used by nothing else, that convolution's name (from the ``torch.fx`` graph)."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    inputs: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in norms:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        conv = modules[source.target]
        if isinstance(conv, nn.modules.conv._ConvNd) and (conv.bias is not None or not require_bias):
            # a call_module node's target is its module's name (typed str | Callable for other node kinds)
            inputs[cast(str, node.target)] = cast(str, source.target)
    return inputs


def folded_state(
    state: dict[str, torch.Tensor], norms: Mapping[str, nn.modules.batchnorm._BatchNorm], conv_inputs: dict[str, str]
) -> dict[str, torch.Tensor]:
    """``state`` with each batch norm in ``norms`` reduced to its eval-mode scale (as weight) and shift (as bias);
    the bias of the convolution in ``conv_inputs`` that feeds it moves into the shift (the bias becomes zero)."""
    state = dict(state)
    for name, norm in norms.items():
        scale = state[f"{name}.weight"] / torch.sqrt(state[f"{name}.running_var"] + norm.eps)
        conv_bias = state[f"{conv_inputs[name]}.bias"] if name in conv_inputs else 0.0
        state[f"{name}.bias"] = state[f"{name}.bias"] + (conv_bias - state[f"{name}.running_mean"]) * scale
        state[f"{name}.weight"] = scale
        if isinstance(conv_bias, torch.Tensor):  # a tensor exactly when name is in conv_inputs
            state[f"{conv_inputs[name]}.bias"] = torch.zeros_like(conv_bias)
        for buffer in BATCH_NORM_BUFFERS:
            state.pop(f"{name}.{buffer}", None)
    return state


def unfolded_state(state: dict[str, torch.Tensor], model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Running statistics that make folded batch norms apply exactly their stored scale and shift (``names``
    are batch norms of ``model``)."""
    state = dict(state)
    norms = batch_norms(model)
    for name in names:
        norm = norms[name]
        state[f"{name}.running_mean"] = torch.zeros(norm.num_features)
        state[f"{name}.running_var"] = torch.full((norm.num_features,), 1.0 - norm.eps)
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return state
