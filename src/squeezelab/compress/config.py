"""``CompressionConfig``: every setting of a compression run, saved as YAML/JSON so a run can be repeated exactly
(the model and the data are given beside it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from squeezelab.train import TrainConfig
from squeezelab.utils.errors import check_settings_mapping
from squeezelab.utils.files import read_mapping, write_mapping

from .coding import SYMBOL_ENCODERS
from .finetune import FINETUNE_DEFAULTS
from .kmeans import KMEANS_INITS
from .positions import POSITION_CODERS
from .pruning import GRANULARITIES, DensitySpec, StdThreshold
from .sharing import CENTROID_UPDATES, MAX_BITS, SHARED_TRAININGS
from .sqz import FLOAT_STORAGE

# settings whose values are numbers, given alone or per layer / per stage (see _coerced)
NUMBER_SPECS = ("keep_filters", "density", "std_threshold", "stage_lr")


@dataclass
class CompressionConfig:
    """What :func:`.compress_and_evaluate` does to a model (docs/compression.md describes each field).

    Per-layer settings (``keep_filters``, ``density``, ``std_threshold``, ``granularity``, ``bits``) take one
    value for every layer or a mapping keyed by layer name, module prefix, layer kind or ``default`` (see
    :mod:`.layers`). Per-stage settings (``stage_epochs``, ``stage_lr``) map stage names (:meth:`stages`:
    ``filters``, ``prune1`` .. ``prune<prune_steps>``, ``quantized``) to that stage's own value.
    """

    # pruning (densities are fractions of the weights kept; None: no pruning)
    keep_filters: float | dict[str, float] | None = None  # structured pruning first: fraction of filters kept
    density: float | dict[str, float] | None = None  # one float: a single magnitude threshold over all layers
    std_threshold: float | dict[str, float] | None = None  # instead of density: prune |w| < scale * std(w) (Han et al.)
    granularity: str | dict[str, str] = "weight"  # prune single weights or whole kh x kw kernels ("kernel")
    prune_steps: int = 1
    # weight sharing
    bits: int | dict[str, int] = 5
    init: str = "optimal"  # k-means initialisation
    centroid_update: str = "mean"
    shared_training: str = "centroids"  # or "latent": quantization-aware fine-tuning
    # fine-tuning after each stage, with the settings of `finetune` (its `epochs` follow finetune_epochs)
    finetune_epochs: int = 0
    stage_epochs: dict[str, int] | None = None
    stage_lr: dict[str, float] | None = None  # peak learning rates instead of finetune.lr
    bias_correction: int = 0  # training images (labels unused) to correct each layer's bias on; 0: none
    # the .sqz file
    index_coder: str = "auto"
    position_coder: str = "auto"
    tensor_dtype: str = "float32"  # storage of biases and batch norms
    fold_batch_norm: bool = False
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(**FINETUNE_DEFAULTS))

    def __post_init__(self) -> None:
        _check_per_layer("keep_filters", self.keep_filters, _fraction, "a fraction in (0, 1]", optional=True)
        _check_per_layer("density", self.density, _fraction, "a fraction in (0, 1]", optional=True)
        _check_per_layer("std_threshold", self.std_threshold, _positive, "a finite scale > 0 (<= 0 prunes nothing)", optional=True)
        _check_per_layer("granularity", self.granularity, GRANULARITIES.__contains__, " or ".join(GRANULARITIES))
        _check_per_layer("bits", self.bits, lambda bits: _whole(bits) and 1 <= bits <= MAX_BITS, f"a whole number in 1..{MAX_BITS}")
        if self.density is not None and self.std_threshold is not None:
            raise ValueError("std_threshold: give it or density, not both")
        for name, choices in (("init", KMEANS_INITS), ("centroid_update", CENTROID_UPDATES), ("shared_training", SHARED_TRAININGS),
                              ("index_coder", ("auto", *SYMBOL_ENCODERS)), ("position_coder", POSITION_CODERS), ("tensor_dtype", FLOAT_STORAGE)):  # fmt: skip
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        _check_count("prune_steps", self.prune_steps, 1, "steps")
        _check_count("finetune_epochs", self.finetune_epochs, 0, "epochs")
        _check_count("bias_correction", self.bias_correction, 0, "images")
        if self.bias_correction and self.keep_filters is not None:
            raise ValueError("bias_correction: compares each layer with the dense model's, which filter pruning (keep_filters) reshapes")
        if not isinstance(self.fold_batch_norm, bool):
            raise ValueError(f"fold_batch_norm: must be true or false, got {self.fold_batch_norm!r}")
        self._check_stage_settings()
        if not isinstance(self.finetune, TrainConfig):
            raise ValueError(f"finetune: must be a TrainConfig (in a file: a mapping of its settings), got {type(self.finetune).__name__}")
        if self.finetune.epochs != max(self.finetune_epochs, 1):
            # every stage sets its own epochs; the saved config says what a stage without stage_epochs runs
            try:
                self.finetune = replace(self.finetune, epochs=max(self.finetune_epochs, 1))
            except ValueError as exc:
                raise ValueError(f"finetune: {exc}") from None

    def _check_stage_settings(self) -> None:
        for name, value, valid, expected in (("stage_epochs", self.stage_epochs, lambda n: _whole(n) and n >= 1, "epochs must be >= 1"),
                                             ("stage_lr", self.stage_lr, _positive, "learning rates must be > 0")):  # fmt: skip
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{name}: expected a mapping of stage names to values, got {value!r}")
            unknown = sorted(set(value) - set(self.stages()))
            if unknown:
                raise ValueError(f"{name}: no stage named {', '.join(map(repr, unknown))} in this run; its stages are {', '.join(self.stages())}")
            wrong = {stage: item for stage, item in value.items() if not valid(item)}
            if wrong:
                raise ValueError(f"{name}: {expected}, got {wrong}")

    def stages(self) -> list[str]:
        """The stages fine-tuning may follow, in order: ``filters`` (with ``keep_filters``), ``prune1`` ..
        ``prune<prune_steps>`` (with ``density`` or ``std_threshold``) and ``quantized``."""
        filters = ["filters"] if self.keep_filters is not None else []
        pruning = [f"prune{step}" for step in range(1, self.prune_steps + 1)] if self.density_spec() is not None else []
        return filters + pruning + ["quantized"]

    def epochs_of(self, stage: str) -> int:
        """Fine-tuning epochs after ``stage``: its ``stage_epochs``, else ``finetune_epochs``."""
        return (self.stage_epochs or {}).get(stage, self.finetune_epochs)

    def tuned_stages(self) -> list[str]:
        """The stages followed by fine-tuning (each in its own folder of a run directory)."""
        return [stage for stage in self.stages() if self.epochs_of(stage)]

    def finetune_of(self, stage: str) -> TrainConfig:
        """The fine-tuning settings of ``stage``: ``finetune`` with its epochs and learning rate."""
        return self.finetune.updated(epochs=self.epochs_of(stage), lr=(self.stage_lr or {}).get(stage, self.finetune.lr))

    def density_spec(self) -> DensitySpec | None:
        """What pruning (:func:`.pruning.prune`) takes: the densities or the std threshold; None: no pruning."""
        return StdThreshold(self.std_threshold) if self.std_threshold is not None else self.density

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "CompressionConfig":
        """Settings from a mapping; a ``finetune`` mapping gives fine-tuning settings other than the defaults
        of :data:`.finetune.FINETUNE_DEFAULTS`."""
        check_settings_mapping(data, {f.name for f in fields(cls)}, source)
        try:
            settings = {key: _coerced(key, value) for key, value in data.items()}
            if isinstance(settings.get("finetune"), Mapping):
                settings["finetune"] = TrainConfig.from_dict({**FINETUNE_DEFAULTS, **settings["finetune"]}, source="finetune")
            return cls(**settings)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically."""
        write_mapping(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, base: "CompressionConfig | None" = None) -> "CompressionConfig":
        """Read a YAML or JSON file; the settings it leaves out are ``base``'s (default: the defaults)."""
        return (base or cls())._merged(read_mapping(path, "compression settings"), source=str(path))

    def updated(self, **changes: Any) -> "CompressionConfig":
        """A copy with ``changes`` applied, validated. Unlike :meth:`TrainConfig.updated` a None value is applied
        (``density=None``: no pruning); a ``finetune`` mapping changes only the fine-tuning settings it names."""
        return self._merged(changes, source="config")

    def _merged(self, changes: Mapping[str, Any], source: str) -> "CompressionConfig":
        settings = self.to_dict()
        for key, value in changes.items():
            if key == "finetune" and isinstance(value, Mapping):
                value = {**settings["finetune"], **value}
            settings[key] = value.to_dict() if isinstance(value, TrainConfig) else value
        return CompressionConfig.from_dict(settings, source)


def _check_per_layer(name: str, value: Any, valid: Callable[[Any], bool], expected: str, optional: bool = False) -> None:
    """``value`` is one valid value for every layer or a mapping of layer names / kinds to valid values."""
    if value is None and optional:
        return
    values = list(value.values()) if isinstance(value, dict) else [value]
    if not all(valid(item) for item in values) or (isinstance(value, dict) and not all(isinstance(key, str) for key in value)):
        raise ValueError(f"{name}: expected {expected}, or a mapping of layer names / kinds to such values; got {value!r}")


def _check_count(name: str, value: Any, minimum: int, unit: str) -> None:
    if not _whole(value) or value < minimum:
        raise ValueError(f"{name}: must be a whole number of {unit} >= {minimum}, got {value!r}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return _number(value) and 0.0 < value <= 1.0


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _coerced(key: str, value: Any) -> Any:
    """YAML 1.1 reads ``5e-3`` (no dot) as a string: accept such numbers in the number-valued settings."""
    if key not in NUMBER_SPECS or value is None:
        return value
    if isinstance(value, Mapping):
        return {name: _to_number(key, item) for name, item in value.items()}
    return _to_number(key, value)


def _to_number(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
