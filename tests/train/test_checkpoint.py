"""Checkpoints and model files that were damaged or crafted: refused with one line naming the file (and the
field), never a traceback or a silent load; and a resumed run clears what killed writers left behind."""

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from squeezelab import load_model
from squeezelab.cli.main import main
from squeezelab.models import create_model
from squeezelab.models.files import MODEL_FILE_FORMAT, model_from_record, save_model
from squeezelab.models.registry import model_config, set_model_config
from squeezelab.train import evaluate_model, load_checkpoint, resume_training, train_from_config, training_config_of
from squeezelab.train.checkpoint import resume_state
from squeezelab.utils.errors import DamagedFileError
from tests.utils.torchfiles import flip_tensor_byte


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_damaged_checkpoints_are_refused_and_resume_clears_orphan_temporaries(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    train_from_config(tiny_config.updated(epochs=1), run, progress=False, log=None)

    orphan = run / f".last.pt.{_dead_pid()}.x7k2m9q1.tmp"  # what kill -9 during a checkpoint write leaves
    orphan.write_bytes(b"half a checkpoint")
    messages: list[str] = []
    resume_training(run, progress=False, log=messages.append)
    assert not orphan.exists() and any("removed 1 unfinished temporary file" in m for m in messages)

    flip_tensor_byte(run / "best.pt", offset=3)
    with pytest.raises(DamagedFileError, match=r"best\.pt: damaged"):
        load_model(run / "best.pt")
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--dataset", "digits", "--limit", "300", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "best.pt: damaged" in err and err.count("\n") == 1

    flip_tensor_byte(run / "last.pt", offset=3)
    with pytest.raises(DamagedFileError, match=r"last\.pt: damaged"):
        resume_training(run, progress=False, log=None)


def _model_file(tmp_path, **extra):
    path = tmp_path / "model.pt"
    save_model(create_model("squeezenet_tiny_cifar", num_classes=10, in_chans=1), path, **extra)
    return path


def test_a_training_config_of_the_wrong_kind_names_the_file_and_field(tmp_path):
    with pytest.raises(DamagedFileError, match=r"model\.pt: 'config' must be a mapping of settings, got list"):
        training_config_of(_model_file(tmp_path, config=[1, 2]))
    with pytest.raises(DamagedFileError, match=r"model\.pt: .*seed.*'zero'"):
        training_config_of(_model_file(tmp_path, config={"seed": "zero"}))


def test_a_zero_pixel_scale_is_refused_before_any_image_is_divided_by_it(tmp_path):
    model = create_model("squeezenet_tiny_cifar", num_classes=10, in_chans=1)
    set_model_config(model, replace(model_config(model), pixel_scale=0.0))
    save_model(model, tmp_path / "model.pt")
    with pytest.raises(DamagedFileError, match=r"model\.pt: .*pixel_scale must be a finite number > 0, got 0"):
        evaluate_model(load_model(tmp_path / "model.pt"), "digits", source=str(tmp_path / "model.pt"), progress=False)


def test_a_model_file_without_a_model_name_is_a_file_error_not_a_key_error():
    record = {"format": MODEL_FILE_FORMAT, "version": 1, "model_spec": {"kwargs": {}}, "state_dict": {}}
    with pytest.raises(DamagedFileError, match=r"^x\.pt: "):
        model_from_record(record, "x.pt")


def test_checkpoint_entries_of_the_wrong_kind_name_the_file_and_field(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"state_dict": {"w": "not a tensor"}}, path)
    with pytest.raises(DamagedFileError, match=r"last\.pt: 'state_dict' must be a mapping of names to tensors"):
        load_checkpoint(path)
    good = {"state_dict": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 2, "history": [{}, {}], "best_epoch": 1,
            "best_val_top1": 50.0}
    assert resume_state(dict(good), path) == good
    for field, value, expected in [
        ("epoch", "2", r"'epoch' must be a whole number >= 0, got str"),
        ("history", {"0": {}}, r"'history' must be a list of mappings, got dict"),
        ("optimizer", [1], r"'optimizer' must be a mapping, got list"),
        ("best_val_top1", "50", r"'best_val_top1' must be a number or null, got str"),
    ]:
        with pytest.raises(DamagedFileError, match=rf"last\.pt: {expected}"):
            resume_state({**good, field: value}, path)
    with pytest.raises(DamagedFileError, match=r"last\.pt: not a resumable checkpoint: no 'scheduler'"):
        resume_state({k: v for k, v in good.items() if k != "scheduler"}, path)
