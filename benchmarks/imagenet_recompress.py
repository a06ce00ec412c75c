"""Re-compress the original Deep Compression SqueezeNet v1.0 (675,763 bytes) with squeezelab: size vs accuracy.

Recipe, chosen by principle and never tuned on the evaluation images:

1. Sensitivity of every layer to weight-sharing bits (8 .. 3), each layer alone, scored without labels
   as the KL divergence from the original model's outputs on unlabelled natural images (CIFAR-10
   training JPEGs upscaled to the model's input; ``--calibration`` images, fixed seed).
2. For a ladder of KL budgets, per-layer bits from ``allocate`` (the smallest allocation within the KL budget);
   exact 1-D k-means per layer; biases stored as float16; entropy coding (ANS / Huffman, best per stream).
3. Optionally (``--bias-correction N``) empirical bias correction: each layer's bias is shifted, layer by
   layer, so that its mean output per channel on N unlabelled images (a subset disjoint from the scoring
   images) equals the original model's; and (``--distill-steps``) the shared centroids and biases are
   fine-tuned by distillation from the original model on the same kind of unlabelled images.

Every resulting file is decoded and evaluated on the 500 labelled images of ../shared/data/imagenet-sample
(Caffe preprocessing from the model's config: shorter side 256 bilinear without anti-aliasing, centre
crop 227, BGR, mean 104/117/123) - only for reporting. Uniform-bits files are listed for reference.
Results (CSV, Markdown, PNG) go to ``--out``; finished rows are kept, so a rerun resumes.

    python benchmarks/imagenet_recompress.py --out benchmarks/results/imagenet_recompress
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from squeezelab.compress import correct_biases, load_compressed, quantize, save_compressed
from squeezelab.compress.finetune import distill
from squeezelab.compress.plotting import line_plot, save_figure
from squeezelab.compress.sensitivity import Sensitivity, allocate, distillation_scorer, summed_degradation, sweep
from squeezelab.data.folders import FileImages, read_class_table, scan_class_folders, scan_flat_imagenet
from squeezelab.data.transforms import eval_transform
from squeezelab.interop.caffe import import_caffe_compressed
from squeezelab.train import evaluate
from squeezelab.utils.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RELEASE = SHARED / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
PAPER_BYTES = 470_000
BITS = (8, 7, 6, 5, 4, 3)
COLUMNS = ["recipe", "file_bytes", "top1", "top5", "calibration_kl", "predicted_kl", "bits"]


def image_tensor(images, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = FileImages(images, eval_transform(cfg), cfg.input_size[0])
    batches = list(DataLoader(dataset, batch_size=50, num_workers=2))
    return torch.cat([x for x, _ in batches]), torch.cat([torch.as_tensor(y) for _, y in batches])


def calibration_images(data: Path, cfg, count: int, seed: int = 0) -> torch.Tensor:
    """Unlabelled natural images: CIFAR-10 training JPEGs, a fixed random subset, upscaled as the model sees."""
    pool = scan_class_folders(data / "cifar10-jpeg" / "train")
    chosen = random.Random(seed).sample(range(len(pool)), count)
    return image_tensor(pool.select(chosen), cfg)[0]


def read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["recipe"]: row for row in csv.DictReader(handle)}


def write_rows(path: Path, rows: dict[str, dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS)
    writer.writeheader()
    writer.writerows(rows.values())
    atomic_write_text(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=RELEASE)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "imagenet_recompress")
    parser.add_argument("--calibration", type=int, default=128, help="unlabelled images for sensitivity / KL")
    parser.add_argument("--budgets", default="0.005,0.01,0.02,0.04,0.08,0.16,0.32", help="summed-KL budgets")
    parser.add_argument("--uniform-bits", default="8,7,6,5,4", help="reference files with one bit width everywhere")
    parser.add_argument("--linear-bits", default="8,7,6,5,4", help="the same with Han et al.'s linear-init k-means")
    parser.add_argument("--bias-correction", type=int, default=0, metavar="N", help="also each recipe with bias correction on N images")
    parser.add_argument("--distill-steps", type=int, default=0, help="centroid fine-tuning steps by distillation")
    parser.add_argument("--distill-images", type=int, default=1024)
    parser.add_argument("--files", type=Path, help="keep the .sqz files here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    files = args.files or Path(tempfile.mkdtemp(prefix="imagenet_recompress-"))
    files.mkdir(parents=True, exist_ok=True)

    original = import_caffe_compressed(args.release)
    cfg = original.default_cfg
    sample = scan_flat_imagenet(args.data / "imagenet-sample", read_class_table(args.data / "imagenet_classes.tsv"))
    images, labels = image_tensor(sample, cfg)
    evaluation = DataLoader(TensorDataset(images, labels), batch_size=50)
    calibration = calibration_images(args.data, cfg, args.calibration)
    score = distillation_scorer(calibration, original)

    sensitivity_csv = args.out / "sensitivity_bits.csv"
    if sensitivity_csv.is_file():
        sensitivity = Sensitivity.from_csv(sensitivity_csv)
    else:
        sensitivity = sweep(original, score, "bits", BITS)
        sensitivity.write(sensitivity_csv.with_suffix(""), "kl")

    results_csv = args.out / "results.csv"
    rows = read_rows(results_csv)
    if "original .net" not in rows:
        metrics = evaluate(original, evaluation)
        rows["original .net"] = {"recipe": "original .net", "file_bytes": args.release.stat().st_size, "top1": metrics["top1"],
                                 "top5": metrics["top5"], "calibration_kl": 0.0, "predicted_kl": 0.0, "bits": "8 (released)"}
        write_rows(results_csv, rows)
    recipes = {f"uniform {b} bits": ({name: int(b) for name in sensitivity.layers}, "optimal") for b in args.uniform_bits.split(",") if b}
    for b in (b for b in args.linear_bits.split(",") if b):
        recipes[f"uniform {b} bits, linear k-means"] = ({name: int(b) for name in sensitivity.layers}, "linear")
    for budget in (float(b) for b in args.budgets.split(",") if b):
        allocated = allocate(sensitivity, "kl", max_degradation=budget)
        recipes[f"KL budget {budget:g}"] = ({name: int(v) for name, v in allocated.items()}, "optimal")
    # Seed 1: unlabelled images to fit to, disjoint from the seed-0 images that score KL.
    distill_images = calibration_images(args.data, cfg, args.distill_images, seed=1) if args.distill_steps else None
    correction_images = calibration_images(args.data, cfg, args.bias_correction, seed=1) if args.bias_correction else None
    variants = [("", 0, False)]
    if correction_images is not None:
        variants.append((" + bias correction", 0, True))
    if distill_images is not None:
        variants.append((f" + distill {args.distill_steps}", args.distill_steps, False))
    for name, (bits, init) in recipes.items():
        for suffix, steps, corrected in variants:
            recipe = name + suffix
            if recipe in rows or ((steps or corrected) and init != "optimal"):
                continue
            model = import_caffe_compressed(args.release)
            quantize(model, bits, init=init)
            if corrected:
                correct_biases(model, original, correction_images)
            if steps:
                distill(model, original, distill_images, steps)
            stem = recipe.replace(" ", "_")
            path = files / f"{stem}.sqz"
            report = save_compressed(model, path, tensor_dtype="float16")
            decoded = load_compressed(path)
            metrics = evaluate(decoded, evaluation)
            rows[recipe] = {
                "recipe": recipe, "file_bytes": report.file_bytes, "top1": metrics["top1"], "top5": metrics["top5"],
                "calibration_kl": score(decoded)["kl"], "predicted_kl": summed_degradation(sensitivity, bits, "kl"),
                "bits": json.dumps(bits, separators=(",", ":")),
            }
            write_rows(results_csv, rows)
            print(f"{recipe:<32} {report.file_bytes:>9,} B  top-1 {metrics['top1']:.1f}%  top-5 {metrics['top5']:.1f}%", flush=True)
            atomic_write_text(args.out / "reports" / f"{stem}.md", report.to_markdown())
    summarize(rows, args.out)


def summarize(rows: dict[str, dict], out: Path) -> None:
    base = rows["original .net"]
    top1, top5 = float(base["top1"]), float(base["top5"])
    lines = [
        f"Original Deep Compression file: {int(base['file_bytes']):,} bytes, top-1 {top1:.1f}%, top-5 {top5:.1f}% on the 500 images.",
        "",
        "| recipe | bytes | MB (10^6) | top-1 | top-5 | within 1 point | KL on unlabelled images |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows.values(), key=lambda r: -int(r["file_bytes"])):
        ok = float(row["top1"]) >= top1 - 1 and float(row["top5"]) >= top5 - 1
        lines.append(
            f"| {row['recipe']} | {int(row['file_bytes']):,} | {int(row['file_bytes']) / 1e6:.3f} | {float(row['top1']):.1f} | "
            f"{float(row['top5']):.1f} | {'yes' if ok else 'no'} | {float(row['calibration_kl']):.4f} |"
        )
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    curves = {}
    for family, suffix in (("KL budget", ""), ("uniform", ""), ("KL budget", " + bias correction")):
        chosen = sorted(
            (r for r in rows.values() if r["recipe"].startswith(family) and _variant(r["recipe"]) == suffix and "linear" not in r["recipe"]),
            key=lambda r: int(r["file_bytes"]),
        )
        for metric in ("top1", "top5") if chosen else ():
            curves[f"{family}{suffix}: {metric}"] = ([int(r["file_bytes"]) for r in chosen], [float(r[metric]) for r in chosen])
    figure = line_plot(curves, "file bytes", "accuracy on the 500 ImageNet images (%)", "re-compressed Deep Compression SqueezeNet v1.0")
    axis = figure.axes[0]
    for value, style in ((top1, "--"), (top5, ":")):
        axis.axhline(value - 1, color="gray", linestyle=style, linewidth=0.8)
    axis.axvline(PAPER_BYTES, color="red", linewidth=0.8)
    save_figure(figure, out / "results.png")
    print("\n".join(lines))


def _variant(recipe: str) -> str:
    """What a recipe adds after its bits (`` + bias correction``, `` + distill 150``), or ``""``."""
    return recipe[recipe.index(" + ") :] if " + " in recipe else ""


if __name__ == "__main__":
    main()
