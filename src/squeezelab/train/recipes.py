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
from squeezelab.models.registry import ModelConfig, model_config
from squeezelab.models.transfer import with_num_classes
from squeezelab.utils.errors import DamagedFileError, first_line

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


def build_run_data(config: TrainConfig, progress: bool = True, preprocessing: ModelConfig | None = None) -> DatasetSplits:
    """The config's data set at the model's input size and channels (its own defaults unless set).

    ``preprocessing``: the config of pretrained weights being fine-tuned, whose input size, statistics, channel
    order and scale the data then follows (the config's input size and channels still win when set).
    """
    own = preprocessing or get_model_config(config.model)
    options = dataset_options_from_config(preprocessing) if preprocessing is not None else {}
    options.update(
        in_chans=config.in_chans or own.input_size[0],
        input_size=tuple(config.input_size) if config.input_size else tuple(own.input_size[1:]),
    )
    return build_datasets(
        config.dataset,
        config.data_root,
        val_fraction=config.val_fraction,
        seed=config.seed,
        augment=config.augment,
        cutout=config.cutout,
        translate=config.translate,
        translate_mode=config.translate_mode,
        flip=config.flip,
        limit=config.limit,
        progress=progress,
        **options,
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
    """Build the model and data the config names and :func:`fit` them, writing ``run_dir``; the teacher and
    the pretrained weights the config names, if any, are loaded first (any file ``squeezelab.load_model`` reads)."""
    teacher = _load_model_file(config.teacher) if config.teacher else None
    if config.pretrained:
        pretrained = _load_model_file(config.pretrained)
        splits = build_run_data(config, progress, preprocessing=model_config(pretrained))
        model = _fine_tuned_start(pretrained, splits, config, log)  # fit records its architecture as the run's model
    else:
        splits = build_run_data(config, progress)
        model = build_run_model(config, splits)
    return fit(model, config, splits, run_dir, resume=resume, progress=progress, log=log, teacher=teacher)


def _load_model_file(ref: str) -> torch.nn.Module:
    # The one loader reads .sqz and Caffe files, whose decoders live above training (squeezelab.compress uses
    # fit), so it is imported when a config names a file, not with this module.
    from squeezelab.interop.loading import load_model

    return load_model(ref)


def _fine_tuned_start(
    pretrained: torch.nn.Module, splits: DatasetSplits, config: TrainConfig, log: Callable[[str], None] | None
) -> torch.nn.Module:
    """The pretrained model with a new classifier for the data's classes (seeded), in training mode."""
    held = model_config(pretrained).num_classes
    torch.manual_seed(config.seed)
    model = with_num_classes(pretrained, splits.num_classes, splits.class_names)
    if held != splits.num_classes and log is not None:
        log(f"{config.pretrained}: {held} classes -> {splits.num_classes} of {splits.name}: a new classifier, every other layer pretrained")
    check_input_size(model, splits.input_size)
    return model.train()


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


def evaluate_model(
    model: torch.nn.Module,
    dataset: str,
    root: str | Path | None = None,
    *,
    training: TrainConfig | None = None,
    split: str = "test",
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "off",
    input_size: tuple[int, ...] | None = None,
    limit: int | None = None,
    progress: bool = True,
    tta: str = "none",
    source: str = "model",
) -> tuple[dict, DatasetSplits]:
    """Evaluate ``model`` (any module ``squeezelab.load_model`` returns) on a split of ``dataset``.

    Images are preprocessed as the model's ``default_cfg`` says (what training recorded: input size,
    statistics, channel order). ``training`` is the config of the run that trained the model
    (:func:`~squeezelab.train.training_config_of` of its checkpoint): ``split="val"`` rebuilds that run's
    validation images from its seed and fraction (without it, a 10% split of seed 0). With ``tta`` (see
    :func:`~squeezelab.train.evaluate.tta_logits`) the metrics also hold ``"tta"``: top-1, top-5 and loss
    with test-time augmentation, beside the plain figures. ``source`` names the model in errors. Returns
    ``(metrics of evaluate(), the data splits)``.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, got {split!r}")
    options = _preprocessing_of(model, source)
    if input_size is not None:
        options["input_size"] = tuple(input_size[-2:])
        check_input_size(model, (model_config(model).input_size[0], *options["input_size"]))
    splits = build_datasets(
        dataset,
        root,
        val_fraction=training.val_fraction if training is not None else 0.1,
        seed=training.seed if training is not None else 0,
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
