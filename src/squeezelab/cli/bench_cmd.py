"""``squeezelab bench``: latency/throughput/size/MACs/peak fraction of models on inference backends."""

from __future__ import annotations

import argparse

from squeezelab.bench import BACKENDS, DEFAULT_BACKENDS, BenchSettings, bench_models, write_results
from squeezelab.bench.report import environment_line, table_rows
from squeezelab.interop.quantize import DEFAULT_CALIBRATION_COUNT

from .common import format_table, non_negative_int, parse_input_size, positive_int


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _backend_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown or text!r}; choose from {','.join(BACKENDS)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmark models on inference backends (eager, ONNX Runtime, int8, ...)")
    bench.add_argument("models", nargs="+", help="model files (real weights) or registered model names (random weights)")
    bench.add_argument("--input-size", type=parse_input_size, help="H,W or S (default: each model's own)")
    bench.add_argument("--batch-sizes", type=_int_list, default=(1, 8), help="latency batch, throughput batch (default 1,8)")
    bench.add_argument(
        "--backends", type=_backend_list, default=DEFAULT_BACKENDS,
        help=f"comma-separated, from {','.join(BACKENDS)} (default {','.join(DEFAULT_BACKENDS)}); onnx is the baseline",
    )
    bench.add_argument("--calibration", help="unlabelled images for the int8 backend (without it, int8 is skipped)")
    bench.add_argument("--calibration-count", type=positive_int, default=DEFAULT_CALIBRATION_COUNT, help="calibration images")
    bench.add_argument("--eval-data", help="labelled images: adds top-1/top-5 per backend (at each model's own input size)")
    bench.add_argument("--eval-limit", type=positive_int, help="evaluate at most this many images")
    bench.add_argument("--threads", type=positive_int, default=2, help="CPU threads for every backend (default 2)")
    bench.add_argument("--warmup", type=non_negative_int, default=5, help="untimed calls per backend (default 5)")
    bench.add_argument("--iters", type=positive_int, default=30, help="timed calls per backend and batch size (default 30)")
    bench.add_argument("--peak-size", type=positive_int, default=2048, help="matrix size of the fp32 peak measurement (default 2048)")
    bench.add_argument("--out", help="folder for bench.csv/.json/.md/.png")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    size = args.input_size[-2:] if args.input_size else None
    settings = BenchSettings(
        input_size=size,
        batch_sizes=args.batch_sizes,
        backends=args.backends,
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
        calibration=args.calibration,
        calibration_count=args.calibration_count,
        eval_data=args.eval_data,
        eval_limit=args.eval_limit,
        peak_size=args.peak_size,
        progress=not args.no_progress,
    )
    result = bench_models(args.models, settings)
    print(environment_line(result.environment))
    header, *rows = table_rows(result.rows)
    print(format_table(header, rows))
    if args.out:
        for path in write_results(result, args.out):
            print(f"wrote {path}")
    return 0
