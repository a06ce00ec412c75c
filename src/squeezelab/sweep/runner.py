"""Run a study with Optuna: SQLite (or any RDB) storage, parallel worker processes, resume, failed trials.

Optuna's RDB storage is what makes a study shareable and resumable: several processes (or machines
pointing ``--storage`` at one PostgreSQL database) pull trials from the same study; a finished point is
never trained again; a trial whose process died is detected by Optuna's heartbeat and queued again, and
its training resumes from the trial's own run directory (``trials/<point key>/last.pt``).
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from squeezelab.bench.timing import interleaved_timings
from squeezelab.compress import DEEP_COMPRESSION_DENSITIES, prune, quantize, save_compressed
from squeezelab.compress.stages import has_checkpoint
from squeezelab.models import count_macs, count_params
from squeezelab.models.registry import model_config
from squeezelab.train import TrainConfig, train_from_config
from squeezelab.utils.optional import require

from .study import Range, StudySpec, point_key

if TYPE_CHECKING:
    import optuna
else:
    optuna = require("optuna")
TrialState = optuna.trial.TrialState

HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 180
ERROR_ATTR = "error"
QUEUED_ATTR = "queued"
POINT_ATTR = "point"  # a queued trial's settings, kept outside Optuna's params (see _objective)
RETRIED_ATTR = "retried"
SWEEP_COMPRESSION_BITS = 6


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "study.db"

    def trial_dir(self, params: dict[str, Any]) -> Path:
        return self.root / "trials" / point_key(params)


def open_study(spec: StudySpec, root: Path, storage_url: str | None = None) -> optuna.Study:
    """Create or reopen the study's Optuna record (default: SQLite in the study directory)."""
    root.mkdir(parents=True, exist_ok=True)
    url = storage_url or f"sqlite:///{StudyPaths(root).database}"
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=spec.sampler_seed),
        load_if_exists=True,
    )


