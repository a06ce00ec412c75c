import shutil

import pytest
import torch

from squeezelab.compress import CompressionConfig, load_compressed
from squeezelab.compress.pipeline import compress_and_evaluate

from .conftest import trained_tiny

SETTINGS = {"density": {"default": 0.4}, "bits": 4, "finetune_epochs": 2, "prune_steps": 2}


class _StopAfter:
    """A log that interrupts the run like Ctrl-C after ``epochs`` epoch lines (each follows a saved checkpoint)."""

    def __init__(self, epochs: int) -> None:
        self.left = epochs

    def __call__(self, message: str) -> None:
        if message.startswith("epoch"):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt


def _compress(trained, digits, config, run_dir, path, log=None, **changes):
    settings = CompressionConfig(**{**SETTINGS, **changes}, finetune=config)
    return compress_and_evaluate(trained_tiny(trained), path, settings, data=digits, run_dir=run_dir, progress=False, log=log)


def test_interrupted_compression_resumes_to_the_same_file(tmp_path, capsys, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=2)
    whole = _compress(trained_state, digits, config, tmp_path / "whole", tmp_path / "whole.sqz")
    # stop in the second pruning step's first epoch (stages: prune1, prune2, quantized; 2 epochs each)
    with pytest.raises(KeyboardInterrupt):
        _compress(trained_state, digits, config, tmp_path / "cut", tmp_path / "cut.sqz", log=_StopAfter(3))
    assert f"rerun the same command to resume from the checkpoints in {tmp_path / 'cut'}" in capsys.readouterr().err
    assert not (tmp_path / "cut.sqz").exists() and not (tmp_path / "cut" / "quantized").exists()
    # the latest stage's checkpoint holds all the earlier stages left: their folders are not needed
    shutil.rmtree(tmp_path / "cut" / "prune1")
    messages = []
    resumed = _compress(trained_state, digits, config, tmp_path / "cut", tmp_path / "cut.sqz", log=messages.append)
    assert [m for m in messages if m.startswith("resuming")] == [f"resuming {tmp_path / 'cut' / 'prune2'} after epoch 1"]
    assert len([m for m in messages if m.startswith("epoch")]) == 3
    assert len([m for m in messages if m.startswith("training")]) == 2  # prune2 goes on, quantized starts
    assert resumed.finetune_results[0] is None  # the deleted stage's test figures went with its folder
    for got, expected in zip(resumed.finetune_results[1:] + [resumed.compressed_metrics], whole.finetune_results[1:] + [whole.compressed_metrics]):
        assert (got["top1"], got["loss"], got["confusion"]) == (expected["top1"], expected["loss"], expected["confusion"])
    expected = load_compressed(tmp_path / "whole.sqz").state_dict()
    for key, value in load_compressed(tmp_path / "cut.sqz").state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    # run again, finished: only the last stage reloads; the stages it supersedes report their recorded figures
    messages.clear()
    again = _compress(trained_state, digits, config, tmp_path / "cut", tmp_path / "cut.sqz", log=messages.append)
    assert [m for m in messages if m.startswith("resuming")] == [f"resuming {tmp_path / 'cut' / 'quantized'} after epoch 2"]
    assert again.finetune_results[1] == {key: resumed.finetune_results[1][key] for key in again.finetune_results[1]}
    assert set(again.finetune_results[1]) >= {"top1", "top5", "loss", "images"}


