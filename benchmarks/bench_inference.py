"""The slides' comparison (AlexNet, SqueezeNet v1.0, v1.1, SqueezeNext) on this machine, per inference backend.

Baseline: a plain fp32 onnxruntime session of the same model, measured in the same run (interleaved), so the
``speedup_vs_onnx`` ratios hold even on a busy machine; absolute times do not. SqueezeNet v1.0 uses the
real Deep Compression ImageNet weights (imported from ../shared) and is also evaluated on the 500-image
ImageNet sample per backend; the other models have random weights (speed and size only). int8 is calibrated
on CIFAR-10 training images (tiled into mosaics), never on the evaluation images.

    .venv/bin/python benchmarks/bench_inference.py [--out docs/benchmarks/inference] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from squeezelab.bench import BenchSettings, bench_models, write_results
from squeezelab.bench.report import environment_line, markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RELEASE = SHARED / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
CALIBRATION = SHARED / "data" / "cifar10-jpeg" / "train"
EVAL_DATA = SHARED / "data" / "imagenet-sample"
BACKENDS = ("onnx", "eager", "channels_last", "bf16", "int8")
SUMMARY_COLUMNS = (
    "model", "backend", "infer_batch_size", "infer_step_time", "infer_step_time_p90", "infer_samples_per_sec",
    "speedup_vs_onnx", "peak_fraction", "param_count", "fp32_mb", "compressed_mb", "infer_gmacs", "top1", "top5", "note",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "inference"), help="output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60, help="timed calls per backend and batch size")
    parser.add_argument("--quick", action="store_true", help="few iterations, 64 calibration and 100 eval images")
    args = parser.parse_args()
    for path in (RELEASE, CALIBRATION, EVAL_DATA):
        if not path.exists():
            print(f"bench_inference: {path} not found (the shared data folder is needed)", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    settings = BenchSettings(
        input_size=(224, 224),
        batch_sizes=(1, 8),
        backends=BACKENDS,
        warmup=10,
        iters=10 if args.quick else args.iters,
        threads=args.threads,
        calibration=CALIBRATION,
        calibration_count=64 if args.quick else 256,
        eval_data=EVAL_DATA,
        eval_limit=100 if args.quick else None,
    )
    # The Deep Compression file loads directly (imported on the fly); its size is the compressed size.
    result = bench_models(["alexnet", str(RELEASE), "squeezenet1_1", "sqnxt23_w1"], settings)
    print(environment_line(result.environment))
    print(markdown_table(result.rows, SUMMARY_COLUMNS))
    for path in write_results(result, args.out, stem="inference", title="Inference on this machine"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
