"""The Deep Compression pipeline in one call: prune -> (fine-tune) -> weight-share -> (fine-tune) ->
entropy-code to a ``.sqz`` file -> evaluate the model decoded from that file."""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sized, cast

import torch
import torch.distributed as dist
import torch.nn as nn

from squeezelab.data import BatchCollate, DatasetSplits, build_loaders
from squeezelab.models.profile import MB
from squeezelab.models.registry import model_config
from squeezelab.train import QUICKSTART_CONFIG, DistInfo, TrainConfig, build_run_data, distributed_session, evaluate
from squeezelab.train.checkpoint import LAST
from squeezelab.train.rundir import RESULTS

from .biascorrection import correct_biases
from .finetune import finetune, finetune_config
from .layers import parse_per_layer
from .pruning import DensitySpec, GranularitySpec, iterative_prune
from .report import SizeReport
from .runrecord import claim_run_dir, fingerprint
from .sharing import fix_assignments, quantize
from .sqz import inspect_compressed, load_compressed, save_compressed
from .structured import prune_filters

EVAL_BATCH = 256
SETTINGS_FILE = "compression.json"


@dataclass
class CompressionOutcome:
    """The file written, its size report, and test metrics of the dense and of the decoded model.

    ``model`` is the compressed model (a new, smaller one when filters were pruned).
    """

    model: nn.Module
    path: Path
    report: SizeReport
    densities: dict[str, float]
    codebook_sizes: dict[str, int]
    dense_metrics: dict | None = None
    compressed_metrics: dict | None = None
    finetune_results: list = field(default_factory=list)

    def summary(self) -> str:
        report = self.report
        lines = [
            f"dense fp32:  {report.dense_fp32_bytes:>11,} bytes ({report.dense_fp32_bytes / MB:.3f} MB)"
            + _metrics_text(self.dense_metrics),
            f"compressed:  {report.file_bytes:>11,} bytes ({report.file_bytes / MB:.3f} MB) -> {self.path}"
            + _metrics_text(self.compressed_metrics),
            f"ratio {report.ratio:.1f}x; {report.nonzeros:,} of {report.params:,} weights kept "
            f"({report.nonzeros / max(report.params, 1):.1%})",
        ]
        return "\n".join(lines)


def _metrics_text(metrics: dict | None) -> str:
    if not metrics:
        return ""
    return f" | test top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  ({metrics['images']:,} images)"


