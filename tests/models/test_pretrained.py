"""Pretrained weights shipped in the package: tags, loading, provenance, transfer to other class counts, and
a damaged shipped file refused in one line."""

import shutil

import pytest
import torch

import squeezelab
from squeezelab.models import pretrained as pretrained_module
from squeezelab.models.pretrained import PretrainedWeights, UnknownPretrainedError, list_pretrained, pretrained_weights, provenance
from squeezelab.models.registry import model_config
from squeezelab.models.transfer import class_dependent_keys, with_num_classes
from squeezelab.utils.errors import DamagedFileError


def test_every_shipped_tag_loads_offline_with_its_preprocessing_and_figures():
    assert "squeezenet1_0.dc_in1k" in list_pretrained()
    for tag in list_pretrained():
        weights = pretrained_weights(tag)
        assert weights.path.is_file(), f"{tag}: {weights.path} is not in the package"
        model = squeezelab.create_model(tag, pretrained=True)
        assert not model.training and model.model_spec["name"] == weights.architecture
        record = provenance(model)
        assert record["command"] and record["metrics"]["top1"] > 0 and record["measured_by"]
        cfg = model_config(model)
        assert cfg.class_names and len(cfg.class_names) == cfg.num_classes


def test_the_imagenet_weights_keep_the_caffe_preprocessing_and_their_licence():
    model = squeezelab.load_model("squeezenet1_0.dc_in1k")
    cfg = model_config(model)
    assert (cfg.channel_order, cfg.pixel_scale, cfg.input_size) == ("BGR", 255.0, (3, 227, 227))
    licence = pretrained_module.WEIGHTS_DIR / pretrained_weights("squeezenet1_0.dc_in1k").licence
    assert "BSD" in licence.read_text()
    record = provenance(model)  # within a point of the release, as measured when the file was made
    assert abs(record["metrics"]["top1"] - record["original_metrics"]["top1"]) <= 1.0
    assert abs(record["metrics"]["top5"] - record["original_metrics"]["top5"]) <= 1.0


def test_a_name_without_a_tag_takes_its_first_weights_and_a_tag_alone_builds_the_architecture():
    model = squeezelab.create_model("squeezenet_fast_cifar", pretrained=True)
    assert provenance(model)["metrics"]["top1"] > 80
    plain = squeezelab.create_model("squeezenet_fast_cifar.sl_cifar10")  # timm: a tag without pretrained=True
    assert plain.model_spec["name"] == "squeezenet_fast_cifar" and provenance(plain) == {}


def test_unknown_tags_and_models_without_weights_list_what_is_shipped():
    with pytest.raises(UnknownPretrainedError, match=r"unknown pretrained weights 'squeezenet1_0\.dc_in1'; did you mean squeezenet1_0\.dc_in1k\? known: "):
        squeezelab.create_model("squeezenet1_0.dc_in1", pretrained=True)
    with pytest.raises(ValueError, match=r"no pretrained weights for 'squeezenet1_1'; shipped: "):
        squeezelab.create_model("squeezenet1_1", pretrained=True)
    with pytest.raises(ValueError, match="fix the architecture"):
        squeezelab.create_model("squeezenet1_0.dc_in1k", pretrained=True, dropout=0.1)


def test_a_damaged_shipped_file_is_refused_in_one_line_naming_it(tmp_path, monkeypatch):
    source = pretrained_weights("squeezenet_fast_cifar.sl_cifar10").path
    damaged = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    tag = "squeezenet_fast_cifar.sl_cifar10"
    monkeypatch.setitem(pretrained_module.PRETRAINED, tag, PretrainedWeights(tag, source.name, "damaged copy"))
    monkeypatch.setattr(pretrained_module, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(DamagedFileError) as info:
        squeezelab.create_model("squeezenet_fast_cifar.sl_cifar10", pretrained=True)
    assert str(damaged) in str(info.value) and "\n" not in str(info.value)
    shutil.copy(source, damaged)  # the intact file loads from the same place
    assert squeezelab.create_model("squeezenet_fast_cifar.sl_cifar10", pretrained=True) is not None


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet_fast_cifar", "hp_sqnxt_w1_cifar", "squeezenet_bn_cifar"])
def test_a_new_class_count_replaces_exactly_the_classifier(name):
    torch.manual_seed(0)
    model = squeezelab.create_model(name)
    head = class_dependent_keys(model)
    assert head and all(key.startswith("classifier") for key in head)
    adapted = with_num_classes(model, 5, ("a", "b", "c", "d", "e"))
    assert model_config(adapted).num_classes == 5 and model_config(adapted).class_names == ("a", "b", "c", "d", "e")
    before, after = model.state_dict(), adapted.state_dict()
    for key, value in after.items():
        if key in head:
            assert value.shape[0] == 5
        else:
            torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert with_num_classes(model, model_config(model).num_classes) is model
