import json

import pytest

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


def test_train_refuses_a_run_directory_holding_a_run_unless_overwrite(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("last.pt", "best.pt", "metrics.csv", "results.json", "notes.txt"):
        (run / name).write_text("from the earlier run")
    assert main(["train", "--dataset", "digits", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a run already (last.pt, best.pt, results.json)" in err and "--overwrite" in err
    assert (run / "results.json").read_text() == "from the earlier run"  # untouched

    started = []

    def stopped_training(config, run_dir, **kwargs):
        started.append(sorted(p.name for p in run_dir.iterdir()))
        raise KeyboardInterrupt  # the new run killed early: none of the old run's files may pass for its own

    monkeypatch.setattr("squeezelab.cli.train_cmd.train_from_config", stopped_training)
    assert main(["train", "--dataset", "digits", "--out", str(run), "--overwrite"]) == 130
    assert started == [["notes.txt"]]  # the old run's files went before the new run started; nothing else did

    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert "drop --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_train_refuses_a_non_finite_learning_rate(value, tmp_path, capsys):
    assert main(["train", "--dataset", "digits", f"--lr={value}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr: must be a finite number" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seed", "-1"], "argument --seed: must be >= 0"),
        (["--set", "model_kwargs=5"], "model_kwargs: must be a mapping"),
        (["--model", "squeezenet1_1_cifar", "--input-size", "1,1"], "1x1"),
    ],
)
def test_bad_train_options_get_one_line_naming_them(arguments, message, tmp_path, capsys):
    command = ["train", "--dataset", "digits", "--limit", "50", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", *arguments]
    try:
        code = main(command)
    except SystemExit as exit:  # argparse's own refusal: its usage, then one line naming the option
        code = exit.code
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in last, last
