import pytest
import torch
import torch.nn as nn
import torchvision

from squeezelab.models import build_vgg19, count_params, create_model, get_model_config


def _output_size_of(module: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    shapes = []
    handle = module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
    with torch.no_grad():
        model(x)
    handle.remove()
    return shapes[0]


@pytest.mark.parametrize(
    "name, input_side",
    # AlexNet at its default size; VGG19 (20 GMACs at 224) at 64x64, which its adaptive pool accepts.
    [("alexnet", 224), ("vgg19", 64), ("vgg19_bn", 64)],
)
def test_torchvision_checkpoint_gives_identical_outputs(name, input_side):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    with torch.device("meta"):  # skip our own random init: every weight comes from the checkpoint
        model = create_model(name).eval()
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    x = torch.randn(1, 3, input_side, input_side)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("input_scale", ["imagenet", "small"])
def test_squeezed_vgg19_uses_1x1_convs_except_in_the_last_block(input_scale):
    with torch.device("meta"):  # shapes only: no memory or init time for 134M parameters
        squeezed = build_vgg19(input_scale, squeezed=True, batch_norm=True)
        plain = build_vgg19(input_scale, batch_norm=True)
    kernels = [m.kernel_size[0] for m in squeezed.features if isinstance(m, nn.Conv2d)]
    assert kernels == [1] * 12 + [3] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in squeezed.features) == 16
    assert squeezed.state_dict().keys() == plain.state_dict().keys()


def test_imagenet_baseline_parameter_counts():
    with torch.device("meta"):
        counts = {name: count_params(create_model(name)) for name in ("alexnet", "vgg19", "vgg19_bn", "vgg19_squeezed")}
    assert counts == {
        "alexnet": 61_100_840,
        "vgg19": 143_667_240,
        "vgg19_bn": 143_678_248,
        "vgg19_squeezed": 134_261_288,
    }


@pytest.mark.parametrize(
    "name, params, final_map",
    [
        ("alexnet_cifar", 36_051_786, (256, 4, 4)),
        ("alexnet_mnist", 36_050_634, (256, 4, 4)),
        ("vgg19_cifar", 20_554_826, (512, 1, 1)),
        ("vgg19_mnist", 20_553_674, (512, 1, 1)),
        ("vgg19_squeezed_cifar", 11_148_874, (512, 1, 1)),
        ("plain_cnn_cifar", 1_756_426, (64, 8, 8)),
        ("plain_cnn_mnist", 1_384_586, (64, 7, 7)),
    ],
)
def test_small_input_baselines_reach_their_designed_map(name, params, final_map):
    model = create_model(name)
    assert count_params(model) == params
    size = get_model_config(name).input_size
    assert _output_size_of(model.features, model, torch.zeros(1, *size)) == final_map


def test_small_vgg_accepts_grayscale_and_cifar_sizes_alike():
    model = create_model("vgg19_bn_cifar", in_chans=1, num_classes=7)
    assert model.default_cfg.input_size == (1, 32, 32) and len(model.default_cfg.mean) == 1
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_input_scale_is_refused():
    with pytest.raises(ValueError, match="input_scale"):
        build_vgg19("tiny")
