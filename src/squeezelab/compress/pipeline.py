"""The Deep Compression pipeline in one call: prune -> (fine-tune) -> weight-share -> (fine-tune) ->
entropy-code to a ``.sqz`` file -> evaluate the model decoded from that file."""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sized, cast

import torch
import torch.distributed as dist
import torch.nn as nn

from squeezelab.data import BatchCollate, DatasetSplits, build_loaders
from squeezelab.models.profile import MB
from squeezelab.models.registry import model_config
from squeezelab.train import QUICKSTART_CONFIG, DistInfo, build_run_data, evaluate
from squeezelab.train.rundir import RESULTS

from .biascorrection import correct_biases
from .config import CompressionConfig
from .finetune import finetune
from .pruning import iterative_prune
from .report import SizeReport
from .sharing import fix_assignments, quantize
from .sqz import inspect_compressed, load_compressed, save_compressed
from .stages import StagedRun, fingerprint
from .structured import prune_filters

EVAL_BATCH = 256
SETTINGS_FILE = "compression.json"  # the resume record: starting weights and config
CONFIG_FILE = "compression.yaml"


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
    config: CompressionConfig,
    *,
    data: DatasetSplits | None = None,
    run_dir: str | os.PathLike | None = None,
    dist_info: DistInfo | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> CompressionOutcome:
    """Compress ``model`` (in place) into ``path`` as ``config`` says, fine-tuning on ``data`` after its stages.

    The stages, in order: filter pruning (``keep_filters``, :func:`.structured.prune_filters`), the pruning
    steps (``prune1`` .. ``prune<prune_steps>``, geometric steps to the target densities), weight sharing
    (``quantized``), each followed by its fine-tuning epochs (:meth:`CompressionConfig.epochs_of`): of the
    centroids after sharing, or with ``shared_training="latent"`` quantization-aware (see
    :func:`.sharing.quantize`); then bias correction (``bias_correction`` > 0: :func:`.correct_biases` on that
    many training images of ``data``, used without their labels, the dense model as reference), encoding into
    the file, and verification: with ``data`` labelled with the model's classes, the dense model and the model
    decoded from the written file are evaluated on its test split (data of other classes serves bias correction
    only). If ``config.finetune.distill`` > 0, fine-tuning also learns from the dense model's soft targets (a
    frozen copy taken before any pruning). Under ``torchrun`` the caller opens the process group
    (:func:`~squeezelab.train.distributed_session`) and passes its ``dist_info``: every fine-tuning stage is then
    data-parallel (a DDP :func:`~squeezelab.train.fit`), every process returns the same outcome and only rank 0
    writes files.

    With ``run_dir``, calling again with the same model and config resumes an interrupted run at the latest
    stage that has a checkpoint (``last.pt``): it holds everything the stages before it produced, so those are
    skipped (their test figures come from their ``results.json``; only the latest stage's folder is needed),
    and that stage continues from its checkpoint (a finished one just reloads its best weights). Since pruning
    and k-means are deterministic functions of the weights, every later stage starts where the first attempt
    would have. ``run_dir/compression.json`` records the starting weights' fingerprint and the whole config
    (``run_dir/compression.yaml`` holds the config alone, for ``squeezelab compress --config``); another model
    or any other setting in the same ``run_dir`` (a learning rate included) is an error.
    """
    dist_info = dist_info or DistInfo()
    tuned = config.tuned_stages()
    labelled = _checked_data(model, config, data, bool(tuned))
    test_loader = build_loaders(data, EVAL_BATCH).test if labelled and data is not None else None
    if data is not None and not labelled and log is not None:
        log(f"no accuracy measured: {_class_mismatch(model, data)} (its images serve bias correction only)")
    dense_metrics = evaluate(model, test_loader) if test_loader is not None else None
    distilling = bool(tuned) and config.finetune.distill > 0
    dense = copy.deepcopy(model).eval() if distilling or config.bias_correction else None
    run = StagedRun(run_dir if tuned else None, tuned)
    run.claim(SETTINGS_FILE, {"model": fingerprint(model), **config.to_dict()}, dist_info.is_main, "a compression")
    if run.root is not None and dist_info.is_main:
        config.save(run.root / CONFIG_FILE)
    tuning = _FineTuning(run, config, data, dense if distilling else None, progress, log)
    if config.keep_filters is not None:
        model = _prune_filters(model, config.keep_filters, tuning)
    densities = _prune(model, config, tuning)
    codebook_sizes = _share(model, config, tuning)
    if config.bias_correction:
        assert dense is not None and data is not None  # made above / checked by _checked_data
        _correct_biases(model, dense, data, config)
    report = _encode(model, path, config, dist_info)
    compressed_metrics = _verify(path, test_loader)
    return CompressionOutcome(model, Path(path), report, densities, codebook_sizes, dense_metrics, compressed_metrics, tuning.results)


