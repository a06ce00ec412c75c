"""PNG plots of a run: learning curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from squeezelab.utils.plotting import figure_with_axes, label_axes, new_figure, save_figure


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> None:
    """Loss and top-1 accuracy per epoch, train and validation side by side."""
    epochs = [row["epoch"] for row in history]
    figure = new_figure(10, 4)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "top1", "top-1 accuracy (%)")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        val = [(e, row[f"val_{key}"]) for e, row in zip(epochs, history) if row.get(f"val_{key}") is not None]
        if val:
            ax.plot([e for e, _ in val], [v for _, v in val], marker="o", label="validation")
        label_axes(ax, "epoch", label)
        ax.legend()
    if title:
        figure.suptitle(title)
    save_figure(figure, path)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (true class down, predicted across), with counts in small matrices."""
    size = len(class_names)
    figure, ax = figure_with_axes(max(5, 0.45 * size + 2), max(4, 0.45 * size + 1.5))
    rows = [[v / max(1, sum(row)) for v in row] for row in confusion]
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, label="fraction of true class")
    if size <= 30:
        ax.set_xticks(range(size), class_names, rotation=90)
        ax.set_yticks(range(size), class_names)
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                if count:
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color="white" if rows[i][j] > 0.5 else "black")
    label_axes(ax, "predicted", "true", title, grid=False)
    save_figure(figure, path)
