"""Figures of the compression reports: bytes per layer, sensitivity curves."""

from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib.figure import Figure

from squeezelab.utils.plotting import figure_with_axes, label_axes
from squeezelab.utils.plotting import save_figure as save_figure  # re-exported: the reports save through this module


def stacked_barh(labels: Sequence[str], parts: Mapping[str, Sequence[float]], xlabel: str) -> Figure:
    """One horizontal bar per label, stacked from ``parts`` (each a value per label), first label on top."""
    figure, axis = figure_with_axes(8, 0.28 * len(labels) + 1.5)
    left = [0.0] * len(labels)
    for part, values in parts.items():
        axis.barh(labels, values, left=left, label=part)
        left = [a + b for a, b in zip(left, values)]
    axis.invert_yaxis()
    label_axes(axis, xlabel, grid=False)
    axis.legend(loc="lower right", fontsize=8)
    return figure


def line_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str = "") -> Figure:
    """One marked line per curve, ``{label: (xs, ys)}``."""
    figure, axis = figure_with_axes(8, 5)
    styles = ("-", "--", ":", "-.")  # the colour cycle repeats after 10 curves; the line style tells them apart
    for index, (label, (xs, ys)) in enumerate(curves.items()):
        axis.plot(xs, ys, marker="o", markersize=3, linestyle=styles[index // 10 % len(styles)], label=label)
    label_axes(axis, xlabel, ylabel, title, title_size=9)
    axis.legend(fontsize=6, ncol=2)
    return figure
