"""The fast-training capabilities of the trainer: weight averaging, parameter groups, batch-norm settings,
whitening and dirac initialisation, test-time augmentation; each on its own and through ``fit``."""

import json

import pytest
import torch
import torch.nn as nn

from squeezelab.data import build_loaders
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, build_run_data, evaluate, fit, load_checkpoint, resume_training, train_from_config
from squeezelab.train.averaging import WeightAverage
from squeezelab.train.evaluate import tta_logits
from squeezelab.train.initialization import dirac_init, fit_patch_whitening
from squeezelab.train.optim import build_optimizer, build_scheduler


@pytest.fixture
def fast_config(tiny_config) -> TrainConfig:
    """The tiny run with every fast-training feature on (the fast net needs 3 channels: digits as RGB)."""
    return tiny_config.updated(
        model="squeezenet_fast_cifar",
        model_kwargs={"widths": [8, 16, 16]},
        in_chans=3,
        input_size=[16, 16],
        epochs=3,
        batch_size=64,
        translate=1,
        translate_mode="reflect",
        flip="alternate",
        norm_lr_scale=4.0,
        bn_momentum=0.4,
        bn_weight_frozen=True,
        schedule="poly",
        warmup_epochs=1,
        warmup_start=0.2,
        min_lr_ratio=0.07,
        weight_averaging="lookahead",
        ema_decay=0.8,
        ema_every=2,
        ema_start_epoch=1,
        ema_warmup_power=3.0,
        init="dirac",
        whitening="frozen",
        whitening_bias_epochs=1,
        tta="mirror_translate",
    )


def test_averaging_follows_the_weights_and_lookahead_copies_back():
    model = nn.Linear(2, 1, bias=False)
    for mode in ("ema", "lookahead"):
        nn.init.zeros_(model.weight)
        average = WeightAverage(mode, decay=0.5, every=1, start_epoch=0, warmup_power=0.0, total_steps=10)
        average.after_step(model, 1, 0)  # the first update starts the average at the current weights
        with torch.no_grad():
            model.weight.fill_(1.0)
        average.after_step(model, 2, 0)
        assert torch.allclose(average.average["weight"], torch.full((1, 2), 0.5))
        expected = 0.5 if mode == "lookahead" else 1.0
        assert torch.allclose(model.weight, torch.full((1, 2), expected))
        with average.averaged(model):
            assert torch.allclose(model.weight, torch.full((1, 2), 0.5))
        assert torch.allclose(model.weight, torch.full((1, 2), expected))  # restored after the block


def test_averaging_waits_for_its_start_epoch_and_step_and_warms_up():
    model = nn.Linear(2, 1)
    average = WeightAverage("ema", decay=0.9, every=5, start_epoch=2, warmup_power=3.0, total_steps=100)
    average.after_step(model, 5, 1)
    average.after_step(model, 7, 2)
    assert average.average is None
    assert average._current_decay(50) == pytest.approx(0.9 * 0.125)


def test_norm_parameters_get_their_own_learning_rate_and_warmup_starts_where_asked(tiny_config):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    config = tiny_config.updated(norm_lr_scale=64.0, schedule="poly", warmup_epochs=1, warmup_start=0.2, lr=0.1)
    optimizer = build_optimizer(model, config)
    build_scheduler(optimizer, config, steps_per_epoch=10)  # sets the first step's learning rates
    first = [g["lr"] for g in optimizer.param_groups]
    assert first[1] / first[0] == pytest.approx(64.0)
    assert first[0] == pytest.approx(0.1 * (0.2 + 0.8 / 11))


def test_patch_whitening_makes_the_first_layer_output_white():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.9, 0.1], [0.0, 0.4, 0.3], [0.2, 0.0, 1.0]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 12, 12, generator=generator))
    conv = nn.Conv2d(3, 24, 2)
    fit_patch_whitening(conv, images, eps=0.0)
    out = nn.functional.conv2d(images, conv.weight[:12])
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert torch.equal(conv.weight[12:], -conv.weight[:12])
    with pytest.raises(ValueError, match="needs at least 24 filters"):
        fit_patch_whitening(nn.Conv2d(3, 16, 2), images)


def test_dirac_init_passes_channels_through():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    assert dirac_init(nn.Sequential(conv, nn.Conv2d(6, 6, 2))) == 1  # the even 2x2 kernel is left alone
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(conv(x)[:, :4], x)


