"""``squeezelab compress``, ``decompress``, ``sensitivity`` and ``dsd`` (Deep Compression)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch

from squeezelab.compress import CompressionConfig, inspect_compressed
from squeezelab.compress.coding import SYMBOL_ENCODERS
from squeezelab.compress.dsd import dense_sparse_dense
from squeezelab.compress.finetune import finetune_config, finetune_data, inherited_summary
from squeezelab.compress.kmeans import KMEANS_INITS
from squeezelab.compress.pipeline import compress_and_evaluate
from squeezelab.compress.positions import POSITION_CODERS
from squeezelab.compress.pruning import GRANULARITIES
from squeezelab.compress.sensitivity import (
    SWEEP_KINDS,
    Sensitivity,
    accuracy_scorer,
    allocate,
    distillation_scorer,
    file_fixed_bytes,
    summed_bytes,
    summed_degradation,
    sweep,
)
from squeezelab.compress.sharing import CENTROID_UPDATES, SHARED_TRAININGS
from squeezelab.compress.sqz import FLOAT_STORAGE
from squeezelab.data import build_loaders, list_datasets
from squeezelab.interop.loading import detect_format, load_model
from squeezelab.models.files import save_model
from squeezelab.models.profile import MB, MIB
from squeezelab.train import TrainConfig, distributed_session, training_config_of

from .common import format_table, is_first_process, parse_settings
from .specs import (
    density_settings,
    parse_bits_spec,
    parse_density_spec,
    parse_granularity_spec,
    parse_keep_filters,
    parse_stage_epochs,
    parse_stage_lr,
)

GRANULARITY_HELP = (
    "prune single weights (weight, default) or whole kh x kw kernels (kernel), or per layer: conv3x3=kernel,default=weight"
)

# options that set the CompressionConfig field of their name, and those that set the fine-tuning setting of theirs
COMPRESS_OPTIONS = ("init", "centroid_update", "shared_training", "index_coder", "position_coder", "tensor_dtype", "prune_steps",
                    "finetune_epochs", "bias_correction")  # fmt: skip
FINETUNE_OPTIONS = ("lr", "batch_size", "distill", "distill_temperature", "cutout", "label_smoothing", "val_fraction")
# options written as per-layer or per-stage values, with their parsers
SPEC_OPTIONS: dict[str, Callable[[str], Any]] = {"keep_filters": parse_keep_filters, "granularity": parse_granularity_spec, "bits": parse_bits_spec,
                                                   "stage_epochs": parse_stage_epochs, "stage_lr": parse_stage_lr}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_compress(subparsers)

    decompress = subparsers.add_parser("decompress", help="decode a .sqz file into a dense model file, or report its size")
    decompress.add_argument("input", type=Path, help=".sqz file")
    decompress.add_argument("-o", "--output", type=Path, help="dense squeezelab model file to write (.pt)")
    decompress.add_argument("--report", type=Path, metavar="STEM", help="write STEM.md/.csv/.json/.png size reports")
    decompress.set_defaults(func=run_decompress)

    sensitivity = subparsers.add_parser(
        "sensitivity", help="per-layer accuracy as each layer alone is pruned (or quantized); CSV + PNG; budgets"
    )
    _add_model_argument(sensitivity, required=False)
    sensitivity.add_argument("--kind", choices=SWEEP_KINDS, default="density")
    sensitivity.add_argument("--values", help="comma-separated densities or bits (default: a standard sweep)")
    sensitivity.add_argument("--layers", help="comma-separated layer names (default: all prunable layers)")
    sensitivity.add_argument("--granularity", choices=GRANULARITIES, default="weight", help="of the pruning in density sweeps")
    sensitivity.add_argument(
        "--bits", help="density sweeps: count each layer's bytes as weight-shared with these bits (e.g. stem=5,default=3), "
        "as in the file a --max-bytes budget is for (default: float32 weights)",
    )  # fmt: skip
    _add_data_arguments(sensitivity, required=False)
    sensitivity.add_argument(
        "--unlabelled", type=int, metavar="N",
        help="score by KL divergence from the untouched model on N images of the data (labels unused)",
    )  # fmt: skip
    sensitivity.add_argument("--out", type=Path, metavar="STEM", help="write STEM.csv and STEM.png")
    sensitivity.add_argument("--from-csv", type=Path, help="skip the sweep: read curves from a sensitivity CSV")
    sensitivity.add_argument("--metric", help="metric for the plot and budgets (default top1, or kl)")
    budget = sensitivity.add_mutually_exclusive_group()
    budget.add_argument("--max-bytes", type=int, help="allocate per-layer settings for this budget of layer-weight bytes")
    budget.add_argument(
        "--file-bytes", type=int,
        help="allocate per-layer settings for this .sqz file size: the model's biases, batch norms (stored as "
        "--tensor-dtype and --fold-bn say) and metadata are measured, the rest goes to weights; needs the model",
    )  # fmt: skip
    budget.add_argument("--max-drop", type=float, help="allocate per-layer settings within this summed metric drop")
    _add_storage_arguments(sensitivity)
    sensitivity.add_argument("--quiet", action="store_true")
    sensitivity.set_defaults(func=run_sensitivity)

    dsd = subparsers.add_parser("dsd", help="Dense-Sparse-Dense training (dense -> prune + retrain -> restore + retrain)")
    _add_model_argument(dsd)
    _add_data_arguments(dsd, required=True)
    dsd.add_argument("--density", default="0.5", help="density of the sparse phase (see compress --density)")
    dsd.add_argument("--epochs", type=int, default=10, help="epochs per phase")
    dsd.add_argument("--dense-epochs", type=int, help="epochs of the first dense phase (0: model already trained)")
    dsd.add_argument("--lr", type=float, default=0.01, help="learning rate (the re-dense phase uses a tenth)")
    dsd.add_argument("--batch-size", type=int, default=128)
    _add_recipe_arguments(dsd)
    dsd.add_argument("--run-dir", type=Path, required=True, help="phase run directories; rerun to resume")
    dsd.add_argument("-o", "--output", type=Path, help="final dense model file (.pt)")
    dsd.add_argument("--quiet", action="store_true")
    dsd.set_defaults(func=run_dsd)


def _register_compress(subparsers: argparse._SubParsersAction) -> None:
    compress = subparsers.add_parser(
        "compress",
        help="prune, weight-share and entropy-code a model into a .sqz file (Deep Compression)",
        description="Settings come from --config, then the options, then --set KEY=VALUE (fine-tuning settings that "
        "none of them give follow the checkpoint's training run). Density and bits take one value or KEY=VALUE pairs by "
        "layer name or kind (stem, classifier, conv1x1, conv3x3, conv, linear, default), e.g. --density conv3x3=0.33,classifier=0.2.",
    )  # fmt: skip
    _add_model_argument(compress)
    compress.add_argument("-o", "--output", type=Path, required=True, help="the .sqz file to write")
    compress.add_argument("--config", type=Path, help="YAML or JSON CompressionConfig (e.g. a run directory's compression.yaml)")
    compress.add_argument(
        "--density",
        help="fraction of weights kept: 0.3 (global threshold), conv3x3=0.33,classifier=0.2, std:0.7 "
        "(Han's |w| < 0.7 std rule) or deep-compression (the released SqueezeNet's densities); default: no pruning",
    )
    compress.add_argument("--granularity", help=GRANULARITY_HELP)
    compress.add_argument(
        "--keep-filters", help="structured pruning first (SqueezeNet, SqueezeNext): fraction of filters kept, 0.75 or conv1x1=0.5,..."
    )
    compress.add_argument("--bits", help="weight-sharing bits: 5, or conv=8,classifier=5 (default 5)")
    compress.add_argument("--init", choices=KMEANS_INITS, help="k-means: optimal (exact 1-D, default) or Han's linear init")
    compress.add_argument(
        "--centroid-update", choices=CENTROID_UPDATES,
        help="fine-tuning moves each centroid by the mean (default) or the sum (Han et al.) of its weights' gradients",
    )  # fmt: skip
    compress.add_argument(
        "--shared-training", choices=SHARED_TRAININGS,
        help="after weight sharing fine-tune the centroids only (Han et al., default) or latent: quantization-aware, "
        "full-precision weights re-assigned to their nearest centroid every step (straight-through gradients)",
    )  # fmt: skip
    compress.add_argument("--index-coder", choices=("auto", *SYMBOL_ENCODERS))
    compress.add_argument("--position-coder", choices=POSITION_CODERS)
    _add_storage_arguments(compress, tensor_dtype=None)
    _add_data_arguments(compress, required=False)
    compress.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after each stage (default 0)")
    compress.add_argument("--prune-steps", type=int, help="iterative pruning steps, each fine-tuned (default 1)")
    compress.add_argument(
        "--stage-epochs", metavar="STAGE=N,...",
        help="epochs of named stages instead of --finetune-epochs (stages: filters, prune1..pruneN, quantized), e.g. prune5=16",
    )  # fmt: skip
    compress.add_argument("--lr", type=float, help="fine-tuning learning rate (default 0.001)")
    compress.add_argument(
        "--stage-lr", metavar="STAGE=LR,...", help="learning rates of named stages instead of --lr, e.g. quantized=0.005"
    )
    compress.add_argument("--batch-size", type=int, help="per process (default 128)")
    compress.add_argument(
        "--distill", type=float, metavar="WEIGHT",
        help="fine-tune on the dense model's soft targets too: their weight in [0, 1] (default 0: labels only)",
    )  # fmt: skip
    compress.add_argument("--distill-temperature", type=float, help="softmax temperature (default 4)")
    _add_recipe_arguments(compress)
    compress.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any CompressionConfig field (YAML value); fine-tuning settings as finetune.KEY, e.g. finetune.weight_decay=0",
    )  # fmt: skip
    compress.add_argument(
        "--run-dir", type=Path,
        help="fine-tuning run directories (checkpoints, curves) and the config (compression.yaml); rerun to resume",
    )  # fmt: skip
    compress.add_argument(
        "--bias-correction", type=int, metavar="N",
        help="finally shift each layer's bias so that its mean output on N training images (labels unused) matches the dense model's",
    )  # fmt: skip
    compress.add_argument("--report", type=Path, metavar="STEM", help="write STEM.md/.csv/.json/.png size reports")
    compress.add_argument("--quiet", action="store_true")
    compress.set_defaults(func=run_compress)


def _add_model_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("model", type=Path, nargs=None if required else "?", help="model file, checkpoint, .sqz or .net")
    parser.add_argument("--arch", help="registered model name, for files holding a bare state_dict")


def _add_storage_arguments(parser: argparse.ArgumentParser, tensor_dtype: str | None = "float32") -> None:
    parser.add_argument(
        "--tensor-dtype", choices=FLOAT_STORAGE, default=tensor_dtype,
        help="biases, BN: float32 (default), float16, uint8 (8-bit log codes for BN scales, 8-bit linear for the rest) "
        "or compact (10-bit linear for the rest)",
    )  # fmt: skip
    parser.add_argument(
        "--fold-bn", action="store_true", help="store each batch norm as its eval-mode scale and shift (half the bytes)"
    )


def _add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--dataset", choices=list_datasets(), required=required, help="data for fine-tuning / evaluation")
    parser.add_argument("--data-root", help="data folder (e.g. ../shared/data)")
    parser.add_argument("--limit", type=int, help="use at most N training and N test images")
    parser.add_argument(
        "--val-fraction", type=float,
        help="validation split of the training data (default: the checkpoint's training run's, else 0.1)",
    )  # fmt: skip


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cutout", type=int, metavar="PX", help="Cutout side while fine-tuning (default: as the checkpoint was trained, else 0)")
    parser.add_argument("--label-smoothing", type=float, help="while fine-tuning (default: as the checkpoint was trained, else 0)")


def _training_config(args: argparse.Namespace) -> TrainConfig | None:
    """The training config recorded in a ``squeezelab train`` checkpoint, announced once, if any."""
    training = training_config_of(args.model) if detect_format(args.model) == "torch" else None
    if training is not None and args.dataset is not None and not args.quiet and is_first_process():
        print(f"{args.model}: fine-tuning and validation data as in its training run ({inherited_summary(training)}) unless options say otherwise")
    return training


def _finetune_config(args: argparse.Namespace, training: TrainConfig | None, epochs: int = 1, **changes) -> TrainConfig:
    """Fine-tuning settings: the checkpoint's training run's data and regularisation, then the options."""
    recipe = {"cutout": getattr(args, "cutout", None), "label_smoothing": getattr(args, "label_smoothing", None)}
    return finetune_config(epochs, training=training, val_fraction=args.val_fraction, **recipe, **changes)


def _model_data(model, args: argparse.Namespace, config: TrainConfig):
    if args.dataset is None:
        return None
    return finetune_data(args.dataset, args.data_root, model, config, limit=args.limit, progress=not args.quiet)


def run_compress(args: argparse.Namespace) -> int:
    options = _option_settings(args)  # checked before the model and data load, which can take minutes
    # under torchrun the fine-tuning stages run data-parallel; rank 0 alone prints and writes reports
    with distributed_session() as dist_info:
        config = build_compression_config(args, _training_config(args), options)
        model = load_model(args.model, args.arch)
        outcome = compress_and_evaluate(
            model, args.output, config, data=_model_data(model, args, config.finetune), run_dir=args.run_dir, dist_info=dist_info,
            progress=not args.quiet, log=None if args.quiet else print,
        )  # fmt: skip
        if dist_info.is_main:
            _print_report(outcome.report, args.report)
            print(outcome.summary())
    return 0


def build_compression_config(args: argparse.Namespace, training: TrainConfig | None, options: dict[str, Any]) -> CompressionConfig:
    """The settings of ``--config``, then of the options, then of ``--set``; fine-tuning settings none of them
    gives follow the checkpoint's ``training`` run (its data split, augmentation, regularisation), then the
    fine-tuning defaults."""
    config = CompressionConfig(finetune=finetune_config(1, training=training))
    if args.config is not None:
        config = CompressionConfig.load(args.config, base=config)
    return config.updated(**options).updated(**parse_settings(args.set))


def _option_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The compression settings the options give (those not given are left out)."""
    settings = {name: getattr(args, name) for name in COMPRESS_OPTIONS if getattr(args, name) is not None}
    settings.update({name: parse(getattr(args, name)) for name, parse in SPEC_OPTIONS.items() if getattr(args, name)})
    if args.density:
        settings.update(density_settings(args.density))
    if args.fold_bn:
        settings["fold_batch_norm"] = True
    finetune = {name: getattr(args, name) for name in FINETUNE_OPTIONS if getattr(args, name) is not None}
    if finetune:
        settings["finetune"] = finetune
    return settings


