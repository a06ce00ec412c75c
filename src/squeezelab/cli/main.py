"""``squeezelab`` command line: one argparse subcommand per module in ``COMMAND_MODULES``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed ``argparse.Namespace`` and returning an exit code. Command modules only
parse and print; the work happens in the Python API.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from squeezelab.utils.optional import MissingDependency

from .common import is_first_process

COMMAND_MODULES = ("models_cmd", "interop_cmd", "bench_cmd", "sweep_cmd", "train_cmd", "quickstart_cmd", "compress_cmd", "export_cmd")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from squeezelab import __version__

    parser = argparse.ArgumentParser(
        prog="squeezelab", description="Build, train, compress and deploy SqueezeNet-family networks."
    )
    parser.add_argument("--version", action="version", version=f"squeezelab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"squeezelab.cli.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("squeezelab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other Unix tools do.
        sys.stderr.close()
        return 0
    except (CLIError, MissingDependency, ValueError, FileNotFoundError, OSError) as exc:
        # Under torchrun every process meets the same bad input; torchrun itself reports each exit code.
        if is_first_process():
            print(f"squeezelab {args.command}: error: {exc}", file=sys.stderr)
        return 2
