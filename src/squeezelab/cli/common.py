"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import yaml


def is_first_process() -> bool:
    """False in every process but rank 0 when launched by ``torchrun`` (which sets ``RANK`` before any
    process group exists), so messages that every process would print appear once."""
    return int(os.environ.get("RANK", "0")) == 0


def parse_input_size(text: str) -> tuple[int, ...]:
    """Parse ``C,H,W``, ``H,W`` or a single ``S`` (square) into a tuple of positive ints."""
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size: expected C,H,W or H,W, got {text!r}") from None
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) not in (2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--input-size: expected C,H,W or H,W of positive ints, got {text!r}")
    return values


def parse_model_arg(text: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` model keyword argument; VALUE is read as YAML (``2``, ``0.75``, ``all``, ``[2, 5]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r} as YAML") from None


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned numbers and left-aligned text."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if _looks_numeric(cell) else cell.ljust(w) for cell, w in zip(row, widths)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _looks_numeric(cell: str) -> bool:
    return cell.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("%", "").isdigit()
