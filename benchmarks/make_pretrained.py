"""Make the pretrained weights squeezelab ships (src/squeezelab/models/weights), measuring each file as shipped.

Every file records in ``default_cfg.extra["provenance"]`` the command and seed that made it and the figures
measured here on the shipped file itself (see ``squeezelab models --pretrained``):

* ``imagenet``: ``squeezenet1_0.dc_in1k.sqz``, the Deep Compression release re-encoded by ``squeezelab compress``
  with the per-layer bits the ImageNet re-compression benchmark allocated within a KL budget of 0.08 on
  unlabelled images (benchmarks/results/imagenet_recompress/results.csv, never chosen on the 500 labelled
  images) and bias correction on unlabelled CIFAR-10 training images; measured on ../shared/data/imagenet-sample
  beside the original release.
* ``cifar10 MODEL_FILE``: ``squeezenet_fast_cifar.sl_cifar10.pt`` (float16) from a run of the fast recipe,
  measured on the CIFAR-10 JPEG copy's 10,000 test images, plain and with TTA.
* ``mnist MODEL_FILE``: ``squeezenet_tiny_cifar.sl_mnist.pt`` (float16) from a run of experiments/train/mnist.yaml.

    python benchmarks/make_pretrained.py imagenet
    python benchmarks/make_pretrained.py cifar10 runs/fast/best.pt --command "squeezelab train ..." --seed 0

Prints one table row per file (bytes and figures, the original beside the re-encoded ImageNet file).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from squeezelab import load_model
from squeezelab.compress import load_compressed, save_compressed
from squeezelab.models.files import save_model
from squeezelab.models.pretrained import PROVENANCE_KEY, WEIGHTS_DIR
from squeezelab.models.registry import model_config, set_model_config
from squeezelab.train import evaluate_model

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RELEASE = REPO.parent / "shared" / "models" / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
ALLOCATIONS = REPO / "benchmarks" / "results" / "imagenet_recompress" / "results.csv"
ALLOCATION_ROW = "KL budget 0.08 + bias correction"


def measure(model: torch.nn.Module, dataset: str, root: Path, tta: bool) -> dict[str, float]:
    metrics, _ = evaluate_model(model, dataset, root, progress=False, tta="mirror_translate" if tta else "none")
    figures = {"top1": round(metrics["top1"], 2), "top5": round(metrics["top5"], 2)}
    if tta:
        figures["top1_tta"] = round(metrics["tta"]["top1"], 2)
    return figures


def stamped(model: torch.nn.Module, record: dict) -> torch.nn.Module:
    cfg = model_config(model)
    set_model_config(model, replace(cfg, extra={**cfg.extra, PROVENANCE_KEY: record}))
    return model


def allocated_bits() -> str:
    with ALLOCATIONS.open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["recipe"] == ALLOCATION_ROW)
    return ",".join(f"{layer}={bits}" for layer, bits in json.loads(row["bits"]).items())


def make_imagenet(data: Path) -> list[list[str]]:
    sample = data / "imagenet-sample"
    command = [
        "squeezelab", "compress", str(RELEASE), "-o", "OUT.sqz", "--tensor-dtype", "float16", "--bits", allocated_bits(),
        "--dataset", "cifar10", "--data-root", str(data), "--limit", "512", "--bias-correction", "128", "--quiet",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        encoded = Path(tmp) / "encoded.sqz"
        subprocess.run([sys.executable, "-m", "squeezelab", *command[1:4], str(encoded), *command[5:]], check=True)
        model = load_compressed(encoded, parametrized=True)  # parametrized: re-encoded below with the same codes
    figures = measure(model, "imagenet", sample, tta=False)
    original = measure(load_model(RELEASE), "imagenet", sample, tta=False)
    record = {
        "command": " ".join(command).replace(str(REPO.parent), ".."),
        "seed": None,
        "data": "ImageNet-1k, 500 images of ../shared/data/imagenet-sample",
        "metrics": figures,
        "original_metrics": original,
        "measured_by": "benchmarks/make_pretrained.py imagenet (squeezelab.train.evaluate_model)",
        "source": "Deep Compression release compressed_SqueezeNet.net (BSD licence, LICENCE-deep-compression)",
    }
    out = WEIGHTS_DIR / "squeezenet1_0.dc_in1k.sqz"
    save_compressed(stamped(model, record), out, tensor_dtype="float16")
    shipped = load_model(out)
    check = measure(shipped, "imagenet", sample, tta=False)
    if check != figures:
        raise SystemExit(f"{out}: measured {check} after writing, {figures} before")
    return [
        ["original release", f"{RELEASE.stat().st_size:,}", f"{original['top1']:.2f}", f"{original['top5']:.2f}", "-"],
        [out.name, f"{out.stat().st_size:,}", f"{figures['top1']:.2f}", f"{figures['top5']:.2f}", "-"],
    ]


def make_dense(kind: str, source: Path, data: Path, command: str, seed: int) -> list[list[str]]:
    names = {"cifar10": ("squeezenet_fast_cifar.sl_cifar10.pt", "cifar10", True), "mnist": ("squeezenet_tiny_cifar.sl_mnist.pt", "mnist", False)}
    name, dataset, tta = names[kind]
    model = load_model(source).half().float()  # measured as shipped: float16 weights
    cfg = model_config(model)
    # runs trained before squeezelab recorded in-memory data's geometry stored resize side/0.875 (37 for 32x32),
    # which would crop the borders of 32x32 images at deployment; in-memory data is resized whole to the input
    set_model_config(model, replace(cfg, resize_size=max(cfg.input_size[1:])))
    figures = measure(model, dataset, data, tta)
    label = {"cifar10": "CIFAR-10 (JPEG copy), the 10,000 test images", "mnist": "MNIST, the 10,000 test images"}[kind]
    record = {
        "command": command, "seed": seed, "data": label, "metrics": figures,
        "measured_by": f"benchmarks/make_pretrained.py {kind} (squeezelab.train.evaluate_model, float16 weights as shipped)",
    }  # fmt: skip
    out = WEIGHTS_DIR / name
    save_model(stamped(model, record), out, half=True)
    check = measure(load_model(out), dataset, data, tta)
    if check != figures:
        raise SystemExit(f"{out}: measured {check} after writing, {figures} before")
    return [[out.name, f"{out.stat().st_size:,}", f"{figures['top1']:.2f}", f"{figures['top5']:.2f}", f"{figures.get('top1_tta', '-')}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("imagenet", "cifar10", "mnist"))
    parser.add_argument("model", nargs="?", type=Path, help="trained model file (cifar10, mnist)")
    parser.add_argument("--command", help="the command that trained it (recorded)")
    parser.add_argument("--seed", type=int, help="its seed (recorded)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if args.kind == "imagenet":
        rows = make_imagenet(args.data)
    elif args.model is None or args.command is None or args.seed is None:
        raise SystemExit(f"{args.kind}: give the trained model file, --command and --seed")
    else:
        rows = make_dense(args.kind, args.model, args.data, args.command, args.seed)
    print("| file | bytes | top-1 % | top-5 % | top-1 TTA % |\n|---|---:|---:|---:|---:|")
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))


if __name__ == "__main__":
    main()
