"""``squeezelab sweep``: run (or resume) a design-space study and write its table and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from squeezelab.sweep import StudySpec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run or resume a design-space study (Optuna) and write results.csv/.md and plots",
        description="Run every pending trial of a study file (YAML/JSON), then write the report. "
        "Interrupt at any time; the same command resumes.",
    )
    parser.add_argument("study", type=Path, help="study file (YAML or JSON)")
    parser.add_argument("--out", type=Path, help="study directory (default: runs/sweeps/<study name>)")
    parser.add_argument("--workers", type=int, default=1, help="trials trained in parallel processes (default 1)")
    parser.add_argument(
        "--storage",
        help="Optuna RDB URL shared by several machines, e.g. postgresql://user@host/db (default: SQLite in --out)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="train again the trials that raised an error (after a fix)"
    )
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from finished trials")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Optuna is an optional extra: import what needs it only when a study actually runs.
    from squeezelab.sweep import open_study, run_study, write_report

    spec = StudySpec.load(args.study)
    out = args.out or Path("runs") / "sweeps" / spec.name
    if args.report_only:
        study = open_study(spec, out, args.storage)
    else:
        study = run_study(
            spec, out, workers=args.workers, storage_url=args.storage, retry_failed=args.retry_failed, progress=not args.quiet
        )
    paths = write_report(study, spec, out)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
