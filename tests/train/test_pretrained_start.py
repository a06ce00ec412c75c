"""Fine-tuning from pretrained weights: a new classifier for the data's classes, the weights' own
preprocessing, the backbone frozen for the first epochs and trained at a lower learning rate."""

from dataclasses import replace

import pytest
import torch

from squeezelab.models import create_model
from squeezelab.models.files import save_model
from squeezelab.models.registry import model_config, set_model_config
from squeezelab.models.transfer import classifier_parameters
from squeezelab.train import TrainConfig, load_checkpoint, train_from_config
from squeezelab.train.engine import _prepare_parameters
from squeezelab.train.optim import build_optimizer


def _pretrained_file(tiny_config: TrainConfig, tmp_path, classes: int = 7):
    """A 7-class model of the tiny config's architecture, recording 8x8 one-channel preprocessing."""
    torch.manual_seed(1)
    model = create_model(tiny_config.model, num_classes=classes, in_chans=1, **tiny_config.model_kwargs)
    cfg = model_config(model)
    set_model_config(model, replace(cfg, input_size=(1, 8, 8), mean=(0.3,), std=(0.4,), resize_size=8, dataset="other"))
    path = tmp_path / "pretrained.pt"
    save_model(model, path)
    return path, model


def test_fine_tuning_replaces_the_classifier_and_keeps_the_weights_preprocessing(tiny_config, tmp_path):
    path, source = _pretrained_file(tiny_config, tmp_path)
    config = TrainConfig(
        pretrained=str(path), dataset="digits", limit=300, epochs=2, batch_size=32, lr=0.05, device="cpu", amp="off",
        freeze_epochs=1, backbone_lr_scale=0.1, seed=3,
    )  # fmt: skip
    messages: list[str] = []
    result = train_from_config(config, tmp_path / "run", progress=False, log=messages.append)
    assert any("7 classes -> 10 of digits: a new classifier" in m for m in messages)
    assert result.test["images"] > 0
    record = load_checkpoint(tmp_path / "run" / "last.pt")
    assert record["config"]["model"] == tiny_config.model and record["config"]["pretrained"] == str(path)
    assert record["model_spec"]["kwargs"]["num_classes"] == 10
    assert tuple(record["default_cfg"]["mean"]) == (0.3,) and tuple(record["default_cfg"]["input_size"]) == (1, 8, 8)


def test_the_backbone_is_frozen_for_freeze_epochs_then_trains(tiny_config):
    model = create_model(tiny_config.model, num_classes=10, in_chans=1, **tiny_config.model_kwargs)
    head = {id(p) for p in classifier_parameters(model)}
    dropped = _prepare_parameters(model, tiny_config.updated(epochs=3, freeze_epochs=2))
    backbone = {id(p) for p in model.parameters()} - head
    assert {id(p) for p in dropped(0)} == backbone == {id(p) for p in dropped(1)}
    assert dropped(2) == []


def test_the_backbone_learning_rate_is_scaled_and_the_classifier_keeps_its_own(tiny_config):
    model = create_model(tiny_config.model, num_classes=10, in_chans=1, **tiny_config.model_kwargs)
    head = {id(p) for p in classifier_parameters(model)}
    for optimizer_name in ("sgd", "muon"):
        optimizer = build_optimizer(model, tiny_config.updated(optimizer=optimizer_name, backbone_lr_scale=0.1))
        for group in optimizer.param_groups:
            in_head = {id(p) in head for p in group["params"]}
            assert len(in_head) == 1  # no group mixes classifier and backbone
            base = tiny_config.muon_lr if group.get("muon") else tiny_config.lr
            expected = base * (1.0 if in_head == {True} else 0.1)
            assert group["lr"] == pytest.approx(expected)  # (norm_lr_scale is 1 here)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("freeze_epochs", 2, r"freeze_epochs: must be a whole number in \[0, epochs\)"),
    ("backbone_lr_scale", 0.0, "backbone_lr_scale: must be a finite number > 0"),
    ("pretrained", "", "pretrained: must be a pretrained tag or a model file"),
])  # fmt: skip
def test_fine_tuning_settings_are_checked(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(epochs=2, **{field: value})
