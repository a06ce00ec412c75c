import pytest
import torch

from squeezelab import load_model
from squeezelab.models import (
    InputTooSmallError,
    UnknownModelError,
    count_macs,
    create_model,
    get_model_config,
    list_models,
)
from squeezelab.models.files import save_model

# ImageNet VGGs cost up to 20 GMACs per 224x224 image: they train on 32x32 here (their adaptive pool accepts
# it) and run their default input as a shape-only pass on the meta device.
REDUCED_TRAINING_INPUT = {name: (3, 32, 32) for name in ("vgg19", "vgg19_bn", "vgg19_squeezed")}
NUM_CLASSES = 7


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_on_its_default_input_with_any_class_count(name):
    torch.manual_seed(0)
    cfg = get_model_config(name)
    model = create_model(name, num_classes=NUM_CLASSES)
    assert model.default_cfg.input_size == cfg.input_size and model.default_cfg.num_classes == NUM_CLASSES
    assert model.model_spec == {"name": name, "kwargs": {"num_classes": NUM_CLASSES, "in_chans": cfg.input_size[0]}}
    train_size = REDUCED_TRAINING_INPUT.get(name, cfg.input_size)
    out = model.train()(torch.randn(2, *train_size))
    assert out.shape == (2, NUM_CLASSES)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    if name in REDUCED_TRAINING_INPUT:
        meta_model = model.eval().to("meta")
        with torch.no_grad():
            assert meta_model(torch.empty(1, *cfg.input_size, device="meta")).shape == (1, NUM_CLASSES)


def test_registry_knows_every_family():
    names = set(list_models())
    expected = {"squeezenet1_0", "squeezenet_tiny_cifar", "sqnxt23_w1", "sqnxt23v5_w2_cifar", "hp_sqnxt_w0_5_cifar"}
    expected |= {"alexnet", "vgg19", "vgg19_bn", "vgg19_squeezed", "alexnet_cifar", "vgg19_cifar", "vgg19_bn_cifar"}
    expected |= {"vgg19_squeezed_cifar", "plain_cnn_cifar", "plain_cnn_mnist"}
    assert expected <= names
    assert list_models("sqnxt23v5_*_cifar") == [
        "sqnxt23v5_w0_5_cifar",
        "sqnxt23v5_w1_5_cifar",
        "sqnxt23v5_w1_cifar",
        "sqnxt23v5_w2_cifar",
    ]


@pytest.mark.parametrize(
    "name, dataset", [("plain_cnn_mnist", "mnist"), ("vgg19_cifar", "cifar10"), ("sqnxt23_w1", "imagenet")]
)
def test_default_configs_match_the_dataset(name, dataset):
    cfg = get_model_config(name)
    assert cfg.dataset == dataset
    assert len(cfg.mean) == len(cfg.std) == cfg.input_size[0]


def test_unknown_model_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match=r"unknown model 'sqnxt23_w3'; did you mean: .*sqnxt23_w1"):
        create_model("sqnxt23_w3")


def test_unexpected_keyword_names_the_model():
    with pytest.raises(ValueError, match="model 'alexnet_cifar': .*unexpected keyword argument 'width'"):
        create_model("alexnet_cifar", width=2)


@pytest.mark.parametrize(
    "name, size", [("squeezenet1_0", (3, 16, 16)), ("sqnxt23_w1", (3, 5, 5)), ("squeezenet_tiny_cifar", (3, 2, 2))]
)
def test_input_too_small_raises_input_too_small_error(name, size):
    with pytest.raises(InputTooSmallError, match="too small for this network"):
        count_macs(create_model(name), size)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("squeezenet_tiny_cifar", {"fire_pairing": 2, "batch_norm": "all", "remove_fires": [5]}),
        ("hp_sqnxt_w0_5_cifar", {"activation": "elu"}),
        ("squeezenext_generator", {"depths": [1, 1, 2, 1], "width": 0.75, "stem": "cifar"}),
        ("vgg19_squeezed_mnist", {"batch_norm": True}),
    ],
)
def test_model_files_rebuild_variants_from_their_spec(tmp_path, name, kwargs):
    model = create_model(name, **kwargs).eval()
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path).eval()
    x = torch.randn(2, *model.default_cfg.input_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.model_spec == model.model_spec


def test_squeezenet_fast_cifar_is_a_fire_network_under_a_million_parameters():
    import torch

    from squeezelab.models import count_params, create_model
    from squeezelab.models.squeezenet_fast import FastFire

    model = create_model("squeezenet_fast_cifar")
    assert count_params(model) == 794_232 and count_params(model) <= 1_000_000
    fires = [m for m in model.modules() if isinstance(m, FastFire)]
    assert len(fires) == 5 and model.whiten.out_channels == 24 and model.whiten.kernel_size == (2, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    narrow = create_model("squeezenet_fast_cifar", widths=[8, 16, 16], num_classes=3)
    assert narrow(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match="widths must be three"):
        create_model("squeezenet_fast_cifar", widths=[8, 16])
    early = create_model("squeezenet_fast_cifar", pool_early=True)
    assert count_params(early) == count_params(model) and early(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert create_model("squeezenet_fast_cifar", pool_early=True).group2.pool is None  # the fire pools its squeeze
    linear = create_model("squeezenet_fast_cifar", pool_early=True, linear_squeeze=True)
    assert count_params(linear) == count_params(model) - 2 * (32 + 4 * 128)  # no squeeze batch norms
    assert linear(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_airbench93_cifar_is_the_reference_network():
    from squeezelab.models import count_params, create_model

    model = create_model("airbench93_cifar")
    assert count_params(model) == 569_656  # airbench93 as published
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_a_half_precision_model_file_is_half_the_size_and_loads_as_float32(tmp_path):
    model = create_model("squeezenet_fast_cifar").eval()
    save_model(model, tmp_path / "full.pt")
    save_model(model, tmp_path / "half.pt", half=True)
    loaded = load_model(tmp_path / "half.pt").eval()
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert (tmp_path / "half.pt").stat().st_size < 0.55 * (tmp_path / "full.pt").stat().st_size
    images = torch.randn(4, 3, 32, 32)
    assert torch.allclose(loaded(images), model(images), atol=1e-2)
