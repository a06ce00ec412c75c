"""``fit``: the training loop (any classifier ``nn.Module``), with validation-based model selection, resumable
checkpoints, mixed precision, gradient accumulation/clipping and DistributedDataParallel."""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from squeezelab.data import DatasetSplits, InMemoryImages, Loaders, build_loaders, epoch_seed
from squeezelab.models.profile import count_params
from squeezelab.models.registry import ModelConfig, set_model_config
from squeezelab.models.transfer import classifier_parameters
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import remove_stale_temporaries

from .averaging import WeightAverage
from .checkpoint import BEST, LAST, load_checkpoint, load_weights, resume_state
from .config import TrainConfig
from .device import DistInfo, autocast, grad_scaler, join_process_group, resolve_amp, resolve_device
from .evaluate import evaluate
from .initialization import dirac_init, first_conv, fit_patch_whitening, set_batch_norm
from .optim import build_optimizer, build_scheduler, optimizer_steps_per_epoch
from .rundir import RunDir

CHECK_EVERY = 20  # batches between host syncs for the progress bar and the NaN check
RESUMABLE_KEYS_IGNORED = ("workers", "eval_batch_size", "device")  # settings that do not change the result
DEAD_OUTPUT_EPOCHS = 3  # constant validation epochs in a row before a class output is called dead


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class FitResult:
    """What ``fit`` returns. ``model`` holds the best-by-validation weights (the last ones without a val split)."""

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_top1: float | None
    test: dict[str, Any] | None
    run_dir: Path | None
    seconds: float
    # why the trained model is useless (it predicts one class for every image), or None; the command line
    # exits non-zero with it
    collapse: str | None = None


@dataclass
class _State:
    epoch: int = 0  # completed epochs
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_top1: float | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    seconds: float = 0.0


