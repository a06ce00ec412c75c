"""Runs from a :class:`TrainConfig` alone (model and data built by name), resuming, and the quickstart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from squeezelab.data import DatasetSplits, build_datasets, build_loaders, dataset_options_from_config
from squeezelab.data.augment import Normalization
from squeezelab.models import create_model, get_model_config
from squeezelab.models.profile import check_input_size
from squeezelab.models.registry import model_config
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import safe_torch_load

from .checkpoint import trained_model_from_record
from .config import TrainConfig
from .device import resolve_amp, resolve_device
from .engine import FitResult, fit
from .evaluate import evaluate
from .rundir import CONFIG

# squeezenet_tiny_cifar (one input channel, 16x16 digits, batch norm) with AdamW + one-cycle: 98.9% to 99.7%
# test accuracy for seeds 0-4 (docs/training.md). SGD at lr 0.1 reached 99.2-99.4% for seeds
# 1-2 but 89.7% for seed 0, where one class's channel died behind SqueezeNet's ReLU before the pooling
# (a class whose final-conv outputs are all negative gets no gradient); AdamW's bounded steps avoid that.
QUICKSTART_CONFIG = TrainConfig(
    model="squeezenet_tiny_cifar",
    model_kwargs={"batch_norm": "all"},
    dataset="digits",
    input_size=[16, 16],
    in_chans=1,
    val_fraction=0.1,
    epochs=15,
    batch_size=64,
    optimizer="adamw",
    lr=0.003,
    schedule="onecycle",
    weight_decay=0.05,
    label_smoothing=0.1,
)


def build_run_data(config: TrainConfig, progress: bool = True) -> DatasetSplits:
    """The config's data set at the model's input size and channels (its own defaults unless set)."""
    model_cfg = get_model_config(config.model)
    return build_datasets(
        config.dataset,
        config.data_root,
        in_chans=config.in_chans or model_cfg.input_size[0],
        input_size=tuple(config.input_size) if config.input_size else tuple(model_cfg.input_size[1:]),
        val_fraction=config.val_fraction,
        seed=config.seed,
        augment=config.augment,
        cutout=config.cutout,
        translate=config.translate,
        translate_mode=config.translate_mode,
        flip=config.flip,
        limit=config.limit,
        progress=progress,
    )


def build_run_model(config: TrainConfig, splits: DatasetSplits) -> torch.nn.Module:
    """The config's model for the data's classes and channels, initialised from the config's seed."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=splits.num_classes, in_chans=splits.input_size[0], **config.model_kwargs)
    check_input_size(model, splits.input_size)
    return model


def train_from_config(
    config: TrainConfig,
    run_dir: str | Path | None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """Build the model and data the config names and :func:`fit` them, writing ``run_dir``."""
    splits = build_run_data(config, progress)
    model = build_run_model(config, splits)
    return fit(model, config, splits, run_dir, resume=resume, progress=progress, log=log)


def resume_training(run_dir: str | Path, *, progress: bool = True, log: Callable[[str], None] | None = print) -> FitResult:
    """Continue an interrupted run from ``run_dir/last.pt`` with its own ``config.yaml``."""
    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir / CONFIG)
    return train_from_config(config, run_dir, resume=True, progress=progress, log=log)


def default_run_dir(config: TrainConfig, base: str | Path = "runs") -> Path:
    return Path(base) / f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def quickstart(
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FitResult:
    """Train a small SqueezeNet on the embedded ``digits`` data, evaluate it on the test split, write a run dir.

    ``epochs`` shortens the run (tests); the default reaches >= 98% test accuracy in about a minute on 2 cores.
    """
    config = QUICKSTART_CONFIG.updated(epochs=epochs)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    return train_from_config(config, out_dir, progress=progress, log=log)


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str,
    root: str | Path | None = None,
    *,
    model: torch.nn.Module | None = None,
    model_name: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "off",
    input_size: tuple[int, ...] | None = None,
    limit: int | None = None,
    progress: bool = True,
    tta: str = "none",
) -> tuple[dict, DatasetSplits]:
    """Evaluate a model file, training checkpoint or bare ``state_dict`` (with ``model_name``) on a data split.

    Images are preprocessed as the model's ``default_cfg`` says (what training recorded: input size,
    statistics, channel order). ``split="val"`` rebuilds the run's validation split from the seed and fraction
    stored in a training checkpoint. ``model``, if given, is what ``checkpoint`` holds, already loaded (a
    compressed ``.sqz`` file, say, which only ``squeezelab.compress`` reads). With ``tta`` (see
    :func:`~squeezelab.train.evaluate.tta_logits`) the metrics also hold ``"tta"``: top-1, top-5 and loss
    with test-time augmentation, beside the plain figures. Returns ``(metrics of evaluate(), the data splits)``.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    record = safe_torch_load(checkpoint) if model is None else {}
    if model is None:
        model = trained_model_from_record(record, str(checkpoint), model_name)
    options = _preprocessing_of(model, str(checkpoint))
    if input_size is not None:
        options["input_size"] = tuple(input_size[-2:])
        check_input_size(model, (model_config(model).input_size[0], *options["input_size"]))
    val_fraction, seed = _split_settings(record, str(checkpoint))
    splits = build_datasets(
        dataset,
        root,
        val_fraction=val_fraction,
        seed=seed,
        augment=False,
        limit=limit,
        progress=progress,
        **options,
    )
    loader = getattr(build_loaders(splits, batch_size, workers), split)
    if loader is None:
        raise ValueError(f"dataset {dataset!r} has no {split} split here")
    target = resolve_device(device)
    model.to(target)
    amp_dtype = resolve_amp(amp, target)
    metrics = evaluate(model, loader, target, amp=amp_dtype, progress=progress, desc=split)
    if tta != "none":
        augmented = evaluate(model, loader, target, amp=amp_dtype, progress=progress, desc=f"{split} tta", tta=tta)
        metrics["tta"] = {"mode": tta, **{k: augmented[k] for k in ("top1", "top5", "loss")}}
    return metrics, splits


def _preprocessing_of(model: torch.nn.Module, source: str) -> dict[str, Any]:
    """The data-set options that preprocess images for ``model`` as in training, checked before any data is
    read: they come from the file's ``default_cfg`` (a pixel_scale of 0 would divide by zero)."""
    cfg = model_config(model)
    try:
        Normalization.from_config(cfg)
    except ValueError as exc:
        raise DamagedFileError(f"{source}: default_cfg: {first_line(exc)}") from None
    return dataset_options_from_config(cfg)


def _split_settings(record: Any, source: str) -> tuple[float, int]:
    """``(val_fraction, seed)`` the checkpoint's run split its data with (defaults for files without a
    training config), so that ``split="val"`` rebuilds the run's validation images."""
    config = record.get("config", {}) if isinstance(record, dict) else {}
    if not isinstance(config, dict):
        raise DamagedFileError(f"{source}: 'config' must be a mapping of settings, got {type(config).__name__}")
    val_fraction, seed = config.get("val_fraction", 0.1), config.get("seed", 0)
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise DamagedFileError(f"{source}: config.val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DamagedFileError(f"{source}: config.seed must be a whole number, got {seed!r}")
    return float(val_fraction), seed
