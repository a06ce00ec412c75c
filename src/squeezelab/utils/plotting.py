"""What every squeezelab figure shares: its creation, its styling and its atomic PNG file.

Figures use matplotlib's object API: a :class:`~matplotlib.figure.Figure` drawn by its own Agg canvas, never
pyplot. So neither importing squeezelab nor plotting chooses a backend or touches pyplot's global state: a
notebook keeps its inline or widget backend, and no figure is left open in pyplot's registry.
"""

from __future__ import annotations

import io
import os

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .files import atomic_write_bytes

DPI = 120
GRID_ALPHA = 0.3  # a light grid: it helps read values off without competing with the data


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches, laid out tightly when drawn."""
    figure = Figure(figsize=(width, height), layout="tight")
    FigureCanvasAgg(figure)  # renders this figure only; the process-wide backend stays as it was
    return figure


def figure_with_axes(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure of one plot: ``(figure, its axes)``."""
    figure = new_figure(width, height)
    return figure, figure.subplots()


def label_axes(axis: Axes, xlabel: str = "", ylabel: str = "", title: str = "", *, title_size: float | None = None, grid: bool = True) -> None:
    """The house style of a plot: its labels and title, over a light grid unless ``grid`` is False."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    if title_size is not None:  # set_title(fontsize=None) would mean the body text's size, not the title's
        axis.title.set_fontsize(title_size)
    if grid:
        axis.grid(alpha=GRID_ALPHA)


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` to ``path`` as a PNG, atomically (a reader never sees half an image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
