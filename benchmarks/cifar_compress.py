"""Compress a trained CIFAR-10 SqueezeNet with Deep Compression and fine-tuning; target >= 30x smaller
than its fp32 model file with at most 0.5 point of test accuracy lost.

Pipeline (``squeezelab.compress.compress_and_evaluate``): iterative magnitude pruning to ``--density``
in ``--prune-steps`` steps, each followed by ``--finetune-epochs`` of ``squeezelab.train.fit`` with the
masks enforced; weight sharing with ``--bits`` (exact 1-D k-means) and the same fine-tuning of the
shared centroids; entropy coding to a .sqz file; the decoded file is evaluated on the CIFAR-10 test
split (JPEG copy) and compared with the dense model. The baseline is the dense fp32 model file
(``squeezelab.models.files.save_model``) of the same model, written in the same run.

It also prints the stage table of study 9 (docs/results.md): the dense model, after pruning and its
fine-tuning, after weight sharing and its fine-tuning, the model decoded from the .sqz file, and with
``--dsd-epochs N`` Dense-Sparse-Dense training from the same dense model (N sparse + N re-dense epochs),
as results.md / stages.csv / stages.png in ``--out``.

    python benchmarks/cifar_compress.py runs/<best cifar run>/best.pt --dsd-epochs 3 --out benchmarks/results/cifar_compress
    python benchmarks/cifar_compress.py --quick-train 3 --limit 10000   # pipeline check on a quickly trained model
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 benchmarks/cifar_compress.py ...   # data-parallel fine-tuning

The fine-tuning stages run in ``--out``/runs; rerunning the same command resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import tempfile
from pathlib import Path

import torch

from squeezelab import load_model
from squeezelab.cli.specs import density_settings, parse_bits_spec, parse_granularity_spec, parse_keep_filters, parse_stage_epochs, parse_stage_lr
from squeezelab.compress import CompressionConfig, plain_copy, prunable_layers
from squeezelab.compress.dsd import dense_sparse_dense
from squeezelab.compress.finetune import finetune_config, finetune_data, inherited_summary
from squeezelab.compress.pipeline import CompressionOutcome, compress_and_evaluate
from squeezelab.compress.sharing import CENTROID_UPDATES, SHARED_TRAININGS
from squeezelab.compress.sqz import FLOAT_STORAGE
from squeezelab.data import build_datasets
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from squeezelab.train import DistInfo, TrainConfig, distributed_session, fit, training_config_of
from squeezelab.utils.files import atomic_write_text
from squeezelab.utils.plotting import figure_with_axes, save_figure

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TARGET_RATIO = 30.0
MAX_DROP = 0.5


def quickly_trained(epochs: int, data: Path, limit: int | None, model_name: str) -> torch.nn.Module:
    """A small model with batch norm, trained with the quickstart's optimiser (AdamW, one-cycle)."""
    torch.manual_seed(0)
    model = create_model(model_name, batch_norm="all")
    splits = build_datasets("cifar10", data, limit=limit, progress=False)
    config = TrainConfig(epochs=epochs, batch_size=128, optimizer="adamw", lr=0.003, weight_decay=0.05,
                         schedule="onecycle", device="cpu", amp="off")
    fit(model, config, splits, log=print)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="trained CIFAR-10 model file or checkpoint")
    parser.add_argument("--quick-train", type=int, metavar="EPOCHS", help="no checkpoint: train a model this many epochs first")
    parser.add_argument("--quick-model", default="squeezenet_tiny_cifar")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, help="use at most N training and N test images (quick checks)")
    parser.add_argument("--keep-filters", help="structured pruning first: fraction of filters kept, 0.75 or features.stage3=0.5,...")
    parser.add_argument("--density", default="conv3x3=0.08,conv1x1=0.12,stem=0.5,classifier=0.3")
    parser.add_argument("--granularity", default="weight", help="prune single weights or whole kernels: weight, kernel, conv3x3=kernel,...")
    parser.add_argument("--bits", default="stem=6,conv3x3=3,default=4")
    parser.add_argument("--centroid-update", choices=CENTROID_UPDATES, default="mean", help="mean (default) or sum (Han et al.) of the weights' gradients")
    parser.add_argument("--shared-training", choices=SHARED_TRAININGS, default="centroids", help="fine-tune the centroids (Han et al.) or latent weights (quantization-aware)")
    parser.add_argument("--prune-steps", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--stage-epochs", help="epochs of named stages instead, e.g. prune5=16,quantized=6")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--stage-lr", help="learning rates of named stages instead, e.g. quantized=0.005")
    parser.add_argument("--tensor-dtype", choices=FLOAT_STORAGE, default="float16", help="biases, batch norm (see squeezelab compress --help)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cifar_compress")
    parser.add_argument("--fold-bn", action="store_true", help="store batch norms as eval-mode scale and shift")
    parser.add_argument("--amp", default="auto", help="fine-tuning autocast: auto, off, bf16 (as squeezelab train)")
    parser.add_argument("--distill", type=float, default=0.0, help="weight of the dense model's soft targets in fine-tuning")
    parser.add_argument("--dsd-epochs", type=int, default=0, help="also run DSD: this many sparse and re-dense epochs")
    parser.add_argument("--dsd-density", type=float, default=0.5, help="DSD's sparse phase density")
    parser.add_argument("--batch-size", type=int, default=128, help="fine-tuning batch per process (as squeezelab train)")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: OMP_NUM_THREADS, else all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if (args.checkpoint is None) == (args.quick_train is None):
        parser.error("give a checkpoint or --quick-train EPOCHS")
    # under torchrun every fine-tuning stage runs data-parallel; rank 0 alone writes and prints
    with distributed_session() as dist_info:
        lines, stages, outcome = compress_and_report(args, dist_info)
    if dist_info.is_main:
        table = stage_table(stages)
        atomic_write_text(args.out / "results.md", "\n\n".join(lines) + "\n\n" + table + "\n\n" + outcome.report.to_markdown())
        write_stages(stages, args.out)
        outcome.report.write(args.out / "size_report")
        print("\n".join(lines))
        print(table)


