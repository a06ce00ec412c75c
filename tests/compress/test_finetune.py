import pytest

from squeezelab.compress.finetune import finetune_config, finetune_data
from squeezelab.train import TrainConfig

from .conftest import tiny_model

TRAINED_WITH = TrainConfig(dataset="digits", val_fraction=0.25, seed=5, cutout=3, label_smoothing=0.2, lr=0.1, epochs=40)


def test_fine_tuning_keeps_the_training_runs_split_augmentation_and_label_smoothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path))
    config = finetune_config(3, training=TRAINED_WITH, lr=0.01)
    assert (config.val_fraction, config.seed, config.cutout, config.label_smoothing) == (0.25, 5, 3, 0.2)
    assert (config.lr, config.epochs) == (0.01, 3)  # not the training run's learning rate or length
    data = finetune_data("digits", None, tiny_model(), config, progress=False)
    assert data.augment.cutout == 3
    assert len(data.val) == pytest.approx(0.25 * (len(data.train) + len(data.val)), abs=10)


def test_options_override_the_training_run_and_defaults_apply_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path))
    overridden = finetune_config(2, training=TRAINED_WITH, cutout=0, val_fraction=0.1, label_smoothing=None)
    assert (overridden.cutout, overridden.val_fraction, overridden.label_smoothing) == (0, 0.1, 0.2)  # None: inherited
    default = finetune_config(2)
    assert (default.cutout, default.val_fraction, default.label_smoothing) == (0, 0.1, 0.0)
    splits = [finetune_data("digits", None, tiny_model(), c, progress=False) for c in (overridden, default)]
    assert splits[0].augment.cutout == 0 == splits[1].augment.cutout
    assert len(splits[0].val) == len(splits[1].val)
