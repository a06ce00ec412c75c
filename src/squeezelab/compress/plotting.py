"""Matplotlib (Agg) figures for the compression reports; written atomically as PNG."""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from squeezelab.utils.files import atomic_write_bytes  # noqa: E402


def save_figure(figure, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def stacked_barh(labels: Sequence[str], parts: Mapping[str, Sequence[float]], xlabel: str):
    figure, axis = plt.subplots(figsize=(8, 0.28 * len(labels) + 1.5))
    left = [0.0] * len(labels)
    for part, values in parts.items():
        axis.barh(labels, values, left=left, label=part)
        left = [a + b for a, b in zip(left, values)]
    axis.invert_yaxis()
    axis.set_xlabel(xlabel)
    axis.legend(loc="lower right", fontsize=8)
    return figure


def line_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str = ""
):
    figure, axis = plt.subplots(figsize=(8, 5))
    styles = ("-", "--", ":", "-.")  # the colour cycle repeats after 10 curves; the line style tells them apart
    for index, (label, (xs, ys)) in enumerate(curves.items()):
        axis.plot(xs, ys, marker="o", markersize=3, linestyle=styles[index // 10 % len(styles)], label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    return figure
