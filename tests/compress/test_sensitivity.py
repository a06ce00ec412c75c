import itertools
import math

import pytest
import torch

from squeezelab.compress import prunable_layers, prune, quantize
from squeezelab.compress.sensitivity import (
    ALLOCATION_STEPS,
    Sensitivity,
    SensitivityPoint,
    accuracy_scorer,
    allocate,
    distillation_scorer,
    file_fixed_bytes,
    summed_degradation,
    sweep,
)
from squeezelab.compress.sqz import layer_bytes
from squeezelab.data import build_loaders

from .conftest import tiny_model, trained_tiny


def test_density_sweep_writes_csv_and_png(tmp_path, digits, trained_state):
    model = trained_tiny(trained_state)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = ["features.0", "classifier.1"]
    result = sweep(model, accuracy_scorer(build_loaders(digits, 128).test), "density", [1.0, 0.5, 0.1], layers, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
    assert [(p.layer, p.value) for p in result.points] == [(l, v) for l in layers for v in (1.0, 0.5, 0.1)]
    full = [p for p in result.points if p.value == 1.0]
    assert all(p.metrics == result.baseline for p in full)
    sizes = [p.layer_bytes for p in result.points if p.layer == "classifier.1"]
    assert sizes[0] > sizes[1] > sizes[2]
    csv_path, png_path = result.write(tmp_path / "sens", "top1")
    assert png_path.stat().st_size > 1000
    assert Sensitivity.from_csv(csv_path) == result


def test_bits_sweep_with_distillation_and_allocation(digits, trained_state):
    model = trained_tiny(trained_state)
    images = torch.cat([x for x, _ in build_loaders(digits, 128).test])[:64]
    result = sweep(model, distillation_scorer(images, model), "bits", [8, 4, 2], progress=False)
    assert result.baseline["kl"] == pytest.approx(0.0, abs=1e-6)
    assert set(result.layers) == set(prunable_layers(model))
    sizes = {(p.layer, p.value): p.layer_bytes for p in result.points}
    # even 8 bits move the outputs a little, so no setting meets a zero budget: the least degraded is returned
    least = allocate(result, "kl", max_degradation=0.0)
    each_least = {layer: min(result.degradation(p, "kl") for p in result.points if p.layer == layer) for layer in result.layers}
    assert summed_degradation(result, least, "kl") == pytest.approx(sum(max(d, 0.0) for d in each_least.values()))
    budget = sum(sizes[layer, 4] for layer in result.layers)
    settings = allocate(result, "kl", max_bytes=budget)
    assert sum(sizes[layer, bits] for layer, bits in settings.items()) <= budget
    with pytest.raises(ValueError, match="no setting"):
        allocate(result, "kl", max_bytes=10)


def test_bad_inputs(tmp_path, trained_state):
    with pytest.raises(ValueError, match="kind"):
        sweep(trained_tiny(trained_state), lambda m: {"kl": 0.0}, "width")
    with pytest.raises(ValueError, match="no prunable layer"):
        sweep(trained_tiny(trained_state), lambda m: {"kl": 0.0}, "bits", [4], ["nope"])
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.csv"):
        Sensitivity.from_csv(tmp_path / "x.csv")


def test_density_sweep_counts_bytes_at_the_planned_bits(digits, trained_state):
    model = trained_tiny(trained_state)
    scorer = accuracy_scorer(build_loaders(digits, 128).val)
    as_float = sweep(model, scorer, "density", [0.5], ["classifier.1"], progress=False)
    as_shared = sweep(model, scorer, "density", [0.5], ["classifier.1"], progress=False, bits={"classifier": 3, "default": 8})
    assert as_shared.points[0].metrics == as_float.points[0].metrics  # bits change the bytes, not the scores
    pruned = trained_tiny(trained_state)
    layer = prunable_layers(pruned)["classifier.1"]
    prune(pruned, {"classifier": 0.5, "default": 1.0})
    quantize(pruned, {"classifier": 3})
    assert as_shared.points[0].layer_bytes == layer_bytes(layer)  # what the layer really costs in a file
    assert as_shared.points[0].layer_bytes < as_float.points[0].layer_bytes / 4


def test_kernel_granularity_sweep_prunes_whole_kernels(digits, trained_state):
    model = trained_tiny(trained_state)
    scorer = accuracy_scorer(build_loaders(digits, 128).val)
    sizes = {}
    for granularity in ("weight", "kernel"):
        result = sweep(model, scorer, "density", [0.25], ["features.0"], progress=False, bits=4, granularity=granularity)
        sizes[granularity] = result.points[0].layer_bytes
    assert sizes["kernel"] < sizes["weight"]  # same weights kept, far fewer position bits


def _synthetic_sensitivity(seed: int, layers: int = 4, values: tuple = (1.0, 0.6, 0.3, 0.1)) -> Sensitivity:
    """Random curves, not convex: a layer may lose most in its first step and little after."""
    generator = torch.Generator().manual_seed(seed)
    points = []
    for layer in range(layers):
        size = int(torch.randint(1_000, 50_000, (1,), generator=generator))
        loss = 0.0
        for value in values:
            points.append(SensitivityPoint(f"l{layer}", value, {"kl": loss}, int(size * value) + 40))
            loss += float(torch.rand(1, generator=generator)) ** 3
    return Sensitivity("density", {"kl": 0.0}, points)


def _combinations(result: Sensitivity) -> list[dict]:
    """Every choice of one sweep point per layer."""
    by_layer = [[p for p in result.points if p.layer == layer] for layer in result.layers]
    return [dict(zip(result.layers, choice)) for choice in itertools.product(*by_layer)]


def _brute_force(result: Sensitivity, fits) -> dict:
    """The best of all combinations (least summed kl, then fewest bytes) among those that ``fits``."""
    kept = [c for c in _combinations(result) if fits(c)]
    best = min(kept, key=lambda c: (sum(p.metrics["kl"] for p in c.values()), sum(p.layer_bytes for p in c.values())))
    return {layer: point.value for layer, point in best.items()}


@pytest.mark.parametrize("seed", range(6))
def test_allocation_is_the_optimum_of_all_combinations(seed):
    result = _synthetic_sensitivity(seed)
    sizes = {(p.layer, p.value): p.layer_bytes for p in result.points}
    total = sum(max(s for (l, _), s in sizes.items() if l == layer) for layer in result.layers)
    budget = int(total * 0.45)
    exact = allocate(result, "kl", max_bytes=budget + 100, fixed_bytes=100)
    best = _brute_force(result, lambda c: sum(p.layer_bytes for p in c.values()) <= budget)
    assert sum(sizes[layer, v] for layer, v in exact.items()) <= budget
    assert summed_degradation(result, exact, "kl") == pytest.approx(summed_degradation(result, best, "kl"))


@pytest.mark.parametrize("seed", range(6))
def test_degradation_budget_gives_the_smallest_model_within_it(seed):
    result = _synthetic_sensitivity(seed)
    sizes = {(p.layer, p.value): p.layer_bytes for p in result.points}
    limit = 0.8
    exact = allocate(result, "kl", max_degradation=limit)
    smallest = min(
        sum(p.layer_bytes for p in c.values())
        for c in _combinations(result)
        if sum(p.metrics["kl"] for p in c.values()) <= limit
    )
    assert summed_degradation(result, exact, "kl") <= limit + 1e-9
    # minimal to within one rounding step (1/ALLOCATION_STEPS of the mildest total) per layer
    assert sum(sizes[layer, v] for layer, v in exact.items()) <= smallest + 4 * math.ceil(sum(
        max(s for (l, _), s in sizes.items() if l == layer) for layer in result.layers) / ALLOCATION_STEPS)


def test_divergence_plot_starts_at_zero(tmp_path, monkeypatch):
    from squeezelab.compress import plotting

    saved = []
    monkeypatch.setattr(plotting, "save_figure", lambda figure, path: saved.append(figure))
    _synthetic_sensitivity(seed=0).plot(tmp_path / "sens.png", "kl")
    assert saved[0].axes[0].get_yscale() == "symlog"
    assert saved[0].axes[0].get_ylim()[0] == 0  # no empty negative decades for a divergence


def test_file_budget_needs_curves_of_every_layer():
    model = tiny_model(batch_norm="all")
    points = [SensitivityPoint(name, 1.0, {"kl": 0.0}, 100) for name in prunable_layers(model)]
    whole = Sensitivity("density", {"kl": 0.0}, points)
    assert file_fixed_bytes(whole, model, "compact", True) < file_fixed_bytes(whole, model)  # folded, coded tensors
    partial = Sensitivity("density", {"kl": 0.0}, points[1:-1])
    with pytest.raises(ValueError, match="the sweep lacks features.0, classifier.1"):
        file_fixed_bytes(partial, model)
