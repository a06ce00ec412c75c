import json

from squeezelab.cli.main import main
from squeezelab.train import load_checkpoint
from tests.conftest import torchrun_squeezelab
from tests.train.conftest import _tiny_models_on_one_thread, private_cache, tiny_config  # noqa: F401  (fixtures)


def test_train_then_eval_from_the_command_line(tiny_config, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    tiny_config.updated(epochs=1).save(config)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--quiet", "--set", "label_smoothing=0.1"]) == 0
    assert f"run directory: {run}" in capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    # The run's config.yaml repeats it: the CLI flags were resolved into it.
    assert "label_smoothing: 0.1" in (run / "config.yaml").read_text()

    out_json = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(run / "best.pt"), "--dataset", "digits", "--limit", "300", "--json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "class" in printed  # summary line and per-class table
    metrics = json.loads(out_json.read_text())
    assert metrics["top1"] == results["test"]["top1"] and set(metrics["per_class"]) == set("0123456789")

    code = main(["eval", "--checkpoint", str(run / "best.pt"), "--dataset", "digits", "--limit", "300", "--tta", "mirror", "--quiet",
                 "--json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "with tta mirror: top-1" in printed
    metrics = json.loads(out_json.read_text())
    assert metrics["top1"] == results["test"]["top1"] and 0 <= metrics["tta"]["top1"] <= 100


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--set", "learning_rate=0.1"]) == 2
    assert "unknown setting 'learning_rate'" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", "digits"]) == 2
    assert "nope.pt: no such file" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_torchrun_trains_with_the_fast_training_features(tiny_config, tmp_path):
    """Lookahead, a whitening layer whose bias stops training, frozen batch-norm scales and TTA under DDP."""
    config = tmp_path / "fast.yaml"
    tiny_config.updated(
        model="squeezenet_fast_cifar", model_kwargs={"widths": [8, 16, 16]}, in_chans=3, input_size=[16, 16], epochs=2,
        translate=1, translate_mode="reflect", flip="alternate", norm_lr_scale=4.0, bn_weight_frozen=True,
        weight_averaging="lookahead", ema_every=2, ema_start_epoch=0, init="dirac", whitening="frozen", whitening_bias_epochs=1,
        tta="mirror_translate",
    ).save(config)
    run = tmp_path / "run"
    stdout, _ = torchrun_squeezelab(["train", "--config", str(config), "--out", str(run), "--quiet", "--batch-size", "48"], tmp_path)
    assert stdout.count("epoch   2/2") == 1 and stdout.count("test with tta mirror_translate") == 1
    assert load_checkpoint(run / "last.pt")["weight_average"]["average"] is not None


def test_torchrun_two_processes_train_with_ddp(tiny_config, tmp_path):
    config = tmp_path / "tiny.yaml"
    tiny_config.updated(epochs=1).save(config)
    run = tmp_path / "run"
    stdout, _ = torchrun_squeezelab(["train", "--config", str(config), "--out", str(run), "--quiet", "--batch-size", "48"], tmp_path)
    assert stdout.count("epoch   1/1") == 1 and stdout.count("run directory") == 1  # only rank 0 logs
    record = load_checkpoint(run / "last.pt")
    assert record["epoch"] == 1 and not any(k.startswith("module.") for k in record["state_dict"])
    # 270 training images: each rank gets 135 and makes 2 full batches of 48 (one process alone would make 5).
    assert record["history"][0]["train_images"] == 2 * 2 * 48
    test = json.loads((run / "results.json").read_text())["test"]
    assert test["images"] == 300  # sharded test, summed
    # The sharded test figures are those of the weights rank 0 saved (batch-norm statistics included).
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--dataset", "digits", "--limit", "300", "--json", str(tmp_path / "e.json")]) == 0
    alone = json.loads((tmp_path / "e.json").read_text())
    assert alone["top1"] == test["top1"] and abs(alone["loss"] - test["loss"]) < 1e-5
