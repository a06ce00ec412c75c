import pytest
import torch
import torchvision

from squeezelab.interop.classes import imagenet_class_names
from squeezelab.interop.loading import detect_format, load_model, state_dict_mismatch
from squeezelab.models import create_model, list_models
from squeezelab.models.files import save_model
from squeezelab.utils.files import atomic_torch_save
from tests.interop.helpers import encode_deep_compression


@pytest.mark.parametrize("arch", ["squeezenet1_0", "squeezenet1_1", "alexnet"])
def test_torchvision_checkpoint_loads_strictly_and_computes_the_same(tmp_path, arch):
    if arch not in list_models():
        pytest.skip(f"{arch} is not registered")
    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).eval()
    path = tmp_path / f"{arch}.pth"
    atomic_torch_save(reference.state_dict(), path)
    model = load_model(path, arch)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert model.default_cfg.class_names == imagenet_class_names()
    assert model.model_spec["name"] == arch


@pytest.mark.parametrize("arch", ["vgg19", "vgg19_bn"])
def test_torchvision_vgg_state_dicts_fit_our_builders(arch):
    if arch not in list_models():
        pytest.skip(f"{arch} is not registered")
    with torch.device("meta"):  # no memory for 143M parameters: keys and shapes are what must match
        ours = create_model(arch)
        theirs = getattr(torchvision.models, arch)(weights=None)
    assert state_dict_mismatch(ours.state_dict(), theirs.state_dict()) == ""


def test_wrapped_and_data_parallel_state_dicts_load(tmp_path):
    reference = torchvision.models.squeezenet1_1(weights=None)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "ddp.pth"
    atomic_torch_save({"state_dict": state, "epoch": 3}, path)
    model = load_model(path, arch="squeezenet1_1")
    torch.testing.assert_close(model.features[0].weight, reference.features[0].weight)


def test_wrong_architecture_gives_a_one_line_summary(tmp_path):
    path = tmp_path / "sq11.pth"
    atomic_torch_save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as info:
        load_model(path, arch="squeezenet1_0")
    message = str(info.value)
    assert str(path) in message and "do not fit squeezenet1_0" in message and "shape differences" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="pass arch"):
        load_model(path)


class Payload:
    """Stands for any pickled object: loading it would mean running its class's code."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"weights": torch.zeros(1), "payload": Payload()}, handle)
    with pytest.raises(ValueError, match="refused to load"):
        load_model(path, arch="squeezenet1_1")


def test_every_format_is_detected_and_loads(tmp_path):
    model_file = tmp_path / "model.pt"
    save_model(create_model("squeezenet1_1_cifar"), model_file)
    caffe_file = tmp_path / "release.net"
    caffe_file.write_bytes(encode_deep_compression()[0])
    assert detect_format(model_file) == "torch"
    assert detect_format(caffe_file) == "caffe-deep-compression"
    assert load_model(model_file).model_spec["name"] == "squeezenet1_1_cifar"
    assert load_model(caffe_file).default_cfg.channel_order == "BGR"
    assert not load_model(model_file).training
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(ValueError, match="not a model file squeezelab reads"):
        load_model(text_file)


def test_compressed_files_load_through_squeezelab_compress(tmp_path):
    compress = pytest.importorskip("squeezelab.compress")
    model = create_model("squeezenet_tiny_cifar")
    compress.quantize(model, 4)
    path = tmp_path / "model.sqz"
    compress.save_compressed(model, path)
    assert detect_format(path) == "squeezelab-compressed"
    loaded = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    expected = compress.load_compressed(path)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), expected(x))


def test_a_file_that_names_its_architecture_must_hold_the_one_asked_for(tmp_path):
    path = tmp_path / "model.pt"
    save_model(create_model("squeezenet1_1_cifar"), path)
    assert load_model(path, arch="squeezenet1_1_cifar", num_classes=10).model_spec["name"] == "squeezenet1_1_cifar"
    with pytest.raises(ValueError, match=r"model\.pt: holds a 'squeezenet1_1_cifar' model, not 'squeezenet1_0'"):
        load_model(path, arch="squeezenet1_0")
    with pytest.raises(ValueError, match=r"model\.pt: holds a 10-class squeezenet1_1_cifar model, not 5 classes"):
        load_model(path, num_classes=5)


def test_the_top_level_loader_is_the_one_loader():
    import squeezelab

    assert squeezelab.load_model is load_model
