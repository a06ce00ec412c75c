import pytest

from squeezelab.compress.stages import StagedRun, has_checkpoint

STAGES = ("prune1", "prune2", "prune3", "quantized")


def test_a_run_resumes_at_its_latest_stage_with_a_checkpoint(tmp_path):
    assert StagedRun(tmp_path, STAGES).resume_stage is None  # nothing started: every stage runs
    for stage in ("prune1", "prune2"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "last.pt").write_bytes(b"")
    (tmp_path / "prune3").mkdir()  # a folder without its checkpoint: the stage had not got far
    run = StagedRun(tmp_path, STAGES)
    assert run.resume_stage == "prune2" and run.resumes("prune2") and run.folder("prune2") == tmp_path / "prune2"
    assert [stage for stage in STAGES if run.superseded(stage)] == ["prune1"]
    assert not run.resumes("prune3") and not run.superseded("prune3")
    (tmp_path / "prune1" / "last.pt").unlink()  # an earlier stage's folder is not needed
    assert StagedRun(tmp_path, STAGES).resume_stage == "prune2"
    assert StagedRun(tmp_path, STAGES, checkpoint="model.pt").resume_stage is None  # another kind of checkpoint
    without_folders = StagedRun(None, STAGES)
    assert without_folders.folder("prune1") is None and without_folders.resume_stage is None and not has_checkpoint(None)


def test_a_run_records_its_settings_and_refuses_others(tmp_path):
    settings = {"model": "abc", "bits": 4, "finetune": {"lr": 0.01, "epochs": 2}}
    StagedRun(tmp_path, STAGES).claim("record.json", settings, True, "a test run")
    StagedRun(tmp_path, STAGES).claim("record.json", settings, True, "a test run")  # the same settings: it resumes
    changed = {**settings, "model": "def", "finetune": {"lr": 0.02, "epochs": 2}}
    message = r"record\.json: this run directory holds a test run with other settings \(model: other weights; finetune\.lr: 0\.01 -> 0\.02\)"
    with pytest.raises(ValueError, match=message):
        StagedRun(tmp_path, STAGES).claim("record.json", changed, True, "a test run")
    StagedRun(tmp_path / "other", STAGES).claim("record.json", settings, False, "a test run")
    assert not (tmp_path / "other").exists()  # only the main process writes
    StagedRun(None, STAGES).claim("record.json", settings, True, "a test run")  # no run directory: nothing to record
