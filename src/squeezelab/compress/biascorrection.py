"""Empirical bias correction after pruning or weight sharing (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2, the empirical variant).

Rounding weights to shared values and zeroing small ones is not unbiased for a given input distribution:
it moves the mean of each output channel, and through the ReLUs that shift grows layer after layer. On
unlabelled images the mean output of every channel is measured in the reference (uncompressed) model and
in the compressed one, and the difference is taken off the layer's bias. The layers are corrected in
forward order, each measured after the earlier corrections, because a downstream layer's shift is
partly inherited from upstream: correcting all at once corrects it twice (measured: it diverges).
Measuring layer by layer costs one forward pass per layer; with all images in one batch, each layer is
corrected inside a single pass instead, before its output moves on.

Nothing is trained and no byte is added to a ``.sqz`` file (biases are stored anyway). A layer without a
bias whose output feeds only a batch norm is corrected through that norm's running mean instead.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
import torch.nn as nn

from .batchnorm import batch_norms, sole_convolution_inputs
from .layers import layer_bias, prunable_layers


def correct_biases(
    model: nn.Module, reference: nn.Module, images: torch.Tensor, *, batch_size: int = 64
) -> dict[str, float]:
    """Shift the biases of ``model``'s prunable layers so that, on ``images`` (normalised, unlabelled), each
    channel's mean output equals that of the same layer in ``reference``; returns every corrected layer's
    mean absolute shift. Layers with no bias and no batch norm of their own are left alone (not returned).

    ``reference`` runs in batches of ``batch_size``; ``model`` takes all of ``images`` in one forward pass,
    in which each layer is corrected (and its output shifted) before the next one runs: the sequential
    algorithm at the cost of one pass, with the memory of one batch of ``len(images)``. Both models run in
    eval mode on their own devices; ``model`` is changed in place.
    """
    wanted = _channel_means(reference, images, batch_size)
    norms = batch_norms(model)
    norm_of = {conv: norm for norm, conv in sole_convolution_inputs(model, norms, require_bias=False).items()}
    shifts: dict[str, float] = {}

    def correct(name: str, layer: nn.Module, output: torch.Tensor) -> torch.Tensor | None:
        bias = layer_bias(layer)
        target = bias if bias is not None else _running_mean(norms, norm_of.get(name))
        if target is None or name in shifts:
            return None
        shift = (_mean_per_channel(output) - wanted[name]).to(output.device, output.dtype)
        # A batch norm subtracts its running mean, so the shift is added there and taken off a bias.
        target.add_(shift if bias is None else -shift)
        shifts[name] = shift.abs().mean().item()
        return output - shift.view(1, -1, *([1] * (output.dim() - 2)))

    with _hooked(model, correct), torch.no_grad():
        model(images.to(*_placement(model)))
    return shifts


def _running_mean(norms: Mapping[str, nn.modules.batchnorm._BatchNorm], norm: str | None) -> torch.Tensor | None:
    return norms[norm].running_mean if norm is not None else None


def _mean_per_channel(output: torch.Tensor) -> torch.Tensor:
    return output.detach().double().transpose(0, 1).flatten(1).mean(1).cpu()


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@contextmanager
def _hooked(model: nn.Module, hook: Callable[[str, nn.Module, torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """``hook(name, layer, output)`` on every prunable layer's output, with the model in eval mode."""
    handles = [
        layer.register_forward_hook(lambda module, _inputs, output, name=name: hook(name, module, output))
        for name, layer in prunable_layers(model).items()
    ]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _channel_means(model: nn.Module, images: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean output per channel of every prunable layer on ``images`` (float64, CPU), in batches."""
    sums: dict[str, torch.Tensor] = {}

    def record(name: str, _layer: nn.Module, output: torch.Tensor) -> None:
        sums[name] = sums.get(name, 0) + _mean_per_channel(output) * output.shape[0]

    with _hooked(model, record), torch.no_grad():
        device, dtype = _placement(model)
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device, dtype))
    return {name: total / len(images) for name, total in sums.items()}
