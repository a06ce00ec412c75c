"""Muon for convolution filters, Nesterov SGD for everything else, in one optimizer.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces each filter bank's momentum
update by its nearest semi-orthogonal matrix (the bank flattened to ``out x in*k*k``), computed with a few
Newton-Schulz iterations. airbench94_muon (KellerJordan/cifar10-airbench) uses it for the convolution
filters of a network whose convolutions are all followed by batch norm, and keeps each bank's Frobenius norm
fixed at ``sqrt(out_channels)``: batch norm makes the filter's scale irrelevant to the output, so fixing it
fixes the effective step size. That normalisation is ``weight_norm=True`` here and is only right for such
networks.

``torch.optim.Muon`` takes 2-D parameters only and cannot share a learning-rate schedule, a checkpoint
and weight averaging with an SGD half; so this one optimizer holds both kinds of group (``muon: True`` or
not), as the ``MuonWithAuxAdam`` of Keller Jordan's Muon repository does with Adam.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

# Quintic Newton-Schulz coefficients chosen to maximise the slope at zero (airbench94_muon, torch.optim.Muon).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately ``U V^T`` of ``matrix = U S V^T``: singular values pushed into about [0.5, 1.5].

    Runs in bfloat16 (the iteration tolerates it and it halves the memory traffic), on the wide orientation
    so that the Gram matrix ``X X^T`` is the small one.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.bfloat16()
    x = x / (x.norm() + eps)  # top singular value <= 1, inside the iteration's basin
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(matrix.dtype)


class Muon(Optimizer):
    """Groups with ``muon=True`` take orthogonalised Nesterov-momentum steps; the others plain (Nesterov) SGD.

    Weight decay is decoupled in Muon groups (``p *= 1 - lr * weight_decay``) and coupled (added to the
    gradient, as ``torch.optim.SGD``) in the others, so SGD groups behave exactly like ``torch.optim.SGD``.
    """

    def __init__(
        self, params: Iterable[dict[str, Any]], lr: float, momentum: float = 0.9, nesterov: bool = True,
        ns_steps: int = 3, weight_norm: bool = False,
    ) -> None:
        if lr <= 0 or not 0.0 <= momentum < 1.0 or ns_steps < 1:
            raise ValueError(f"Muon: lr must be > 0, momentum in [0, 1), ns_steps >= 1; got {lr}, {momentum}, {ns_steps}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": 0.0, "muon": False}
        super().__init__(params, defaults)
        self.ns_steps = ns_steps
        self.weight_norm = weight_norm
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon: a muon group holds only matrices or convolution filters (2-D or more)")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    (self._muon_step if group["muon"] else self._sgd_step)(p, group)
        return loss

    def _momentum(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["momentum"] == 0:
            return grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.clone()
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        buf = state["momentum_buffer"]
        return grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf

    def _sgd_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        assert grad is not None
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        p.add_(self._momentum(p, grad, group), alpha=-group["lr"])

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        assert p.grad is not None
        update = self._momentum(p, p.grad, group)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        if self.weight_norm:
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
        p.add_(orthogonalize(update.reshape(len(update), -1), self.ns_steps).view_as(p), alpha=-group["lr"])