def run_study(
    spec: StudySpec,
    root: str | Path,
    *,
    workers: int = 1,
    storage_url: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> optuna.Study:
    """Run every pending trial of ``spec`` (grid points x seeds, or ``n_trials`` random ones).

    Trials already finished in the storage are skipped; crashed trials stay recorded as failed with
    their error, unless ``retry_failed`` queues them again (after a fix; the failed record is kept but
    no longer reported). With the default local storage, trials left running by an interrupted run of
    this study are taken as dead and queued again (their training resumes from its last checkpoint).
    """
    root = Path(root)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    study = open_study(spec, root, storage_url)
    _record_spec(study, spec)
    if storage_url is None:
        _reclaim_running(study)
    optuna.storages.fail_stale_trials(study)
    if retry_failed:
        _mark_retried(study)
    queued = _queue_pending(study, spec)
    total = _planned_trials(spec)
    say = log or (lambda _message: None)
    storage = getattr(study._storage, "url", root / "study.db")
    say(f"study {spec.name!r}: {total} trials planned, {queued} queued now, {workers} worker process(es); storage {storage}")
    # torch's default honours OMP_NUM_THREADS, so a study can be confined next to another job
    threads = max(1, torch.get_num_threads() // workers)
    if workers == 1:
        _work(spec, root, storage_url, threads, progress)
    else:
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=_work, args=(spec, root, storage_url, threads, False), daemon=False)
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    return open_study(spec, root, storage_url)


def _record_spec(study: optuna.Study, spec: StudySpec) -> None:
    """Refuse a study whose finished results no longer mean the same thing; more seeds or grid values are fine."""
    current = json.loads(json.dumps(
        {
            "axes": {k: _json_axis(v) for k, v in spec.axes.items()},
            "seeds": spec.seeds,
            "base": spec.base,
            "search": spec.search,
            "per_model": spec.per_model,
        },
        default=str,
    ))
    saved = study.user_attrs.get("spec")
    if saved is not None:
        saved.setdefault("per_model", {})  # studies recorded before per_model existed
        # Training settings added since the study was recorded had their default value.
        defaults = json.loads(json.dumps(TrainConfig().to_dict(), default=str))
        added = {k: defaults[k] for k in current["base"] if k in defaults and k not in saved["base"]}
        saved["base"] = {**added, **saved["base"]}
        # A grid trial's result depends on its own axis values, the base and per_model settings only;
        # a random study's sampled points depend on its axes too.
        defining = ("base", "search", "per_model") + (("axes",) if spec.search == "random" else ())
        changed = [key for key in defining if saved.get(key) != current[key]]
        if changed:
            raise ValueError(
                f"{spec.source}: study {spec.name!r} already exists in this storage with different "
                f"{', '.join(changed)} settings; use another name or another --out directory"
            )
    study.set_user_attr("spec", current)


def grid_trials(spec: StudySpec) -> list[dict[str, Any]]:
    """Every trial of a grid study: its points times its seeds."""
    return [{**point, "seed": seed} for point in spec.grid() for seed in spec.seeds]


def trial_key(params: dict[str, Any]) -> str:
    return point_key({k: _encode(v) for k, v in params.items()})


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's axis values and seed (encoded as stored), wherever this or an older version put them."""
    return trial.params or trial.user_attrs.get(POINT_ATTR) or trial.system_attrs.get("fixed_params", {})


def _json_axis(values: list[Any] | Range) -> Any:
    return vars(values) if isinstance(values, Range) else [_encode(v) for v in values]


def _encode(value: Any) -> Any:
    """Optuna stores str/int/float/bool/None; other values (tuples such as remove_fires) go as JSON."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(list(value))


def _decode(name: str, value: Any, spec: StudySpec) -> Any:
    axis = spec.axes.get(name)
    if isinstance(value, str) and isinstance(axis, list) and value not in axis:
        return tuple(json.loads(value))
    return value


def _reclaim_running(study: optuna.Study) -> None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _mark_retried(study: optuna.Study) -> None:
    # A finished trial cannot be changed in Optuna, so the study keeps the list.
    retried = retried_trials(study) | {t.number for t in study.get_trials(deepcopy=False) if crashed(t, set())}
    study.set_user_attr(RETRIED_ATTR, sorted(retried))


def retried_trials(study: optuna.Study) -> set[int]:
    return set(study.user_attrs.get(RETRIED_ATTR, []))


def crashed(trial: optuna.trial.FrozenTrial, retried: set[int]) -> bool:
    """A trial that raised and was not queued again since: its error is the point's result."""
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs and trial.number not in retried


def _settled_points(study: optuna.Study) -> list[str]:
    """Keys of points that need no more work: finished, crashed, running, or already queued."""
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    retried = retried_trials(study)
    return [
        # A queued trial has no Optuna params until a worker starts it (or ever, see _objective).
        trial_key(trial_params(t))
        for t in study.get_trials(deepcopy=False)
        if t.state in live or crashed(t, retried)
    ]


def _queue_pending(study: optuna.Study, spec: StudySpec) -> int:
    settled = set(_settled_points(study))
    pending = []
    if spec.search == "grid":
        pending = grid_trials(spec)
    else:
        # Random points were sampled already; only those whose process died are queued again.
        retried = retried_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if not crashed(trial, retried) and trial_params(trial):
                pending.append(trial_params(trial))
    queued = 0
    for params in pending:
        encoded = {k: _encode(v) for k, v in params.items()}
        if point_key(encoded) not in settled:
            study.enqueue_trial(encoded, user_attrs={QUEUED_ATTR: True, POINT_ATTR: encoded})
            settled.add(point_key(encoded))
            queued += 1
    return queued


def _planned_trials(spec: StudySpec) -> int:
    return len(spec.grid()) * len(spec.seeds) if spec.search == "grid" else int(spec.n_trials or 0)


def _work(spec: StudySpec, root: Path, storage_url: str | None, threads: int, progress: bool) -> None:
    """One worker process: take trials until none is left for it."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, root, storage_url)
    while _has_work(study, spec):
        study.optimize(
            lambda trial: _objective(trial, spec, root, progress),
            n_trials=1,
            catch=(Exception,),
            gc_after_trial=True,
        )


def _has_work(study: optuna.Study, spec: StudySpec) -> bool:
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return True
    if spec.search == "grid":
        return False
    retried = retried_trials(study)
    started = [
        t for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.PRUNED and not (t.state == TrialState.FAIL and not crashed(t, retried))
    ]
    return len(started) < int(spec.n_trials or 0)


def _suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, axis in spec.axes.items():
        if isinstance(axis, Range):
            if axis.integer:
                params[name] = trial.suggest_int(name, int(axis.low), int(axis.high), log=axis.log)
            else:
                params[name] = trial.suggest_float(name, axis.low, axis.high, log=axis.log)
        else:
            params[name] = _decode(name, trial.suggest_categorical(name, [_encode(v) for v in axis]), spec)
    params["seed"] = trial.suggest_categorical("seed", spec.seeds)
    return params


def _objective(trial: optuna.Trial, spec: StudySpec, root: Path, progress: bool) -> float:
    if spec.search == "grid" and not trial.user_attrs.get(QUEUED_ATTR):
        # Another worker took the last queued grid point between our check and this trial.
        raise optuna.TrialPruned("grid exhausted")
    # Queued points are not passed through Optuna's suggest: its categorical choices may not change within
    # a study, and adding seeds or grid values to a study must stay possible.
    point = trial.user_attrs.get(POINT_ATTR)
    params = {name: _decode(name, value, spec) for name, value in point.items()} if point else _suggest(trial, spec)
    try:
        metrics = run_trial(spec, params, StudyPaths(root).trial_dir({k: _encode(v) for k, v in params.items()}), progress)
    except Exception as exc:
        trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}")
        trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
        raise
    for key, value in metrics.items():
        trial.set_user_attr(key, value)
    return metrics["val_top1"]


def run_trial(spec: StudySpec, params: dict[str, Any], run_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Train one point of the study (resuming its run directory if it was interrupted) and measure it."""
    config = spec.trial_config(params)
    resume = has_checkpoint(run_dir)
    start = time.perf_counter()
    result = train_from_config(config, run_dir, resume=resume, progress=progress, log=None)
    model = result.model.eval()
    input_size = model_config(model).input_size
    metrics: dict[str, Any] = {
        "params": count_params(model),
        "fp32_bytes": 4 * count_params(model),
        "macs": count_macs(model, input_size),
        "val_top1": float(result.best_val_top1 if result.best_val_top1 is not None else result.history[-1]["train_top1"]),
        "test_top1": float(result.test["top1"]) if result.test else None,
        "test_top5": float(result.test["top5"]) if result.test else None,
        "best_epoch": result.best_epoch,
        "epochs": config.epochs,
        "train_seconds": float(result.seconds),
        "wall_seconds": time.perf_counter() - start,
        "run_dir": str(run_dir),
    }
    if spec.latency:
        metrics["cpu_latency_ms"] = _cpu_latency_ms(model, input_size)
    if spec.compress:
        metrics.update(_compressed_size(model, run_dir))
    return metrics


@torch.inference_mode()
def _cpu_latency_ms(model: torch.nn.Module, input_size: tuple[int, ...]) -> float:
    """Median batch-1 eager latency on the CPU, in milliseconds."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    image = torch.zeros(1, *input_size)
    timing = interleaved_timings({"eager": lambda: cpu_model(image)}, warmup=3, iters=20, rounds=1)["eager"]
    return 1000.0 * timing.median


def _compressed_size(model: torch.nn.Module, run_dir: Path) -> dict[str, Any]:
    """Size of the trained model under the paper's one-shot recipe (its densities, 6-bit codebooks),
    without fine-tuning: a comparable measure of how well each design compresses."""
    compressed = copy.deepcopy(model)
    prune(compressed, DEEP_COMPRESSION_DENSITIES)
    quantize(compressed, SWEEP_COMPRESSION_BITS)
    path = run_dir / "model.sqz"
    save_compressed(compressed, path)
    return {"compressed_bytes": path.stat().st_size}