def fit(
    model: nn.Module,
    config: TrainConfig,
    data: DatasetSplits | Loaders,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    evaluate_test: bool = True,
    teacher: nn.Module | None = None,
    resume_hint: str | None = None,
) -> FitResult:
    """Train ``model`` as ``config`` says on ``data`` (splits, or loaders from ``build_loaders``).

    Works for any classifier module returning ``(N, classes)`` logits, including modules with
    ``torch.nn.utils.parametrize`` parametrizations: parameters are found by shape, never by name. After
    training the model holds the weights of the epoch with the best validation top-1 and is evaluated once on
    the test split. With ``run_dir`` every epoch writes checkpoints, metrics and plots there (see
    ``squeezelab.train.rundir``); ``resume=True`` continues from ``run_dir/last.pt``. Under ``torchrun`` the
    model is wrapped in ``DistributedDataParallel`` and only rank 0 writes files or logs. With
    ``config.distill`` > 0 the loss mixes in the soft targets of ``teacher`` (a module: the model file named by
    ``config.teacher`` is loaded by :func:`~squeezelab.train.train_from_config`), which runs frozen in eval mode. On Ctrl-C, ``resume_hint`` (default: the
    ``squeezelab train --resume`` command) tells the user how to continue.
    """
    dist_info, own_group = join_process_group(config.device)
    device = resolve_device(config.device, dist_info.local_rank)
    amp = resolve_amp(config.amp, device)
    loaders = data if isinstance(data, Loaders) else _loaders(data, config, dist_info)
    if loaders.train is None:
        raise ValueError(f"dataset {loaders.splits.name!r} has no training split")
    _record_preprocessing(model, loaders.splits)
    config = _resolved(config, model, loaders.splits)
    say = log if (log is not None and dist_info.is_main) else (lambda _message: None)
    show_bars = progress and dist_info.is_main
    run = RunDir(run_dir, enabled=dist_info.is_main)

    _check_tta(config, loaders.splits)
    if not resume:
        _initialise(model, config, loaders.splits)
    frozen_later = _prepare_parameters(model, config)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = optimizer_steps_per_epoch(len(loaders.train), config.accumulate)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    scaler = grad_scaler(device, amp)
    averager = _weight_average(config, config.epochs * steps_per_epoch)
    state = _State()
    if resume:
        state = _resume(run, model, optimizer, scheduler, scaler, averager, config, say)
    run.write_config(config)
    train_model = _wrap(model, config, device, dist_info)
    criterion = training_loss(config, _teacher(teacher, config), device, amp)

    if state.epoch < config.epochs:  # a finished run being resumed only reloads its best weights
        say(f"training {config.model} on {loaders.splits.describe()} | {device}, amp {_dtype_name(amp)}, "
            f"{count_params(model):,} parameters, {config.epochs} epochs")
    dead_outputs = _DeadOutputWatch(list(loaders.splits.class_names))
    last_val: dict[str, Any] | None = None  # the final validation, for a run without a test split
    try:
        for epoch in range(state.epoch, config.epochs):
            epoch_start = time.perf_counter()
            _seed_epoch(config.seed, epoch, dist_info.rank)
            loaders.train.set_epoch(epoch)
            no_grad_params = frozen_later(epoch)
            train = _train_epoch(
                train_model, loaders.train, criterion, optimizer, scheduler, scaler, config, device, amp, epoch, show_bars,
                averager=averager, plain_model=model, no_grad_params=no_grad_params,
            )
            _adopt_rank0_buffers(model, dist_info)
            if averager is not None:
                averager.end_epoch(model)
            extra = _averaging_state(model, averager)
            with averager.averaged(model) if averager is not None else contextlib.nullcontext():
                val = evaluate(model, loaders.val, device, amp=amp, channels_last=config.channels_last) if loaders.val else None
                if val is not None:
                    last_val = val
                    _check_finite_validation(val["loss"], epoch)
                    dead_outputs.update(val["constant_outputs"], last_epoch=epoch + 1 == config.epochs)
                row = _history_row(epoch, train, val, optimizer, time.perf_counter() - epoch_start)
                state.history.append(row)
                improved = val is None or state.best_val_top1 is None or val["top1"] > state.best_val_top1
                if improved:
                    state.best_epoch, state.best_val_top1 = epoch + 1, (val["top1"] if val else None)
                    state.best_weights = _cpu_copy(model.state_dict())
                state.epoch = epoch + 1
                state.seconds += row["epoch_time"]
                _save_epoch(run, model, optimizer, scheduler, scaler, config, state, improved, extra)
            say(_epoch_line(row, config.epochs, improved and val is not None))
    except NonFiniteLossError as exc:
        last = run.file(LAST)
        kept = f"last good checkpoint: {last} (epoch {state.epoch})" if last is not None and state.epoch else "no checkpoint written"
        raise NonFiniteLossError(f"{exc}; stopped, {kept}") from None
    except KeyboardInterrupt:
        if run.path is not None and dist_info.is_main:
            print(f"\ninterrupted: {resume_hint or f'resume with `squeezelab train --resume {run.path}`'}", file=sys.stderr)
        raise

    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    test = None
    if evaluate_test and loaders.test is not None:
        # full precision: the test figure describes the fp32 weights users keep, whatever trained them
        test = evaluate(model, loaders.test, device, channels_last=config.channels_last, progress=show_bars, desc="test")
        say(f"test (best epoch {state.best_epoch}): top-1 {test['top1']:.2f}%  top-5 {test['top5']:.2f}%  loss {test['loss']:.4f}")
        if config.tta != "none":
            tta = evaluate(model, loaders.test, device, channels_last=config.channels_last, progress=show_bars, desc="test tta", tta=config.tta)
            test["tta"] = {"mode": config.tta, **{k: tta[k] for k in ("top1", "top5", "loss")}}
            say(f"test with tta {config.tta}: top-1 {tta['top1']:.2f}%  top-5 {tta['top5']:.2f}%  loss {tta['loss']:.4f}")
    written = run.path if run.enabled else None
    collapse = collapse_reason(test or last_val, loaders.splits.class_names)
    result = FitResult(model, state.history, state.best_epoch, state.best_val_top1, test, written, state.seconds, collapse)
    run.write_results(_results_json(result, config, loaders.splits, model), test["confusion"] if test else None, loaders.splits.class_names)
    if own_group:
        dist.destroy_process_group()
    return result


