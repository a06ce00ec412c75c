"""The files of a run directory, all written atomically (and only by the main process of a distributed run).

::

    config.yaml            resolved TrainConfig: `squeezelab train --config run/config.yaml` repeats the run
    metrics.csv            one row per epoch
    curves.png             loss and accuracy curves, refreshed every epoch
    last.pt, best.pt       checkpoints (latest epoch; best validation top-1)
    results.json           final test metrics, per-class accuracy, parameters, time
    confusion_matrix.csv   test confusion matrix (rows: true class, columns: predicted)
    confusion_matrix.png
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn

from squeezelab.utils.files import atomic_write_json, atomic_write_text, remove_stale_temporaries

from .checkpoint import BEST, LAST, save_checkpoint
from .config import TrainConfig
from .plots import plot_confusion, plot_curves

CONFIG = "config.yaml"
METRICS = "metrics.csv"
CURVES = "curves.png"
RESULTS = "results.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
RUN_FILES = (CONFIG, METRICS, CURVES, LAST, BEST, RESULTS, CONFUSION_CSV, CONFUSION_PNG)
# files that make a folder hold a run worth keeping (a run killed in its first epoch has only its config)
RUN_RESULTS = (LAST, BEST, RESULTS)
METRIC_COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "images_per_s", "epoch_time")


class RunDir:
    """Writes a run's artefacts into ``path``; a no-op when ``path`` is None or this is not the main process."""

    def __init__(self, path: str | Path | None, enabled: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        # where this process writes: the run's folder, or None when it writes nothing
        self._folder = self.path if enabled else None
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self._folder is not None

    def file(self, name: str) -> Path | None:
        return self.path / name if self.path is not None else None

    def write_config(self, config: TrainConfig) -> None:
        if self._folder is not None:
            config.save(self._folder / CONFIG)

    def write_epoch(self, history: Sequence[dict], title: str) -> None:
        if self._folder is None:
            return
        atomic_write_text(self._folder / METRICS, _csv_text(METRIC_COLUMNS, [[_cell(row.get(c)) for c in METRIC_COLUMNS] for row in history]))
        plot_curves(history, self._folder / CURVES, title)

    def write_checkpoint(self, name: str, model: nn.Module, **state: Any) -> None:
        if self._folder is not None:
            save_checkpoint(self._folder / name, model, **state)

    def write_results(self, results: dict[str, Any], confusion: list[list[int]] | None, class_names: Sequence[str]) -> None:
        if self._folder is None:
            return
        atomic_write_json(self._folder / RESULTS, results)
        if confusion is not None:
            write_confusion(self._folder, confusion, class_names, f"test confusion ({results.get('model', '')})")


def prepare_new_run(path: str | Path, overwrite: bool = False) -> None:
    """Make ``path`` ready for a new run: refuse (one line) if it holds a run, unless ``overwrite``, which
    deletes that run's files first, so that none of them (an old ``results.json``, say) outlives it.

    Only the files a run writes are deleted (and the temporary files of killed writers), never anything else
    in the folder.
    """
    path = Path(path)
    held = [name for name in RUN_RESULTS if (path / name).exists()]
    if held and not overwrite:
        raise ValueError(f"{path}: holds a run already ({', '.join(held)}); continue it with --resume {path} or replace it with --overwrite")
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    remove_stale_temporaries(path)


def write_confusion(folder: Path, confusion: list[list[int]], class_names: Sequence[str], title: str = "") -> None:
    """``confusion_matrix.csv`` and ``confusion_matrix.png`` in ``folder``."""
    rows = [[name, *counts] for name, counts in zip(class_names, confusion)]
    atomic_write_text(folder / CONFUSION_CSV, _csv_text(["true \\ predicted", *class_names], rows))
    plot_confusion(confusion, class_names, folder / CONFUSION_PNG, title)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value
