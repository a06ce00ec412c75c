"""How a run ends when training went wrong: non-finite numbers stop it (and never reach results.json), a model
whose class outputs all died is reported as a failure."""

import json

import pytest
import torch
import torch.nn as nn

from squeezelab.cli.main import main
from squeezelab.models import create_model
from squeezelab.train import NonFiniteLossError, TrainConfig, build_run_data, build_run_model, fit, recipes, train_from_config
from squeezelab.train.engine import collapse_reason
from squeezelab.train.rundir import RunDir


class _NanWhenEvaluated(nn.Module):
    """Trains normally; gives NaN logits in eval mode (weights that blew up after the last checked batch)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out if self.training else out * float("nan")


def test_a_non_finite_validation_loss_stops_the_run_before_saving(tiny_config, tmp_path):
    splits = build_run_data(tiny_config, progress=False)
    model = _NanWhenEvaluated(build_run_model(tiny_config, splits))
    with pytest.raises(NonFiniteLossError, match=r"validation loss became nan at epoch 1; stopped, no checkpoint written"):
        fit(model, tiny_config, splits, tmp_path, progress=False, log=None)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "results.json").exists()


def test_results_json_holds_null_for_non_finite_numbers(tmp_path):
    RunDir(tmp_path).write_results({"model": "m", "test": {"loss": float("nan"), "top1": 10.0}, "best_val_top1": float("inf")}, None, [])

    def refuse(constant):
        raise AssertionError(f"results.json holds {constant}, which is not JSON")

    results = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert results["test"] == {"loss": None, "top1": 10.0} and results["best_val_top1"] is None


def test_collapse_is_every_class_output_constant():
    one_column = {"confusion": [[5, 0, 0], [4, 0, 0], [6, 0, 0]], "images": 15, "top1": 33.33}
    dead = {**one_column, "constant_outputs": [0, 1, 2]}
    assert collapse_reason(dead, ["a", "b", "c"]).startswith("training failed: the model predicts class a for all 15 images")
    # an undertrained model that prefers one class but still varies its logits, or has a live output, is not dead
    assert collapse_reason({**one_column, "constant_outputs": []}, ["a", "b", "c"]) is None
    assert collapse_reason({**one_column, "constant_outputs": [1, 2]}, ["a", "b", "c"]) is None
    assert collapse_reason({**dead, "images": 1}, ["a", "b", "c"]) is None
    assert collapse_reason(None, ["a"]) is None


def _kill_every_class_output(model: nn.Module) -> nn.Module:
    """Every class behind SqueezeNet's final ReLU pushed far below zero: no gradient ever revives them."""
    with torch.no_grad():
        model.classifier[1].bias.fill_(-1e4)
    return model


def test_a_run_whose_class_outputs_all_died_fails_with_one_line(tiny_config, tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.yaml"
    tiny_config.updated(epochs=1).save(config)
    build = recipes.build_run_model
    monkeypatch.setattr(recipes, "build_run_model", lambda *args: _kill_every_class_output(build(*args)))
    with pytest.warns(RuntimeWarning, match="dead units"):
        code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training failed: the model predicts class 0 for all" in err and "class outputs died" in err
    assert (tmp_path / "run" / "results.json").is_file()  # the run's files are still written, for a look at what happened


def test_the_default_model_has_batch_norm_and_linear_class_scores():
    model = create_model(TrainConfig().model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.classifier)  # a class pushed negative can recover


def test_the_bare_defaults_learn_the_digits(single_thread):
    """Default model, optimiser and schedule (only the data made small): the plain squeezenet1_1_cifar, the
    default before, stays at 12% here; 30 epochs on all the digits: 10.03% before, 98.05% now."""
    config = TrainConfig(dataset="digits", epochs=6, limit=600, input_size=[16, 16], device="cpu", amp="off")
    result = train_from_config(config, None, progress=False, log=None)
    assert result.collapse is None and result.test["top1"] > 30.0
