"""Parameter, size and MAC counts, MACs measured with PyTorch's own ``torch.utils.flop_counter``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

MB = 1_000_000
MIB = 1 << 20


class InputTooSmallError(ValueError):
    """The input size cannot pass through the network (a feature map shrank to nothing)."""


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fp32_size_bytes(model: nn.Module) -> int:
    """Bytes of the parameters stored as dense fp32 (what the papers call the model size)."""
    return 4 * count_params(model)


def _probe_input(model: nn.Module, input_size: tuple[int, int, int]) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.zeros(1, *input_size, device=device)


def _run_counted(model: nn.Module, x: torch.Tensor, hooks_target: list[nn.Module] | None = None) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(x)
    except RuntimeError as exc:
        message = str(exc).splitlines()[0]
        if "too small" in message or "Output size is" in message or "Kernel size can't be greater" in message:
            raise InputTooSmallError(
                f"input {tuple(x.shape[1:])} is too small for this network: {message}"
            ) from None
        raise
    finally:
        model.train(was_training)
    return counter


def check_input_size(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """Raise :class:`InputTooSmallError` (one line) if a ``(C, H, W)`` image cannot pass through ``model``.

    One probe forward pass of a single zero image, the one ``count_macs`` runs: commands check a user's
    input size with it before training, evaluating or exporting starts.
    """
    _run_counted(model, _probe_input(model, input_size))


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single image of ``input_size`` (C, H, W)."""
    counter = _run_counted(model, _probe_input(model, input_size))
    return counter.get_total_flops() // 2


def layer_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerRow]:
    """One row per leaf module: output shape, own parameters, own MACs."""
    shapes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}
    leaves = [m for m in model.modules() if not list(m.children())]

    def record(module: nn.Module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            shapes[names[module]] = tuple(output.shape[1:])

    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        counter = _run_counted(model, _probe_input(model, input_size))
    finally:
        for handle in handles:
            handle.remove()
    flops = counter.get_flop_counts()
    rows = []
    for module in leaves:
        name = names[module]
        if name not in shapes:
            continue
        module_flops = sum(flops.get(_counter_key(model, name), {}).values())
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                output_shape=shapes[name],
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=module_flops // 2,
            )
        )
    return rows


def _counter_key(model: nn.Module, name: str) -> str:
    # FlopCounterMode names modules by their class for the root and "Root.<fqn>"-style paths below it;
    # the root's own name is the model class name.
    return f"{type(model).__name__}.{name}" if name else type(model).__name__
