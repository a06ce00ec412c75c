import pytest
import torch
import torch.nn as nn
import torchvision

from squeezelab.models import (
    Fire,
    FirePair,
    build_squeezenet,
    count_macs,
    count_params,
    create_model,
    fire_plan,
    get_model_config,
    list_models,
)

IMAGENET = (3, 224, 224)
# Smallest-cost input that every ImageNet-layout SqueezeNet still accepts (keeps a 3x3 map after the pools).
SMALL_IMAGENET = (3, 64, 64)


def _fires(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.features if isinstance(m, (Fire, FirePair))]


def _probe_size(name: str) -> tuple[int, int, int]:
    size = get_model_config(name).input_size
    return SMALL_IMAGENET if size[1] >= 224 else size


@pytest.mark.parametrize(
    "name, params, macs",
    [("squeezenet1_0", 1_248_424, 818_924_576), ("squeezenet1_1", 1_235_496, 349_151_936)],
)
def test_published_parameter_and_mac_counts(name, params, macs):
    model = create_model(name)
    assert count_params(model) == params
    assert count_macs(model, IMAGENET) == macs


SQUEEZE_RATIO_SWEEP = {
    0.125: 1_248_424,
    0.25: 1_967_080,
    0.375: 2_685_736,
    0.5: 3_404_392,
    0.625: 4_123_048,
    0.75: 4_841_704,
    0.875: 5_560_360,
    1.0: 6_279_016,
}
PCT_3X3_SWEEP = {
    0.01: 1_478_248,
    0.125: 1_929_832,
    0.25: 2_421_352,
    0.375: 2_912_872,
    0.5: 3_404_392,
    0.625: 3_895_912,
    0.75: 4_387_432,
    0.875: 4_878_952,
    0.99: 5_330_536,
}


@pytest.mark.parametrize("squeeze_ratio, params", sorted(SQUEEZE_RATIO_SWEEP.items()))
def test_squeeze_ratio_sweep_parameter_counts(squeeze_ratio, params):
    model = create_model("squeezenet_generator", squeeze_ratio=squeeze_ratio, pct_3x3=0.5)
    assert count_params(model) == params


@pytest.mark.parametrize("pct_3x3, params", sorted(PCT_3X3_SWEEP.items()))
def test_pct_3x3_sweep_parameter_counts(pct_3x3, params):
    model = create_model("squeezenet_generator", squeeze_ratio=0.5, pct_3x3=pct_3x3)
    assert count_params(model) == params


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_torchvision_checkpoint_gives_identical_outputs(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    model = create_model(name).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, *IMAGENET)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_generator_defaults_equal_squeezenet1_0_layer_by_layer():
    generated, published = create_model("squeezenet_generator"), create_model("squeezenet1_0")
    assert [(n, type(m)) for n, m in generated.named_modules()] == [(n, type(m)) for n, m in published.named_modules()]
    assert {k: v.shape for k, v in generated.state_dict().items()} == {
        k: v.shape for k, v in published.state_dict().items()
    }
    generated.load_state_dict(published.state_dict(), strict=True)
    x = torch.randn(2, *SMALL_IMAGENET)
    with torch.no_grad():
        assert torch.equal(generated.eval()(x), published.eval()(x))


def test_without_final_relu_keys_match_and_scores_can_be_negative():
    published, linear = create_model("squeezenet1_1_cifar"), create_model("squeezenet1_1_cifar", final_relu=False)
    linear.load_state_dict(published.state_dict(), strict=True)
    with torch.no_grad():
        published.classifier[1].bias.fill_(-1.0)
        linear.classifier[1].bias.fill_(-1.0)
        x = torch.randn(2, 3, 32, 32)
        assert torch.all(published.eval()(x) >= 0)
        assert torch.any(linear.eval()(x) < 0)


def test_tiny_cifar_design_and_parameter_count():
    model = create_model("squeezenet_tiny_cifar")
    assert count_params(model) == 122_986
    assert [(f.squeeze.out_channels, f.expand1x1.out_channels, f.expand3x3.out_channels) for f in _fires(model)] == [
        (16, 64, 64),
        (16, 64, 64),
        (32, 128, 128),
        (32, 128, 128),
    ]
    maps = {}
    for index, layer in enumerate(model.features):
        layer.register_forward_hook(lambda _m, _i, out, index=index: maps.__setitem__(index, out.shape[-1]))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert maps[len(model.features) - 1] == 8  # the classifier sees an 8x8 map


