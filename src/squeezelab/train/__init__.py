"""Training and evaluation: ``TrainConfig``, ``fit``, ``evaluate``, runs from a config, the quickstart."""

from .checkpoint import load_checkpoint, training_config_of
from .config import TrainConfig
from .device import DistInfo, distributed_session
from .engine import FitResult, NonFiniteLossError, fit
from .evaluate import evaluate
from .recipes import (
    QUICKSTART_CONFIG,
    build_run_data,
    build_run_model,
    default_run_dir,
    evaluate_model,
    quickstart,
    resume_training,
    train_from_config,
)

__all__ = [
    "DistInfo",
    "FitResult",
    "NonFiniteLossError",
    "QUICKSTART_CONFIG",
    "TrainConfig",
    "build_run_data",
    "build_run_model",
    "default_run_dir",
    "distributed_session",
    "evaluate",
    "evaluate_model",
    "fit",
    "load_checkpoint",
    "quickstart",
    "resume_training",
    "train_from_config",
    "training_config_of",
]
