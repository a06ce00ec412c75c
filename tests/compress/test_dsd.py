import shutil

import pytest
import torch

from squeezelab.compress import prunable_layers
from squeezelab.compress.dsd import dense_sparse_dense

from .conftest import tiny_model


def test_dense_sparse_dense_phases_and_resume(tmp_path, digits, tiny_config):
    model = tiny_model()
    result = dense_sparse_dense(model, digits, tiny_config, {"default": 0.5}, run_dir=tmp_path, progress=False, log=None)
    assert result.dense and result.sparse and result.redense
    assert all(abs(d - 0.5) < 0.05 for d in result.densities.values())
    sparse = torch.load(tmp_path / "sparse" / "model.pt", weights_only=True)["state_dict"]
    zeros = {name: sparse[f"{name}.weight"] == 0 for name in prunable_layers(model)}
    assert sum(int(z.sum()) for z in zeros.values()) > 0.4 * sum(z.numel() for z in zeros.values())
    # Re-dense: the pruned connections were restored and trained again.
    revived = sum(int((m.weight[zeros[n]] != 0).sum()) for n, m in prunable_layers(model).items())
    assert revived > 0 and not hasattr(model.features[0], "parametrizations")
    # A finished run resumes to its final weights without training again.
    again = tiny_model()
    rerun = dense_sparse_dense(again, digits, tiny_config, {"default": 0.5}, run_dir=tmp_path, progress=False, log=None)
    assert rerun.redense is None
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_resuming_dsd_with_other_settings_names_the_settings_file(tmp_path, digits, tiny_config):
    config = tiny_config.updated(epochs=1)
    dense_sparse_dense(tiny_model(), digits, config, 0.5, dense_epochs=0, run_dir=tmp_path, progress=False, log=None)
    with pytest.raises(ValueError, match=r"dsd\.json: .*DSD run with other settings \(density: 0\.5 -> 0\.3\)"):
        dense_sparse_dense(tiny_model(), digits, config, 0.3, dense_epochs=0, run_dir=tmp_path, progress=False, log=None)
    with pytest.raises(ValueError, match=r"dsd\.json: .*model: other weights"):
        dense_sparse_dense(tiny_model(seed=1), digits, config, 0.5, dense_epochs=0, run_dir=tmp_path, progress=False, log=None)


def test_interrupted_dsd_resumes_after_its_last_finished_phase(tmp_path, digits, tiny_config):
    whole = tiny_model()
    dense_sparse_dense(whole, digits, tiny_config, {"default": 0.5}, run_dir=tmp_path, progress=False, log=None)
    # as if stopped before the re-dense phase began; the sparse phase's model holds all the earlier phases left
    shutil.rmtree(tmp_path / "redense")
    shutil.rmtree(tmp_path / "dense")
    messages = []
    resumed = tiny_model()
    result = dense_sparse_dense(resumed, digits, tiny_config, {"default": 0.5}, run_dir=tmp_path, progress=False, log=messages.append)
    assert [m for m in messages if m.startswith("DSD")] == ["DSD redense phase: 1 epochs at lr 0.005"]
    assert result.dense is None and result.sparse is None and result.redense is not None
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)
