import json

import optuna
import pytest

from squeezelab.cli.main import main
from squeezelab.sweep import StudySpec, pareto_front, run_study, trial_rows, write_report
from squeezelab.sweep.runner import open_study, run_trial

TINY_TRAIN = {
    "model": "squeezenet1_1_mnist",
    "dataset": "digits",
    "input_size": [8, 8],
    "limit": 240,
    "epochs": 1,
    "batch_size": 64,
    "schedule": "constant",
    "lr": 0.05,
}


def _spec(axes, **extra) -> StudySpec:
    return StudySpec(name="t", base=dict(TINY_TRAIN), axes=axes, latency=False, **extra)


def _write_study(path, axes, **extra):
    path.write_text(json.dumps({"name": "cli", "train": TINY_TRAIN, "axes": axes, "latency": False, **extra}))
    return path


def test_bad_study_settings_are_named():
    with pytest.raises(ValueError, match="'widht'"):
        _spec({"widht": [1]})
    with pytest.raises(ValueError, match="empty"):
        _spec({})
    with pytest.raises(ValueError, match="search must be"):
        _spec({"lr": [0.1]}, search="bayes")
    with pytest.raises(ValueError, match="unknown setting 'epocs'"):
        StudySpec(name="t", base={**TINY_TRAIN, "epocs": 2}, axes={"lr": [0.1]})


def test_study_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        StudySpec.load(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        StudySpec.load(bad)


def test_trial_config_applies_builder_and_training_axes():
    spec = _spec({"model_kwargs.squeeze_ratio": [0.25], "lr": [0.2], "model_kwargs.remove_fires": [[2, 5]]})
    config = spec.trial_config({"model_kwargs.squeeze_ratio": 0.25, "lr": 0.2, "model_kwargs.remove_fires": (2, 5), "seed": 3})
    assert config.model_kwargs == {"squeeze_ratio": 0.25, "remove_fires": (2, 5)}
    assert (config.lr, config.seed, config.epochs) == (0.2, 3, 1)


def test_per_model_settings_apply_to_their_model_only():
    spec = _spec(
        {"model": ["squeezenet1_1_mnist", "plain_cnn_mnist"]},
        per_model={"squeezenet1_1_mnist": {"model_kwargs": {"batch_norm": "all"}, "lr": 0.01}},
    )
    squeezenet = spec.trial_config({"model": "squeezenet1_1_mnist", "seed": 0})
    plain = spec.trial_config({"model": "plain_cnn_mnist", "seed": 0})
    assert (squeezenet.model_kwargs, squeezenet.lr) == ({"batch_norm": "all"}, 0.01)
    assert (plain.model_kwargs, plain.lr) == ({}, 0.05)
    with pytest.raises(ValueError, match="per_model names 'alexnet_mnist'"):
        _spec({"model": ["plain_cnn_mnist"]}, per_model={"alexnet_mnist": {"lr": 0.1}})
    with pytest.raises(ValueError, match="unknown setting 'lrr'"):
        _spec({"model": ["plain_cnn_mnist"]}, per_model={"plain_cnn_mnist": {"lrr": 0.1}})


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 50.0), (2.0, 60.0), (1.5, 40.0), (3.0, 55.0), (0.5, 30.0)]
    assert pareto_front(points) == [4, 0, 1]


def test_grid_study_records_crashes_writes_report_and_resumes(tmp_path):
    spec = _spec({"model_kwargs.bypass": ["none", "bogus"], "model_kwargs.squeeze_ratio": [0.125]})
    study = run_study(spec, tmp_path, progress=False, log=None)
    rows = trial_rows(study, spec)
    states = {row["model_kwargs.bypass"]: row for row in rows}
    assert states["none"]["state"] == "ok" and states["none"]["params"] > 0
    assert states["bogus"]["state"] == "failed" and "bypass" in states["bogus"]["error"]
    paths = write_report(study, spec, tmp_path)
    for key in ("csv", "markdown", "size_plot", "macs_plot"):
        assert paths[key].stat().st_size > 0
    assert "Failed trials" in paths["markdown"].read_text()
    # Running the same study again trains nothing: finished and crashed points are settled.
    again = run_study(spec, tmp_path, progress=False, log=None)
    assert len(again.get_trials()) == len(study.get_trials())


