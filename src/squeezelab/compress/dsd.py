"""Dense-Sparse-Dense training (Han et al., 2017): train dense, prune and retrain sparse, then restore the
pruned connections (at zero) and retrain everything at a lower learning rate.

Each phase is an ordinary ``squeezelab.train.fit`` run in its own sub-folder of ``run_dir`` (a
:class:`.stages.StagedRun`); a phase that finished leaves a model file there, so an interrupted DSD run
resumes at the phase (and epoch) it reached.
``run_dir/dsd.json`` records the starting weights and the settings; resuming with others is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.nn as nn

from squeezelab.data import DatasetSplits, Loaders
from squeezelab.train import DistInfo, FitResult, TrainConfig
from squeezelab.train.checkpoint import load_checkpoint, load_weights

from .finetune import finetune
from .pruning import DensitySpec, bake, prune, save_plain_model
from .stages import StagedRun, fingerprint

PHASES = ("dense", "sparse", "redense")
PHASE_MODEL = "model.pt"
SETTINGS_FILE = "dsd.json"


@dataclass
class DSDResult:
    """Test metrics after each phase (None for a phase skipped or resumed past) and the sparse densities."""

    dense: dict | None
    sparse: dict | None
    redense: dict | None
    densities: dict[str, float]
    model: nn.Module


def dense_sparse_dense(
    model: nn.Module,
    data: DatasetSplits | Loaders,
    config: TrainConfig,
    density: DensitySpec = 0.5,
    *,
    dense_epochs: int | None = None,
    sparse_epochs: int | None = None,
    redense_epochs: int | None = None,
    redense_lr_scale: float = 0.1,
    run_dir: str | Path | None = None,
    dist_info: DistInfo | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> DSDResult:
    """Run DSD on ``model`` (in place). Epochs default to ``config.epochs`` per phase; ``dense_epochs=0``
    starts from an already trained model. The re-dense phase uses ``redense_lr_scale * config.lr``. Under
    ``torchrun`` the caller opens the process group (:func:`~squeezelab.train.distributed_session`) and passes
    its ``dist_info``: every phase then trains data-parallel and only rank 0 writes files."""
    if not 0.0 < redense_lr_scale <= 1.0:
        raise ValueError(f"redense_lr_scale must be in (0, 1], got {redense_lr_scale}")
    dist_info = dist_info or DistInfo()
    epochs = {
        "dense": config.epochs if dense_epochs is None else dense_epochs,
        "sparse": config.epochs if sparse_epochs is None else sparse_epochs,
        "redense": config.epochs if redense_epochs is None else redense_epochs,
    }
    configs = {
        "dense": config.updated(epochs=max(epochs["dense"], 1)),
        "sparse": config.updated(epochs=max(epochs["sparse"], 1)),
        "redense": config.updated(epochs=max(epochs["redense"], 1), lr=config.lr * redense_lr_scale),
    }
    run = StagedRun(run_dir, PHASES, checkpoint=PHASE_MODEL)
    settings = {"model": fingerprint(model), "density": density, "epochs": epochs, "redense_lr_scale": redense_lr_scale}
    run.claim(SETTINGS_FILE, settings, dist_info.is_main, "a DSD run")
    results: dict[str, dict | None] = {phase: None for phase in PHASES}
    densities: dict[str, float] = {}
    for phase in PHASES:
        folder = run.folder(phase)
        if run.superseded(phase):
            continue
        if run.resumes(phase):
            assert folder is not None  # the phase resumed at has its finished model in its folder
            _load_phase_model(model, folder / PHASE_MODEL)
            continue
        if phase == "sparse":
            densities = prune(model, density)
        if phase == "redense":
            bake(model)  # the pruned connections come back at zero, free to train again
        if epochs[phase] > 0:
            results[phase] = _run_phase(model, data, configs[phase], folder, phase, progress, log).test
        if folder is not None and dist_info.is_main:
            save_plain_model(model, folder / PHASE_MODEL)
    return DSDResult(results["dense"], results["sparse"], results["redense"], densities, model)


def _run_phase(model, data, config, folder: Path | None, phase: str, progress: bool, log) -> FitResult:
    if log is not None:
        log(f"DSD {phase} phase: {config.epochs} epochs at lr {config.lr:g}")
    return finetune(model, data, config, folder, resume=True, progress=progress, log=log)


def _load_phase_model(model: nn.Module, path: Path) -> None:
    load_weights(model, load_checkpoint(path), str(path))