def test_resuming_with_other_settings_names_the_run_directory(tmp_path, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", log=_StopAfter(1))
    with pytest.raises(ValueError, match=r"compression\.json.*density"):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", density={"default": 0.3})



def test_resuming_from_another_model_is_an_error(tmp_path, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", log=_StopAfter(1))
    other = {**trained_state, "state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in trained_state["state_dict"].items()}}
    with pytest.raises(ValueError, match=r"compression\.json.*model"):
        _compress(other, digits, config, tmp_path / "run", tmp_path / "a.sqz")


def test_resuming_with_another_learning_rate_or_length_is_refused(tmp_path, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", log=_StopAfter(1))
    # the run directory keeps the whole config, which `squeezelab compress --config` repeats the run with
    assert CompressionConfig.load(tmp_path / "run" / "compression.yaml") == CompressionConfig(**SETTINGS, finetune=config)
    record = r"compression\.json: this run directory holds a compression with other settings \(.*"
    with pytest.raises(ValueError, match=record + r"finetune\.lr: 0\.05 -> 0\.01"):
        _compress(trained_state, digits, config.updated(lr=0.01), tmp_path / "run", tmp_path / "a.sqz")
    with pytest.raises(ValueError, match=record + r"stage_lr: None -> \{'quantized': 0\.01\}"):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", stage_lr={"quantized": 0.01})
    with pytest.raises(ValueError, match=record + r"finetune_epochs: 2 -> 3"):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", finetune_epochs=3)


def test_corrupt_settings_record_names_the_file(tmp_path, trained_state, digits, tiny_config):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "compression.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"compression\.json: unreadable settings"):
        _compress(trained_state, digits, tiny_config.updated(epochs=2), tmp_path / "run", tmp_path / "a.sqz")


def test_named_stages_get_their_own_length_and_learning_rate(tmp_path, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=1)
    outcome = _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", finetune_epochs=1,
                        stage_epochs={"prune2": 3}, stage_lr={"quantized": 0.002})  # fmt: skip
    stages = {stage: torch.load(tmp_path / "run" / stage / "last.pt", weights_only=True) for stage in ("prune1", "prune2", "quantized")}
    assert {stage: len(record["history"]) for stage, record in stages.items()} == {"prune1": 1, "prune2": 3, "quantized": 1}
    assert {stage: record["config"]["lr"] for stage, record in stages.items()} == {"prune1": config.lr, "prune2": config.lr, "quantized": 0.002}
    assert len(outcome.finetune_results) == 3
    # the learning rates are part of the run's settings, those of stages not started yet too
    with pytest.raises(ValueError, match=r"compression\.json: .*other settings \(stage_lr\.quantized: 0\.002 -> 0\.003\)"):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", finetune_epochs=1,
                  stage_epochs={"prune2": 3}, stage_lr={"quantized": 0.003})  # fmt: skip
    # the epochs are part of the run's settings: resuming without them is refused
    with pytest.raises(ValueError, match=r"compression\.json.*stage_epochs: \{'prune2': 3\} -> None"):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", finetune_epochs=1)


@pytest.mark.parametrize("overrides, message", [({"stage_epochs": {"prune3": 2}}, r"stage_epochs: no stage named 'prune3'.*prune1, prune2, quantized"),
                                                ({"stage_epochs": {"quantized": 0}}, r"epochs must be >= 1"),
                                                ({"stage_lr": {"filters": 0.1}}, r"stage_lr: no stage named 'filters'"),
                                                ({"stage_lr": {"prune1": 0.0}}, r"learning rates must be > 0, got \{'prune1': 0.0\}")])  # fmt: skip
def test_bad_stage_settings_name_the_stage(tmp_path, trained_state, digits, tiny_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        _compress(trained_state, digits, tiny_config, tmp_path / "run", tmp_path / "a.sqz", **overrides)
    assert not (tmp_path / "run").exists()


def test_kernel_level_pruning_through_the_pipeline_codes_kernels(tmp_path, trained_state, digits, tiny_config):
    sizes = {}
    for granularity in ("weight", "kernel"):
        outcome = _compress(trained_state, digits, tiny_config, tmp_path / granularity, tmp_path / f"{granularity}.sqz",
                            granularity=granularity, finetune_epochs=1, prune_steps=1, density={"default": 0.25})  # fmt: skip
        spatial = [row for row in outcome.report.layers if row.name in _spatial_layers(outcome.model)]
        sizes[granularity] = sum(row.position_bytes for row in spatial)
        if granularity == "kernel":
            assert max(spatial, key=lambda row: row.params).position_coder == "kernel-mask"  # small layers may gap-code
            for name in _spatial_layers(outcome.model):
                kernels = load_compressed(tmp_path / "kernel.sqz").get_submodule(name).weight.reshape(-1, 9) != 0
                assert bool((kernels.all(1) | ~kernels.any(1)).all()), name
    assert sizes["kernel"] < sizes["weight"] / 3
    record = (tmp_path / "kernel" / "compression.json").read_text()
    assert '"granularity": "kernel"' in record  # resuming with weight-level pruning would be an error


def _spatial_layers(model) -> list[str]:
    from squeezelab.compress import prunable_layers

    return [name for name, m in prunable_layers(model).items() if m.weight.dim() == 4 and m.weight[0, 0].numel() == 9]


def test_bias_correction_ends_the_pipeline_and_travels_in_the_file(tmp_path, trained_state, digits, tiny_config):
    from squeezelab.compress.biascorrection import _channel_means
    from squeezelab.compress.pipeline import _training_images

    def last_layer_gap(corrections: int) -> float:
        path = tmp_path / f"corrected{corrections}.sqz"
        settings = CompressionConfig(bits=1, bias_correction=corrections, finetune=tiny_config)
        compress_and_evaluate(trained_tiny(trained_state), path, settings, data=digits, progress=False, log=None)
        decoded, dense = load_compressed(path), trained_tiny(trained_state)
        got, wanted = _channel_means(decoded, images, 64), _channel_means(dense, images, 64)
        return (got["classifier.1"] - wanted["classifier.1"]).abs().max().item()

    images = _training_images(digits, 64, tiny_config.seed)
    assert last_layer_gap(64) < 1e-3 < last_layer_gap(0)


def test_bias_correction_needs_training_images_and_keeps_the_layers(trained_state, digits, tmp_path):
    with pytest.raises(ValueError, match="bias correction needs the training images"):
        compress_and_evaluate(trained_tiny(trained_state), tmp_path / "a.sqz", CompressionConfig(bits=4, bias_correction=16), progress=False)
    with pytest.raises(ValueError, match="filter pruning"):
        compress_and_evaluate(trained_tiny(trained_state), tmp_path / "a.sqz", CompressionConfig(keep_filters=0.5, bias_correction=16),
                              data=digits, progress=False)  # fmt: skip


def test_data_of_other_classes_serves_bias_correction_only(tmp_path, digits, tiny_config):
    from .conftest import tiny_model

    messages = []
    outcome = compress_and_evaluate(
        tiny_model(num_classes=4), tmp_path / "a.sqz", CompressionConfig(bits=2, bias_correction=32), data=digits, progress=False,
        log=messages.append,
    )  # fmt: skip
    assert outcome.dense_metrics is None and outcome.compressed_metrics is None
    assert any("no accuracy measured" in m and "10 classes, the model 4" in m for m in messages)
    with pytest.raises(ValueError, match="labelled with the model's classes"):
        compress_and_evaluate(tiny_model(num_classes=4), tmp_path / "b.sqz", CompressionConfig(bits=2, finetune_epochs=1), data=digits, progress=False)


def test_latent_fine_tuning_resumes_and_writes_the_model_it_evaluated(tmp_path, trained_state, digits, tiny_config):
    config = tiny_config.updated(epochs=2)
    settings = {"shared_training": "latent", "prune_steps": 1, "bits": 2}
    # stages prune1, quantized (2 epochs each): stop after the quantized stage's first epoch
    with pytest.raises(KeyboardInterrupt):
        _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", log=_StopAfter(3), **settings)
    messages = []
    outcome = _compress(trained_state, digits, config, tmp_path / "run", tmp_path / "a.sqz", log=messages.append, **settings)
    assert f"resuming {tmp_path / 'run' / 'quantized'} after epoch 1" in messages
    assert '"shared_training": "latent"' in (tmp_path / "run" / "compression.json").read_text()
    decoded = load_compressed(tmp_path / "a.sqz")
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(decoded.eval()(x), outcome.model.eval()(x), rtol=0, atol=0)


def test_unreadable_stage_results_name_the_file(tmp_path):
    from squeezelab.compress.pipeline import _recorded_test

    assert _recorded_test(tmp_path / "gone") is None
    (tmp_path / "results.json").write_text("{cut")
    with pytest.raises(ValueError, match=r"results\.json: unreadable stage results"):
        _recorded_test(tmp_path)
