"""How a .sqz file's small tensors (biases, folded batch norms) are stored: bytes vs accuracy, per storage.

The weight-shared layers of the input file are kept exactly; only the other tensors are re-stored with each
``tensor_dtype`` of ``squeezelab.compress.save_compressed`` (float32 is the baseline: the file's own values),
then every file is decoded and evaluated on the test split.

    python benchmarks/tensor_storage.py runs/cifar_compress/model.sqz --out benchmarks/results/tensor_storage
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from squeezelab import load_model
from squeezelab.compress import CompressedFileError, load_compressed, save_compressed
from squeezelab.compress.sqz import FLOAT_STORAGE
from squeezelab.train import evaluate_model
from squeezelab.utils.files import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BASELINE = "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a .sqz file (its batch norms are stored folded)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, help="evaluate on at most N test images")
    parser.add_argument("--out", type=Path, help="also write results.md here")
    args = parser.parse_args()
    try:
        model = load_compressed(args.file, parametrized=True)
    except (FileNotFoundError, CompressedFileError) as exc:
        parser.error(str(exc))
    rows, workdir = [], Path(tempfile.mkdtemp())
    for storage in FLOAT_STORAGE:
        path = workdir / f"{storage}.sqz"
        tensor_bytes = save_compressed(model, path, tensor_dtype=storage, fold_batch_norm=True).other_tensor_bytes
        metrics, _ = evaluate_model(load_model(path), args.dataset, args.data, source=str(path), limit=args.limit, progress=False)
        rows.append((storage, path.stat().st_size, tensor_bytes, metrics["top1"], metrics["loss"]))
    base = next(row for row in rows if row[0] == BASELINE)
    lines = [
        f"{args.file}: {args.dataset} test split ({metrics['images']:,} images); baseline {BASELINE}",
        "",
        "| storage | file bytes | small-tensor bytes | vs baseline | test top-1 | vs baseline | test loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {s} | {b:,} | {t:,} | {t / base[2]:.2f}x | {top1:.2f}% | {top1 - base[3]:+.2f} | {loss:.4f} |" for s, b, t, top1, loss in rows),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out / "results.md", text + "\n")


if __name__ == "__main__":
    main()
