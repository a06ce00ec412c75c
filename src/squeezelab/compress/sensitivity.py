"""Sensitivity analysis: how each layer alone reacts to pruning or to fewer bits, and budgets from it.

For every prunable layer, the layer's density (or weight-sharing bits) sweeps over a list of values
while all other layers stay untouched; a *scorer* measures the model each time: labelled accuracy
(:func:`accuracy_scorer`: top-1, top-5, loss) or, without labels, the divergence from the untouched
model's outputs on unlabelled images (:func:`distillation_scorer`: ``kl``). The curves are written as
CSV and plotted (one line per layer). :func:`allocate` turns them into per-layer settings that meet a
size budget or a degradation budget, assuming layers' degradations add up (Han et al.'s practice).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from squeezelab.train.evaluate import evaluate
from squeezelab.utils.files import atomic_write_text

from .layers import layer_weight, prunable_layers, resolve_per_layer
from .pruning import current_mask, magnitude_mask, plain_copy, set_mask, strip_module
from .sharing import share_weights
from .sizes import layer_bytes
from .sqz import non_weight_bytes

Scorer = Callable[[nn.Module], dict[str, float]]
SWEEP_KINDS = ("density", "bits")
HIGHER_IS_BETTER = {"top1": True, "top5": True, "loss": False, "kl": False}
DEFAULT_DENSITIES = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)
DEFAULT_BITS = (8, 7, 6, 5, 4, 3, 2)
ALLOCATION_STEPS = 16384  # resolution of the byte budget in allocate()


def accuracy_scorer(loader: Iterable, device: torch.device | str | None = None) -> Scorer:
    """Top-1 / top-5 accuracy (%) and cross-entropy loss on a labelled loader (``squeezelab.train.evaluate``)."""

    def score(model: nn.Module) -> dict[str, float]:
        result = evaluate(model, loader, device)
        return {"top1": result["top1"], "top5": result["top5"], "loss": result["loss"]}

    return score


def distillation_scorer(images: torch.Tensor, reference: nn.Module, batch_size: int = 64) -> Scorer:
    """Mean KL divergence from ``reference``'s predictions on ``images`` (normalised, unlabelled), and
    top-1 agreement with it (%): needs no labels, so it can steer compression on any natural images."""
    targets = predict(reference, images, batch_size).log_softmax(1)

    def score(model: nn.Module) -> dict[str, float]:
        log_probs = predict(model, images, batch_size).log_softmax(1)
        kl = F.kl_div(log_probs, targets, log_target=True, reduction="batchmean").item()
        agree = (log_probs.argmax(1) == targets.argmax(1)).float().mean().item()
        return {"kl": kl, "agreement": 100.0 * agree}

    return score


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Logits of ``model`` (in eval mode, on its device) for a tensor of images, in batches."""
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        outputs = [model(images[i : i + batch_size].to(parameter.device, parameter.dtype)) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outputs).float().cpu()


@dataclass(frozen=True)
class SensitivityPoint:
    layer: str
    value: float  # density or bits
    metrics: dict[str, float]
    layer_bytes: int