def compress_and_report(args: argparse.Namespace, dist_info: DistInfo) -> tuple[list[str], list[dict], CompressionOutcome]:
    """Run the pipeline (and DSD) on the model ``args`` name: the summary lines, stage rows and outcome."""
    model = load_model(args.checkpoint) if args.checkpoint else quickly_trained(args.quick_train, args.data, args.limit, args.quick_model)
    # fine-tune on the dense model's own training split, augmentation and label smoothing (if it records them)
    training = training_config_of(args.checkpoint) if args.checkpoint else None
    dense_file = Path(tempfile.mkdtemp()) / "dense.pt"
    save_model(model, dense_file)
    finetune = finetune_config(
        max(args.finetune_epochs, 1), training=training, lr=args.lr, batch_size=args.batch_size, device="cpu", amp=args.amp,
        distill=args.distill,
    )
    config = CompressionConfig(
        keep_filters=parse_keep_filters(args.keep_filters) if args.keep_filters else None,
        **density_settings(args.density),
        granularity=parse_granularity_spec(args.granularity),
        bits=parse_bits_spec(args.bits),
        centroid_update=args.centroid_update,
        shared_training=args.shared_training,
        prune_steps=args.prune_steps,
        finetune_epochs=args.finetune_epochs,
        stage_epochs=parse_stage_epochs(args.stage_epochs) if args.stage_epochs else None,
        stage_lr=parse_stage_lr(args.stage_lr) if args.stage_lr else None,
        tensor_dtype=args.tensor_dtype,
        fold_batch_norm=args.fold_bn,
        finetune=finetune,
    )
    splits = finetune_data("cifar10", args.data, model, finetune, limit=args.limit, progress=False)
    dense_model = plain_copy(model)
    outcome = compress_and_evaluate(model, args.out / "model.sqz", config, data=splits, run_dir=args.out / "runs", dist_info=dist_info)
    dense_bytes = dense_file.stat().st_size
    ratio = dense_bytes / outcome.report.file_bytes
    drop = outcome.dense_metrics["top1"] - outcome.compressed_metrics["top1"]
    lines = [
        f"model: {model.model_spec['name']} {json.dumps(model.model_spec['kwargs'])}",
        "recipe: " + (f"filters kept {args.keep_filters}; " if args.keep_filters else "") + f"density {args.density}{'' if args.granularity == 'weight' else f' ({args.granularity} granularity)'}; bits {args.bits}"
        + (" with quantization-aware (latent weight) fine-tuning" if args.shared_training == "latent" else "") + f"; {args.prune_steps} prune steps; "
        f"{args.tensor_dtype} other tensors{', batch norms folded' if args.fold_bn else ''}; "
        f"{args.finetune_epochs} fine-tuning epochs per stage{f' ({args.stage_epochs})' if args.stage_epochs else ''} at lr {args.lr}"
        + (f" ({args.stage_lr})" if args.stage_lr else "")
        + (f", distillation from the dense model at weight {args.distill}" if args.distill else ""),
        "fine-tuning data and loss: " + (inherited_summary(training)
                                         + " (as the dense model was trained)" if training else "defaults (the model records no training config)"),
        f"dense fp32 model file: {dense_bytes:,} bytes; test top-1 {outcome.dense_metrics['top1']:.2f}% "
        f"({outcome.dense_metrics['images']:,} CIFAR-10 test images, JPEG copy)",
        f"compressed .sqz file:  {outcome.report.file_bytes:,} bytes; test top-1 {outcome.compressed_metrics['top1']:.2f}%",
        f"ratio {ratio:.1f}x (target >= {TARGET_RATIO:g}x): {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}; "
        f"accuracy drop {drop:+.2f} points (target <= {MAX_DROP}): {'PASS' if drop <= MAX_DROP else 'FAIL'}",
    ]
    dense_weights = sum(m.weight.numel() for m in prunable_layers(dense_model).values())
    stages = stage_rows(outcome, dense_bytes, dense_weights, args.prune_steps, bool(args.keep_filters))
    if args.dsd_epochs:
        stages.append(dsd_row(dense_model, splits, args, dense_bytes, outcome.report.params, training, dist_info))
    return lines, stages, outcome


