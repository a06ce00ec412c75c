"""A study's results: one row per trial (CSV + Markdown), accuracy-vs-size/MACs plots with the Pareto
front, and accuracy against each numeric axis (the paper's SR and pct_3x3 plots), averaged over seeds."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezelab.utils.files import atomic_write_text
from squeezelab.utils.optional import require
from squeezelab.utils.plotting import figure_with_axes, label_axes, save_figure

from .runner import crashed, grid_trials, retried_trials, trial_key, trial_params
from .study import StudySpec

if TYPE_CHECKING:
    import optuna
TrialState = require("optuna.trial").TrialState

METRIC_COLUMNS = (
    "params", "fp32_bytes", "compressed_bytes", "macs", "val_top1", "test_top1", "test_top5",
    "best_epoch", "epochs", "train_seconds", "cpu_latency_ms",
)


def trial_rows(study: optuna.Study, spec: StudySpec) -> list[dict[str, Any]]:
    """Finished and crashed trials (not those merely interrupted or retried) of the spec's points (a grid
    study may have been narrowed since), axis values first, then metrics."""
    rows = []
    retried = retried_trials(study)
    planned = {trial_key(params) for params in grid_trials(spec)} if spec.search == "grid" else None
    for trial in study.get_trials(deepcopy=False):
        if trial.state != TrialState.COMPLETE and not crashed(trial, retried):
            continue
        params = trial_params(trial)
        if planned is not None and trial_key(params) not in planned:
            continue
        row: dict[str, Any] = {"trial": trial.number, "state": "ok" if trial.state == TrialState.COMPLETE else "failed"}
        row.update({name: params.get(name) for name in spec.axes})
        row["seed"] = params.get("seed")
        row.update({name: trial.user_attrs.get(name) for name in METRIC_COLUMNS})
        row["error"] = trial.user_attrs.get("error", "")
        rows.append(row)
    return rows


def write_report(study: optuna.Study, spec: StudySpec, out_dir: str | Path) -> dict[str, Path]:
    """Write results.csv, results.md and the PNG plots into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    rows = trial_rows(study, spec)
    if not rows:
        raise ValueError(f"study {spec.name!r} has no finished trials yet")
    paths = {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md"}
    _write_csv(rows, paths["csv"])
    atomic_write_text(paths["markdown"], markdown_table(rows, spec))
    ok = [r for r in rows if r["state"] == "ok"]
    if ok:
        paths["size_plot"] = _pareto_plot(ok, "fp32_bytes", 1e6, "fp32 model size (MB)", out_dir / "accuracy_vs_size.png", spec)
        paths["macs_plot"] = _pareto_plot(ok, "macs", 1e6, "MMACs per image", out_dir / "accuracy_vs_macs.png", spec)
        for axis in spec.axes:
            if _numeric_axis(ok, axis):
                name = axis.split(".")[-1]
                paths[f"{name}_plot"] = _axis_plot(ok, axis, out_dir / f"accuracy_vs_{name}.png", spec)
    return paths


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def markdown_table(rows: list[dict[str, Any]], spec: StudySpec) -> str:
    """Per-point summary: mean (and std over seeds when there are several) of the key metrics."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[json.dumps([row[a] for a in spec.axes], default=str)].append(row)
    header = [*(a.split(".")[-1] for a in spec.axes), "seeds", "params", "fp32 MB", "MMACs", "val top-1 %", "test top-1 %", "train s", "s/epoch", "failed"]
    if any(r.get("compressed_bytes") for r in rows):
        header.insert(header.index("MMACs"), "compressed kB")
    lines = [f"Study `{spec.name}`: {spec.base.get('dataset')}, {spec.base.get('epochs')} epochs per trial"
             f"{', limit ' + str(spec.base.get('limit')) + ' training images' if spec.base.get('limit') else ''}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for members in groups.values():
        ok = [m for m in members if m["state"] == "ok"]
        first = members[0]
        cells = [str(first[a]) for a in spec.axes]
        cells.append(str(len(ok)))
        if ok:
            cells += [f"{ok[0]['params']:,}", f"{ok[0]['fp32_bytes'] / 1e6:.3f}"]
            if "compressed kB" in header:
                cells.append(_mean_std([m["compressed_bytes"] / 1e3 for m in ok if m.get("compressed_bytes")]))
            cells += [f"{ok[0]['macs'] / 1e6:.1f}", _mean_std([m["val_top1"] for m in ok]),
                      _mean_std([m["test_top1"] for m in ok if m["test_top1"] is not None]), _mean_std([m["train_seconds"] for m in ok], 0),
                      _mean_std([m["train_seconds"] / m["epochs"] for m in ok], 1)]
        else:
            cells += ["-"] * (len(header) - len(cells) - 1)
        cells.append(str(len(members) - len(ok)))
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- trial {r['trial']}: {r['error']}" for r in rows if r["state"] == "failed"]
    return "\n".join(lines + ([""] + ["Failed trials:"] + errors if errors else [])) + "\n"


def _mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (smaller cost, higher accuracy), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _label(row: dict[str, Any], spec: StudySpec) -> str:
    return ", ".join(f"{a.split('.')[-1]}={row[a]}" for a in spec.axes if len(_distinct(spec, a)) > 1)


def _distinct(spec: StudySpec, axis: str) -> list[Any]:
    values = spec.axes[axis]
    return values if isinstance(values, list) else [0, 1]


def _pareto_plot(rows: list[dict[str, Any]], key: str, scale: float, xlabel: str, path: Path, spec: StudySpec) -> Path:
    points = [(r[key] / scale, r["test_top1"] if r["test_top1"] is not None else r["val_top1"]) for r in rows]
    front = pareto_front(points)
    figure, axes = figure_with_axes(7, 4.5)
    axes.scatter([p[0] for p in points], [p[1] for p in points], s=18, alpha=0.7, label="trials")
    axes.plot([points[i][0] for i in front], [points[i][1] for i in front], "r-o", ms=5, label="Pareto front")
    for i in front:
        axes.annotate(_label(rows[i], spec), points[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    accuracy = "test top-1 (%)" if rows[0]["test_top1"] is not None else "val top-1 (%)"
    label_axes(axes, xlabel, accuracy, f"{spec.name}: accuracy vs {xlabel}")
    axes.legend()
    save_figure(figure, path)
    return path


def _numeric_axis(rows: list[dict[str, Any]], axis: str) -> bool:
    values = {r[axis] for r in rows}
    return len(values) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _axis_plot(rows: list[dict[str, Any]], axis: str, path: Path, spec: StudySpec) -> Path:
    by_value: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        by_value[row[axis]].append(row["test_top1"] if row["test_top1"] is not None else row["val_top1"])
    xs = sorted(by_value)
    means = [statistics.fmean(by_value[x]) for x in xs]
    errors = [statistics.stdev(by_value[x]) if len(by_value[x]) > 1 else 0.0 for x in xs]
    figure, axes = figure_with_axes(6, 4)
    axes.errorbar(xs, means, yerr=errors, fmt="-o", capsize=3)
    name = axis.split(".")[-1]
    label_axes(axes, name, "test top-1 (%), mean over seeds", f"{spec.name}: top-1 vs {name}")
    save_figure(figure, path)
    return path