def _print_report(report, stem: Path | None) -> None:
    headers, rows = report.table()
    keep = [headers.index(h) for h in ("layer", "params", "nonzeros", "density", "clusters", "index B", "position B", "total B")]
    print(format_table([headers[i] for i in keep], [[row[i] for i in keep] for row in rows]))
    if stem is not None:
        print("report: " + ", ".join(str(p) for p in report.write(stem)))


def run_decompress(args: argparse.Namespace) -> int:
    report = inspect_compressed(args.input)
    _print_report(report, args.report)
    print(f"{args.input}: {report.file_bytes:,} bytes ({report.file_bytes / MB:.3f} MB, {report.file_bytes / MIB:.3f} MiB)")
    if args.output is not None:
        save_model(load_model(args.input), args.output)
        print(f"dense model file: {args.output} ({args.output.stat().st_size:,} bytes)")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    if args.file_bytes is not None and args.layers and args.from_csv is None:
        # checked before a sweep of many minutes, not after it
        raise ValueError("--file-bytes needs curves for every prunable layer: sweep without --layers")
    if args.from_csv is not None:
        result = Sensitivity.from_csv(args.from_csv)
    else:
        result = _run_sweep(args)
    metric = args.metric or ("kl" if "kl" in result.baseline else "top1")
    if metric not in result.baseline:
        raise ValueError(f"--metric {metric!r} was not measured; measured: {', '.join(result.metrics)}")
    fixed = _file_fixed_bytes(args, result) if args.file_bytes is not None else 0
    for layer, (xs, ys) in result.curves(metric).items():
        print(f"{layer:<28} " + "  ".join(f"{x:g}:{y:.4g}" for x, y in zip(xs, ys)))
    if args.out is not None:
        print("written: " + ", ".join(str(p) for p in result.write(args.out, metric)))
    if args.max_bytes is None and args.max_drop is None and args.file_bytes is None:
        return 0
    budget = args.file_bytes if args.file_bytes is not None else args.max_bytes
    settings = allocate(result, metric, max_bytes=budget, max_degradation=args.max_drop, fixed_bytes=fixed)
    print(f"allocated {result.kind} per layer: " + ",".join(f"{name}={value:g}" for name, value in settings.items()))
    weights = summed_bytes(result, settings)
    if fixed:
        rest = f"+ {fixed:,} bytes of biases, batch norms and metadata = file {weights + fixed:,} bytes"
    else:
        rest = "(biases, batch norms and metadata come on top)"
    print(f"predicted: layer weights {weights:,} bytes {rest}, summed {metric} degradation "
          f"{summed_degradation(result, settings, metric):.4g}")
    return 0