def test_tta_averages_mirror_and_shifted_views():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    images = torch.randn(5, 2, 3, 3)
    assert torch.allclose(tta_logits(model, images, "mirror"), 0.5 * (model(images) + model(images.flip(-1))))
    symmetric = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # the mean pixel: unchanged by mirroring
    assert torch.allclose(tta_logits(symmetric, images, "mirror"), symmetric(images), atol=1e-6)
    assert tta_logits(model, images, "mirror_translate").shape == (5, 4)
    with pytest.raises(ValueError, match="tta: needs image batches"):
        tta_logits(nn.Identity(), torch.randn(3, 4), "mirror")


def _interrupted_then_resumed(config: TrainConfig, run_dir, after_epoch: int):
    """Train, stop as Ctrl-C would right after epoch ``after_epoch``'s checkpoint, then resume to the end."""

    def interrupt(message: str) -> None:
        if message.startswith(f"epoch {after_epoch:>3}/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_from_config(config, run_dir, progress=False, log=interrupt)
    return resume_training(run_dir, progress=False, log=None)


def test_a_fast_run_reports_tta_beside_the_plain_figure_and_resumes_exactly(fast_config, tmp_path):
    uninterrupted = train_from_config(fast_config, tmp_path / "a", progress=False, log=None)
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["test"]["tta"]["mode"] == "mirror_translate" and 0 <= results["test"]["tta"]["top1"] <= 100
    assert "top1" in results["test"]
    model = uninterrupted.model
    assert not model.whiten.weight.requires_grad and all(
        not m.weight.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )

    resumed = _interrupted_then_resumed(fast_config, tmp_path / "b", after_epoch=2)
    a, b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["weight_average"]["average"] is not None


def test_ema_saves_the_average_and_resumes_the_trained_weights(fast_config, tmp_path):
    config = fast_config.updated(weight_averaging="ema", ema_start_epoch=0, ema_warmup_power=0.0, tta="none")
    uninterrupted = train_from_config(config, tmp_path / "a", progress=False, log=None)
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    saved, trained = last["state_dict"], last["training_weights"]
    assert any(not torch.equal(saved[k], trained[k]) for k in saved if saved[k].dtype.is_floating_point)
    best = load_checkpoint(tmp_path / "a" / "best.pt")["state_dict"]
    final = uninterrupted.model.state_dict()
    assert all(torch.equal(best[k], final[k]) for k in best)  # the model kept is the average of the best epoch

    resumed = _interrupted_then_resumed(config, tmp_path / "b", after_epoch=1)
    assert all(torch.equal(final[k], resumed.model.state_dict()[k]) for k in final)


def test_the_whitened_first_layer_survives_training_frozen(fast_config, tmp_path):
    splits = build_run_data(fast_config, progress=False)
    result = train_from_config(fast_config, tmp_path / "run", progress=False, log=None)
    fresh = create_model("squeezenet_fast_cifar", widths=[8, 16, 16])
    images = splits.normalization(splits.train.images[:5000])
    fit_patch_whitening(fresh.whiten, images)
    assert torch.allclose(result.model.whiten.weight, fresh.whiten.weight)
    assert evaluate(result.model, build_loaders(splits, 64).test, tta="mirror")["images"] == len(splits.test)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ema_decay": 1.0}, "ema_decay: must be in"),
        ({"ema_every": 0}, "ema_every: must be a positive"),
        ({"ema_start_epoch": 5, "epochs": 3}, "ema_start_epoch: must be"),
        ({"norm_lr_scale": float("inf")}, "norm_lr_scale: must be a finite"),
        ({"bn_momentum": 1.5}, "bn_momentum: must be in"),
        ({"warmup_start": -0.1}, "warmup_start: must be in"),
        ({"translate": -1}, "translate: must be"),
        ({"translate_mode": "wrap"}, "translate_mode: must be one of"),
        ({"flip": "maybe"}, "flip: must be one of"),
        ({"tta": "all"}, "tta: must be one of"),
        ({"whitening": "yes"}, "whitening: must be one of"),
        ({"whitening_bias_epochs": 2}, "whitening_bias_epochs: set, but whitening is none"),
        ({"lr": float("nan")}, "lr: must be a finite number"),
    ],
)
def test_fast_training_settings_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_whitening_and_tta_refuse_models_and_data_they_cannot_serve(fast_config):
    splits = build_run_data(fast_config, progress=False)
    narrow = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match="whitening: the model's first layer is a 3->4 3x3 convolution"):
        fit(narrow, fast_config, splits, None, progress=False, log=None)
    splits.input_size = (3, 1, 1)
    with pytest.raises(ValueError, match="tta: mirror_translate needs image inputs"):
        fit(narrow, fast_config, splits, None, progress=False, log=None)
