"""Fuzz campaign of the model file readers: mutations of real .sqz, .pt and Deep Compression .net files.

Each case runs in a worker process under a memory limit and a time limit and ends in the reader's own error, a
bit-identical load, a changed load where nothing can tell (no checksum, or one the mutation recomputed), or a
failure: silent changed load despite a checksum, non-finite weights, uncaught exception, crash, hang. See
squeezelab/fuzz.py for the mutation families and outcomes.

    python benchmarks/fuzz_sqz.py --sqz 10000 --pt 1000 --net 1000

prints the table and writes benchmarks/results/fuzz/results.{md,json}; failing cases are kept in
benchmarks/results/fuzz/failures/ to be read again. The .net cases mutate the real release
(../shared/models/squeezenet-deep-compression/compressed_SqueezeNet.net, or --net-file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from squeezelab.cli.common import format_table
from squeezelab.fuzz import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, OUTCOMES, make_pt_sources, make_sqz_sources, run_campaign

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO.parent / "shared" / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqz", type=int, default=10_000, help="number of .sqz cases")
    parser.add_argument("--pt", type=int, default=1_000, help="number of .pt cases")
    parser.add_argument("--net", type=int, default=1_000, help="number of .net cases")
    parser.add_argument("--net-file", type=Path, default=RELEASE, help="the Deep Compression file to mutate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, help="address space a worker may use beyond its imports")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz")
    args = parser.parse_args(argv)
    if args.net and not args.net_file.is_file():
        parser.error(f"--net-file {args.net_file}: no such file (pass --net 0 to skip the .net cases)")
    counts = {"sqz": args.sqz, "pt": args.pt, "net": args.net}
    with tempfile.TemporaryDirectory() as folder:
        sources = {"sqz": make_sqz_sources(Path(folder)), "pt": make_pt_sources(Path(folder)), "net": [args.net_file] if args.net else []}
        total = sum(counts.values())
        result = run_campaign(sources, counts, seed=args.seed, workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
                              failures_folder=args.out / "failures", progress=lambda done: _progress(done, total))
    print(file=sys.stderr)
    print(format_table(["kind/family", "cases", *OUTCOMES], result.rows()))
    print(result.markdown().split("\n\n", 1)[1])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(f"# Fuzz campaign (`{' '.join(['benchmarks/fuzz_sqz.py', *(argv or sys.argv[1:])])}`)\n\n" + result.markdown())
    (args.out / "results.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return 1 if result.failure_count else 0


def _progress(done: int, total: int) -> None:
    if done % 100 == 0 or done == total:
        print(f"\r{done}/{total} cases", end="", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