def test_interrupted_trial_is_trained_again(tmp_path):
    spec = _spec({"model_kwargs.squeeze_ratio": [0.125]})
    study = open_study(spec, tmp_path)
    # A trial left RUNNING by a killed process: it holds the only grid point.
    study.enqueue_trial({"model_kwargs.squeeze_ratio": 0.125, "seed": 0}, user_attrs={"queued": True})
    orphan = study.ask()
    orphan.suggest_categorical("model_kwargs.squeeze_ratio", [0.125])
    orphan.suggest_categorical("seed", [0])
    study = run_study(spec, tmp_path, progress=False, log=None)
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1
    assert len(trial_rows(study, spec)) == 1


def test_a_trial_resumes_from_the_checkpoint_in_its_folder(tmp_path, monkeypatch):
    started = []

    def stopped_training(config, run_dir, *, resume, **kwargs):
        started.append(resume)
        raise KeyboardInterrupt

    monkeypatch.setattr("squeezelab.sweep.runner.train_from_config", stopped_training)
    spec = _spec({"model_kwargs.squeeze_ratio": [0.125]})
    (tmp_path / "interrupted").mkdir()
    (tmp_path / "interrupted" / "last.pt").write_bytes(b"")
    for trial in ("new", "interrupted"):
        with pytest.raises(KeyboardInterrupt):
            run_trial(spec, {"model_kwargs.squeeze_ratio": 0.125, "seed": 0}, tmp_path / trial)
    assert started == [False, True]


def test_failed_trials_are_trained_again_only_when_asked(tmp_path, monkeypatch):
    spec = _spec({"model_kwargs.squeeze_ratio": [0.125]})

    def broken_trial(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("squeezelab.sweep.runner.run_trial", broken_trial)
        study = run_study(spec, tmp_path, progress=False, log=None)
    assert [row["state"] for row in trial_rows(study, spec)] == ["failed"]
    study = run_study(spec, tmp_path, progress=False, log=None)
    assert [row["state"] for row in trial_rows(study, spec)] == ["failed"]
    study = run_study(spec, tmp_path, retry_failed=True, progress=False, log=None)
    rows = trial_rows(study, spec)
    assert [row["state"] for row in rows] == ["ok"] and rows[0]["params"] > 0
    assert "Failed trials" not in write_report(study, spec, tmp_path)["markdown"].read_text()


def test_study_grows_by_seeds_but_refuses_changed_settings(tmp_path):
    run_study(_spec({"model_kwargs.squeeze_ratio": [0.125]}), tmp_path, progress=False, log=None)
    grown = _spec({"model_kwargs.squeeze_ratio": [0.125]}, seeds=[0, 1])
    study = run_study(grown, tmp_path, progress=False, log=None)
    assert len(study.get_trials()) == 2 and [r["seed"] for r in trial_rows(study, grown)] == [0, 1]
    narrowed = _spec({"model_kwargs.squeeze_ratio": [0.125]}, seeds=[1])
    assert [r["seed"] for r in trial_rows(study, narrowed)] == [1]
    changed = StudySpec(name="t", base={**TINY_TRAIN, "epochs": 2}, axes={"model_kwargs.squeeze_ratio": [0.125]})
    with pytest.raises(ValueError, match="different base settings"):
        run_study(changed, tmp_path, progress=False, log=None)


def test_study_recorded_before_a_new_training_setting_reopens(tmp_path):
    spec = StudySpec(name="t", base={**TINY_TRAIN, "distill": 0.0}, axes={"model_kwargs.squeeze_ratio": [0.125]}, latency=False)
    study = run_study(spec, tmp_path, progress=False, log=None)
    recorded = study.user_attrs["spec"]
    del recorded["base"]["distill"]  # as written by a version without that setting
    study.set_user_attr("spec", recorded)
    assert len(run_study(spec, tmp_path, progress=False, log=None).get_trials()) == 1
    changed = StudySpec(name="t", base={**TINY_TRAIN, "distill": 0.5, "teacher": "t.pt"}, axes=spec.axes)
    with pytest.raises(ValueError, match="different base settings"):
        run_study(changed, tmp_path, progress=False, log=None)


def test_sweep_cli_runs_and_reports(tmp_path, capsys):
    study = _write_study(tmp_path / "study.json", {"model_kwargs.squeeze_ratio": [0.125]}, latency=True, compress=True)
    assert main(["sweep", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "squeeze_ratio" in out and "compressed kB" in out
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    record = dict(zip(header, values))
    assert float(record["cpu_latency_ms"]) > 0
    assert 0 < int(record["compressed_bytes"]) < int(record["fp32_bytes"])
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
