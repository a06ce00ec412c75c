"""Pure ``nn.Module`` definitions and the model registry (no training code here)."""

from . import baselines, squeezenet, squeezenet_fast, squeezenext  # noqa: F401  (register the model families)
from .baselines import VGG, AlexNet, PlainCNN, build_vgg19, vgg_features
from .fire import Fire, FirePair
from .pretrained import list_pretrained
from .profile import InputTooSmallError, count_macs, count_params, fp32_size_bytes, layer_table
from .registry import (
    ModelConfig,
    UnknownModelError,
    create_model,
    get_model_config,
    list_models,
    register_model,
)
from .squeezenet import SqueezeNet, build_squeezenet, fire_plan
from .squeezenext import SqueezeNext, SqueezeNextBlock, build_squeezenext

__all__ = [
    "AlexNet",
    "Fire",
    "FirePair",
    "InputTooSmallError",
    "ModelConfig",
    "PlainCNN",
    "SqueezeNet",
    "SqueezeNext",
    "SqueezeNextBlock",
    "UnknownModelError",
    "VGG",
    "build_squeezenet",
    "build_squeezenext",
    "build_vgg19",
    "count_macs",
    "count_params",
    "create_model",
    "fire_plan",
    "fp32_size_bytes",
    "get_model_config",
    "layer_table",
    "list_models",
    "list_pretrained",
    "register_model",
    "vgg_features",
]
