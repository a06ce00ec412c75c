import pytest
import torch

from squeezelab import load_model
from squeezelab.compress import load_compressed, prune, quantize, save_compressed
from squeezelab.compress.structured import prune_filters
from squeezelab.models import count_params, create_model
from squeezelab.models.files import save_model

from .conftest import tiny_model


@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": "all"}, {"remove_fires": [3, 6]}])
def test_filter_pruning_shrinks_and_keeps_the_strongest_filters(tmp_path, kwargs):
    model = tiny_model(**kwargs).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(prune_filters(model, 1.0).eval()(x), model(x))  # keeping everything changes nothing
    smaller = prune_filters(model, {"stem": 0.5, "conv1x1": 0.5, "conv3x3": 0.25}).eval()
    assert count_params(smaller) < 0.5 * count_params(model)
    assert smaller.features[0].out_channels == model.features[0].out_channels // 2
    norms = model.features[0].weight.abs().flatten(1).sum(1)
    kept = set(smaller.features[0].weight.abs().flatten(1).sum(1).tolist())
    assert kept == set(norms.sort(descending=True).values[: len(kept)].tolist())
    assert smaller(x).shape == (4, 10)
    # The shrunk model is rebuilt from its spec: dense and compressed files round-trip.
    save_model(smaller, tmp_path / "small.pt")
    torch.testing.assert_close(load_model(tmp_path / "small.pt").eval()(x), smaller(x))
    rebuilt = create_model(smaller.model_spec["name"], **smaller.model_spec["kwargs"])
    assert count_params(rebuilt) == count_params(smaller)
    prune(smaller, 0.5)
    quantize(smaller, 4)
    save_compressed(smaller, tmp_path / "small.sqz")
    torch.testing.assert_close(load_compressed(tmp_path / "small.sqz")(x), smaller(x))


def test_fire_concatenation_order_is_respected():
    model = tiny_model().eval()
    x = torch.randn(2, 1, 8, 8)
    # Prune only one fire's expand3x3: the next squeeze must lose exactly the matching input columns.
    smaller = prune_filters(model, {"features.2.expand3x3": 0.5}).eval()
    fire, nxt = model.features[2], model.features[3]
    small_fire, small_next = smaller.features[2], smaller.features[3]
    e1 = fire.expand1x1.out_channels
    assert small_next.squeeze.in_channels == e1 + fire.expand3x3.out_channels // 2
    torch.testing.assert_close(small_next.squeeze.weight[:, :e1], nxt.squeeze.weight[:, :e1])
    kept3 = [i for i in range(fire.expand3x3.out_channels) if any(torch.equal(fire.expand3x3.weight[i], w) for w in small_fire.expand3x3.weight)]
    torch.testing.assert_close(small_next.squeeze.weight[:, e1:], nxt.squeeze.weight[:, [e1 + i for i in kept3]])
    assert smaller(x).shape == (2, 10)


def test_identity_bypass_models_only_lose_squeeze_filters():
    model = tiny_model(bypass="simple")
    smaller = prune_filters(model, 0.5)
    for big, small in zip(model.features, smaller.features):
        if hasattr(big, "expand1x1"):
            assert small.squeeze.out_channels < big.squeeze.out_channels
            assert small.out_channels == big.out_channels and small.bypass_kind == big.bypass_kind
    smaller(torch.randn(1, 1, 8, 8))


def test_rejects_unsupported_models():
    with pytest.raises(ValueError, match="a SqueezeNet or SqueezeNext model"):
        prune_filters(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), 0.5)
    with pytest.raises(ValueError, match="keep fraction"):
        prune_filters(tiny_model(), {"stem": 0.0})


def _tiny_squeezenext() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("squeezenext_generator", depths=[1, 2, 1, 1], width=0.25, num_classes=10, in_chans=1, stem="cifar")
    for module in model.modules():  # non-trivial statistics, so a wrong slice shows in the outputs
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_squeezenext_blocks_lose_inner_filters_and_keep_their_outputs(tmp_path):
    model = _tiny_squeezenext()
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(prune_filters(model, 1.0).eval()(x), model(x))
    smaller = prune_filters(model, {"features.stage2": 0.5, "conv1x3": 0.75}).eval()
    assert count_params(smaller) < count_params(model)
    big, small = model.features.stage2[1], smaller.features.stage2[1]
    assert small.body.squeeze1.conv.out_channels == big.body.squeeze1.conv.out_channels // 2
    assert small.body.squeeze2.conv.in_channels == small.body.squeeze1.conv.out_channels
    assert small.body.expand.conv.out_channels == big.body.expand.conv.out_channels  # the residual sum
    assert smaller.model_spec["kwargs"]["block_widths"][1] == [c.conv.out_channels for c in smaller.features.stage2[0].body[:4]]
    # Cutting filters whose outputs are zero anyway (weights and BN shift zeroed) leaves the function unchanged.
    squeeze = model.features.stage3[0].body.squeeze1
    weakest = squeeze.conv.weight.abs().flatten(1).sum(1).argsort()[: squeeze.conv.out_channels // 4]
    with torch.no_grad():
        squeeze.conv.weight[weakest] = 0
        squeeze.bn.bias[weakest] = -10.0  # ReLU(negative) = 0 whatever the statistics
    pruned = prune_filters(model, {"features.stage3.0.body.squeeze1.conv": 0.75}).eval()
    torch.testing.assert_close(pruned(x), model(x))
    save_model(pruned, tmp_path / "small.pt")
    torch.testing.assert_close(load_model(tmp_path / "small.pt").eval()(x), pruned(x))
    prune(pruned, 0.5)
    quantize(pruned, 4)
    save_compressed(pruned, tmp_path / "small.sqz")
    torch.testing.assert_close(load_compressed(tmp_path / "small.sqz")(x), pruned(x))


def test_squeezenext_block_widths_are_checked():
    with pytest.raises(ValueError, match="block_widths: expected one entry per block"):
        create_model("squeezenext_generator", depths=[1, 1, 1, 1], width=0.25, block_widths=[[1, 1, 1, 1]])
    with pytest.raises(ValueError, match="block widths must be 4 positive"):
        create_model("squeezenext_generator", depths=[1, 1, 1, 1], width=0.25, block_widths=[[1, 1, 1, 0]] * 4)
