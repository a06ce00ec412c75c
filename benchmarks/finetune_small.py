"""Fine-tuning on a small data set of one's own, then the whole deployment path, each step a squeezelab command.

The data set is shaped like the soil-photo one SqueezeNet users fine-tune on (about 200 photos of 5 classes):
5 CIFAR-10 classes, 40 training images each (chosen by ``--seed``), tested on those classes' 5,000 test images,
upscaled to the model's 227x227 input by the loader. The folder is made of symbolic links to the CIFAR-10 JPEG
copy in ../shared/data (outside the repository). Rows, one command each:

1. ``train`` from scratch (squeezenet1_0, random weights);
2. ``train --pretrained squeezenet1_0.dc_in1k`` (the ImageNet weights shipped with squeezelab): a new 5-class
   classifier, the backbone frozen for 2 epochs and then trained at a tenth of the learning rate;
3. ``compress`` the fine-tuned model (pruning, weight sharing, fine-tuning, entropy coding) into a ``.sqz``;
4. ``quantize-int8`` the ``.sqz`` into an int8 ONNX file, calibrated on the training images;
5. ``classify`` a test folder with the int8 file.

Each file is evaluated on the 5,000 test images by the same evaluator (``squeezelab.train.evaluate_model``);
no selection on test (fixed schedules, no validation split). Writes results.{md,json} in ``--out``.

    python benchmarks/finetune_small.py --out benchmarks/results/finetune_small
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from squeezelab import load_model
from squeezelab.interop.runtime import OnnxModel
from squeezelab.train import evaluate_model

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
# One recipe for both runs: only the starting weights (and the pretrained run's freezing) differ. AdamW, as the
# quickstart: with SGD at lr 0.01 the new classifier's outputs died in the first epoch behind SqueezeNet's final
# ReLU (the Caffe model's features are large: its input is 0-255), and the run stayed at chance.
RECIPE = ["--epochs", "15", "--batch-size", "32", "--optimizer", "adamw", "--lr", "0.001", "--schedule", "cosine",
          "--set", "val_fraction=0", "--set", "warmup_epochs=1", "--set", "weight_decay=0.05", "--quiet"]  # fmt: skip


def small_data_set(cifar: Path, folder: Path, per_class: int, seed: int) -> Path:
    """``folder/{train,test}/<class>/`` of symbolic links: ``per_class`` training images of each class, all its test images."""
    rng = random.Random(seed)
    for name in CLASSES:
        train = sorted((cifar / "train" / name).glob("*.jpg"))
        for split, files in (("train", rng.sample(train, per_class)), ("test", sorted((cifar / "test" / name).glob("*.jpg")))):
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            for file in files:
                link = target / file.name
                if not link.exists():
                    link.symlink_to(file.resolve())
    return folder


def run(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "squeezelab", *command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"squeezelab {' '.join(command)} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def test_top1(path: Path, data: Path) -> float:
    """Test top-1 of a file; a training run's own final test (the same evaluator on the same images) is reused."""
    results = path.parent / "results.json"
    if path.name == "best.pt" and results.is_file():
        return round(json.loads(results.read_text())["test"]["top1"], 2)
    model = OnnxModel(path) if path.suffix == ".onnx" else load_model(path)
    metrics, _ = evaluate_model(model, "imagefolder", data, source=str(path), progress=False)
    return round(metrics["top1"], 2)


def classified_top1(log: Path, folder: Path) -> float:
    """Share of the images in one class folder that ``classify`` put first in that class (from its output)."""
    lines = log.read_text().splitlines()
    firsts = [lines[i + 1].split()[-1] for i, line in enumerate(lines) if line.startswith(str(folder)) and i + 1 < len(lines)]
    return round(100 * sum(name == folder.name for name in firsts) / max(1, len(firsts)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "finetune_small", help="data links, runs and files")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "finetune_small")
    args = parser.parse_args()
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    data = small_data_set(args.data / "cifar10-jpeg", work / "data", args.per_class, args.seed)
    common = ["--dataset", "imagefolder", "--data-root", str(data), "--seed", str(args.seed)]
    steps = [
        ("from scratch", ["train", "--model", "squeezenet1_0", "--input-size", "227,227", *common, *RECIPE, "--out", str(work / "scratch"), "--overwrite"], work / "scratch" / "best.pt"),
        ("fine-tuned from squeezenet1_0.dc_in1k", ["train", "--pretrained", "squeezenet1_0.dc_in1k", *common, *RECIPE, "--set", "freeze_epochs=2",
          "--set", "backbone_lr_scale=0.1", "--out", str(work / "finetuned"), "--overwrite"], work / "finetuned" / "best.pt"),
        ("compressed (.sqz)", ["compress", str(work / "finetuned" / "best.pt"), "-o", str(work / "finetuned.sqz"), "--density", "0.35", "--bits", "6",
          "--finetune-epochs", "3", "--lr", "0.001", "--tensor-dtype", "float16", "--dataset", "imagefolder", "--data-root", str(data), "--quiet"], work / "finetuned.sqz"),
        ("int8 ONNX", ["quantize-int8", str(work / "finetuned.sqz"), "--out", str(work / "finetuned.int8.onnx"), "--calibration", str(data / "train")],
         work / "finetuned.int8.onnx"),
    ]  # fmt: skip
    rows = []
    for name, command, produced in steps:
        finished = work / f"{len(rows) + 1}.row.json"  # an interrupted benchmark continues after its last finished step
        if finished.is_file():
            rows.append(json.loads(finished.read_text()))
            continue
        seconds = run(command, work / f"{len(rows) + 1}.log")
        rows.append({"step": name, "command": "squeezelab " + " ".join(command).replace(str(REPO) + "/", ""), "file": produced.name,
                     "bytes": produced.stat().st_size, "test_top1": test_top1(produced, data), "wall_s": round(seconds, 1)})  # fmt: skip
        finished.write_text(json.dumps(rows[-1]) + "\n")
        print(f"{name}: {rows[-1]['bytes']:,} bytes, test top-1 {rows[-1]['test_top1']:.2f}% ({seconds:.0f} s)", flush=True)
    folder = data / "test" / "cat"
    log = work / "classify.log"
    seconds = run(["classify", "--model", str(work / "finetuned.int8.onnx"), "--topk", "1", str(folder)], log)
    rows.append({"step": "classify the cat test folder (int8)", "command": f"squeezelab classify --model finetuned.int8.onnx --topk 1 {folder.name}/",
                 "file": "-", "bytes": None, "test_top1": classified_top1(log, folder), "wall_s": round(seconds, 1)})  # fmt: skip
    lines = [
        f"{len(CLASSES)} CIFAR-10 classes ({', '.join(CLASSES)}), {args.per_class} training images each (seed {args.seed}), tested on their "
        f"{sum(1 for _ in (data / 'test').rglob('*.jpg')):,} test images at 227x227 (the last row: the cat folder only).",
        "",
        "| step | file bytes (training checkpoints hold the optimizer state too) | test top-1 | wall s |",
        "|---|---:|---:|---:|",
        *(f"| {r['step']} | {r['bytes']:,} | {r['test_top1']:.2f}% | {r['wall_s']:.0f} |" if r["bytes"] else
          f"| {r['step']} | - | {r['test_top1']:.2f}% | {r['wall_s']:.0f} |" for r in rows),
        "",
        "Commands:",
        "",
        *(f"    {r['command']}" for r in rows),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
