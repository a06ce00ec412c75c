import csv
import json

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from squeezelab import load_model
from squeezelab.compress import quantize, save_compressed
from squeezelab.data import build_loaders
from squeezelab.models.files import save_model
from squeezelab.train import (
    NonFiniteLossError,
    build_run_data,
    build_run_model,
    evaluate,
    fit,
    load_checkpoint,
    quickstart,
    resume_training,
    train_from_config,
    training_config_of,
)
from squeezelab.train.rundir import METRIC_COLUMNS

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "last.pt", "best.pt", "results.json",
             "confusion_matrix.csv", "confusion_matrix.png")


def test_run_writes_every_file_and_best_checkpoint_reloads(tiny_config, tmp_path):
    run = tmp_path / "run"
    result = train_from_config(tiny_config, run, progress=False, log=None)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and tuple(rows[0]) == METRIC_COLUMNS
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["top1"] == pytest.approx(result.test["top1"])
    assert set(results["test_per_class"]) == set("0123456789") and results["params"] > 0
    # best.pt is a model file: it rebuilds the architecture, carries the data's preprocessing, and scores the same.
    model = load_model(run / "best.pt")
    assert model.default_cfg.input_size == (1, 8, 8) and model.default_cfg.dataset == "digits"
    splits = build_run_data(tiny_config, progress=False)
    from squeezelab.data import build_loaders

    again = evaluate(model, build_loaders(splits, 64).test)
    assert again["top1"] == pytest.approx(result.test["top1"])
    assert load_checkpoint(run / "best.pt")["epoch"] == result.best_epoch
    assert training_config_of(run / "best.pt") == tiny_config  # what the run was trained with
    save_model(model, tmp_path / "model.pt")
    assert training_config_of(tmp_path / "model.pt") is None  # a bare model file records no training


def test_resume_after_interrupt_gives_identical_weights(tiny_config, tmp_path):
    uninterrupted = train_from_config(tiny_config, tmp_path / "a", progress=False, log=None)

    def interrupt_after_first_epoch(message: str) -> None:
        if message.startswith("epoch   1/"):
            raise KeyboardInterrupt  # as Ctrl-C right after epoch 1's checkpoint was written

    with pytest.raises(KeyboardInterrupt):
        train_from_config(tiny_config, tmp_path / "b", progress=False, log=interrupt_after_first_epoch)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    resumed = resume_training(tmp_path / "b", progress=False, log=None)  # rebuilds everything from config.yaml
    a, b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in uninterrupted.history]
    with pytest.raises(ValueError, match="other settings"):
        train_from_config(tiny_config.updated(lr=0.2), tmp_path / "b", resume=True, progress=False, log=None)


class _Poisonable(nn.Module):
    """Any module (no registry spec) whose output turns NaN on demand."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.poisoned = False

    def forward(self, x):
        out = self.inner(x)
        return out * float("nan") if self.poisoned else out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
    splits = build_run_data(tiny_config, progress=False)
    model = _Poisonable(build_run_model(tiny_config, splits))

    def poison_after_epoch_one(message: str) -> None:
        if message.startswith("epoch   1/"):
            model.poisoned = True

    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 2.*last good checkpoint: .*last\.pt \(epoch 1\)"):
        fit(model, tiny_config, splits, tmp_path, progress=False, log=poison_after_epoch_one)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask


def test_fit_trains_parametrized_models(tiny_config):
    """Pruning-style parametrizations (what compression fine-tuning uses) train and stay masked."""
    splits = build_run_data(tiny_config, progress=False)
    model = build_run_model(tiny_config, splits)
    conv = model.features[0]
    mask = (torch.rand_like(conv.weight) > 0.5).float()
    parametrize.register_parametrization(conv, "weight", _Mask(mask))
    before = conv.parametrizations.weight.original.detach().clone()
    result = fit(model, tiny_config.updated(epochs=1, val_fraction=0.0), splits, None, progress=False, log=None)
    assert not torch.equal(before, conv.parametrizations.weight.original)
    assert torch.all(conv.weight[mask == 0] == 0)
    assert result.test["images"] == len(splits.test) and len(result.history) == 1


def test_evaluate_counts_exactly():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 5.0], [2.0, 3.0, 1.0], [0.0, 2.0, 1.0]])
    labels = torch.tensor([0, 2, 0, 2])

    class Fixed(nn.Module):
        def forward(self, x):
            return logits[x.long().flatten()]

    batches = [(torch.tensor([[0.0], [1.0]]), labels[:2]), (torch.tensor([[2.0], [3.0]]), labels[2:])]
    metrics = evaluate(Fixed(), batches, "cpu")
    assert metrics["top1"] == 50.0 and metrics["images"] == 4
    assert metrics["confusion"] == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]
    assert metrics["per_class"] == [50.0, None, 50.0]
    assert metrics["constant_outputs"] == []
    expected = torch.nn.functional.cross_entropy(logits, labels).item()
    assert metrics["loss"] == pytest.approx(expected)


def test_dead_class_output_is_reported_once(tiny_config):
    """A class unit pushed below zero behind SqueezeNet's final ReLU gets no gradient: the run says so."""
    tiny_config = tiny_config.updated(optimizer="adamw", lr=0.003, epochs=3)
    splits = build_run_data(tiny_config, progress=False)
    model = build_run_model(tiny_config, splits)
    with torch.no_grad():
        model.classifier[1].bias[3] = -1e4
    with pytest.warns(RuntimeWarning, match=r"class output\(s\) (\d, )*3(, \d)* gave the same logit") as caught:
        fit(model, tiny_config, splits, None, progress=False, log=None)
    assert len([w for w in caught if "dead units" in str(w.message)]) == 1
    assert 3 in evaluate(model, build_loaders(splits, 64).val, "cpu")["constant_outputs"]