def compress_and_evaluate(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    density: DensitySpec | None = None,
    granularity: GranularitySpec = "weight",
    bits: int | Mapping[str, int] = 5,
    init: str = "optimal",
    centroid_update: str = "mean",
    shared_training: str = "centroids",
    keep_filters: float | Mapping[str, float] | None = None,
    data: DatasetSplits | None = None,
    finetune_epochs: int = 0,
    prune_steps: int = 1,
    stage_epochs: Mapping[str, int] | None = None,
    stage_lr: Mapping[str, float] | None = None,
    train_config: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    index_coder: str = "auto",
    position_coder: str = "auto",
    tensor_dtype: str = "float32",
    fold_batch_norm: bool = False,
    bias_correction: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> CompressionOutcome:
    """Compress ``model`` (in place) into ``path``, fine-tuning on ``data`` if ``finetune_epochs`` > 0.

    ``granularity`` prunes single weights (``"weight"``) or whole kernels (``"kernel"``), per layer if a mapping.
    ``keep_filters`` first removes whole filters (:func:`.structured.prune_filters`, then fine-tuning);
    with ``prune_steps`` > 1 pruning is iterative (each step followed by ``finetune_epochs`` of
    fine-tuning); after weight sharing the model is fine-tuned for ``finetune_epochs`` more: its centroids, or
    with ``shared_training="latent"`` quantization-aware (see :func:`.sharing.quantize`).
    ``stage_epochs`` gives named stages ("filters", "prune1" .. "prune<steps>", "quantized") their own
    number of epochs, for example a long last pruning stage, where most of the accuracy is lost, and
    ``stage_lr`` their own peak learning rate (quantization-aware fine-tuning wants a lower one). If
    ``train_config.distill`` > 0, fine-tuning also learns from the dense model's soft targets (a frozen copy
    taken before any pruning). ``bias_correction`` > 0 ends with :func:`.correct_biases` on that many
    training images of ``data`` (used without their labels), the dense model as reference. With ``data``
    labelled with the model's classes, the dense model and the model decoded from the written file are
    evaluated on its test split (data of other classes serves bias correction only). Under ``torchrun``
    every fine-tuning stage is data-parallel (a DDP :func:`~squeezelab.train.fit`), every process returns
    the same outcome and only rank 0 writes files.

    With ``run_dir``, calling again with the same model and settings resumes an interrupted run at the latest
    stage that has a checkpoint (``last.pt``): it holds everything the stages before it produced, so those are
    skipped (their test figures come from their ``results.json``; only the latest stage's folder is needed),
    and that stage continues from its checkpoint (a finished one just reloads its best weights). Since pruning
    and k-means are deterministic functions of the weights, every later stage starts where the first attempt
    would have. Another model or other compression settings in the same ``run_dir`` are an error.
    """
    if finetune_epochs < 0 or prune_steps < 1:
        raise ValueError(f"need finetune_epochs >= 0 and prune_steps >= 1, got {finetune_epochs}, {prune_steps}")
    stages = _stage_names(prune_steps, keep_filters is not None, density is not None)
    epochs = _epochs_per_stage(finetune_epochs, stage_epochs or {}, stages)
    stage_lr = _learning_rates_per_stage(stage_lr or {}, stages)
    tuning = any(epochs.values())
    if tuning and data is None:
        raise ValueError("fine-tuning needs data (a dataset name and root)")
    if bias_correction < 0:
        raise ValueError(f"--bias-correction: expected a number of images >= 0, got {bias_correction}")
    if bias_correction and (data is None or data.train is None):
        raise ValueError("bias correction needs the training images of a data set (a dataset name and root)")
    labelled = data is not None and _labels_fit(model, data)
    if tuning and not labelled:
        assert data is not None  # fine-tuning without data raised above
        raise ValueError(f"fine-tuning needs data labelled with the model's classes; {_class_mismatch(model, data)}")
    if bias_correction and keep_filters is not None:
        raise ValueError("bias correction compares each layer with the dense model's, which filter pruning reshapes")
    config = finetune_config(finetune_epochs or 1, train_config)
    with distributed_session(config.device) as dist_info:
        test_loader = build_loaders(data, EVAL_BATCH).test if labelled and data is not None else None
        if data is not None and not labelled and log is not None:
            log(f"no accuracy measured: {_class_mismatch(model, data)} (its images serve bias correction only)")
        dense_metrics = evaluate(model, test_loader) if test_loader is not None else None
        dense = copy.deepcopy(model).eval() if (tuning and config.distill) or bias_correction else None
        teacher = dense if tuning and config.distill else None
        runs = Path(run_dir) if run_dir is not None else None
        if runs is not None and tuning:
            settings: dict[str, Any] = {"model": fingerprint(model), "density": density, "bits": bits, "init": init,
                                        "centroid_update": centroid_update, "keep_filters": keep_filters, "prune_steps": prune_steps}  # fmt: skip
            if stage_epochs:
                settings["stage_epochs"] = dict(stage_epochs)
            if granularity != "weight":
                settings["granularity"] = granularity
            if shared_training != "centroids":
                settings["shared_training"] = shared_training
            claim_run_dir(runs / SETTINGS_FILE, settings, dist_info.is_main, "a compression")
        results = []
        superseded = _superseded_stages(runs, [stage for stage in stages if epochs[stage]]) if runs is not None else set()

        def tune(stage: str) -> None:
            if stage in superseded:
                assert runs is not None  # only a run_dir has superseded stages
                results.append(_recorded_test(runs / stage))
            elif epochs[stage]:
                assert data is not None  # fine-tuning without data raised above
                stage_dir = runs / stage if runs else None
                stage_config = config.updated(epochs=epochs[stage], lr=stage_lr.get(stage, config.lr))
                result = finetune(model, data, stage_config, stage_dir, resume=True, progress=progress, log=log, teacher=teacher)
                results.append(result.test)

        if keep_filters is not None:
            model = prune_filters(model, keep_filters)
            tune("filters")
        densities: dict[str, float] = {}
        if density is not None:
            densities = iterative_prune(model, density, prune_steps, lambda _m, step: tune(f"prune{step}"), granularity)
        codebook_sizes = quantize(model, bits, init, centroid_update, shared_training)
        tune("quantized")
        fix_assignments(model, centroid_update)
        if bias_correction:
            assert dense is not None and data is not None  # both checked / made above for bias correction
            correct_biases(model, dense, _training_images(data, bias_correction, config.seed))
        report = _save_on_main(dist_info, model, path, index_coder, position_coder, tensor_dtype, fold_batch_norm)
        decoded = load_compressed(path)
        compressed_metrics = evaluate(decoded, test_loader) if test_loader is not None else None
    return CompressionOutcome(model, Path(path), report, densities, codebook_sizes, dense_metrics, compressed_metrics, results)


def _labels_fit(model: nn.Module, data: DatasetSplits) -> bool:
    cfg = getattr(model, "default_cfg", None)
    return cfg is None or cfg.num_classes == data.num_classes


def _class_mismatch(model: nn.Module, data: DatasetSplits) -> str:
    return f"{data.name or 'the data'} has {data.num_classes} classes, the model {model_config(model).num_classes}"


def _training_images(data: DatasetSplits, count: int, seed: int) -> torch.Tensor:
    """``count`` training images (a fixed random subset), normalised as the model expects, not augmented."""
    train = data.train
    assert train is not None  # compress_and_evaluate checked it before calling this
    # (torch's Dataset declares no __len__; the training sets of DatasetSplits all have one)
    chosen = torch.randperm(len(cast(Sized, train)), generator=torch.Generator().manual_seed(seed))[:count]
    return BatchCollate(data.normalization)([train[int(i)] for i in chosen])[0]


def parse_stage_epochs(text: str | None) -> dict[str, int]:
    """``prune5=16,quantized=4`` -> ``{"prune5": 16, "quantized": 4}`` (the ``--stage-epochs`` option)."""
    return _parse_stage_values(text, int, "--stage-epochs", "STAGE=N,... such as prune5=16,quantized=4")


def parse_stage_lr(text: str | None) -> dict[str, float]:
    """``quantized=0.005`` -> ``{"quantized": 0.005}`` (the ``--stage-lr`` option)."""
    return _parse_stage_values(text, float, "--stage-lr", "STAGE=LR,... such as prune3=0.02,quantized=0.005")


def _parse_stage_values(text: str | None, convert: Callable[[str], float], option: str, expected: str) -> dict:
    if not text:
        return {}
    parsed = parse_per_layer(text, convert, option)
    if not isinstance(parsed, dict):
        raise ValueError(f"{option}: expected {expected}, got {text!r}")
    return parsed


def _stage_names(prune_steps: int, filters: bool, pruning: bool) -> list[str]:
    stages = (["filters"] if filters else []) + ([f"prune{step}" for step in range(1, prune_steps + 1)] if pruning else [])
    return stages + ["quantized"]


def _epochs_per_stage(default: int, overrides: Mapping[str, int], stages: list[str]) -> dict[str, int]:
    _check_stage_names("stage_epochs", overrides, stages)
    too_few = {stage: n for stage, n in overrides.items() if n < 1}
    if too_few:
        raise ValueError(f"stage_epochs: epochs must be >= 1, got {too_few}")
    return {stage: overrides.get(stage, default) for stage in stages}


def _learning_rates_per_stage(overrides: Mapping[str, float], stages: list[str]) -> dict[str, float]:
    _check_stage_names("stage_lr", overrides, stages)
    not_positive = {stage: lr for stage, lr in overrides.items() if not lr > 0}
    if not_positive:
        raise ValueError(f"stage_lr: learning rates must be > 0, got {not_positive}")
    return dict(overrides)


def _check_stage_names(what: str, overrides: Mapping, stages: list[str]) -> None:
    unknown = sorted(set(overrides) - set(stages))
    if unknown:
        raise ValueError(f"{what}: no stage named {', '.join(map(repr, unknown))} in this run; its stages are {', '.join(stages)}")


def _superseded_stages(runs: Path, stages: list[str]) -> set[str]:
    """The stages before the latest one that has a checkpoint in ``runs``: that checkpoint holds all they left
    (weights, masks, shared values), so a resumed run skips them and their folders may be deleted."""
    started = [index for index, stage in enumerate(stages) if (runs / stage / LAST).is_file()]
    return set(stages[: started[-1]]) if started else set()


def _recorded_test(stage_dir: Path) -> dict | None:
    """The test metrics a skipped stage recorded in its results.json (None if its folder is gone)."""
    try:
        return json.loads((stage_dir / RESULTS).read_text()).get("test") or None
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{stage_dir / RESULTS}: unreadable stage results ({exc})") from None


def _save_on_main(dist_info: DistInfo, model: nn.Module, path, *coding) -> SizeReport:
    """Under torchrun every process holds the same fine-tuned model: rank 0 writes the file, the others
    read its size report once it is complete."""
    report = save_compressed(model, path, *coding) if dist_info.is_main else None
    if dist_info.enabled:
        dist.barrier()
    return report if report is not None else inspect_compressed(path)


# The digits quickstart model (measured in docs/compression.md: about 14x smaller for 0.3-1.4 points on
# 359 test images, seconds on 2 cores): two pruning steps to a fifth of the weights (half of the stem's),
# 4-bit shared weights, four fine-tuning epochs after each stage with the quickstart's own optimiser at its
# peak learning rate, and batch-norm statistics / biases as float16 (in so small a model they would otherwise be a third of the file).
QUICKSTART_DENSITY = {"stem": 0.5, "default": 0.2}
QUICKSTART_BITS = 4
QUICKSTART_PRUNE_STEPS = 2
QUICKSTART_FINETUNE_EPOCHS = 4


def quickstart_compress(
    model: nn.Module, out_dir: str | os.PathLike, *, progress: bool = True, log: Callable[[str], None] | None = print
) -> CompressionOutcome:
    """Compress the quickstart's trained digits model to ``out_dir/model.sqz`` and evaluate both."""
    data = build_run_data(QUICKSTART_CONFIG, progress)
    out_dir = Path(out_dir)
    # the quickstart has just trained this model: stages left by an earlier quickstart in the same folder are stale
    shutil.rmtree(out_dir / "compress", ignore_errors=True)
    outcome = compress_and_evaluate(
        model,
        out_dir / "model.sqz",
        density=QUICKSTART_DENSITY,
        bits=QUICKSTART_BITS,
        data=data,
        finetune_epochs=QUICKSTART_FINETUNE_EPOCHS,
        prune_steps=QUICKSTART_PRUNE_STEPS,
        train_config=QUICKSTART_CONFIG.updated(schedule="cosine"),
        run_dir=out_dir / "compress",
        tensor_dtype="float16",
        progress=progress,
        log=log,
    )
    outcome.report.write(out_dir / "compression_report")
    return outcome
