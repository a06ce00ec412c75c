"""Muon for convolution filters (train/muon.py) and its place in the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from squeezelab.models import create_model
from squeezelab.train import TrainConfig, load_checkpoint, train_from_config
from squeezelab.train.muon import Muon, orthogonalize
from squeezelab.train.optim import build_optimizer
from tests.train.test_fast_training import _interrupted_then_resumed, fast_config  # noqa: F401  (fixture)


@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalize_pushes_every_singular_value_near_one(shape):
    torch.manual_seed(0)
    matrix = torch.randn(*shape) @ torch.diag(torch.logspace(-1, 1, shape[1]))  # condition number ~100
    singular_values = torch.linalg.svdvals(orthogonalize(matrix, steps=5).float())
    assert singular_values.min() > 0.5 and singular_values.max() < 1.5
    assert orthogonalize(matrix).shape == matrix.shape


def test_muon_splits_filters_from_the_sgd_groups():
    model = create_model("squeezenet_fast_cifar", widths=[8, 16, 16])
    config = TrainConfig(model="squeezenet_fast_cifar", optimizer="muon", muon_lr=0.3, muon_momentum=0.5, norm_lr_scale=4.0)
    optimizer = build_optimizer(model, config)
    muon, *sgd = optimizer.param_groups
    assert muon["muon"] and muon["lr"] == 0.3 and muon["momentum"] == 0.5
    assert all(p.ndim == 4 for p in muon["params"])
    assert not any(g["muon"] for g in sgd) and model.classifier.weight in sgd[0]["params"]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert {g["lr"] for g in sgd} == {config.lr, config.lr * 4.0}


def test_sgd_groups_step_exactly_like_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3), nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    ours = Muon([{"params": a.parameters(), "weight_decay": 0.01}], lr=0.1, momentum=0.9, nesterov=True)
    torch_sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        x = torch.randn(4, 5)
        for model, optimizer in ((a, ours), (b, torch_sgd)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and torch.allclose(a.bias, b.bias, atol=1e-6)


def test_weight_norm_keeps_each_filter_bank_at_sqrt_out_channels():
    conv = nn.Conv2d(4, 6, 3)
    optimizer = Muon([{"params": [conv.weight], "muon": True}], lr=0.05, momentum=0.6, weight_norm=True)
    for _ in range(3):
        optimizer.zero_grad()
        conv(torch.randn(2, 4, 8, 8)).sum().backward()
        optimizer.step()
        # normalised before each step, then moved by a bounded orthogonal update
        assert abs(conv.weight.norm().item() - 6**0.5) < 0.05 * 6**0.5 + 0.2


def test_muon_refuses_vectors_and_models_without_filters():
    with pytest.raises(ValueError, match="muon group holds only matrices"):
        Muon([{"params": [nn.Parameter(torch.ones(3))], "muon": True}], lr=0.1)
    with pytest.raises(ValueError, match="no trainable convolution filters"):
        build_optimizer(nn.Linear(4, 2), TrainConfig(optimizer="muon"))
    with pytest.raises(ValueError, match="muon_momentum: must be in"):
        TrainConfig(optimizer="muon", muon_momentum=1.0)


def test_a_muon_run_resumes_exactly(fast_config, tmp_path):  # noqa: F811
    config = fast_config.updated(optimizer="muon", muon_weight_norm=True, tta="none")
    uninterrupted = train_from_config(config, tmp_path / "a", progress=False, log=None)
    resumed = _interrupted_then_resumed(config, tmp_path / "b", after_epoch=2)
    a, b = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    groups = load_checkpoint(tmp_path / "b" / "last.pt")["optimizer"]["param_groups"]
    assert groups[0]["muon"] and not groups[-1]["muon"]