class _AlwaysClassZero(nn.Module):
    """A 'teacher' that ignores the image and is sure of class 0."""

    def forward(self, x):
        logits = torch.zeros(len(x), 10, device=x.device)
        logits[:, 0] = 10.0
        return logits


def test_distillation_follows_the_teacher_not_the_labels(tiny_config):
    config = tiny_config.updated(optimizer="adamw", lr=0.01, epochs=3, distill=1.0, distill_temperature=1.0)
    splits = build_run_data(config, progress=False)
    model = build_run_model(config, splits)
    result = fit(model, config, splits, None, progress=False, log=None, teacher=_AlwaysClassZero())
    confusion = torch.tensor(result.test["confusion"])
    assert confusion[:, 0].sum() == confusion.sum()  # every test image called class 0, as taught


def test_distillation_from_a_model_file_and_its_errors(tiny_config, tmp_path):
    teacher_run = tmp_path / "teacher"
    train_from_config(tiny_config.updated(epochs=1), teacher_run, progress=False, log=None)
    config = tiny_config.updated(epochs=1, distill=0.5, teacher=str(teacher_run / "best.pt"))
    result = train_from_config(config, tmp_path / "student", progress=False, log=None)
    assert result.test["images"] > 0
    assert load_checkpoint(tmp_path / "student" / "last.pt")["config"]["teacher"] == str(teacher_run / "best.pt")
    # any format the one loader reads is a teacher: here a compressed .sqz of the same model
    sqz_teacher = load_model(teacher_run / "best.pt")
    quantize(sqz_teacher, 4)
    save_compressed(sqz_teacher, tmp_path / "teacher.sqz")
    result = train_from_config(config.updated(teacher=str(tmp_path / "teacher.sqz")), tmp_path / "student2", progress=False, log=None)
    assert result.test["images"] > 0
    splits = build_run_data(tiny_config, progress=False)
    with pytest.raises(ValueError, match="needs a teacher"):
        fit(build_run_model(tiny_config, splits), tiny_config.updated(distill=0.5), splits, None, progress=False, log=None)
    with pytest.raises(ValueError, match="fit takes the teacher as a module"):
        fit(build_run_model(tiny_config, splits), config, splits, None, progress=False, log=None)
    with pytest.raises(ValueError, match="distill is 0"):
        fit(build_run_model(tiny_config, splits), tiny_config, splits, None, progress=False, log=None, teacher=_AlwaysClassZero())
    with pytest.raises(ValueError, match="distill: must be in"):
        tiny_config.updated(distill=1.5)


def test_quickstart_short_run(tmp_path):
    result = quickstart(tmp_path / "qs", epochs=1, progress=False, log=None)
    assert (tmp_path / "qs" / "results.json").is_file() and (tmp_path / "qs" / "curves.png").is_file()
    assert result.test["images"] == 359 and 0 <= result.test["top1"] <= 100


def test_accumulation_and_clipping_step_the_optimizer_per_group(tiny_config, tmp_path):
    config = tiny_config.updated(epochs=1, accumulate=3, grad_clip=1.0, schedule="poly", warmup_epochs=0.5)
    result = train_from_config(config, tmp_path, progress=False, log=None)
    batches = 270 // 32  # 8 full batches -> optimizer steps after batches 3, 6 and 8
    assert load_checkpoint(tmp_path / "last.pt")["scheduler"]["last_epoch"] == -(-batches // 3)
    assert result.history[0]["lr"] == pytest.approx(0.0)  # poly decays to 0 at the last step
