import pytest
import torch
import torch.nn as nn

from squeezelab.models import SqueezeNextBlock, build_squeezenext, count_macs, count_params, create_model

PARAMS = {
    "sqnxt23_w0_5": 216_560,
    "sqnxt23_w1": 717_280,
    "sqnxt23_w1_5": 1_502_160,
    "sqnxt23_w2": 2_571_200,
    "sqnxt23v5_w0_5": 266_352,
    "sqnxt23v5_w1": 913_632,
    "sqnxt23v5_w1_5": 1_941_840,
    "sqnxt23v5_w2": 3_350_976,
    "hp_sqnxt_w0_5_cifar": 66_664,
    "hp_sqnxt_w0_75_cifar": 147_372,
    "hp_sqnxt_w1_cifar": 259_664,
}
# Counts asserted by the pytorchcv (imgclsmob) implementation, whose convs and classifier also carry a bias.
PYTORCHCV_PARAMS = {
    "sqnxt23_w1": 724_056,
    "sqnxt23_w1_5": 1_511_824,
    "sqnxt23_w2": 2_583_752,
    "sqnxt23v5_w1": 921_816,
    "sqnxt23v5_w1_5": 1_953_616,
    "sqnxt23v5_w2": 3_366_344,
}


def _blocks(model: nn.Module) -> list[SqueezeNextBlock]:
    return [m for m in model.modules() if isinstance(m, SqueezeNextBlock)]


@pytest.mark.parametrize("name, params", sorted(PARAMS.items()))
def test_parameter_counts(name, params):
    assert count_params(create_model(name)) == params


@pytest.mark.parametrize("name, reference", sorted(PYTORCHCV_PARAMS.items()))
def test_same_architecture_as_the_reference_pytorch_port_up_to_biases(name, reference):
    model = create_model(name)
    biases = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)) + model.classifier.out_features
    assert count_params(model) + biases == reference


def test_sqnxt23_block_layout_follows_the_caffe_prototxt():
    model = create_model("sqnxt23_w1")
    blocks = _blocks(model)
    assert len(blocks) == 6 + 6 + 8 + 1
    first = blocks[0]
    widths = [layer.conv.out_channels for layer in first.body]
    assert widths == [16, 8, 16, 16, 32]
    assert first.body.squeeze1.conv.in_channels == 64 and isinstance(first.shortcut, nn.Sequential)
    assert isinstance(blocks[1].shortcut, nn.Identity)
    kernels = [block.body.separable1.conv.kernel_size for block in blocks]
    assert kernels[:4] == [(3, 1), (1, 3), (3, 1), (1, 3)]
    assert kernels[-1] == (3, 1)  # block 21 of the prototxt starts with its 3x1 conv
    strides = [block.body.squeeze1.conv.stride[0] for block in blocks]
    assert [i for i, s in enumerate(strides) if s == 2] == [6, 12, 20]
    assert [blocks[i].shortcut.conv.stride[0] for i in (6, 12, 20)] == [2, 2, 2]
    assert model.features.final_conv.conv.out_channels == 128 and model.classifier.bias is None
    assert count_macs(model, (3, 224, 224)) == 268_976_832


@pytest.mark.parametrize("width, stem, head", [(0.5, 32, 64), (1.5, 96, 192), (2.0, 128, 256)])
def test_width_multiplier_scales_stem_stages_and_head(width, stem, head):
    model = build_squeezenext("23v5", width=width)
    assert model.features.stem[0].conv.out_channels == stem
    assert [b.body.expand.conv.out_channels for b in _blocks(model)][-1] == int(256 * width)
    assert model.classifier.in_features == head


def test_cifar_stem_keeps_32x32_until_stage2():
    model = create_model("sqnxt23_w1_cifar")
    sizes = {}
    for name in ("stem", "stage1", "stage2", "stage3", "stage4"):
        getattr(model.features, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])
        )
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert sizes == {"stem": 32, "stage1": 32, "stage2": 16, "stage3": 8, "stage4": 4}


def test_hp_variants_have_one_block_per_stage_and_an_elu_option():
    relu = create_model("hp_sqnxt_w0_75_cifar")
    elu = create_model("hp_sqnxt_w0_75_cifar", activation="elu")
    assert len(_blocks(relu)) == 4
    assert count_params(relu) == count_params(elu)
    assert any(isinstance(m, nn.ELU) for m in elu.modules())
    assert not any(isinstance(m, nn.ReLU) for m in elu.modules())
    assert elu(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_generator_builds_named_configurations():
    named, generated = create_model("sqnxt23v5_w1_5"), create_model("squeezenext_generator", depths="23v5", width=1.5)
    assert {k: v.shape for k, v in named.state_dict().items()} == {
        k: v.shape for k, v in generated.state_dict().items()
    }
    custom = create_model("squeezenext_generator", depths=[1, 2, 3, 1], stem="cifar")
    assert len(_blocks(custom)) == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depths": "24"}, "depths"),
        ({"depths": (1, 1, 1)}, "depths"),
        ({"depths": (1, 0, 1, 1)}, "depths"),
        ({"width": 0}, "width"),
        ({"width": 0.1}, "at least 4 output channels"),
        ({"stem": "mnist"}, "stem"),
        ({"activation": "gelu"}, "activation"),
    ],
)
def test_bad_squeezenext_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_squeezenext(**kwargs)
