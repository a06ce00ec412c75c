import pytest
import torch
import torch.nn as nn

from squeezelab.cli.specs import parse_density_spec, parse_granularity_spec
from squeezelab.compress import (
    StdThreshold,
    bake,
    densities,
    iterative_prune,
    layer_kinds,
    prunable_layers,
    prune,
    resolve_densities,
    strip,
)
from squeezelab.compress.pruning import PruningMask, current_mask, plain_copy, plain_state_dict
from squeezelab.models import create_model
from squeezelab.train import fit

from .conftest import tiny_model


def test_per_layer_densities_are_exact():
    model = tiny_model()
    reached = prune(model, {"conv3x3": 0.3, "classifier": 0.25, "default": 0.5})
    kinds = layer_kinds(model)
    for name, module in prunable_layers(model).items():
        expected = 0.3 if "conv3x3" in kinds[name] else 0.25 if "classifier" in kinds[name] else 0.5
        kept = int((module.weight != 0).sum())
        assert kept == round(expected * module.weight.numel()), name
        assert reached[name] == pytest.approx(kept / module.weight.numel())


def test_magnitude_order_global_target_and_std_rule():
    model = tiny_model()
    weights = {name: m.weight.detach().clone() for name, m in prunable_layers(model).items()}
    reached = prune(model, 0.2)
    total = sum(w.numel() for w in weights.values())
    assert sum(reached[n] * weights[n].numel() for n in weights) == pytest.approx(round(0.2 * total), abs=len(weights))
    kept, pruned = [], []
    for name, module in prunable_layers(model).items():
        if int((module.weight != 0).sum()) > 1:  # a layer entirely below the threshold keeps its largest weight
            kept.append(weights[name][module.weight != 0].abs().min())
            pruned.append(weights[name][module.weight == 0].abs().max())
    threshold, pruned_max = min(kept), max(pruned)
    assert pruned_max <= threshold  # one global magnitude threshold

    model = tiny_model()
    first = next(iter(prunable_layers(model).values())).weight.detach()
    expected = (first.abs() >= 0.5 * first.std()).float().mean().item()
    assert prune(model, StdThreshold(0.5))["features.0"] == pytest.approx(expected)


def test_iterative_pruning_only_removes_weights():
    model = tiny_model()
    seen = []
    prune(model, {"default": 0.8})
    before = {n: m.weight != 0 for n, m in prunable_layers(model).items()}
    reached = iterative_prune(model, {"default": 0.3}, 3, lambda m, step: seen.append((step, densities(m))))
    assert [step for step, _ in seen] == [1, 2, 3]
    for name, module in prunable_layers(model).items():
        assert reached[name] == pytest.approx(round(0.3 * module.weight.numel()) / module.weight.numel())
        assert not ((module.weight != 0) & ~before[name]).any()  # nothing pruned comes back


def test_masks_survive_fit(digits, tiny_config):
    model = tiny_model(batch_norm="all")
    prune(model, {"default": 0.4})
    masks = {n: (m.weight != 0).clone() for n, m in prunable_layers(model).items()}
    fit(model, tiny_config, digits, progress=False, log=None)
    for name, module in prunable_layers(model).items():
        assert isinstance(module.parametrizations.weight[0], PruningMask)
        assert torch.equal(module.weight != 0, masks[name]), name  # pruned stay zero, kept ones moved


def test_bake_strip_and_plain_copies():
    model = tiny_model()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    prune(model, 0.5)
    plain = plain_state_dict(model)
    assert set(plain) == set(dense)
    copy = plain_copy(model)
    assert not any(".parametrizations." in key for key in copy.state_dict())
    x = torch.randn(2, 1, 8, 8)
    model.eval(), copy.eval()
    torch.testing.assert_close(copy(x), model(x))
    strip(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, dense[key])  # the original, unpruned weights
    prune(model, 0.5)
    bake(model)
    assert type(model.features[0]) is nn.Conv2d
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain.items())


def test_density_spec_parsing_and_errors():
    assert parse_density_spec("0.25") == 0.25
    assert parse_density_spec("conv3x3=0.33,classifier=0.2") == {"conv3x3": 0.33, "classifier": 0.2}
    assert parse_density_spec("std:0.7") == StdThreshold(0.7)
    assert parse_density_spec("deep-compression")["classifier"] == 0.2
    with pytest.raises(ValueError, match="--density"):
        parse_density_spec("conv3x3=lots")
    with pytest.raises(ValueError, match="no layer, module or layer kind named conv3by3"):
        prune(tiny_model(), {"conv3by3": 0.5})
    with pytest.raises(ValueError, match="named feat"):  # a prefix must end at a module boundary
        prune(tiny_model(), {"feat": 0.5})
    with pytest.raises(ValueError, match=r"layers are features\.0, .*, \.\.\., classifier\.1 \(\d+ in all"):
        prune(tiny_model(), {"conv3by3": 0.5})  # long layer lists are abridged, the message stays readable


def test_density_keys_by_module_prefix_then_kind_then_default():
    model = create_model("squeezenet1_1_cifar")
    spec = {"features.3": 0.4, "features.3.expand3x3": 0.3, "conv3x3": 0.2, "default": 0.9}
    densities = resolve_densities(model, spec)
    assert densities["features.3.expand3x3"] == 0.3  # its own name beats the module prefix
    assert densities["features.3.squeeze"] == densities["features.3.expand1x1"] == 0.4  # inside features.3
    assert densities["features.5.expand3x3"] == 0.2 and densities["features.5.squeeze"] == 0.9


def test_a_kind_the_model_lacks_is_not_an_error():
    alexnet = create_model("alexnet_cifar")  # no 1x1 convolutions
    densities = resolve_densities(alexnet, {"conv1x1": 1.0, "conv3x3": 0.33, "classifier": 0.2})
    assert densities["classifier.6"] == 0.2 and densities["features.6"] == 0.33 and "features.3" not in densities
    with pytest.raises(ValueError, match="density must be in"):
        prune(tiny_model(), 1.5)


def test_kernel_granularity_keeps_or_removes_whole_kernels():
    model = tiny_model()
    spatial = {name: m for name, m in prunable_layers(model).items() if m.weight.dim() == 4 and m.weight[0, 0].numel() > 1}
    assert spatial
    kept = {}
    for density in (0.5, 0.25):  # iterative: the second step only removes kernels
        prune(model, {"conv3x3": density, "default": 1.0}, parse_granularity_spec("conv3x3=kernel,default=weight"))
        for name, module in spatial.items():
            kernels = current_mask(module).reshape(-1, module.weight[0, 0].numel())
            assert bool((kernels.all(1) | ~kernels.any(1)).all()), name  # every kernel whole or gone
            assert int(kernels[:, 0].sum()) == round(density * len(kernels))
            norms = module.parametrizations.weight.original.detach().reshape(len(kernels), -1).norm(dim=1)
            if density == 0.5:
                assert norms[kernels[:, 0]].min() >= norms[~kernels[:, 0]].max()  # the largest kernels stay
            else:
                assert not bool((kernels[:, 0] & ~kept[name]).any()), name  # a removed kernel never comes back
            kept[name] = kernels[:, 0].clone()
    with pytest.raises(ValueError, match="--granularity: expected weight or kernel .* got 'filter'"):
        parse_granularity_spec("conv3x3=filter")
    with pytest.raises(ValueError, match="granularity must be one of weight, kernel"):
        prune(model, 0.5, granularity="filter")
