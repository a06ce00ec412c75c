"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import torch.nn as nn
import yaml

from squeezelab.models.profile import check_input_size
from squeezelab.models.registry import model_config


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


def positive_int(text: str) -> int:
    """argparse type of counts that must be at least 1 (threads, images); argparse names the option."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type of whole numbers >= 0 (seeds: numpy's seed sequences refuse negative ones)."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def checked_input_size(model: nn.Module, option: Sequence[int] | None) -> tuple[int, int, int]:
    """The (C, H, W) an ``--input-size`` option (or the model's own size) gives, checked against the model.

    ``H,W`` takes the model's channels. The size is checked by :func:`check_input_size`, the probe that
    ``info`` runs too, so every command refuses a too-small input with the same one line, not a traceback
    from deep inside the first forward pass.
    """
    default = model_config(model).input_size
    requested = tuple(option) if option is not None else tuple(default)
    if len(requested) == 2:  # H,W: the model's channels
        requested = (default[0], *requested)
    channels, height, width = requested
    if channels != default[0]:
        raise ValueError(f"--input-size: {channels} channels, but the model takes {default[0]}")
    size = (int(channels), int(height), int(width))
    check_input_size(model, size)
    return size


def parse_model_arg(text: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` model keyword argument; VALUE is read as YAML (``2``, ``0.75``, ``all``, ``[2, 5]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {text!r} as YAML") from None


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as a mapping of settings: VALUE is read as YAML, dashes in KEY become
    underscores, and ``GROUP.KEY=VALUE`` sets KEY in the mapping GROUP (``finetune.lr=0.01``)."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: cannot parse value {value!r}") from None
        group, dot, name = key.partition(".")
        target = settings.setdefault(group, {}) if dot else settings
        if not isinstance(target, dict):
            raise ValueError(f"--set {key}: {group} was given a single value already")
        target[name if dot else key] = parsed
    return settings


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
