"""A study file: a base training config and the axes to vary (YAML or JSON).

Example::

    name: sr-sweep
    base: ../train/cifar10_sweep.yaml     # a TrainConfig file (relative to this file), or
    train: {epochs: 5, limit: 10000}       # inline TrainConfig settings, applied over ``base``
    search: grid                           # grid | random
    seeds: [0, 1]                          # every point is trained once per seed
    axes:
      model_kwargs.squeeze_ratio: [0.125, 0.25, 0.5, 0.75, 1.0]
      model: [squeezenet1_0_cifar]
    # random search: n_trials and ranges, e.g.  lr: {low: 0.01, high: 0.3, log: true}
    per_model:                             # settings for one model only, over base and axes
      squeezenet1_1_cifar: {model_kwargs: {batch_norm: all}}

Axis names are ``TrainConfig`` fields (``model``, ``epochs``, ``lr``, ``augment`` ...) or builder
arguments as ``model_kwargs.<name>`` (``squeeze_ratio``, ``pct_3x3``, ``bypass``, ``batch_norm``,
``remove_fires``, ``width`` ...). ``per_model`` lets a study compare architectures whose builders take
different arguments (batch norm is ``batch_norm: all`` for SqueezeNet, ``true`` for squeezed VGG).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from squeezelab.train import TrainConfig
from squeezelab.utils.files import read_mapping

SEARCHES = ("grid", "random")
MODEL_KWARGS_PREFIX = "model_kwargs."


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) axis for random search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class StudySpec:
    name: str
    base: dict[str, Any]
    axes: dict[str, list[Any] | Range]
    search: str = "grid"
    seeds: list[int] = field(default_factory=lambda: [0])
    n_trials: int | None = None
    sampler_seed: int = 0
    compress: bool = False
    latency: bool = True
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "study"

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"{self.source}: search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        if not self.axes:
            raise ValueError(f"{self.source}: 'axes' is empty: name at least one setting to vary")
        if not self.seeds:
            raise ValueError(f"{self.source}: 'seeds' is empty")
        ranges = [name for name, values in self.axes.items() if isinstance(values, Range)]
        if self.search == "grid" and ranges:
            raise ValueError(f"{self.source}: grid search needs value lists, but {ranges[0]!r} is a range")
        if self.search == "random" and not self.n_trials:
            raise ValueError(f"{self.source}: random search needs n_trials")
        for name in self.axes:
            _check_axis_name(name, self.source)
        self._check_per_model()
        # Fail now, not in the middle of a study, if the base settings are invalid.
        TrainConfig.from_dict(self.base, source=f"{self.source}: base")

    def _check_per_model(self) -> None:
        # (a model axis is a value list; the cast only informs mypy)
        models = set(cast(list[Any], self.axes.get("model") or [])) | {self.base.get("model")}
        for model, settings in self.per_model.items():
            if model not in models:
                raise ValueError(f"{self.source}: per_model names {model!r}, which is not a model of this study")
            if not isinstance(settings, dict):
                raise ValueError(f"{self.source}: per_model {model!r}: expected a mapping of training settings")
            if "model" in settings:
                raise ValueError(f"{self.source}: per_model {model!r}: the model itself cannot be overridden")
            TrainConfig.from_dict({**self.base, **settings, "model": model}, source=f"{self.source}: per_model {model!r}")

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a grid study (without seeds), in a stable order."""
        names = list(self.axes)
        # (__post_init__ rejects Range axes in a grid study: every axis is a list of values)
        return [dict(zip(names, values)) for values in itertools.product(*(cast(list[Any], self.axes[n]) for n in names))]

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The base config with a trial's axis values, then its model's ``per_model`` settings, applied."""
        settings = json.loads(json.dumps(self.base))
        kwargs = dict(settings.get("model_kwargs") or {})
        for name, value in params.items():
            if name.startswith(MODEL_KWARGS_PREFIX):
                kwargs[name[len(MODEL_KWARGS_PREFIX):]] = value
            else:
                settings[name] = value
        overrides = dict(self.per_model.get(settings.get("model"), {}))
        kwargs.update(overrides.pop("model_kwargs", None) or {})
        settings.update(overrides)
        settings["model_kwargs"] = kwargs
        return TrainConfig.from_dict(settings, source=f"{self.source}: trial {params}")

    @classmethod
    def load(cls, path: str | Path) -> "StudySpec":
        path = Path(path)
        data = read_mapping(path, "study settings")
        base: dict[str, Any] = {}
        if data.get("base"):
            base_path = (path.parent / data["base"]).resolve()
            base = TrainConfig.load(base_path).to_dict()
        base.update(data.get("train") or {})
        unknown = set(data) - {"name", "base", "train", "axes", "search", "seeds", "n_trials", "sampler_seed", "compress", "latency", "per_model"}
        if unknown:
            raise ValueError(f"{path}: unknown study setting(s) {sorted(unknown)}")
        return cls(
            name=str(data.get("name") or path.stem),
            base=base,
            axes={name: _axis(name, values, path) for name, values in (data.get("axes") or {}).items()},
            search=data.get("search", "grid"),
            seeds=[int(s) for s in data.get("seeds", [0])],
            n_trials=data.get("n_trials"),
            sampler_seed=int(data.get("sampler_seed", 0)),
            compress=bool(data.get("compress", False)),
            latency=bool(data.get("latency", True)),
            per_model=dict(data.get("per_model") or {}),
            source=str(path),
        )


def point_key(params: dict[str, Any]) -> str:
    """A short stable name for a trial's settings, used as its run directory (resume finds it again)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _axis(name: str, values: Any, path: Path) -> list[Any] | Range:
    if isinstance(values, dict):
        try:
            return Range(float(values["low"]), float(values["high"]), bool(values.get("log", False)), bool(values.get("integer", False)))
        except KeyError as exc:
            raise ValueError(f"{path}: axis {name!r}: a range needs 'low' and 'high' (missing {exc})") from None
    if not isinstance(values, list) or not values:
        raise ValueError(f"{path}: axis {name!r}: expected a non-empty list of values or a {{low, high}} range")
    # Lists (e.g. remove_fires: [[2, 5]]) are stored as tuples so they can be grid values.
    return [tuple(v) if isinstance(v, list) else v for v in values]


def _check_axis_name(name: str, source: str) -> None:
    if name.startswith(MODEL_KWARGS_PREFIX):
        return
    if name == "seed":
        raise ValueError(f"{source}: vary seeds with the 'seeds' list, not an axis")
    if name not in TrainConfig.__dataclass_fields__:
        raise ValueError(f"{source}: axis {name!r} is neither a training setting nor model_kwargs.<builder argument>")
