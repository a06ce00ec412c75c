"""``squeezelab train`` and ``squeezelab eval``."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from squeezelab.data import list_datasets
from squeezelab.interop.loading import detect_format, load_model, model_file
from squeezelab.train import TrainConfig, default_run_dir, evaluate_model, resume_training, train_from_config, training_config_of
from squeezelab.train.config import AMP_MODES, DEVICES, OPTIMIZERS, SCHEDULES
from squeezelab.train.evaluate import TTA_MODES
from squeezelab.train.rundir import prepare_new_run
from squeezelab.utils.files import atomic_write_json

from .common import format_table, non_negative_int, parse_input_size

# Shortcut flags -> TrainConfig fields; anything else is set with --set KEY=VALUE.
SHORTCUTS = ("model", "pretrained", "dataset", "data_root", "epochs", "batch_size", "lr", "optimizer", "schedule", "seed", "limit", "device", "amp", "workers")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a model (DDP under torchrun), writing a run directory",
        description="Train a model; settings come from --config, then shortcut flags, then --set KEY=VALUE.",
    )
    train.add_argument("--config", type=Path, help="YAML or JSON TrainConfig (e.g. a run's config.yaml)")
    train.add_argument("--model", help="registered model name")
    train.add_argument(
        "--pretrained",
        help="fine-tune these weights: a pretrained tag (squeezelab models --pretrained) or a model file; also "
        "--set freeze_epochs=N, backbone_lr_scale=X",
    )
    train.add_argument("--dataset", choices=list_datasets())
    train.add_argument("--data-root", help="data folder (default: download into the cache; digits needs none)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="per process")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--schedule", choices=SCHEDULES)
    train.add_argument("--seed", type=non_negative_int)
    train.add_argument("--limit", type=int, help="use at most N training and N test images")
    train.add_argument("--device", choices=DEVICES)
    train.add_argument("--amp", choices=AMP_MODES)
    train.add_argument("--workers", type=int, help="DataLoader worker processes (default: 0 for in-memory data)")
    train.add_argument("--input-size", type=parse_input_size, help="H,W (or C,H,W) of the model input")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field (YAML value)")
    train.add_argument("--out", type=Path, help="run directory (default: runs/<model>-<dataset>-<time>); one holding a run is refused")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its files are deleted first)")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run with its own config")
    train.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch)")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser("eval", help="top-1/top-5, loss, per-class accuracy and images/s of a checkpoint")
    ev.add_argument("model", nargs="?", help="registered model name (only for files without an architecture)")
    ev.add_argument("--checkpoint", type=Path, required=True, help="model file, training checkpoint, state_dict, compressed .sqz, Caffe .net or pretrained tag")
    ev.add_argument("--dataset", required=True, choices=list_datasets())
    ev.add_argument("--data-root", help="data folder")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--workers", type=int)
    ev.add_argument("--device", choices=DEVICES, default="auto")
    ev.add_argument("--amp", choices=AMP_MODES, default="off")
    ev.add_argument("--input-size", type=parse_input_size, help="override the model's input size")
    ev.add_argument("--limit", type=int, help="evaluate at most N images")
    ev.add_argument("--tta", choices=TTA_MODES, default="none", help="also report top-1/top-5 with test-time augmentation")
    ev.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar and no per-class table")
    ev.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    log = print
    if args.resume is not None:
        given = [f"--{name.replace('_', '-')}" for name in (*SHORTCUTS, "config", "input_size", "out") if getattr(args, name) is not None]
        given += ["--set"] * bool(args.set) + ["--overwrite"] * args.overwrite
        if given:
            raise ValueError(f"--resume continues a run with its own config.yaml; drop {', '.join(given)}")
        result = resume_training(args.resume, progress=not args.quiet, log=log)
    else:
        config = build_config(args)
        run_dir = args.out or default_run_dir(config)
        prepare_new_run(run_dir, overwrite=args.overwrite)  # before loading any data: a refusal comes at once
        result = train_from_config(config, run_dir, progress=not args.quiet, log=log)
    if result.run_dir is not None:
        log(f"run directory: {result.run_dir}")
    if result.collapse is not None:
        raise ValueError(result.collapse)  # the files are written, but the run did not train: exit non-zero
    return 0


def build_config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    changes = {name: getattr(args, name) for name in SHORTCUTS}
    if args.input_size is not None:
        changes["input_size"] = list(args.input_size[-2:])
        if len(args.input_size) == 3:
            changes["in_chans"] = args.input_size[0]
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            changes[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: cannot parse value {value!r}") from None
    return config.updated(**changes)


def run_eval(args: argparse.Namespace) -> int:
    path = model_file(args.checkpoint)  # a pretrained tag is its shipped file
    model = load_model(path, arch=args.model)
    # a training checkpoint records its run's validation split (.sqz and Caffe files hold no training record)
    training = training_config_of(path) if detect_format(path) == "torch" else None
    metrics, splits = evaluate_model(
        model,
        args.dataset,
        args.data_root,
        training=training,
        source=str(args.checkpoint),
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        input_size=args.input_size,
        limit=args.limit,
        progress=not args.quiet,
        tta=args.tta,
    )
    print(
        f"{args.checkpoint} on {args.dataset} {args.split} ({metrics['images']:,} images): "
        f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
        f"{metrics['images_per_s']:,.0f} images/s"
    )
    if "tta" in metrics:
        tta = metrics["tta"]
        print(f"with tta {tta['mode']}: top-1 {tta['top1']:.2f}%  top-5 {tta['top5']:.2f}%  loss {tta['loss']:.4f}")
    if not args.quiet:
        rows = [
            [name, f"{acc:.2f}", sum(row)]
            for name, acc, row in zip(splits.class_names, metrics["per_class"], metrics["confusion"])
            if acc is not None
        ]
        print(format_table(["class", "top-1 %", "images"], rows))
    if args.json is not None:
        named = {**metrics, "per_class": dict(zip(splits.class_names, metrics["per_class"]))}
        atomic_write_json(args.json, named)
    return 0
