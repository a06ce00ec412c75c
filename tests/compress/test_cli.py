import pytest
import torch

from squeezelab import load_model
from squeezelab.cli.main import main
from squeezelab.compress import CompressionConfig, load_compressed
from squeezelab.models.files import save_model
from squeezelab.train import load_checkpoint
from tests.conftest import torchrun_squeezelab

from .conftest import trained_tiny


@pytest.fixture
def model_file(tmp_path, trained_state):
    path = tmp_path / "tiny.pt"
    save_model(trained_tiny(trained_state), path)
    return path


def test_compress_decompress_sensitivity(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny.sqz"
    code = main([
        "compress", str(model_file), "-o", str(out), "--density", "conv3x3=0.3,default=0.5", "--bits", "4",
        "--keep-filters", "conv1x1=0.75", "--dataset", "digits", "--limit", "300", "--finetune-epochs", "1",
        "--batch-size", "32", "--distill", "0.5", "--shared-training", "latent", "--run-dir", str(tmp_path / "runs"),
        "--report", str(tmp_path / "report"), "--quiet",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "compressed:" in printed and "test top-1" in printed and "ratio" in printed
    assert all((tmp_path / f"report{s}").is_file() for s in (".md", ".csv", ".json", ".png"))
    assert "distill: 0.5" in (tmp_path / "runs" / "quantized" / "config.yaml").read_text()
    assert '"shared_training": "latent"' in (tmp_path / "runs" / "compression.json").read_text()
    decoded = load_compressed(out)
    assert decoded.model_spec["kwargs"]["fire_specs"]  # the structured-pruning channel plan travels in the file

    assert main(["decompress", str(out), "-o", str(tmp_path / "dense.pt")]) == 0
    assert load_model(tmp_path / "dense.pt").model_spec == load_compressed(out).model_spec
    capsys.readouterr()

    code = main([
        "sensitivity", str(model_file), "--dataset", "digits", "--limit", "300", "--values", "1,0.5,0.2",
        "--layers", "features.0,classifier.1", "--out", str(tmp_path / "sens"), "--max-drop", "5", "--quiet",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "allocated density per layer: features.0=" in printed
    assert "predicted: layer weights" in printed
    assert (tmp_path / "sens.csv").is_file() and (tmp_path / "sens.png").is_file()
    assert main(["sensitivity", "--from-csv", str(tmp_path / "sens.csv"), "--max-drop", "100"]) == 0
    assert "features.0=0.2,classifier.1=0.2" in capsys.readouterr().out


def test_file_budget_allocation_gives_a_file_within_it(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    budget, storage = 8500, ["--bits", "4", "--tensor-dtype", "compact", "--fold-bn"]
    code = main([
        "sensitivity", str(model_file), "--dataset", "digits", "--limit", "300", "--values", "1,0.6,0.3",
        "--file-bytes", str(budget), "--out", str(tmp_path / "sens"), "--quiet", *storage,
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "= file " in printed
    densities = printed.split("allocated density per layer: ")[1].split()[0]
    assert len(set(densities.split(","))) > 1  # the budget forces a mix of densities
    out = tmp_path / "budget.sqz"
    assert main(["compress", str(model_file), "-o", str(out), "--density", densities, "--quiet", *storage]) == 0
    # the sweep measured each layer's coded bytes exactly; only the metadata's stream lengths were estimated
    predicted = int(printed.split("= file ")[1].split()[0].replace(",", ""))
    assert budget * 0.9 < predicted <= budget and abs(out.stat().st_size - predicted) <= 2 * 26
    capsys.readouterr()
    assert main(["sensitivity", "--from-csv", str(tmp_path / "sens.csv"), "--file-bytes", str(budget)]) == 2
    assert "--file-bytes needs the model file" in capsys.readouterr().err
    assert main(["sensitivity", str(model_file), "--dataset", "digits", "--layers", "features.0", "--file-bytes", "9000"]) == 2
    assert "sweep without --layers" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, model_file, capsys):
    broken = tmp_path / "broken.sqz"
    broken.write_bytes(b"SQZL" + bytes(40))
    assert main(["decompress", str(broken)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("squeezelab decompress: error:") and str(broken) in error and "\n" not in error
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--bits", "conv=x"]) == 2
    assert "--bits" in capsys.readouterr().err
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--finetune-epochs", "1"]) == 2
    assert "needs data" in capsys.readouterr().err
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--stage-epochs", "4"]) == 2
    assert "--stage-epochs: expected STAGE=N" in capsys.readouterr().err
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--stage-lr", "0.01"]) == 2
    assert "--stage-lr: expected STAGE=LR" in capsys.readouterr().err
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--bias-correction", "16"]) == 2
    assert "bias correction needs the training images of a data set" in capsys.readouterr().err
    assert main(["compress", str(model_file), "-o", str(tmp_path / "x.sqz"), "--bias-correction", "-3", "--dataset", "digits", "--quiet"]) == 2
    assert "bias_correction: must be a whole number of images >= 0, got -3" in capsys.readouterr().err


def test_compress_settings_come_from_a_config_file_then_the_options_then_set(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "compress.yaml"
    config.write_text("density: {default: 0.5}\nbits: 5\nfinetune_epochs: 1\nfinetune: {batch_size: 32, lr: 0.02}\n")
    runs = tmp_path / "runs"
    command = ["compress", str(model_file), "-o", str(tmp_path / "a.sqz"), "--dataset", "digits", "--limit", "300", "--run-dir", str(runs), "--quiet"]
    assert main([*command, "--config", str(config), "--bits", "4", "--set", "bits=3", "--set", "finetune.lr=0.01"]) == 0
    saved = CompressionConfig.load(runs / "compression.yaml")  # the run directory keeps the config it ran with
    assert (saved.density, saved.bits, saved.finetune_epochs, saved.finetune.batch_size, saved.finetune.lr) == ({"default": 0.5}, 3, 1, 32, 0.01)
    assert load_checkpoint(runs / "prune1" / "last.pt")["config"]["lr"] == 0.01
    capsys.readouterr()
    # rerun from the saved config with another learning rate: refused, naming the setting
    assert main([*command, "--config", str(runs / "compression.yaml"), "--set", "finetune.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "compression.json: this run directory holds a compression with other settings (finetune.lr: 0.01 -> 0.02)" in err and err.count("\n") == 1
    assert main([*command, "--set", "densty=0.3"]) == 2
    assert "unknown setting 'densty' (did you mean 'density'?)" in capsys.readouterr().err
    assert main([*command, "--set", "finetune.lrr=0.3"]) == 2
    assert "finetune: unknown setting 'lrr' (did you mean 'lr'?)" in capsys.readouterr().err


def test_compress_with_bias_correction_on_training_images(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny.sqz"
    argv = ["compress", str(model_file), "-o", str(out), "--bits", "2", "--dataset", "digits", "--limit", "300", "--quiet"]
    assert main(argv + ["--bias-correction", "32"]) == 0
    corrected = load_compressed(out).state_dict()
    assert main(argv) == 0
    plain = load_compressed(out).state_dict()
    assert not torch.equal(corrected["classifier.1.bias"], plain["classifier.1.bias"])
    assert torch.equal(corrected["classifier.1.weight"], plain["classifier.1.weight"])
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--dataset", "digits", "--quiet"]) == 0  # eval reads .sqz files
    assert capsys.readouterr().out.startswith(f"{out} on digits test (")


def test_torchrun_two_processes_compress_and_dsd_with_ddp_fine_tuning(tmp_path, model_file):
    out, runs = tmp_path / "tiny.sqz", tmp_path / "runs"
    data = ["--dataset", "digits", "--limit", "300", "--batch-size", "32", "--quiet"]
    stdout, _ = torchrun_squeezelab(["compress", str(model_file), "-o", str(out), "--density", "0.5", "--bits", "4",
                                     "--finetune-epochs", "1", "--run-dir", str(runs), *data], tmp_path)
    assert stdout.count("compressed:") == 1  # only rank 0 prints
    assert load_compressed(out).model_spec["name"] == "squeezenet_generator"
    # 270 training images: each rank gets 135 and makes 4 full batches of 32 (one process alone would make 8).
    for stage in ("prune1", "quantized"):
        assert load_checkpoint(runs / stage / "last.pt")["history"][0]["train_images"] == 2 * 4 * 32

    stdout, _ = torchrun_squeezelab(["dsd", str(model_file), "--epochs", "1", "--dense-epochs", "0",
                                     "--run-dir", str(tmp_path / "dsd"), "-o", str(tmp_path / "dsd.pt"), *data], tmp_path)
    assert stdout.count("re-dense") == 1 and load_model(tmp_path / "dsd.pt").model_spec["name"] == "squeezenet_generator"
    assert load_checkpoint(tmp_path / "dsd" / "redense" / "last.pt")["history"][0]["train_images"] == 2 * 4 * 32


def test_fine_tuning_follows_the_checkpoints_training_run(tmp_path, digits, capsys, monkeypatch):
    from squeezelab.train import TrainConfig, fit

    from .conftest import tiny_model

    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))
    trained = TrainConfig(dataset="digits", val_fraction=0.2, cutout=2, label_smoothing=0.1, epochs=1, batch_size=32,
                          device="cpu", amp="off", seed=3)  # fmt: skip
    fit(tiny_model(batch_norm="all"), trained, digits, tmp_path / "train", progress=False, log=None)
    checkpoint = tmp_path / "train" / "best.pt"
    code = main([
        "compress", str(checkpoint), "-o", str(tmp_path / "x.sqz"), "--density", "0.5", "--bits", "4", "--dataset", "digits",
        "--limit", "300", "--finetune-epochs", "1", "--batch-size", "32", "--run-dir", str(tmp_path / "runs"), "--lr", "0.01",
        "--stage-lr", "quantized=0.002",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "as in its training run (val_fraction 0.2, seed 3, augment True, cutout 2, label_smoothing 0.1)" in printed
    stage = load_checkpoint(tmp_path / "runs" / "prune1" / "last.pt")["config"]
    assert (stage["val_fraction"], stage["cutout"], stage["label_smoothing"], stage["lr"]) == (0.2, 2, 0.1, 0.01)
    assert load_checkpoint(tmp_path / "runs" / "quantized" / "last.pt")["config"]["lr"] == 0.002

    code = main([
        "sensitivity", str(checkpoint), "--dataset", "digits", "--values", "1,0.5", "--layers", "classifier.1",
        "--bits", "3", "--val-fraction", "0", "--quiet",
    ])  # fmt: skip
    assert code == 2 and "the data has no validation split to score on; give --val-fraction > 0" in capsys.readouterr().err
    code = main(["sensitivity", str(checkpoint), "--dataset", "digits", "--kind", "bits", "--bits", "3", "--quiet"])
    assert code == 2 and "--bits: sets the bits at which a density sweep counts bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "density, message",
    [
        ("std:-1", "std threshold scales must be finite numbers > 0 (<= 0 prunes nothing), got -1.0"),
        ("std:conv3x3=0.7,default=0", "std threshold scales must be finite numbers > 0 (<= 0 prunes nothing), got 0.0"),
        ("0", "density must be in (0, 1], got 0.0"),
        ("conv3x3=1.5", "density must be in (0, 1], got 1.5"),
    ],
)
@pytest.mark.parametrize("command", ["compress", "dsd"])
def test_density_that_prunes_nothing_or_is_meaningless_is_refused_before_loading(tmp_path, capsys, command, density, message):
    # the model file does not exist: the density is checked first, not after minutes of loading and data
    argv = {"compress": ["-o", str(tmp_path / "x.sqz")], "dsd": ["--dataset", "digits", "--run-dir", str(tmp_path / "runs")]}
    assert main([command, str(tmp_path / "missing.pt"), *argv[command], "--density", density]) == 2
    err = capsys.readouterr().err
    assert f"--density {density}: {message}" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