@dataclass(frozen=True)
class Sensitivity:
    """Per-layer sweep results plus the untouched model's metrics (``baseline``)."""

    kind: str
    baseline: dict[str, float]
    points: list[SensitivityPoint]

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(point.layer for point in self.points))

    @property
    def metrics(self) -> list[str]:
        return list(self.baseline)

    def degradation(self, point: SensitivityPoint, metric: str) -> float:
        """How much worse than the baseline ``metric`` is at this point (>= 0 means worse)."""
        change = point.metrics[metric] - self.baseline[metric]
        return -change if HIGHER_IS_BETTER.get(metric, True) else change

    def curves(self, metric: str) -> dict[str, tuple[list[float], list[float]]]:
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for point in self.points:
            xs, ys = curves.setdefault(point.layer, ([], []))
            xs.append(point.value)
            ys.append(point.metrics[metric])
        return curves

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["layer", self.kind, *self.metrics, "layer_bytes"])
        writer.writerow(["(baseline)", "", *(self.baseline[m] for m in self.metrics), ""])
        for point in self.points:
            writer.writerow([point.layer, point.value, *(point.metrics[m] for m in self.metrics), point.layer_bytes])
        return buffer.getvalue()

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "Sensitivity":
        """Read a CSV written by :meth:`write` (errors name the file)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            rows = list(csv.reader(io.StringIO(path.read_text())))
            header, baseline_row, *data = rows
            kind, metrics = header[1], header[2:-1]
            if header[0] != "layer" or kind not in SWEEP_KINDS or baseline_row[0] != "(baseline)":
                raise ValueError("not a sensitivity CSV")
            baseline = {m: float(v) for m, v in zip(metrics, baseline_row[2:-1])}
            points = [
                SensitivityPoint(row[0], float(row[1]), {m: float(v) for m, v in zip(metrics, row[2:-1])}, int(row[-1]))
                for row in data
            ]
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path}: not a squeezelab sensitivity CSV ({exc})") from None
        return cls(kind, baseline, points)

    def plot(self, path: str | os.PathLike, metric: str | None = None) -> None:
        from .plotting import line_plot, save_figure

        metric = metric or self.metrics[0]
        curves = self.curves(metric)
        figure = line_plot(curves, self.kind, metric, f"sensitivity: each layer alone, baseline {metric} = {self.baseline[metric]:.4g}")
        if self.kind == "density":
            figure.axes[0].invert_xaxis()
        if not HIGHER_IS_BETTER.get(metric, True):
            figure.axes[0].set_yscale("symlog", linthresh=1e-3)  # divergences span several decades
            if min(min(ys) for _, ys in curves.values()) >= 0:
                figure.axes[0].set_ylim(bottom=0)  # symlog would otherwise mirror empty decades below zero
        save_figure(figure, path)

    def write(self, stem: str | os.PathLike, metric: str | None = None) -> list[Path]:
        """Write ``<stem>.csv`` and ``<stem>.png``."""
        stem = Path(stem)
        csv_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".png")
        atomic_write_text(csv_path, self.to_csv())
        self.plot(png_path, metric)
        return [csv_path, png_path]


def sweep(
    model: nn.Module,
    scorer: Scorer,
    kind: str = "density",
    values: Sequence[float] | None = None,
    layers: Sequence[str] | None = None,
    progress: bool = True,
    bits: int | Mapping[str, int] | None = None,
    granularity: str = "weight",
) -> Sensitivity:
    """Score the model with one layer at a time pruned to each density (``kind="density"``) or
    weight-shared with each number of bits (``kind="bits"``); ``model`` itself is not changed.

    Each point records the layer's bytes in a ``.sqz`` file; in a density sweep, given ``bits`` (one value or
    per layer, as for :func:`.sharing.quantize`), as weight-shared with those bits, which is what a budget
    for the final file needs (otherwise as float32 weights). ``granularity`` (``"weight"`` or ``"kernel"``)
    is that of the pruning, see :func:`.pruning.magnitude_mask`."""
    if kind not in SWEEP_KINDS:
        raise ValueError(f"sensitivity kind must be one of {SWEEP_KINDS}, got {kind!r}")
    values = list(values or (DEFAULT_DENSITIES if kind == "density" else DEFAULT_BITS))
    work = plain_copy(model).eval()
    modules = prunable_layers(work)
    chosen = list(layers or modules)
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        raise ValueError(f"sensitivity: no prunable layer named {', '.join(unknown)}; layers are {list(modules)}")
    layer_bits = resolve_per_layer(work, bits, "bits") if bits is not None and kind == "density" else {}
    baseline = scorer(work)
    points = []
    with tqdm(total=len(chosen) * len(values), desc=f"sensitivity ({kind})", unit="eval", disable=not progress) as bar:
        for name in chosen:
            module = modules[name]
            for value in values:
                _apply(module, kind, value, granularity)
                points.append(SensitivityPoint(name, value, scorer(work), layer_bytes(module, bits=layer_bits.get(name))))
                strip_module(module)
                bar.update()
    return Sensitivity(kind, baseline, points)


def _apply(module: nn.Module, kind: str, value: float, granularity: str) -> None:
    if kind == "bits":
        share_weights(module, int(value))
        return
    allowed = current_mask(module)
    set_mask(module, magnitude_mask(layer_weight(module), min(value, allowed.float().mean().item()), allowed, granularity))


def allocate(
    sensitivity: Sensitivity,
    metric: str,
    max_bytes: int | None = None,
    max_degradation: float | None = None,
    fixed_bytes: int = 0,
) -> dict[str, float]:
    """Per-layer settings from the curves: the least degraded model (summed degradation of ``metric``)
    within ``max_bytes`` (file size, ``fixed_bytes`` of which are not layer weights: biases, metadata), or
    the smallest one whose summed degradation stays within ``max_degradation`` (the least degraded one if
    none does).

    Exact, not greedy: a multiple-choice knapsack solved by dynamic programming over bytes. Sizes are
    counted in steps of 1/``ALLOCATION_STEPS`` of the room and rounded up, so a byte budget is never
    exceeded and a size is minimal to within one step per layer. A greedy walk down the curves stalls
    on curves that are not convex (a layer that degrades most in its first steps, then little).
    """
    if (max_bytes is None) == (max_degradation is None):
        raise ValueError("allocate needs exactly one of max_bytes and max_degradation")
    if metric not in sensitivity.baseline:
        raise ValueError(f"metric {metric!r} was not measured; measured: {sensitivity.metrics}")
    options = _options_by_layer(sensitivity, metric)
    smallest = fixed_bytes + sum(min(o[1] for o in opts) for opts in options.values())
    if max_bytes is not None and smallest > max_bytes:
        fixed = f", {fixed_bytes:,} of them not layer weights" if fixed_bytes else ""
        raise ValueError(f"no setting in the sweep reaches {max_bytes:,} bytes (smallest: {smallest:,}{fixed})")
    room = max_bytes - fixed_bytes if max_bytes is not None else sum(max(o[1] for o in opts) for opts in options.values())
    step = max(1, math.ceil(room / ALLOCATION_STEPS))
    costs = {layer: [math.ceil(size / step) for _, size, _ in opts] for layer, opts in options.items()}
    capacity = room // step if max_bytes is not None else sum(max(layer_costs) for layer_costs in costs.values())
    least, picks = _least_degradation(options, costs, capacity)
    if max_degradation is not None:
        within = np.flatnonzero(least <= max_degradation + 1e-12)
        capacity = int(within[0]) if len(within) else capacity
    elif math.isinf(least[capacity]):  # fits only without the rounding up
        raise ValueError(f"no setting in the sweep reaches {max_bytes:,} bytes to within {step} bytes per layer")
    chosen = {}
    for layer in reversed(list(options)):
        index = int(picks[layer][capacity])
        chosen[layer] = options[layer][index][0]
        capacity -= costs[layer][index]
    return {layer: chosen[layer] for layer in options}


def file_fixed_bytes(
    sensitivity: Sensitivity, model: nn.Module, tensor_dtype: str = "float32", fold_batch_norm: bool = False
) -> int:
    """The ``fixed_bytes`` of :func:`allocate` that makes its ``max_bytes`` a budget for the whole ``.sqz``
    file of ``model``: biases, batch norms (stored as ``tensor_dtype`` and ``fold_batch_norm`` say, see
    :func:`.sqz.save_compressed`), metadata, header and checksum. The curves must cover every prunable
    layer, since all their weights are in the file, and count their bytes as the file will (a density sweep
    with the bits the model will be shared with)."""
    missing = [name for name in prunable_layers(model) if name not in sensitivity.layers]
    if missing:
        raise ValueError(f"a file budget needs curves for every prunable layer; the sweep lacks {', '.join(missing)}")
    return non_weight_bytes(model, tensor_dtype, fold_batch_norm)


def _least_degradation(
    options: Mapping[str, list[tuple[float, int, float]]], costs: Mapping[str, list[int]], capacity: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``least[c]``: the smallest summed degradation of all layers within ``c`` size steps (inf if none);
    ``picks[layer][c]``: the option that layer takes there, given the layers before it."""
    least = np.zeros(capacity + 1)
    picks = {}
    for layer, opts in options.items():
        best = np.full(capacity + 1, np.inf)
        pick = np.zeros(capacity + 1, dtype=np.int64)
        # cheapest first with a strict comparison: of equally degraded options the smaller wins
        for index in sorted(range(len(opts)), key=lambda i: costs[layer][i]):
            cost = costs[layer][index]
            if cost > capacity:
                continue
            candidate = np.full(capacity + 1, np.inf)
            candidate[cost:] = least[: capacity + 1 - cost] + opts[index][2]
            better = candidate < best
            best[better] = candidate[better]
            pick[better] = index
        least, picks[layer] = best, pick
    return least, picks


