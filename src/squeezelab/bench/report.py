"""Benchmark output: a plain-text/Markdown table, CSV, JSON and a throughput chart (PNG)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from squeezelab.utils.files import atomic_write_text
from squeezelab.utils.plotting import label_axes, new_figure, save_figure

from .backends import DESCRIPTIONS
from .runner import BenchResult

TABLE_COLUMNS = (
    "model",
    "backend",
    "infer_batch_size",
    "infer_img_size",
    "infer_step_time",
    "infer_step_time_p90",
    "infer_samples_per_sec",
    "speedup_vs_onnx",
    "infer_gflops",
    "peak_fraction",
    "param_count",
    "fp32_mb",
    "compressed_mb",
    "infer_gmacs",
    "top1",
    "top5",
    "note",
)


def table_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> list[list[str]]:
    """Rows as strings in ``columns`` order (missing values blank); columns empty in every row are dropped."""
    used = [c for c in columns if any(row.get(c) not in (None, "") for row in rows)]
    return [used] + [["" if row.get(c) is None else str(row.get(c)) for c in used] for row in rows]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    header, *body = table_rows(rows, columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def environment_line(environment: dict[str, Any]) -> str:
    return (
        f"{environment['cpu']}, {environment['threads']} threads, torch {environment['torch']}, onnxruntime "
        f"{environment['onnxruntime']}; fp32 peak {environment['peak_gflops']:.1f} GFLOP/s ({environment['peak_method']})"
    )


def write_results(
    result: BenchResult,
    out_dir: str | os.PathLike,
    stem: str = "bench",
    title: str = "Benchmark",
    columns: Sequence[str] = TABLE_COLUMNS,
    summary: str = "",
) -> list[Path]:
    """Write ``<stem>.csv``, ``.json``, ``.md`` and ``.png`` into ``out_dir`` (atomically); returns the paths.

    The Markdown file has ``summary`` (Markdown text) above the table of ``columns``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{ext}" for ext in ("csv", "json", "md", "png")]
    atomic_write_text(paths[0], _csv_text(result.rows))
    atomic_write_text(paths[1], json.dumps({"environment": result.environment, "rows": result.rows}, indent=2) + "\n")
    used = {row["backend"] for row in result.rows}
    legend = "\n".join(f"- `{name}`: {text}" for name, text in DESCRIPTIONS.items() if name in used)
    intro = f"{summary}\n\n" if summary else ""
    atomic_write_text(
        paths[2],
        f"# {title}\n\n{environment_line(result.environment)}\n\n{intro}{markdown_table(result.rows, columns)}\n\n"
        f"Backends:\n\n{legend}\n",
    )
    _plot(result, paths[3], title)
    return paths


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _plot(result: BenchResult, path: Path, title: str) -> None:
    """Throughput per model, a bar per backend, one plot per batch size."""
    batch_sizes = sorted({row["infer_batch_size"] for row in result.rows})
    figure = new_figure(6 * len(batch_sizes), 4.5)
    axes = figure.subplots(1, len(batch_sizes), squeeze=False)
    for axis, batch_size in zip(axes[0], batch_sizes):
        rows = [r for r in result.rows if r["infer_batch_size"] == batch_size and r.get("infer_samples_per_sec")]
        models = list(dict.fromkeys(_group(r) for r in rows))
        backends = list(dict.fromkeys(r["backend"] for r in rows))
        width = 0.8 / max(1, len(backends))
        for k, backend in enumerate(backends):
            speed = {_group(r): r["infer_samples_per_sec"] for r in rows if r["backend"] == backend}
            values = [speed.get(model, 0) for model in models]
            axis.bar([i + k * width for i in range(len(models))], values, width, label=backend)
        axis.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(models))])
        axis.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
        label_axes(axis, ylabel="images / s", title=f"{title}: batch {batch_size}", grid=False)
        axis.legend(fontsize=8)
    save_figure(figure, path)


def _group(row: dict[str, Any]) -> str:
    """A bar group: the model, and the thread count when the run measured several."""
    return f"{row['model']}, {row['threads']} thr" if "threads" in row else row["model"]