def test_simple_bypass_adds_no_parameters_and_complex_adds_exactly_the_1x1_convs():
    plain = create_model("squeezenet1_0")
    simple = create_model("squeezenet1_0_simple_bypass")
    complex_ = create_model("squeezenet1_0_complex_bypass")
    assert count_params(simple) == count_params(plain)
    assert [f.bypass_kind for f in _fires(simple)] == ["none", "simple"] * 4
    assert [f.bypass_kind for f in _fires(complex_)] == ["complex", "simple"] * 4
    bypass_convs = [f for f in _fires(complex_) if f.bypass_kind == "complex"]
    bypass_params = sum(f.inplanes * f.out_channels + f.out_channels for f in bypass_convs)
    assert bypass_params == 341_248
    assert count_params(complex_) - count_params(plain) == bypass_params


# the builders of the SqueezeNet class (squeezenet_fast_cifar has its own layout: tests/models/test_zoo.py)
SQUEEZENET_BUILDERS = [name for name in list_models("squeezenet*") if name != "squeezenet_fast_cifar"]


@pytest.mark.parametrize("name", SQUEEZENET_BUILDERS)
def test_batch_norm_placements_and_fire_removal_on_every_builder(name):
    full = len(_fires(create_model(name)))
    size = _probe_size(name)
    expected_bn = {"none": 0, "conv1": 1, "fires": 3 * (full - 2), "all": 1 + 3 * (full - 2)}
    for placement, count in expected_bn.items():
        model = create_model(name, batch_norm=placement, remove_fires=(2, 5))
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == count
        assert len(_fires(model)) == full - 2
    out = model.train()(torch.randn(2, *size))  # the "all" placement, in training mode
    assert out.shape == (2, get_model_config(name).num_classes)


@pytest.mark.parametrize("reduction, params", [(1, 1_988_584), (2, 1_260_456), (4, 896_392)])
def test_fire_pairing_keeps_the_network_around_the_fires(reduction, params):
    plain = create_model("squeezenet1_0")
    paired = create_model("squeezenet1_0", fire_pairing=reduction)
    assert count_params(paired) == params
    for fire, pair in zip(_fires(plain), _fires(paired)):
        assert isinstance(pair, FirePair) and pair.out_channels == fire.out_channels
        squeeze = max(1, int(fire.squeeze.out_channels / reduction + 0.5))
        assert pair.squeeze_fire.squeeze.out_channels == pair.expand_fire.squeeze.out_channels == squeeze
        assert pair.squeeze_fire.expand3x3 is None and pair.expand_fire.expand1x1 is None
    assert plain.features[0].weight.shape == paired.features[0].weight.shape
    assert plain.classifier[1].weight.shape == paired.classifier[1].weight.shape
    with torch.no_grad():
        assert paired(torch.randn(1, *SMALL_IMAGENET)).shape == (1, 1000)


def test_fire_pairing_composes_with_bypass_batch_norm_and_removal():
    model = create_model(
        "squeezenet_tiny_cifar", fire_pairing=2, bypass="complex", batch_norm="all", remove_fires=(3,)
    )
    pairs = _fires(model)
    assert len(pairs) == 3 and all(isinstance(p, FirePair) for p in pairs)
    assert [p.bypass_kind for p in pairs] == ["complex", "complex", "simple"]
    loss = model.train()(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    assert pairs[0].squeeze_fire.squeeze.weight.grad is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"remove_fires": (10,)}, "no fire numbered"),
        ({"remove_fires": (2, 3, 4, 5, 6, 7, 8, 9)}, "every fire"),
        ({"pct_3x3": 1.0}, "pct_3x3"),
        ({"pct_3x3": 0.0}, "pct_3x3"),
        ({"squeeze_ratio": 0}, "squeeze_ratio"),
        ({"batch_norm": "after"}, "batch_norm"),
        ({"bypass": "residual"}, "bypass"),
        ({"fire_pairing": 0}, "fire_pairing"),
        ({"fire_pairing": 1.5}, "fire_pairing"),
        ({"layout": "v2"}, "layout"),
    ],
)
def test_bad_squeezenet_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_squeezenet(**kwargs)


def test_simple_bypass_on_mismatched_channels_is_refused():
    with pytest.raises(ValueError, match="simple bypass needs equal input and output channels, got 96 -> 128"):
        Fire(96, 16, 64, 64, bypass="simple")
    with pytest.raises(ValueError, match="simple bypass"):
        FirePair(96, 8, 128, bypass="simple")


def test_fire_plan_keeps_both_expand_branches_at_the_sweep_extremes():
    for spec in fire_plan(pct_3x3=0.01) + fire_plan(pct_3x3=0.99):
        assert spec.expand1x1 >= 1 and spec.expand3x3 >= 1
