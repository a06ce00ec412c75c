"""Pure ``nn.Module`` definitions and the model registry (no training code here)."""

from . import squeezenet  # noqa: F401  (registers the SqueezeNet family)
from .fire import Fire
from .profile import count_macs, count_params, fp32_size_bytes, layer_table
from .registry import (
    ModelConfig,
    UnknownModelError,
    create_model,
    get_model_config,
    list_models,
    register_model,
)
from .squeezenet import SqueezeNet, build_squeezenet, fire_plan

__all__ = [
    "Fire",
    "ModelConfig",
    "SqueezeNet",
    "UnknownModelError",
    "build_squeezenet",
    "count_macs",
    "count_params",
    "create_model",
    "fire_plan",
    "fp32_size_bytes",
    "get_model_config",
    "layer_table",
    "list_models",
    "register_model",
]