def stage_rows(outcome, dense_bytes: int, dense_weights: int, prune_steps: int, filters_pruned: bool) -> list[dict]:
    """Dense, filter-pruned (if asked), pruned (after the last pruning step's fine-tuning), pruned +
    quantized (after the centroids' fine-tuning) and the decoded .sqz file; the in-between stages exist
    only with fine-tuning."""
    report = outcome.report
    rows = [_row("dense fp32", dense_bytes, dense_weights, outcome.dense_metrics)]
    tuned = outcome.finetune_results
    if filters_pruned and tuned:
        rows.append(_row("filter-pruned (fine-tuned)", None, report.params, tuned[0]))
        tuned = tuned[1:]
    if len(tuned) >= prune_steps + 1:
        rows.append(_row("pruned (fine-tuned)", None, report.nonzeros, tuned[prune_steps - 1]))
        rows.append(_row("pruned + quantized (fine-tuned)", None, report.nonzeros, tuned[prune_steps]))
    rows.append(_row("pruned + quantized + coded (.sqz file)", report.file_bytes, report.nonzeros, outcome.compressed_metrics))
    return rows


def dsd_row(
    dense_model: torch.nn.Module, splits, args: argparse.Namespace, dense_bytes: int, weights: int, training: TrainConfig | None,
    dist_info: DistInfo,
) -> dict:
    """DSD from the trained dense model: its result is again a dense model of the same size (``weights``
    counts the prunable weights, as for the other rows)."""
    config = finetune_config(args.dsd_epochs, training=training, lr=args.lr, batch_size=args.batch_size, device="cpu", amp=args.amp)
    result = dense_sparse_dense(dense_model, splits, config, args.dsd_density, dense_epochs=0, run_dir=args.out / "dsd", dist_info=dist_info)
    return _row(f"DSD ({args.dsd_epochs} sparse at {args.dsd_density:.0%} + {args.dsd_epochs} re-dense epochs)",
                dense_bytes, weights, result.redense)


def _row(stage: str, file_bytes: int | None, weights: int, metrics: dict | None) -> dict:
    return {"stage": stage, "file_bytes": file_bytes, "weights": weights,
            "top1": metrics["top1"] if metrics else None, "top5": metrics["top5"] if metrics else None}


def stage_table(rows: list[dict]) -> str:
    lines = ["| stage | file bytes | nonzero weights | test top-1 | test top-5 |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        size = f"{row['file_bytes']:,}" if row["file_bytes"] else "-"
        accuracy = [f"{row[key]:.2f}%" if row[key] is not None else "-" for key in ("top1", "top5")]
        lines.append(f"| {row['stage']} | {size} | {row['weights']:,} | {accuracy[0]} | {accuracy[1]} |")
    return "\n".join(lines)


def write_stages(rows: list[dict], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "stages.csv", buffer.getvalue())
    shown = [row for row in rows if row["top1"] is not None]
    figure, axis = figure_with_axes(7, 3.5)
    axis.barh([row["stage"] for row in shown][::-1], [row["top1"] for row in shown][::-1], color="tab:blue")
    low = min(row["top1"] for row in shown)
    axis.set_xlim(max(0.0, low - 5), 100)
    axis.set_xlabel("CIFAR-10 test top-1 (%)")
    for index, row in enumerate(shown[::-1]):
        label = f" {row['top1']:.2f}%" + (f", {row['file_bytes']:,} B" if row["file_bytes"] else "")
        axis.text(row["top1"], index, label, va="center", fontsize=8)
    save_figure(figure, out / "stages.png")


if __name__ == "__main__":
    main()