def _check_tta(config: TrainConfig, splits: DatasetSplits) -> None:
    if config.tta != "none" and min(splits.input_size[1:]) < 2:
        raise ValueError(f"tta: {config.tta} needs image inputs, but {splits.name} gives {'x'.join(map(str, splits.input_size))}")


def _initialise(model: nn.Module, config: TrainConfig, splits: DatasetSplits) -> None:
    """Identity and whitening initialisation of a new run (a resumed one has its weights already)."""
    if config.init == "dirac":
        dirac_init(model)
    if config.whitening != "none":
        if not isinstance(splits.train, InMemoryImages):
            raise ValueError(f"whitening: needs training images held in memory ({splits.name} is read from files)")
        images = splits.normalization(splits.train.images[: config.whitening_images])
        fit_patch_whitening(first_conv(model), images)


def _prepare_parameters(model: nn.Module, config: TrainConfig) -> Callable[[int], list[torch.Tensor]]:
    """Freeze what the config freezes; returns ``epoch -> parameters whose gradients are dropped``.

    A parameter that trains for some epochs only (the whitening bias) keeps ``requires_grad``, so that
    DistributedDataParallel still sees every gradient; its gradient is dropped before the optimizer step,
    which then leaves it (and its momentum) untouched, as a frozen parameter.
    """
    set_batch_norm(model, config.bn_momentum, config.bn_weight_frozen)
    whitening_bias = _whitening_bias(model, config)
    backbone = _backbone(model) if config.freeze_epochs else []
    return lambda epoch: (whitening_bias if epoch >= (config.whitening_bias_epochs or 0) else []) + (
        backbone if epoch < config.freeze_epochs else []
    )


def _whitening_bias(model: nn.Module, config: TrainConfig) -> list[torch.Tensor]:
    """Freezes a frozen whitening layer's filters; returns its bias if that trains for some epochs only."""
    if config.whitening == "none":
        return []
    conv = first_conv(model)
    if config.whitening == "frozen":
        conv.weight.requires_grad_(False)
    return [conv.bias] if conv.bias is not None and config.whitening_bias_epochs is not None else []


def _backbone(model: nn.Module) -> list[torch.Tensor]:
    """Every trainable parameter but the classifier's: frozen for ``freeze_epochs`` when fine-tuning."""
    head = {id(p) for p in classifier_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in head]


def _weight_average(config: TrainConfig, total_steps: int) -> WeightAverage | None:
    if config.weight_averaging == "none":
        return None
    return WeightAverage(
        config.weight_averaging, config.ema_decay, config.ema_every, config.ema_start_epoch, config.ema_warmup_power, total_steps
    )


def _averaging_state(model: nn.Module, averager: WeightAverage | None) -> dict[str, Any]:
    """What a checkpoint needs beyond the (averaged) weights to resume: the average, and in EMA mode the
    weights being trained, which differ from the saved ones."""
    if averager is None:
        return {}
    extra: dict[str, Any] = {"weight_average": averager.state_dict()}
    if averager.mode == "ema":
        extra["training_weights"] = _cpu_copy(model.state_dict())
    return extra


def _loaders(splits: DatasetSplits, config: TrainConfig, dist_info: DistInfo) -> Loaders:
    return build_loaders(
        splits,
        config.batch_size,
        config.workers,
        distributed=dist_info.enabled,
        eval_batch_size=config.eval_batch_size,
        seed=config.seed,
    )


def _record_preprocessing(model: nn.Module, splits: DatasetSplits) -> None:
    """Store the data's input size, statistics and class names in the model's ``default_cfg``.

    Exported files and ``squeezelab eval`` then preprocess images exactly as in training.
    """
    cfg = getattr(model, "default_cfg", None)
    if isinstance(cfg, ModelConfig):
        if cfg.num_classes != splits.num_classes:
            raise ValueError(f"the model outputs {cfg.num_classes} classes but {splits.name} has {splits.num_classes}")
        set_model_config(model, splits.model_config(cfg))


