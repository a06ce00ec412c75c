"""Training throughput on a multi-core CPU: one process using every core vs `torchrun` with one process per core.

PyTorch's intra-op threads scale poorly on small convolutions, so on a CPU DistributedDataParallel with
one single-threaded process per core (gloo all-reduce) can beat one process with all cores. Both variants
run `squeezelab train` for the same epochs on the same CIFAR-10 images with the same global batch (per
process batch = batch / processes) and the settings of a recipe file; images/s come from each run's
metrics.csv (training only, validation excluded). Runs alternate and the best of ``--repeats`` is kept.

    python benchmarks/bench_ddp_cpu.py --limit 8000 --epochs 1
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from squeezelab.cli.common import format_table

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def train_images_per_s(command: list[str], run_dir: Path, env: dict[str, str]) -> float:
    subprocess.run(command + ["--out", str(run_dir), "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return max(float(row["images_per_s"]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "train" / "cifar10_sqnxt.yaml")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=8000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if args.batch_size % args.cores:
        parser.error(f"--batch-size {args.batch_size} must be divisible by --cores {args.cores}")
    common = ["--config", str(args.config), "--data-root", str(args.data_root), "--set", f"epochs={args.epochs}",
              "--set", f"limit={args.limit}", "--set", "warmup_epochs=0", "--set", "device=cpu"]
    squeezelab = [sys.executable, "-m", "squeezelab", "train", *common]
    variants = {
        f"1 process x {args.cores} threads": (
            squeezelab + ["--set", f"batch_size={args.batch_size}"],
            {"OMP_NUM_THREADS": str(args.cores)},
        ),
        f"torchrun: {args.cores} processes x 1 thread (DDP, gloo)": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.cores}",
             "-m", "squeezelab", "train", *common, "--set", f"batch_size={args.batch_size // args.cores}"],
            {"OMP_NUM_THREADS": "1"},
        ),
    }
    best = {name: 0.0 for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for index, (name, (command, extra_env)) in enumerate(variants.items()):
                run_dir = Path(scratch) / f"{repeat}-{index}"
                best[name] = max(best[name], train_images_per_s(command, run_dir, {**os.environ, **extra_env}))
    baseline = next(iter(best.values()))
    rows = [[name, f"{value:,.1f}", f"{value / baseline:.3f}"] for name, value in best.items()]
    print(f"{args.config.name}, {args.limit} images x {args.epochs} epoch(s), global batch {args.batch_size}, best of {args.repeats}")
    print(format_table(["variant", "train images/s", "ratio to 1 process"], rows))


if __name__ == "__main__":
    main()