@dataclass
class _FineTuning:
    """Fine-tunes the model after a named stage, in the stage's folder of the run, and keeps the test metrics."""

    run: StagedRun
    config: CompressionConfig
    data: DatasetSplits | None
    teacher: nn.Module | None
    progress: bool
    log: Callable[[str], None] | None
    results: list[dict | None] = field(default_factory=list)

    def after(self, stage: str, model: nn.Module) -> None:
        if not self.config.epochs_of(stage):
            return
        folder = self.run.folder(stage)
        if self.run.superseded(stage):
            assert folder is not None  # only a run with folders has superseded stages
            self.results.append(_recorded_test(folder))
            return
        assert self.data is not None  # _checked_data refused fine-tuning without data
        result = finetune(model, self.data, self.config.finetune_of(stage), folder, resume=self.run.resumes(stage),
                          progress=self.progress, log=self.log, teacher=self.teacher)  # fmt: skip
        self.results.append(result.test)


def _prune_filters(model: nn.Module, keep: float | dict[str, float], tuning: _FineTuning) -> nn.Module:
    """Structured pruning, fine-tuned: a new, smaller model."""
    pruned = prune_filters(model, keep)
    tuning.after("filters", pruned)
    return pruned


def _prune(model: nn.Module, config: CompressionConfig, tuning: _FineTuning) -> dict[str, float]:
    """The pruning steps, each fine-tuned; the densities reached (none without pruning)."""
    spec = config.density_spec()
    if spec is None:
        return {}
    return iterative_prune(model, spec, config.prune_steps, lambda pruned, step: tuning.after(f"prune{step}", pruned), config.granularity)


def _share(model: nn.Module, config: CompressionConfig, tuning: _FineTuning) -> dict[str, int]:
    """Weight sharing and its fine-tuning, ending with the plain shared weights a file stores; the codebook sizes."""
    codebook_sizes = quantize(model, config.bits, config.init, config.centroid_update, config.shared_training)
    tuning.after("quantized", model)
    fix_assignments(model, config.centroid_update)
    return codebook_sizes


def _correct_biases(model: nn.Module, dense: nn.Module, data: DatasetSplits, config: CompressionConfig) -> None:
    correct_biases(model, dense, _training_images(data, config.bias_correction, config.finetune.seed))


def _verify(path: str | os.PathLike, test_loader: Iterable | None) -> dict | None:
    """Test metrics of the model decoded from the written file (None without labelled data)."""
    return evaluate(load_compressed(path), test_loader) if test_loader is not None else None


def _checked_data(model: nn.Module, config: CompressionConfig, data: DatasetSplits | None, tuning: bool) -> bool:
    """Refuse what ``data`` cannot serve; whether it is labelled with the model's classes."""
    if tuning and data is None:
        raise ValueError("fine-tuning needs data (a dataset name and root)")
    if config.bias_correction and (data is None or data.train is None):
        raise ValueError("bias correction needs the training images of a data set (a dataset name and root)")
    labelled = data is not None and _labels_fit(model, data)
    if tuning and not labelled:
        assert data is not None  # fine-tuning without data raised above
        raise ValueError(f"fine-tuning needs data labelled with the model's classes; {_class_mismatch(model, data)}")
    return labelled


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


def _recorded_test(stage_dir: Path) -> dict | None:
    """The test metrics a skipped stage recorded in its results.json (None if its folder is gone)."""
    try:
        return json.loads((stage_dir / RESULTS).read_text()).get("test") or None
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{stage_dir / RESULTS}: unreadable stage results ({exc})") from None


def _encode(model: nn.Module, path: str | os.PathLike, config: CompressionConfig, dist_info: DistInfo) -> SizeReport:
    """Write the ``.sqz`` file. Under torchrun every process holds the same fine-tuned model: rank 0 writes the
    file, the others read its size report once it is complete."""
    coding = (config.index_coder, config.position_coder, config.tensor_dtype, config.fold_batch_norm)
    report = save_compressed(model, path, *coding) if dist_info.is_main else None
    if dist_info.enabled:
        dist.barrier()
    return report if report is not None else inspect_compressed(path)


# The digits quickstart model (measured in docs/compression.md: about 14x smaller for 0.3-1.4 points on
# 359 test images, seconds on 2 cores): two pruning steps to a fifth of the weights (half of the stem's),
# 4-bit shared weights, four fine-tuning epochs after each stage with the quickstart's own optimiser at its
# peak learning rate, and batch-norm statistics / biases as float16 (in so small a model they would otherwise be a third of the file).
QUICKSTART_COMPRESSION = CompressionConfig(
    density={"stem": 0.5, "default": 0.2}, bits=4, prune_steps=2, finetune_epochs=4, tensor_dtype="float16",
    finetune=QUICKSTART_CONFIG.updated(schedule="cosine"),
)  # fmt: skip


def quickstart_compress(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    dist_info: DistInfo | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> CompressionOutcome:
    """Compress the quickstart's trained digits model to ``out_dir/model.sqz`` and evaluate both."""
    data = build_run_data(QUICKSTART_CONFIG, progress)
    out_dir = Path(out_dir)
    # the quickstart has just trained this model: stages left by an earlier quickstart in the same folder are stale
    shutil.rmtree(out_dir / "compress", ignore_errors=True)
    outcome = compress_and_evaluate(
        model, out_dir / "model.sqz", QUICKSTART_COMPRESSION, data=data, run_dir=out_dir / "compress", dist_info=dist_info,
        progress=progress, log=log,
    )  # fmt: skip
    outcome.report.write(out_dir / "compression_report")
    return outcome