def _resolved(config: TrainConfig, model: nn.Module, splits: DatasetSplits) -> TrainConfig:
    """The config as this run really is: the model's spec and the data's name, size and channels.

    Written to ``config.yaml`` so that ``squeezelab train --config`` rebuilds the same model on the same data.
    Class count and channels come from the data when the model is rebuilt, so they are not model arguments.
    """
    changes = {"dataset": splits.name, "input_size": list(splits.input_size[1:]), "in_chans": splits.input_size[0]}
    spec = getattr(model, "model_spec", None)
    if spec:
        kwargs = {k: v for k, v in spec.get("kwargs", {}).items() if k not in ("num_classes", "in_chans")}
        changes.update(model=spec["name"], model_kwargs=kwargs)
    return config.updated(**changes)


def _adopt_rank0_buffers(model: nn.Module, dist_info: DistInfo) -> None:
    """Give every process rank 0's batch-norm statistics. DDP broadcasts them before each forward, but each
    process then updates its own copy with its own last batch; without this the sharded validation and test
    figures would mix two slightly different models, neither quite the one rank 0 saves."""
    if dist_info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _wrap(model: nn.Module, config: TrainConfig, device: torch.device, dist_info: DistInfo) -> nn.Module:
    wrapped = model
    if dist_info.enabled:
        if config.sync_bn and device.type == "cuda":
            wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(wrapped)
        wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        wrapped = cast(nn.Module, torch.compile(wrapped))
    return wrapped


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed every global random stream (dropout, user code) from (seed, epoch, rank), like the loaders."""
    value = epoch_seed(seed, epoch, 2 + rank)
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value % (1 << 32))


def _teacher(teacher: nn.Module | None, config: TrainConfig) -> nn.Module | None:
    if teacher is None and config.teacher:
        raise ValueError(f"teacher: fit takes the teacher as a module; load {config.teacher} with squeezelab.load_model and pass teacher=")
    if teacher is not None and not config.distill:
        raise ValueError("a teacher was given but distill is 0: set distill to the weight of its targets")
    if teacher is None and config.distill:
        raise ValueError(f"distill: {config.distill} needs a teacher (the teacher setting, a model file)")
    return teacher


Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def training_loss(config: TrainConfig, teacher: nn.Module | None, device: torch.device, amp: torch.dtype | None) -> Loss:
    """``loss(logits, images, labels)``: cross-entropy, mixed with the teacher's softened targets if any."""

    def labels_only(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)

    if teacher is None:
        return labels_only
    teacher = teacher.to(device).eval().requires_grad_(False)
    if config.channels_last:
        teacher.to(memory_format=torch.channels_last)
    temperature, weight = config.distill_temperature, config.distill

    def with_teacher(logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(device, amp):
            targets = teacher(images)
        if targets.shape != logits.shape:
            raise ValueError(f"teacher: outputs shape {tuple(targets.shape)}, the model {tuple(logits.shape)}")
        student = F.log_softmax(logits.float() / temperature, 1)
        soft = F.kl_div(student, F.log_softmax(targets.float() / temperature, 1), log_target=True, reduction="batchmean")
        # T^2 keeps the soft term's gradients on the scale of the hard term's (Hinton et al.)
        return (1 - weight) * labels_only(logits, images, labels) + weight * temperature**2 * soft

    return with_teacher


def _train_epoch(
    model, loader, criterion: Loss, optimizer, scheduler, scaler, config: TrainConfig, device, amp, epoch: int, show_bar: bool,
    *, averager: WeightAverage | None = None, plain_model: nn.Module | None = None, no_grad_params: list[torch.Tensor] | None = None,
) -> dict:
    """One epoch of training; ``plain_model`` is ``model`` without its DDP/compile wrapper (for averaging)."""
    model.train()
    batches = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    bar = tqdm(total=batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not show_bar, leave=False, dynamic_ncols=True)
    with bar:
        for index, (images, labels) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            step_now = (index + 1) % config.accumulate == 0 or index + 1 == batches
            # Under DDP, gradients are only all-reduced on the batch that ends an accumulation group.
            sync = contextlib.nullcontext() if step_now or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast(device, amp):
                    logits = model(images)
                loss = criterion(logits, images, labels)
                scaler.scale(loss / config.accumulate).backward()
            if step_now:
                for param in no_grad_params or ():
                    param.grad = None  # the optimizer then skips it, momentum and weight decay included
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if averager is not None:
                    averager.after_step(plain_model or model, scheduler.last_epoch, epoch)
            loss_sum += loss.detach().double() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            bar.update()
            if (index + 1) % CHECK_EVERY == 0 or index + 1 == batches:
                running = float(loss_sum) / seen
                if not math.isfinite(running):
                    raise NonFiniteLossError(f"training loss became {running} at epoch {epoch + 1}, batch {index + 1}")
                bar.set_postfix(loss=f"{running:.4f}", acc=f"{100.0 * int(correct) / seen:.2f}%", refresh=False)
    seconds = time.perf_counter() - start
    totals = torch.tensor([float(loss_sum), float(correct), float(seen)], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and getattr(loader, "sharded", False):
        dist.all_reduce(totals)
    loss_total, correct_total, seen_total = totals.tolist()
    return {
        "loss": loss_total / seen_total,
        "top1": 100.0 * correct_total / seen_total,
        "images": int(seen_total),
        "images_per_s": seen_total / seconds,
    }


def _check_finite_validation(loss: float, epoch: int) -> None:
    """Stop before saving an epoch whose weights give a non-finite validation loss: a finite training loss
    does not prove them sound (a last step can blow up the weights, or autocast overflow on other data)."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"validation loss became {loss} at epoch {epoch + 1}")


def _history_row(epoch: int, train: dict, val: dict | None, optimizer, seconds: float) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "train_loss": train["loss"],
        "train_top1": train["top1"],
        "val_loss": val["loss"] if val else None,
        "val_top1": val["top1"] if val else None,
        "val_top5": val["top5"] if val else None,
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": train["images_per_s"],
        "epoch_time": seconds,
        "train_images": train["images"],
    }


class _DeadOutputWatch:
    """Warns (once per new class) about class outputs that stay constant over the validation set.

    Early in training an output can be constant for an epoch or two and recover, so a class is reported
    after ``DEAD_OUTPUT_EPOCHS`` constant epochs in a row, or if it is still constant at the last epoch.
    """

    def __init__(self, class_names: list[str] | None) -> None:
        self.class_names = class_names
        self.streaks: dict[int, int] = {}
        self.reported: set[int] = set()

    def update(self, constant: list[int], last_epoch: bool) -> None:
        self.streaks = {c: self.streaks.get(c, 0) + 1 for c in constant}
        dead = {c for c, epochs in self.streaks.items() if epochs >= DEAD_OUTPUT_EPOCHS or last_epoch}
        if not self.reported.issuperset(dead):
            self.reported |= dead
            self._warn(sorted(dead))

    def _warn(self, classes: list[int]) -> None:
        names = [self.class_names[c] if self.class_names else str(c) for c in classes]
        warnings.warn(
            f"class output(s) {', '.join(names)} gave the same logit for every validation image (dead units); "
            "behind a final ReLU, as in SqueezeNet's classifier, they get no gradient and stay dead. "
            "Lower the learning rate or warm up longer, use AdamW, or build the model with final_relu=False.",
            RuntimeWarning,
            stacklevel=3,
        )


def collapse_reason(metrics: dict[str, Any] | None, class_names: list[str] | tuple[str, ...] | None) -> str | None:
    """Why a trained model is useless, judged on an evaluation: every class output gave the same logit for
    every image (they all died), so it answers one class whatever the image; or None.

    An undertrained model that happens to prefer one class still varies its logits: that is not a collapse.
    """
    if metrics is None or metrics["images"] < 2:
        return None
    confusion = metrics["confusion"]
    if len(metrics["constant_outputs"]) < len(confusion):
        return None
    predicted = [column for column, counts in enumerate(zip(*confusion)) if any(counts)]
    name = ", ".join(class_names[c] if class_names else str(c) for c in predicted)
    return (
        f"training failed: the model predicts class {name} for all {metrics['images']:,} images (top-1 {metrics['top1']:.2f}%), "
        "its class outputs died; lower the learning rate or use batch norm and no final ReLU (the default model, squeezenet_bn_cifar)"
    )


def _epoch_line(row: dict, epochs: int, best: bool) -> str:
    val = f" | val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}%" if row["val_top1"] is not None else ""
    return (
        f"epoch {row['epoch']:>3}/{epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.2f}%{val}"
        f" | lr {row['lr']:.3g} | {row['images_per_s']:,.0f} img/s | {row['epoch_time']:.1f} s{' *' if best else ''}"
    )


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def _training_state(optimizer, scheduler, scaler, config: TrainConfig, state: _State) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": state.epoch,
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_val_top1": state.best_val_top1,
        "seconds": state.seconds,
        "config": config.to_dict(),
    }


def _save_epoch(
    run: RunDir, model, optimizer, scheduler, scaler, config: TrainConfig, state: _State, improved: bool, extra: dict[str, Any]
) -> None:
    if not run.enabled:
        return
    training = {**_training_state(optimizer, scheduler, scaler, config, state), **extra}
    if improved:
        run.write_checkpoint(BEST, model, **training)
    run.write_checkpoint(LAST, model, **training)
    run.write_epoch(state.history, f"{config.model} on {config.dataset}")


def _resume(run: RunDir, model, optimizer, scheduler, scaler, averager: WeightAverage | None, config: TrainConfig, say) -> _State:
    if run.path is None:
        raise ValueError("resume needs a run directory")
    last = run.path / LAST
    if not last.is_file():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from")
    # left by a writer killed mid-save; only the writing process looks (another machine's live writer
    # would look dead from here)
    removed = remove_stale_temporaries(run.path) if run.enabled else []
    if removed:
        say(f"removed {len(removed)} unfinished temporary file(s) of a killed run: {', '.join(p.name for p in removed)}")
    record = resume_state(load_checkpoint(last), last)
    _check_same_config(record.get("config", {}), config, last)
    load_weights(model, record, str(last))
    if "training_weights" in record:  # EMA: the checkpoint's weights are the average, not the trained ones
        load_weights(model, {"state_dict": record["training_weights"]}, str(last))
    if averager is not None:
        _load_part(lambda saved: averager.load_state_dict(saved, model), record.get("weight_average", {}), last, "weight_average")
    for name, part in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        _load_part(part.load_state_dict, record[name], last, name)
    best_file = run.path / BEST
    best_weights = load_checkpoint(best_file)["state_dict"] if best_file.is_file() else None
    state = _State(record["epoch"], list(record["history"]), record["best_epoch"], record["best_val_top1"], best_weights, record.get("seconds", 0.0))
    say(f"resuming {run.path} after epoch {state.epoch}")
    return state


def _load_part(load_state_dict: Callable[[Any], Any], saved: Any, path: Path, name: str) -> None:
    """``load_state_dict(saved)`` for the checkpoint's entry ``name``; an entry that does not fit (a crafted
    file, or one from another model) raises one line naming the file and the entry."""
    try:
        load_state_dict(saved)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise DamagedFileError(f"{path}: its {name!r} does not fit this run ({type(exc).__name__}: {first_line(exc)})") from None


def _check_same_config(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    # Compare as JSON: tuples in model_kwargs come back from a YAML config as lists. A setting added to
    # TrainConfig after the run started is absent from its checkpoint: it had the default value.
    saved = json.loads(json.dumps({**TrainConfig().to_dict(), **saved}))
    current = json.loads(json.dumps(config.to_dict()))
    changed = sorted(k for k in current if k not in RESUMABLE_KEYS_IGNORED and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed[:4])
        raise ValueError(f"{source}: the run was started with other settings ({details}); resume with its own config.yaml")


def _results_json(result: FitResult, config: TrainConfig, splits: DatasetSplits, model: nn.Module) -> dict[str, Any]:
    test = result.test or {}
    return {
        "model": config.model,
        "model_kwargs": config.model_kwargs,
        "dataset": f"{splits.name} ({splits.describe()})",
        "params": count_params(model),
        "epochs": result.history[-1]["epoch"] if result.history else 0,
        "best_epoch": result.best_epoch,
        "best_val_top1": result.best_val_top1,
        "train_seconds": result.seconds,
        "test": {k: test[k] for k in ("top1", "top5", "loss", "images", "images_per_s", "tta") if k in test},
        "test_per_class": dict(zip(splits.class_names, test.get("per_class", []))),
    }


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "off" if dtype is None else str(dtype).replace("torch.", "")