def _options_by_layer(sensitivity: Sensitivity, metric: str) -> dict[str, list[tuple[float, int, float]]]:
    """Per layer: (value, bytes, degradation >= 0), mildest setting (most density / bits) first."""
    options: dict[str, list[tuple[float, int, float]]] = {}
    for point in sensitivity.points:
        degradation = max(sensitivity.degradation(point, metric), 0.0)
        options.setdefault(point.layer, []).append((point.value, point.layer_bytes, degradation))
    return {layer: sorted(opts, key=lambda o: -o[0]) for layer, opts in options.items()}


def summed_bytes(sensitivity: Sensitivity, settings: Mapping[str, float]) -> int:
    """The layers' bytes at these per-layer settings, as the sweep measured them."""
    return sum(point.layer_bytes for point in _chosen_points(sensitivity, settings))


def summed_degradation(sensitivity: Sensitivity, settings: Mapping[str, float], metric: str) -> float:
    """Predicted degradation of a set of per-layer settings (sum over layers of each one's own)."""
    return sum((max(sensitivity.degradation(p, metric), 0.0) for p in _chosen_points(sensitivity, settings)), 0.0)


def _chosen_points(sensitivity: Sensitivity, settings: Mapping[str, float]) -> Iterable[SensitivityPoint]:
    return (p for p in sensitivity.points if p.layer in settings and math.isclose(p.value, settings[p.layer]))
