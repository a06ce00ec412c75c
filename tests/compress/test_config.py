import pytest

from squeezelab.compress import CompressionConfig, StdThreshold


def test_config_round_trips_through_yaml_and_json(tmp_path):
    config = CompressionConfig(
        keep_filters={"conv1x1": 0.75}, density={"conv3x3": 0.33, "default": 0.5}, granularity={"conv3x3": "kernel", "default": "weight"},
        bits={"stem": 6, "default": 4}, prune_steps=3, finetune_epochs=2, stage_epochs={"prune3": 5}, stage_lr={"quantized": 0.005},
        shared_training="latent", tensor_dtype="compact", fold_batch_norm=True,
        finetune=CompressionConfig().finetune.updated(lr=0.02, batch_size=64, distill=0.5),
    )  # fmt: skip
    for name in ("config.yaml", "config.json"):
        config.save(tmp_path / name)
        assert CompressionConfig.load(tmp_path / name) == config
    assert CompressionConfig.from_dict(config.to_dict()) == config
    assert config.tuned_stages() == ["filters", "prune1", "prune2", "prune3", "quantized"]
    assert config.finetune.epochs == 2  # what a stage without its own stage_epochs runs
    stages = {stage: config.finetune_of(stage) for stage in ("prune1", "prune3", "quantized")}
    assert {stage: (c.epochs, c.lr, c.batch_size) for stage, c in stages.items()} == {
        "prune1": (2, 0.02, 64), "prune3": (5, 0.02, 64), "quantized": (2, 0.005, 64)
    }  # fmt: skip


def test_a_file_changes_only_the_settings_it_names(tmp_path):
    base = CompressionConfig(bits=3, finetune_epochs=1, finetune=CompressionConfig().finetune.updated(batch_size=64))
    path = tmp_path / "config.yaml"
    # YAML 1.1 reads 5e-3 (no dot) as a string: still a number here
    path.write_text("std_threshold: 0.7\nstage_lr: {quantized: 5e-3}\nfinetune: {lr: 1e-2}\n")
    config = CompressionConfig.load(path, base=base)
    assert config.density_spec() == StdThreshold(0.7) and config.stage_lr == {"quantized": 0.005}
    assert (config.bits, config.finetune.lr, config.finetune.batch_size, config.finetune.optimizer) == (3, 0.01, 64, "sgd")
    assert CompressionConfig.load(path).finetune.batch_size == CompressionConfig().finetune.batch_size
    assert config.updated(std_threshold=None, density=0.3).density_spec() == 0.3  # None is a value: no std threshold


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"density": 1.5}, r"density: expected a fraction in \(0, 1\], or a mapping of layer names / kinds to such values; got 1\.5"),
        ({"density": {"conv3x3": 0}}, r"density: expected a fraction in \(0, 1\]"),
        ({"std_threshold": -1}, r"std_threshold: expected a finite scale > 0"),
        ({"density": 0.5, "std_threshold": 0.7}, r"std_threshold: give it or density, not both"),
        ({"keep_filters": 2}, r"keep_filters: expected a fraction in \(0, 1\]"),
        ({"granularity": {"conv3x3": "filter"}}, r"granularity: expected weight or kernel"),
        ({"bits": 17}, r"bits: expected a whole number in 1\.\.16"),
        ({"init": "kmeans++"}, r"init: must be one of optimal, linear, density, got 'kmeans\+\+'"),
        ({"tensor_dtype": "int4"}, r"tensor_dtype: must be one of float32, "),
        ({"prune_steps": 0}, r"prune_steps: must be a whole number of steps >= 1, got 0"),
        ({"finetune_epochs": 1.5}, r"finetune_epochs: must be a whole number of epochs >= 0, got 1\.5"),
        ({"bias_correction": -3}, r"bias_correction: must be a whole number of images >= 0, got -3"),
        ({"bias_correction": 16, "keep_filters": 0.5}, r"bias_correction: .* filter pruning \(keep_filters\) reshapes"),
        ({"stage_epochs": {"prune2": 3}}, r"stage_epochs: no stage named 'prune2' in this run; its stages are quantized"),
        ({"stage_lr": 0.01}, r"stage_lr: expected a mapping of stage names to values, got 0\.01"),
        ({"fold_batch_norm": "yes"}, r"fold_batch_norm: must be true or false, got 'yes'"),
        ({"finetune": {"warmup_epochs": 2}}, r"finetune: warmup_epochs: must be in \[0, epochs\), got 2"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(ValueError, match="^compress.yaml: " + message):
        CompressionConfig.from_dict(settings, source="compress.yaml")


def test_unknown_settings_are_named_with_a_hint():
    with pytest.raises(ValueError, match=r"^c\.yaml: unknown setting 'densty' \(did you mean 'density'\?\)"):
        CompressionConfig.from_dict({"densty": 0.3}, source="c.yaml")
    with pytest.raises(ValueError, match=r"^config: finetune: unknown setting 'lrr' \(did you mean 'lr'\?\)"):
        CompressionConfig().updated(finetune={"lrr": 0.1})
    with pytest.raises(ValueError, match=r"^config: finetune: lr: must be a finite number > 0, got -1"):
        CompressionConfig().updated(finetune={"lr": -1})
