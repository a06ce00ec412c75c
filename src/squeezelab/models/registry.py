"""Model registry in the style of timm: ``@register_model`` builders, ``create_model`` and ``list_models``.

Every model returned by :func:`create_model` carries two attributes that later stages rely on:

* ``model.default_cfg`` -- preprocessing and I/O metadata (input size, mean/std, classes, ...).
* ``model.model_spec`` -- ``{"name": ..., "kwargs": {...}}``: enough to rebuild the same architecture,
  which is what checkpoints and compressed files store instead of pickled code.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


@dataclass(frozen=True)
class ModelConfig:
    """Default input/preprocessing metadata of a model, as timm's ``default_cfg``.

    ``mean``/``std`` apply to pixels scaled by ``pixel_scale`` (1.0: pixels in [0, 1]; 255.0: Caffe-style
    raw pixel values). ``channel_order`` is ``"RGB"`` or ``"BGR"`` (Caffe models). ``antialias`` False
    resizes without a low-pass filter, as Caffe/OpenCV pipelines did.
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_size: int = 256
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    pixel_scale: float = 1.0
    class_names: tuple[str, ...] | None = None
    dataset: str = "imagenet"
    extra: dict[str, Any] = field(default_factory=dict)
    antialias: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        for key in ("input_size", "mean", "std", "class_names"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


IMAGENET_CFG = ModelConfig()
CIFAR10_CFG = ModelConfig(
    input_size=(3, 32, 32), num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD, resize_size=32, dataset="cifar10"
)
MNIST_CFG = ModelConfig(
    input_size=(1, 28, 28), num_classes=10, mean=MNIST_MEAN, std=MNIST_STD, resize_size=28, dataset="mnist"
)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    cfg: ModelConfig


_REGISTRY: dict[str, _Entry] = {}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists close matches."""


def register_model(cfg: ModelConfig = IMAGENET_CFG) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, with its default config."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = _Entry(builder, cfg)
        return builder

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (sorted)."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}" if close else "; run 'squeezelab models' to list them"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def get_model_config(name: str) -> ModelConfig:
    """The default :class:`ModelConfig` of a registered model."""
    return _entry(name).cfg


def create_model(
    name: str, num_classes: int | None = None, in_chans: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model, timm-style.

    ``num_classes`` and ``in_chans`` default to the model's config; other keyword arguments go to the
    builder (for example ``squeeze_ratio=0.75`` for ``squeezenet_generator``).
    """
    entry = _entry(name)
    cfg = entry.cfg
    num_classes = cfg.num_classes if num_classes is None else num_classes
    in_chans = cfg.input_size[0] if in_chans is None else in_chans
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    try:
        model = entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: {exc}") from None
    set_model_config(model, _adapted_config(cfg, num_classes, in_chans))
    # setattr: nn.Module.__setattr__ is typed for tensors and modules only (see set_model_config)
    setattr(model, "model_spec", {"name": name, "kwargs": {"num_classes": num_classes, "in_chans": in_chans, **kwargs}})
    return model


def model_config(model: nn.Module) -> ModelConfig:
    """``model.default_cfg``, typed: through ``nn.Module.__getattr__`` type checkers see ``Tensor | Module``."""
    cfg = getattr(model, "default_cfg", None)
    if not isinstance(cfg, ModelConfig):
        raise ValueError("model has no default_cfg: build it with squeezelab.create_model or load a model file")
    return cfg


def set_model_config(model: nn.Module, cfg: ModelConfig) -> None:
    """Set ``model.default_cfg`` (with ``setattr``: ``nn.Module.__setattr__`` is typed for tensors and modules only)."""
    setattr(model, "default_cfg", cfg)


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``model.model_spec`` (``{"name": ..., "kwargs": {...}}``), typed as :func:`model_config` is."""
    spec = getattr(model, "model_spec", None)
    if not isinstance(spec, dict):
        raise ValueError("model has no model_spec: build it with squeezelab.create_model")
    return spec


def _adapted_config(cfg: ModelConfig, num_classes: int, in_chans: int) -> ModelConfig:
    changes: dict[str, Any] = {"num_classes": num_classes}
    if num_classes != cfg.num_classes:
        changes["class_names"] = None
    if in_chans != cfg.input_size[0]:
        changes["input_size"] = (in_chans, *cfg.input_size[1:])
        # Repeat (or average) the per-channel statistics so normalisation still has one value per channel.
        mean_value = sum(cfg.mean) / len(cfg.mean)
        std_value = sum(cfg.std) / len(cfg.std)
        changes["mean"] = (mean_value,) * in_chans
        changes["std"] = (std_value,) * in_chans
    return replace(cfg, **changes)
