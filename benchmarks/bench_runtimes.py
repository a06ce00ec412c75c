"""Every CPU runtime in one run: squeezelab's int8 recipe (onnxruntime, OpenVINO) against the peers a user would
pick instead (onnxruntime fp32, OpenVINO fp32/bf16 and NNCF int8, ExecuTorch XNNPACK fp32/int8, ncnn, LiteRT).

Models: squeezenet1_0 with the real Deep Compression weights (227x227, accuracy on ../shared/data/imagenet-sample),
squeezenet1_1 (224x224, random weights: speed and size only) and squeezenet_fast_cifar (32x32, accuracy on the
CIFAR-10 test set; trained weights from --cifar-model or runs/cifar10_fast/*/best.pt, else random weights, and
the rows say so). Batch 1 and 8, 1 and 2 threads. Every int8 path is calibrated on the same CIFAR-10 training
images (tiled into mosaics for the ImageNet models), never on evaluation images.

Timing reuses squeezelab.bench: warm-up, then interleaved rounds over all runtimes of a model, so a busy phase
of the machine hits them alike; ratios within one model/batch/threads group are meaningful, absolute times only
on a quiet machine. ``spread`` is (slowest - fastest round median) / median. ``vs_best_peer`` is the fastest
peer's median / this row's median in the same group, over peers within 1 top-1 point of fp32 where accuracy is
known; squeezelab's own rows (its int8 recipe) should reach >= 1.0 at batch 1.

    .venv/bin/python benchmarks/bench_runtimes.py [--quick] [--out benchmarks/results/runtimes]

Run it on an idle machine (it takes about half an hour, most of it converting and evaluating); --quick is a
smoke check (1 thread, batch 1, few calls, 50 evaluation images, 32 calibration images).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from squeezelab.bench import BenchResult, BenchSettings, bench_models, write_results
from squeezelab.bench.backends import BACKENDS, SQUEEZELAB_RECIPE
from squeezelab.bench.report import environment_line, markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RELEASE = SHARED / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
CALIBRATION = SHARED / "data" / "cifar10-jpeg" / "train"
IMAGENET_EVAL = SHARED / "data" / "imagenet-sample"
CIFAR_EVAL = SHARED / "data" / "cifar10-jpeg" / "test"
CIFAR_WEIGHTS = "squeezenet_fast_cifar.sl_cifar10"  # the shipped fast-recipe network (a pretrained tag)
# Every backend but the eager-mode variants (channels_last, bf16, compile): one row per runtime.
RUNTIMES = tuple(b for b in BACKENDS if b not in ("channels_last", "bf16", "compile"))
REFERENCE = "eager"  # fp32 PyTorch: the accuracy every other row is compared with
ACCURACY_MARGIN = 1.0  # top-1 points a peer may lose and still count as "equal accuracy"
COLUMNS = (
    "model", "backend", "threads", "infer_batch_size", "infer_step_time", "infer_step_time_p90", "infer_step_time_spread",
    "infer_samples_per_sec", "vs_best_peer", "speedup_vs_onnx", "peak_fraction", "file_bytes", "top1", "top5",
    "top1_vs_fp32", "note",
)


@dataclass(frozen=True)
class BenchTarget:
    ref: str  # a model file or a registered name
    eval_data: Path | None
    eval_limit: int | None = None


def main() -> int:
    args = _parse_args()
    missing = [p for p in (RELEASE, CALIBRATION, IMAGENET_EVAL, CIFAR_EVAL) if not p.exists()]
    if missing:
        print(f"bench_runtimes: {missing[0]} not found (the shared data folder is needed)", file=sys.stderr)
        return 2
    settings = _settings(args)
    result = BenchResult()
    for target in _targets(args):
        one = bench_models([target.ref], replace(settings, eval_data=target.eval_data, eval_limit=target.eval_limit))
        result.rows += one.rows
        result.environment = one.environment
    result.environment["thread_counts"] = list(settings.thread_counts)
    _add_comparisons(result.rows)
    summary = _summary(result.rows)
    print(environment_line(result.environment))
    print(summary)
    print(markdown_table(result.rows, COLUMNS))
    for path in write_results(result, args.out, stem="results", title="Runtimes on this machine", columns=COLUMNS, summary=summary):
        print(f"wrote {path}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "runtimes"), help="output folder")
    parser.add_argument("--cifar-model", help="trained squeezenet_fast_cifar model file (default: the committed weights/ file)")
    parser.add_argument("--iters", type=int, default=100, help="timed calls per runtime, batch size and thread count")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    parser.add_argument("--cifar-eval-limit", type=int, help="evaluate on at most this many CIFAR-10 test images (default all)")
    parser.add_argument("--quick", action="store_true", help="smoke check: 1 thread, batch 1, few calls and images")
    return parser.parse_args()


def _settings(args: argparse.Namespace) -> BenchSettings:
    quick = args.quick
    return BenchSettings(
        batch_sizes=(1,) if quick else (1, 8),
        backends=RUNTIMES,
        warmup=2 if quick else 20,
        iters=6 if quick else args.iters,
        rounds=2 if quick else args.rounds,
        thread_counts=(1,) if quick else (1, 2),
        calibration=CALIBRATION,
        calibration_count=32 if quick else 256,
        peak_size=512 if quick else 2048,
    )


def _targets(args: argparse.Namespace) -> list[BenchTarget]:
    imagenet_limit = 50 if args.quick else None
    cifar_ref, cifar_eval = _cifar_model(args.cifar_model)
    # The release file loads directly (imported on the fly); its file size is the compressed size.
    return [
        BenchTarget(str(RELEASE), IMAGENET_EVAL, imagenet_limit),
        BenchTarget("squeezenet1_1", None),
        BenchTarget(cifar_ref, cifar_eval, 50 if args.quick else args.cifar_eval_limit),
    ]


def _cifar_model(cifar_model: str | None) -> tuple[str, Path | None]:
    """The given or the shipped trained weights, evaluated on CIFAR-10 test."""
    return cifar_model or CIFAR_WEIGHTS, CIFAR_EVAL


def _add_comparisons(rows: list[dict[str, Any]]) -> None:
    """``top1_vs_fp32`` and ``vs_best_peer`` for every row, within its model/batch/threads group."""
    for group in _groups(rows):
        reference = next((r.get("top1") for r in group if r["backend"] == REFERENCE), None)
        for row in group:
            if reference is not None and row.get("top1") is not None:
                row["top1_vs_fp32"] = round(row["top1"] - reference, 2)
        peer = _best_peer(group, reference)
        for row in group:
            if peer is not None and row.get("infer_step_time"):
                row["vs_best_peer"] = round(peer["infer_step_time"] / row["infer_step_time"], 3)


def _groups(rows: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    keys = dict.fromkeys((r["model"], r["infer_batch_size"], r.get("threads")) for r in rows)
    return [[r for r in rows if (r["model"], r["infer_batch_size"], r.get("threads")) == key] for key in keys]


def _best_peer(group: Sequence[dict[str, Any]], reference: float | None) -> dict[str, Any] | None:
    """The fastest row not running squeezelab's recipe, among those as accurate as fp32 (within the margin)."""
    peers = [
        r for r in group
        if r["backend"] not in SQUEEZELAB_RECIPE and r.get("infer_step_time")
        and (reference is None or r.get("top1") is None or r["top1"] >= reference - ACCURACY_MARGIN)
    ]
    return min(peers, key=lambda r: r["infer_step_time"]) if peers else None


def _summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line per group: squeezelab's best row against the best peer."""
    lines = ["| model | batch | threads | squeezelab best | best peer | ratio |", "|---|---|---|---|---|---|"]
    for group in _groups(rows):
        ours = [r for r in group if r["backend"] in SQUEEZELAB_RECIPE and r.get("infer_step_time")]
        peer = _best_peer(group, next((r.get("top1") for r in group if r["backend"] == REFERENCE), None))
        if not ours or peer is None:
            continue
        best = min(ours, key=lambda r: r["infer_step_time"])
        first = group[0]
        lines.append(
            f"| {first['model']} | {first['infer_batch_size']} | {first.get('threads', '')} | "
            f"{best['backend']} {best['infer_step_time']:.2f} ms | {peer['backend']} {peer['infer_step_time']:.2f} ms | "
            f"{peer['infer_step_time'] / best['infer_step_time']:.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
