"""Weight averaging during training: an exponential moving average (EMA) of the weights, optionally copied
back into the network (lookahead, as airbench does), used for evaluation and for the saved weights.

``decay`` is applied every ``every`` optimizer steps from epoch ``start_epoch`` on. With ``warmup_power``
p > 0 the decay grows as ``decay * (step / total_steps) ** p``: the average follows the weights closely while
they move fast and averages strongly at the end (airbench: decay 0.95^5 every 5 steps from epoch 3, p = 3).
Batch-norm running statistics are averaged with the weights; integer buffers are left alone.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn

AVERAGING_MODES = ("none", "ema", "lookahead")


class WeightAverage:
    """The average of ``model``'s floating-point state, updated by :meth:`after_step`."""

    def __init__(self, mode: str, decay: float, every: int, start_epoch: int, warmup_power: float, total_steps: int) -> None:
        if mode not in AVERAGING_MODES[1:]:
            raise ValueError(f"weight_averaging must be one of {', '.join(AVERAGING_MODES)}, got {mode!r}")
        self.mode = mode
        self.decay, self.every, self.start_epoch = decay, every, start_epoch
        self.warmup_power, self.total_steps = warmup_power, max(1, total_steps)
        self.average: dict[str, torch.Tensor] | None = None  # created at the first eligible step

    def _current_decay(self, step: int) -> float:
        return self.decay * (step / self.total_steps) ** self.warmup_power if self.warmup_power else self.decay

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, epoch: int) -> None:
        """Call after optimizer step number ``step`` (1-based, counted over the whole run)."""
        if epoch < self.start_epoch or step % self.every:
            return
        state = _float_state(model)
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in state.items()}
            return
        decay = self._current_decay(step)
        for key, value in state.items():
            self.average[key].lerp_(value.detach(), 1.0 - decay)
            if self.mode == "lookahead":
                value.copy_(self.average[key])

    @torch.no_grad()
    def end_epoch(self, model: nn.Module) -> None:
        """Lookahead ends every epoch on the averaged weights (the average itself is unchanged)."""
        if self.mode == "lookahead" and self.average is not None:
            for key, value in _float_state(model).items():
                value.copy_(self.average[key])

    @contextlib.contextmanager
    def averaged(self, model: nn.Module) -> Iterator[None]:
        """Within the block ``model`` holds the averaged weights (EMA mode); its own weights come back after."""
        if self.mode != "ema" or self.average is None:
            yield
            return
        state = _float_state(model)
        own = {k: v.detach().clone() for k, v in state.items()}
        with torch.no_grad():
            for key, value in state.items():
                value.copy_(self.average[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in state.items():
                    value.copy_(own[key])

    def state_dict(self) -> dict[str, Any]:
        return {"average": None if self.average is None else {k: v.detach().cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        average = state.get("average")
        if average is None:
            self.average = None
            return
        device = {k: v.device for k, v in _float_state(model).items()}
        if set(average) != set(device):
            raise ValueError("the checkpoint's weight average does not match the model's weights")
        self.average = {k: v.to(device[k]) for k, v in average.items()}


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.dtype.is_floating_point}
