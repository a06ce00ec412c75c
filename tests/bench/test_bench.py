import json

import pytest

from squeezelab.bench import BenchSettings, bench_models, interleaved_timings, measure_peak_gflops, write_results
from squeezelab.cli.main import main
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from tests.interop.helpers import write_images

TIMING_COLUMNS = {
    "infer_samples_per_sec",
    "infer_step_time",
    "infer_step_time_p90",
    "infer_gflops",
    "peak_fraction",
    "speedup_vs_onnx",
}


def test_interleaved_timings_counts_every_call():
    calls = {"a": [], "b": []}
    timings = interleaved_timings({k: (lambda k=k: calls[k].append(1)) for k in calls}, warmup=2, iters=7, rounds=3)
    assert {k: len(v) for k, v in calls.items()} == {"a": 9, "b": 9}
    assert all(len(t.seconds) == 7 and t.p90 >= t.median > 0 for t in timings.values())
    with pytest.raises(ValueError):
        interleaved_timings({}, iters=0)


def test_peak_is_positive():
    assert measure_peak_gflops(size=256, repeats=2) > 0


def test_bench_runs_every_backend_end_to_end(tmp_path):
    calibration = tmp_path / "calibration"
    write_images(calibration, 8, size=32)
    model_file = tmp_path / "tiny.pt"
    save_model(create_model("squeezenet_tiny_cifar"), model_file)
    settings = BenchSettings(
        batch_sizes=(1, 2),
        backends=("eager", "channels_last", "onnx", "int8"),
        warmup=1,
        iters=3,
        rounds=1,
        threads=2,
        calibration=calibration,
        calibration_count=4,
        peak_size=256,
        progress=False,
    )
    result = bench_models(["squeezenet_tiny_cifar", str(model_file)], settings)
    assert len(result.rows) == 2 * 2 * 4
    for row in result.rows:
        assert TIMING_COLUMNS <= set(row) and row["note"] in ("", "random weights")
        assert row["infer_img_size"] == "32x32" and row["param_count"] > 0 and row["infer_gmacs"] > 0
        expected = 1e3 * row["infer_batch_size"] / row["infer_step_time"]
        assert row["infer_samples_per_sec"] == pytest.approx(expected, rel=0.01)
    assert {row["speedup_vs_onnx"] for row in result.rows if row["backend"] == "onnx"} == {1.0}
    assert result.environment["peak_gflops"] > 0
    paths = write_results(result, tmp_path / "out")
    assert [p.suffix for p in paths] == [".csv", ".json", ".md", ".png"] and all(p.stat().st_size > 0 for p in paths)
    assert json.loads(paths[1].read_text())["rows"][0]["backend"] == "eager"


def test_unavailable_backend_is_reported_not_fatal():
    settings = BenchSettings(
        batch_sizes=(1,), backends=("onnx", "int8"), warmup=0, iters=1, rounds=1, peak_size=256, progress=False
    )
    rows = bench_models(["squeezenet_tiny_cifar"], settings).rows
    int8 = next(row for row in rows if row["backend"] == "int8")
    assert "calibration" in int8["note"] and "infer_step_time" not in int8


def test_cli_bench_with_accuracy_columns(tmp_path, capsys):
    data = tmp_path / "labelled"
    for label in ("a", "b"):
        write_images(data / label, 2, size=32, seed=ord(label))
    model_file = tmp_path / "tiny.pt"
    save_model(create_model("squeezenet_tiny_cifar", num_classes=2), model_file)
    code = main(
        ["bench", str(model_file), "--backends", "eager,onnx", "--batch-sizes", "1", "--iters", "2", "--warmup", "1",
         "--eval-data", str(data), "--peak-size", "256", "--out", str(tmp_path / "out"), "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "infer_samples_per_sec" in out and "top1" in out and "GFLOP/s" in out
    assert (tmp_path / "out" / "bench.md").is_file()


def test_cli_bench_rejects_unknown_backend(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "squeezenet1_1_cifar", "--backends", "eager,warp"])
    assert "unknown backend" in capsys.readouterr().err


def test_timing_spread_compares_round_medians():
    from squeezelab.bench.timing import Timing

    timing = Timing((1.0, 1.0, 2.0, 2.0), per_round=(2, 2))
    assert timing.round_medians == (1.0, 2.0) and timing.spread == pytest.approx(1 / 1.5)
    assert Timing((1.0, 3.0)).spread == 0.0


def test_bench_rows_per_thread_count_and_reasons_for_unavailable_runtimes(tmp_path):
    settings = BenchSettings(
        batch_sizes=(1,),
        backends=("onnx", "ncnn_int8", "litert"),
        warmup=1,
        iters=2,
        rounds=2,
        thread_counts=(1, 2),
        peak_size=128,
        progress=False,
    )
    rows = bench_models(["squeezenet_tiny_cifar"], settings).rows
    assert [(r["threads"], r["backend"]) for r in rows] == [(t, b) for t in (1, 2) for b in settings.backends]
    onnx = [r for r in rows if r["backend"] == "onnx"]
    assert all(r["file_bytes"] > 0 and r["infer_step_time_spread"] >= 0 for r in onnx)
    notes = {r["backend"]: r["note"] for r in rows}
    assert "ncnn2table" in notes["ncnn_int8"] and "litert-torch" in notes["litert"]
