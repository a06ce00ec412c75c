"""Fast CIFAR-10 training: squeezelab's recipe against the airbench93 port, in one run, with ratios.

Each row is one training run in its own process, timed from outside as a whole (model building, data
loading from the decoded-image cache, training, final test with and without TTA). The JPEG copy is decoded
once into the user cache before the first timed run; that one-time decode is reported separately. Runs
execute one after the other (never two at once on the two cores) and the table compares:

* ``anchor``: benchmarks/airbench93_port.py (airbench93's network and recipe, a faithful CPU port);
* ``fast``: ``squeezelab train --config experiments/train/cifar10_fast.yaml`` (squeezenet_fast_cifar);
* optionally the same recipe on other models (``--also squeezenet1_1_cifar``).

Run folders, logs and one JSON row per finished run go to ``--runs`` (outside version control); a finished
run is not run again, so an interrupted benchmark continues where it stopped; ``--fresh`` starts over.
Output: results.csv, results.md, results.json and results.png (test top-1 with TTA against wall time, one
point per run) in ``--out``.

    python benchmarks/cifar10_fast.py --seeds 0 1 2 --out benchmarks/results/cifar10_fast

``--export-weights FILE`` also writes the first seed's trained network as a half-precision model file with
its provenance (the command, seed and measured test figures): the weights squeezelab ships.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RECIPE = REPO / "experiments" / "train" / "cifar10_fast.yaml"
PYTHON = sys.executable
COLUMNS = ("name", "model", "seed", "params", "epochs", "test_top1", "test_top1_tta", "wall_s", "train_s")


def decode_once(data: Path) -> float:
    """Fill the decoded-image cache (the one-time JPEG decode), returning its seconds (0 when cached)."""
    code = (
        "import sys, time; from squeezelab.data import build_datasets; t = time.perf_counter(); "
        "build_datasets('cifar10', sys.argv[1], val_fraction=0.0, progress=False); print(time.perf_counter() - t)"
    )
    done = subprocess.run([PYTHON, "-c", code, str(data)], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def run_anchor(seed: int, folder: Path, data: Path) -> dict:
    out = folder / f"anchor_seed{seed}.json"
    command = [PYTHON, str(REPO / "benchmarks" / "airbench93_port.py"), "--seed", str(seed), "--root", str(data / "cifar10-jpeg"), "--out", str(out)]
    wall = _timed(command, folder / f"anchor_seed{seed}.log")
    result = json.loads(out.read_text())
    return {
        "name": "anchor (airbench93 port)", "model": "airbench93", "seed": seed, "params": result["params"], "epochs": result["epochs"],
        "test_top1": result["test_top1"], "test_top1_tta": result["test_top1_tta"], "wall_s": wall, "train_s": result["seconds"],
    }


def run_recipe(name: str, model: str | None, seed: int, folder: Path, data: Path, sets: list[str]) -> dict:
    run_dir = folder / f"{name}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run interrupted mid-way is timed again from the start, not resumed
    overrides = [f"seed={seed}", *sets] + ([f"model={model}", "model_kwargs={}"] if model else [])
    command = [PYTHON, "-m", "squeezelab", "train", "--config", str(RECIPE), "--data-root", str(data), "--out", str(run_dir), "--quiet"]
    for item in overrides:
        command += ["--set", item]
    wall = _timed(command, folder / f"{name}_seed{seed}.log")
    result = json.loads((run_dir / "results.json").read_text())
    test = result["test"]
    return {
        "name": name, "model": result["model"], "seed": seed, "params": result["params"], "epochs": result["epochs"],
        "test_top1": test["top1"], "test_top1_tta": test.get("tta", {}).get("top1"), "wall_s": wall, "train_s": result["train_seconds"],
    }


def _timed(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def cached_row(folder: Path, key: str, produce) -> dict:
    path = folder / f"{key}.row.json"
    if path.is_file():
        return json.loads(path.read_text())
    row = produce()
    path.write_text(json.dumps(row, indent=2) + "\n")
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Mean and spread per name, and ratios against the anchor's mean."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    anchor = [r for r in rows if r["model"] == "airbench93"]
    anchor_wall = statistics.mean(r["wall_s"] for r in anchor) if anchor else None
    out = []
    for name in names:
        group = [r for r in rows if r["name"] == name]
        tta = [r["test_top1_tta"] for r in group if r["test_top1_tta"] is not None]
        wall = statistics.mean(r["wall_s"] for r in group)
        out.append({
            "name": name, "model": group[0]["model"], "runs": len(group), "params": group[0]["params"],
            "test_top1_mean": statistics.mean(r["test_top1"] for r in group),
            "test_top1_tta_mean": statistics.mean(tta) if tta else None,
            "test_top1_tta_min": min(tta) if tta else None,
            "wall_s_mean": wall, "wall_vs_anchor": wall / anchor_wall if anchor_wall else None,
        })
    return out


def markdown(rows: list[dict], means: list[dict], decode_s: float) -> str:
    lines = ["| run | model | seed | params | epochs | test top-1 | with TTA | wall s | train s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tta = f"{r['test_top1_tta']:.2f}%" if r["test_top1_tta"] is not None else "-"
        lines.append(f"| {r['name']} | {r['model']} | {r['seed']} | {r['params']:,} | {r['epochs']:g} | {r['test_top1']:.2f}% | {tta} | "
                     f"{r['wall_s']:.0f} | {r['train_s']:.0f} |")
    lines += ["", "| run | runs | mean test top-1 | mean with TTA | worst with TTA | mean wall s | wall vs anchor |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in means:
        tta = f"{m['test_top1_tta_mean']:.2f}%" if m["test_top1_tta_mean"] is not None else "-"
        worst = f"{m['test_top1_tta_min']:.2f}%" if m["test_top1_tta_min"] is not None else "-"
        ratio = f"{m['wall_vs_anchor']:.2f}x" if m["wall_vs_anchor"] is not None else "-"
        lines.append(f"| {m['name']} | {m['runs']} | {m['test_top1_mean']:.2f}% | {tta} | {worst} | {m['wall_s_mean']:.0f} | {ratio} |")
    lines += ["", f"One-time JPEG decode into the cache (not in any row): {decode_s:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    from squeezelab.utils.plotting import figure_with_axes, label_axes, save_figure

    figure, axes = figure_with_axes(6.5, 4.2)
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        axes.scatter([r["wall_s"] / 60 for r in group], [r["test_top1_tta"] or r["test_top1"] for r in group], label=name)
    axes.axhline(90.5, color="grey", linestyle=":", label="target 90.5%")
    axes.axvline(30, color="grey", linestyle="--", label="30 minutes")
    label_axes(axes, "wall time per run (minutes, 2 CPU cores)", "CIFAR-10 (JPEG copy) test top-1 with TTA (%)")
    axes.legend(fontsize=8)
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--anchor-seeds", type=int, nargs="*", help="seeds of the anchor (default: the first seed)")
    parser.add_argument("--also", nargs="*", default=[], help="other models trained with the same recipe (first seed only)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE overrides of the recipe (all fast runs)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cifar10_fast")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "cifar10_fast", help="run folders and finished rows")
    parser.add_argument("--fresh", action="store_true", help="forget finished runs in --out and run everything again")
    parser.add_argument("--export-weights", type=Path, help="write the first seed's fast model here (float16 model file)")
    args = parser.parse_args()
    if not (args.data / "cifar10-jpeg").is_dir():
        raise SystemExit(f"{args.data / 'cifar10-jpeg'}: no CIFAR-10 JPEG copy there (give --data)")
    folder = args.runs
    if args.fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    decode_s = decode_once(args.data)
    rows = []
    for seed in args.anchor_seeds if args.anchor_seeds is not None else args.seeds[:1]:
        rows.append(cached_row(folder, f"anchor_seed{seed}", lambda: run_anchor(seed, folder, args.data)))
        print(_progress(rows[-1]), flush=True)
    for seed in args.seeds:
        rows.append(cached_row(folder, f"fast_seed{seed}", lambda: run_recipe("fast", None, seed, folder, args.data, args.sets)))
        print(_progress(rows[-1]), flush=True)
    for model in args.also:
        seed = args.seeds[0]
        rows.append(cached_row(folder, f"{model}_seed{seed}", lambda: run_recipe(model, model, seed, folder, args.data, args.sets)))
        print(_progress(rows[-1]), flush=True)

    means = summary(rows)
    text = markdown(rows, means, decode_s)
    print(text)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"runs": rows, "summary": means, "decode_s": decode_s}, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    (args.out / "results.csv").write_text(buffer.getvalue())
    plot(rows, args.out / "results.png")
    print(f"wrote {args.out}/results.{{md,csv,json,png}}")
    if args.export_weights:
        first = next(r for r in rows if r["name"] == "fast")
        export_weights(folder / f"fast_seed{first['seed']}", first, args.export_weights, args.sets)


def export_weights(run_dir: Path, row: dict, path: Path, sets: list[str]) -> None:
    from squeezelab import load_model
    from squeezelab.models.files import save_model

    model = load_model(run_dir / "best.pt")
    overrides = "".join(f" --set {item}" for item in [f"seed={row['seed']}", *sets])
    provenance = {
        "command": f"squeezelab train --config experiments/train/cifar10_fast.yaml --data-root ../shared/data{overrides}",
        "seed": row["seed"],
        "dataset": "CIFAR-10 (JPEG copy), 50,000 training images, tested on its 10,000 test images",
        "test_top1": round(row["test_top1"], 2),
        "test_top1_tta": round(row["test_top1_tta"], 2) if row["test_top1_tta"] is not None else None,
        "measured_by": "benchmarks/cifar10_fast.py",
    }
    save_model(model, path, half=True, provenance=provenance)
    print(f"wrote {path} ({path.stat().st_size:,} bytes, float16)")


def _progress(row: dict) -> str:
    tta = f", {row['test_top1_tta']:.2f}% with TTA" if row["test_top1_tta"] is not None else ""
    return f"{row['name']} seed {row['seed']}: {row['test_top1']:.2f}%{tta} in {row['wall_s']:.0f} s"


if __name__ == "__main__":
    main()
