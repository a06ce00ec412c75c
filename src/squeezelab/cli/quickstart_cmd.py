"""``squeezelab quickstart``: train, evaluate and report a small SqueezeNet on the embedded digits data."""

from __future__ import annotations

import argparse
from pathlib import Path

from squeezelab.compress.pipeline import quickstart_compress
from squeezelab.train import distributed_session, quickstart


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="train a small SqueezeNet on the embedded digits data (no download) and evaluate it"
    )
    parser.add_argument("--out", type=Path, help="run directory (default: runs/quickstart-<time>)")
    parser.add_argument("--epochs", type=int, help="shorter or longer than the default recipe")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    result = quickstart(args.out, epochs=args.epochs, progress=not args.quiet)
    assert result.test is not None and result.run_dir is not None  # a quickstart run has both
    print(f"test top-1 {result.test['top1']:.2f}% on {result.test['images']} digits images")
    print(f"run directory (config, metrics.csv, curves.png, checkpoints, results.json, confusion matrix): {result.run_dir}")
    print("Deep Compression of the trained model (pruning, 4-bit shared weights, fine-tuning, entropy coding):")
    with distributed_session() as dist_info:  # under torchrun its fine-tuning stages run data-parallel
        print(quickstart_compress(result.model, result.run_dir, dist_info=dist_info, progress=not args.quiet, log=None).summary())
    return 0
