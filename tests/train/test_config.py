import math

import pytest

from squeezelab.train import TrainConfig
from squeezelab.train.optim import build_optimizer, build_scheduler, lr_multiplier, parameter_groups


def test_config_round_trips_through_yaml_and_json(tmp_path):
    config = TrainConfig(model="squeezenet1_0_cifar", model_kwargs={"remove_fires": [2, 5]}, epochs=3, lr=0.05, grad_clip=2.0)
    for name in ("run.yaml", "run.json"):
        config.save(tmp_path / name)
        assert TrainConfig.load(tmp_path / name) == config


def test_config_errors_name_the_file_and_setting(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown setting 'learning_rate'"):
        TrainConfig.load(path)
    path.write_text("optimizer: lamb\n")
    with pytest.raises(ValueError, match=r"optimizer: must be one of sgd, adam, adamw, rmsprop, muon, got 'lamb'"):
        TrainConfig.load(path)
    path.write_text("weight_decay: 5e-4\n")  # YAML 1.1 reads this as a string
    assert TrainConfig.load(path).weight_decay == 5e-4
    path.write_text("cutout: -2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: cutout: must be a whole number of pixels >= 0, got -2"):
        TrainConfig.load(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        TrainConfig.load(tmp_path / "missing.yaml")


def _config(**changes) -> TrainConfig:
    return TrainConfig(epochs=10, lr=1.0, **changes)


def test_schedules_follow_their_formulas():
    steps = 5  # optimizer steps per epoch, 50 in all
    cosine = [lr_multiplier(s, _config(schedule="cosine"), steps) for s in (0, 25, 50)]
    assert cosine == pytest.approx([1.0, 0.5, 0.0])
    poly = _config(schedule="poly", power=1.0, min_lr_ratio=0.1)
    assert lr_multiplier(25, poly, steps) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(30, _config(schedule="step", step_size=3, gamma=0.5), steps) == 0.25  # epoch 6
    multistep = _config(schedule="multistep", milestones=[2, 6], gamma=0.1)
    assert [lr_multiplier(s, multistep, steps) for s in (9, 10, 30)] == pytest.approx([1.0, 0.1, 0.01])
    warm = _config(schedule="cosine", warmup_epochs=2)
    assert lr_multiplier(0, warm, steps) == pytest.approx(1 / 11) and lr_multiplier(10, warm, steps) == 1.0
    assert lr_multiplier(30, warm, steps) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_onecycle_peaks_at_lr_and_weight_decay_skips_biases():
    import torch.nn as nn

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    groups = parameter_groups(model, 5e-4, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 2, 1] and groups[1]["weight_decay"] == groups[2]["weight_decay"] == 0.0
    config = _config(schedule="onecycle", onecycle_pct_start=0.3)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 29 and lrs[-1] < 1e-3
    short = TrainConfig(epochs=1, schedule="onecycle", onecycle_pct_start=0.25)
    with pytest.raises(ValueError, match=r"schedule onecycle: 4 optimizer steps leave no warm-up at onecycle_pct_start=0.25"):
        build_scheduler(build_optimizer(model, short), short, steps_per_epoch=4)


@pytest.mark.parametrize("field", ["lr", "weight_decay", "label_smoothing", "grad_clip", "warmup_epochs", "gamma", "betas"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused_in_every_setting(field, value):
    # NaN slips through range checks (every comparison with it is false): the runs it made saved NaN weights
    bad = [value, 0.999] if field == "betas" else value
    with pytest.raises(ValueError, match=rf"{field}: must be a finite number"):
        TrainConfig(**{field: bad})


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"model_kwargs": 5}, "model_kwargs: must be a mapping"), ({"seed": -1}, "seed: must be a whole number >= 0")],
)
def test_builder_arguments_and_seed_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
