"""Model registry in the style of timm: ``@register_model`` builders, ``create_model`` and ``list_models``.

Every model returned by :func:`create_model` carries two attributes that later stages rely on:

* ``model.default_cfg`` -- preprocessing and I/O metadata (input size, mean/std, classes, ...).
* ``model.model_spec`` -- ``{"name": ..., "kwargs": {...}}``: enough to rebuild the same architecture,
  which is what checkpoints and compressed files store instead of pickled code.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from squeezelab.utils.errors import first_line

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
        """The config a file stored with :meth:`to_dict`; a field of the wrong kind (the file is damaged or
        hostile) raises ValueError naming it, fields the file lacks keep their defaults (older files)."""
        if not isinstance(data, dict):
            raise ValueError(f"default_cfg: expected a mapping, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in _CONFIG_FIELD_CHECKS)
        if unknown:
            raise ValueError(f"default_cfg: unknown fields {', '.join(unknown)}")
        for key, value in data.items():
            check, expected = _CONFIG_FIELD_CHECKS[key]
            if not check(value):
                raise ValueError(f"default_cfg: {key} must be {expected}, got {_abridged_repr(value)}")
        data = dict(data)
        for key in ("input_size", "mean", "std", "class_names"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (bool is an int to Python, not to a file format)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_sequence_of(value: Any, check: Callable[[Any], bool]) -> bool:
    return isinstance(value, (list, tuple)) and all(check(item) for item in value)


def _abridged_repr(value: Any, length: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= length else text[: length - 3] + "..."


_CONFIG_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input_size": (lambda v: _is_sequence_of(v, lambda n: _is_int(n) and n >= 1) and len(v) == 3, "three positive integers"),
    "num_classes": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "mean": (lambda v: _is_sequence_of(v, _is_number) and len(v) >= 1, "finite numbers"),
    "std": (lambda v: _is_sequence_of(v, _is_number) and len(v) >= 1, "finite numbers"),
    "resize_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "interpolation": (lambda v: isinstance(v, str), "a string"),
    "channel_order": (lambda v: isinstance(v, str), "a string"),
    "pixel_scale": (_is_number, "a finite number"),
    "class_names": (lambda v: v is None or _is_sequence_of(v, lambda n: isinstance(n, str)), "strings or None"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "extra": (lambda v: isinstance(v, dict), "a mapping"),
    "antialias": (lambda v: isinstance(v, bool), "true or false"),
}
assert set(_CONFIG_FIELD_CHECKS) == {f.name for f in fields(ModelConfig)}


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
    name: str, num_classes: int | None = None, in_chans: int | None = None, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """Build a registered model, timm-style.

    ``num_classes`` and ``in_chans`` default to the model's config; other keyword arguments go to the
    builder (for example ``squeeze_ratio=0.75`` for ``squeezenet_generator``). ``name`` may carry a pretrained
    tag (``"squeezenet1_0.dc_in1k"``, see ``list_pretrained()``); with ``pretrained=True`` the shipped weights
    are loaded (a name without a tag takes its model's first tag), in eval mode, and a different
    ``num_classes`` replaces the classifier with a new one (transfer learning, see
    :func:`~squeezelab.models.transfer.with_num_classes`).
    """
    if pretrained:
        return _pretrained_model(name, num_classes, in_chans, kwargs)
    name = name.split(".", 1)[0]  # a tag names weights; without pretrained=True, the architecture alone is built
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


def _pretrained_model(name: str, num_classes: int | None, in_chans: int | None, kwargs: dict[str, Any]) -> nn.Module:
    from .pretrained import list_pretrained, pretrained_weights
    from .transfer import with_num_classes

    if "." not in name:
        _entry(name)
        tags = list_pretrained(f"{name}.*")
        if not tags:
            raise ValueError(f"no pretrained weights for {name!r}; shipped: {', '.join(list_pretrained())}")
        name = tags[0]
    weights = pretrained_weights(name)
    if kwargs:
        raise ValueError(f"{name}: pretrained weights fix the architecture; builder arguments {sorted(kwargs)} cannot apply")
    # The shipped files are .sqz or model files, read by the one loader, which sits above the models (it needs
    # squeezelab.compress for .sqz): imported here, when pretrained weights are asked for, as timm's builder does.
    from squeezelab.interop.loading import load_model

    model = load_model(weights.path)
    held = model_config(model).input_size[0]
    if in_chans is not None and in_chans != held:
        raise ValueError(f"{name}: its weights take {held}-channel images, not in_chans={in_chans}")
    return with_num_classes(model, num_classes) if num_classes is not None else model


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


# --- checking a model spec read from a file -----------------------------------------------------------
# A file's ``model_spec`` decides what gets built, so it is checked before anything is: arguments of the kinds
# and sizes builders take, then the model on the meta device (shapes without memory), whose size is bounded.

MAX_NUM_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_IN_CHANS = 1_024
MAX_BLOCKS = 64  # num_fires and each of depths: one module is built per block, so they bound building time
MAX_ARGUMENT = 65_536  # any other number: channel counts, widths, fire numbers, ratios
MAX_LIST_LENGTH = 256  # fire_specs, block_widths (one entry per block), remove_fires, widths
MAX_STRING_LENGTH = 64
MAX_MODEL_PARAMETERS = 1 << 28  # 268 million (1 GiB of float32); vgg19, the largest registered model, has 143.7M
ARGUMENT_RANGES = {"num_classes": (1, MAX_NUM_CLASSES), "in_chans": (1, MAX_IN_CHANS), "num_fires": (1, MAX_BLOCKS), "depths": (1, MAX_BLOCKS)}


def check_model_spec(spec: Any) -> None:
    """Refuse a model spec that is not ``{"name": registered model, "kwargs": {...}}`` with arguments of the
    kinds builders take (numbers, strings, booleans, None, short lists of them, lists of such lists) within
    sane ranges: no negative numbers, no non-finite ones, ``num_classes`` at most :data:`MAX_NUM_CLASSES`,
    ``in_chans`` at most :data:`MAX_IN_CHANS`, block counts at most :data:`MAX_BLOCKS`, anything else at most
    :data:`MAX_ARGUMENT`. Raises ValueError saying what is wrong. (Building it may still refuse arguments,
    see :func:`model_skeleton`.)"""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not set(spec) <= {"name", "kwargs"}:
        raise ValueError(f"model spec must be {{'name': ..., 'kwargs': {{...}}}}, got {_abridged_repr(spec)}")
    _entry(spec["name"])  # UnknownModelError, with close matches
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise ValueError(f"model spec: kwargs must map argument names to values, got {_abridged_repr(kwargs)}")
    for key, value in kwargs.items():
        problem = _argument_problem(value, ARGUMENT_RANGES.get(key, (0, MAX_ARGUMENT)), nesting=2)
        if problem:
            raise ValueError(f"model spec: argument {key}={_abridged_repr(value)}: {problem}")


def _argument_problem(value: Any, bounds: tuple[int, int], nesting: int) -> str | None:
    """What is wrong with one builder argument (None if nothing); lists may nest ``nesting`` deep."""
    low, high = bounds
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if len(value) <= MAX_STRING_LENGTH else f"strings are at most {MAX_STRING_LENGTH} characters"
    if isinstance(value, (int, float)):
        return None if _is_number(value) and low <= value <= high else f"must be a finite number from {low} to {high}"
    if isinstance(value, (list, tuple)) and nesting > 0:
        if len(value) > MAX_LIST_LENGTH:
            return f"lists hold at most {MAX_LIST_LENGTH} items"
        return next((p for p in (_argument_problem(item, bounds, nesting - 1) for item in value) if p), None)
    return f"not a number, string, boolean or list of them ({type(value).__name__})"


class _NoMetaInitialisation(TorchFunctionMode):
    """Skips ``normal_`` while building on the meta device: it fills nothing there, but its meta kernel is
    written in Python and its first use imports a second or more of torch internals (the other initialisers
    are cheap)."""

    SKIPPED = (torch.Tensor.normal_, torch.nn.init.normal_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIPPED:
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def model_skeleton(spec: Any) -> nn.Module:
    """The model a spec read from a file describes, on the meta device: every parameter and buffer with its
    shape and dtype but no memory and no initialisation, so that a file's tables can be checked against it
    before anything is allocated. Checks the spec (:func:`check_model_spec`) first and refuses a model of
    more than :data:`MAX_MODEL_PARAMETERS` parameters; raises ValueError."""
    check_model_spec(spec)
    try:
        with torch.device("meta"), _NoMetaInitialisation():
            model = create_model(spec["name"], **spec.get("kwargs", {}))
    # the builders check their arguments with ValueError; arguments they do not anticipate (a zero width, an
    # unknown layout key) end in these from the arithmetic and lookups inside them
    except (ValueError, TypeError, RuntimeError, ArithmeticError, LookupError) as exc:
        raise ValueError(f"model spec: {spec['name']} cannot be built from these arguments ({first_line(exc)})") from None
    parameters = sum(tensor.numel() for tensor in model.state_dict().values())
    if parameters > MAX_MODEL_PARAMETERS:
        raise ValueError(f"model spec: {spec['name']} with these arguments has {parameters:,} parameters, more than {MAX_MODEL_PARAMETERS:,}")
    return model