def _file_fixed_bytes(args: argparse.Namespace, result: Sensitivity) -> int:
    if args.model is None:
        raise ValueError("--file-bytes needs the model file, to measure its biases, batch norms and metadata")
    return file_fixed_bytes(result, load_model(args.model, args.arch), args.tensor_dtype, args.fold_bn)


def _run_sweep(args: argparse.Namespace) -> Sensitivity:
    if args.model is None or args.dataset is None:
        raise ValueError("a sweep needs a model file and --dataset (or --from-csv to reuse a sweep)")
    model = load_model(args.model, args.arch)
    splits = _model_data(model, args, _finetune_config(args, _training_config(args)))
    # the validation split: choosing per-layer settings on test images would tune to the test set
    loader = build_loaders(splits, 256).val
    if loader is None:
        raise ValueError("the data has no validation split to score on; give --val-fraction > 0")
    if args.unlabelled:
        images = []
        for batch, _ in loader:
            images.append(batch)
            if sum(len(b) for b in images) >= args.unlabelled:
                break
        scorer = distillation_scorer(torch.cat(images)[: args.unlabelled], model)
    else:
        scorer = accuracy_scorer(loader)
    values = [float(v) for v in args.values.split(",")] if args.values else None
    layers = args.layers.split(",") if args.layers else None
    if args.bits and args.kind != "density":
        raise ValueError("--bits: sets the bits at which a density sweep counts bytes; a bits sweep takes --values")
    bits = parse_bits_spec(args.bits) if args.bits else None
    return sweep(model, scorer, args.kind, values, layers, progress=not args.quiet, bits=bits, granularity=args.granularity)


def run_dsd(args: argparse.Namespace) -> int:
    density = parse_density_spec(args.density)  # checked before the model and data load
    with distributed_session() as dist_info:
        model = load_model(args.model, args.arch).train()
        config = _finetune_config(args, _training_config(args), args.epochs, lr=args.lr, batch_size=args.batch_size)
        data = _model_data(model, args, config)
        result = dense_sparse_dense(
            model,
            data,
            config,
            density,
            dense_epochs=args.dense_epochs,
            run_dir=args.run_dir,
            dist_info=dist_info,
            progress=not args.quiet,
            log=None if args.quiet else print,
        )
    if not dist_info.is_main:
        return 0
    phases = (("dense", result.dense), ("sparse", result.sparse), ("re-dense", result.redense))
    rows = [[phase, f"{m['top1']:.2f}%", f"{m['top5']:.2f}%"] for phase, m in phases if m]
    if rows:
        print(format_table(["phase", "test top-1", "test top-5"], rows))
    if args.output is not None:
        save_model(result.model, args.output)
        print(f"model file: {args.output}")
    return 0
