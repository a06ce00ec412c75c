"""``TrainConfig``: every setting of a training run, saved as YAML/JSON so a run can be repeated exactly."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from squeezelab.data.augment import FLIP_MODES, TRANSLATE_MODES
from squeezelab.utils.errors import check_settings_mapping
from squeezelab.utils.files import atomic_write_text, read_mapping

from .averaging import AVERAGING_MODES
from .evaluate import TTA_MODES
from .initialization import INIT_MODES, WHITENING_MODES

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "muon")
SCHEDULES = ("constant", "step", "multistep", "cosine", "poly", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Model, data and optimisation settings of one run (see docs/training.md for each field)."""

    # model (used by train_from_config; fit() takes a built model and records its spec here). The default
    # has batch norm and no final ReLU: the plain squeezenet1_1_cifar trained to chance with these defaults.
    model: str = "squeezenet_bn_cifar"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # fine-tuning: start from these weights (a pretrained tag such as squeezenet1_0.dc_in1k, or any model file
    # squeezelab.load_model reads) instead of a new model; the classifier is replaced for the data's classes and
    # the weights' preprocessing is used. model/model_kwargs then record the pretrained architecture.
    pretrained: str | None = None
    freeze_epochs: int = 0  # epochs at the start in which only the (new) classifier trains
    backbone_lr_scale: float = 1.0  # learning-rate multiplier of every parameter but the classifier's
    # data
    dataset: str = "cifar10"
    data_root: str | None = None
    input_size: list[int] | None = None  # [H, W]; None: the model's default
    in_chans: int | None = None  # None: the model's default
    val_fraction: float = 0.1
    augment: bool = True
    cutout: int = 0  # side in pixels of the Cutout square (0: off); CIFAR-10's usual value is 16
    translate: int | None = None  # pixels of random translation of in-memory images; None: 1/8 of the side
    translate_mode: str = "zeros"  # the border a translation uncovers: "zeros" or "reflect" (mirrored)
    flip: str = "random"  # "random", "alternate" (each image mirrored in every other epoch) or "none"
    limit: int | None = None
    workers: int | None = None
    # optimisation
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # optimizer "muon": convolution filters take Muon steps, the other parameters Nesterov SGD (lr, momentum)
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    muon_weight_norm: bool = False  # keep each filter bank's norm fixed: only for convolutions followed by batch norm
    weight_decay: float = 5e-4
    norm_lr_scale: float = 1.0  # learning-rate multiplier of normalisation-layer parameters (airbench: 64)
    bn_momentum: float | None = None  # running-statistics momentum of every batch norm (PyTorch's convention)
    bn_weight_frozen: bool = False  # batch-norm scales stay at their initial 1 (only the shifts train)
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0  # lr multiplier at the first warm-up step (airbench: 0.2)
    min_lr_ratio: float = 0.0  # final lr / peak lr for cosine and poly
    step_size: int = 30  # epochs, for "step"
    milestones: list[int] = field(default_factory=lambda: [30, 60, 80])  # epochs, for "multistep"
    gamma: float = 0.1
    power: float = 1.0  # "poly": 1.0 is the SqueezeNet paper's linear decay
    onecycle_pct_start: float = 0.25
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    accumulate: int = 1  # optimizer step every `accumulate` batches
    # weight averaging: "ema" evaluates and saves an average of the weights; "lookahead" also copies it back
    weight_averaging: str = "none"
    ema_decay: float = 0.999  # per update
    ema_every: int = 1  # optimizer steps between updates
    ema_start_epoch: int = 0  # first epoch (0-based) that updates the average
    ema_warmup_power: float = 0.0  # decay * (step / total steps) ** power: weak averaging early (airbench: 3)
    # initialisation
    init: str = "default"  # "dirac": identity on the first min(in, out) filters of every odd-kernel convolution
    whitening: str = "none"  # "frozen" or "trainable": first convolution fitted to whiten training patches
    whitening_images: int = 5000  # training images the whitening is fitted on
    whitening_bias_epochs: int | None = None  # with whitening: epochs the first layer's bias trains (None: all)
    # evaluation
    tta: str = "none"  # test-time augmentation of the final test, reported beside the plain figure
    # knowledge distillation (Hinton et al. 2015): loss = (1 - distill) * CE + distill * T^2 * KL(teacher || student)
    distill: float = 0.0  # weight of the teacher's soft targets; 0 trains on labels only
    distill_temperature: float = 4.0
    teacher: str | None = None  # teacher model file, any format squeezelab.load_model reads (fit takes a module)
    # execution
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True  # 1.4-3x faster CPU training measured by benchmarks/bench_train_settings.py
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_finite_numbers()
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("device", DEVICES)
        self._check_choice("amp", AMP_MODES)
        self._check_choice("translate_mode", TRANSLATE_MODES)
        self._check_choice("flip", FLIP_MODES)
        self._check_choice("weight_averaging", AVERAGING_MODES)
        self._check_choice("init", INIT_MODES)
        self._check_choice("whitening", WHITENING_MODES)
        self._check_choice("tta", TTA_MODES)
        self._check_fast_training()
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs: must be a mapping of builder arguments, got {self.model_kwargs!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: must be a whole number >= 0, got {self.seed!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "accumulate": self.accumulate, "step_size": self.step_size}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ValueError(f"cutout: must be a whole number of pixels >= 0, got {self.cutout!r}")
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr: must be a finite number > 0, got {self.lr}")
        if self.weight_decay < 0 or self.label_smoothing < 0 or self.label_smoothing >= 1:
            raise ValueError("weight_decay must be >= 0 and label_smoothing in [0, 1)")
        if self.warmup_epochs < 0 or (self.warmup_epochs > 0 and self.warmup_epochs >= self.epochs):
            raise ValueError(f"warmup_epochs: must be in [0, epochs), got {self.warmup_epochs}")
        if not 0.0 < self.onecycle_pct_start < 1.0:
            raise ValueError(f"onecycle_pct_start: must be in (0, 1), got {self.onecycle_pct_start}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip: must be > 0 or null, got {self.grad_clip}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill: must be in [0, 1], got {self.distill}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature: must be > 0, got {self.distill_temperature}")
        if not isinstance(self.freeze_epochs, int) or isinstance(self.freeze_epochs, bool) or not 0 <= self.freeze_epochs < self.epochs:
            raise ValueError(f"freeze_epochs: must be a whole number in [0, epochs), got {self.freeze_epochs!r}")
        if not _finite(self.backbone_lr_scale) or self.backbone_lr_scale <= 0:
            raise ValueError(f"backbone_lr_scale: must be a finite number > 0, got {self.backbone_lr_scale}")
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained):
            raise ValueError(f"pretrained: must be a pretrained tag or a model file, got {self.pretrained!r}")
        if self.teacher is not None and not self.distill:
            raise ValueError("teacher: set, but distill is 0 (give the weight of the teacher's targets)")

    def _check_fast_training(self) -> None:
        if self.translate is not None and (not isinstance(self.translate, int) or self.translate < 0):
            raise ValueError(f"translate: must be a whole number of pixels >= 0 or null, got {self.translate!r}")
        if not _finite(self.norm_lr_scale) or self.norm_lr_scale <= 0:
            raise ValueError(f"norm_lr_scale: must be a finite number > 0, got {self.norm_lr_scale}")
        if not _finite(self.muon_lr) or self.muon_lr <= 0:
            raise ValueError(f"muon_lr: must be a finite number > 0, got {self.muon_lr}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ValueError(f"muon_momentum: must be in [0, 1), got {self.muon_momentum}")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum: must be in (0, 1] or null, got {self.bn_momentum}")
        if not 0.0 <= self.warmup_start <= 1.0:
            raise ValueError(f"warmup_start: must be in [0, 1], got {self.warmup_start}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in (0, 1), got {self.ema_decay}")
        if not isinstance(self.ema_every, int) or self.ema_every < 1:
            raise ValueError(f"ema_every: must be a positive integer, got {self.ema_every!r}")
        if not isinstance(self.ema_start_epoch, int) or not 0 <= self.ema_start_epoch < self.epochs:
            raise ValueError(f"ema_start_epoch: must be a whole number in [0, epochs), got {self.ema_start_epoch!r}")
        if not _finite(self.ema_warmup_power) or self.ema_warmup_power < 0:
            raise ValueError(f"ema_warmup_power: must be >= 0, got {self.ema_warmup_power}")
        if not isinstance(self.whitening_images, int) or self.whitening_images < 1:
            raise ValueError(f"whitening_images: must be a positive integer, got {self.whitening_images!r}")
        if self.whitening_bias_epochs is not None and (not isinstance(self.whitening_bias_epochs, int) or self.whitening_bias_epochs < 0):
            raise ValueError(f"whitening_bias_epochs: must be a whole number >= 0 or null, got {self.whitening_bias_epochs!r}")
        if self.whitening_bias_epochs is not None and self.whitening == "none":
            raise ValueError("whitening_bias_epochs: set, but whitening is none")

    def _check_finite_numbers(self) -> None:
        # NaN passes every range check below (all its comparisons are false), so it is refused first, with inf
        for item in fields(self):
            value = getattr(self, item.name)
            numbers = value if isinstance(value, list) else [value]
            if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
                raise ValueError(f"{item.name}: must be a finite number, got {value}")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        check_settings_mapping(data, {f.name for f in fields(cls)}, source)
        try:
            return cls(**{key: _coerced(cls, key, value) for key, value in data.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (``.json``), atomically."""
        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_mapping(path, "training settings"), source=str(path))

    def updated(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` applied (None values are ignored), validated."""
        return TrainConfig.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _coerced(cls: type, key: str, value: Any) -> Any:
    """YAML 1.1 reads ``5e-4`` (no dot) as a string: accept such numbers for float settings."""
    annotation = next(f.type for f in fields(cls) if f.name == key)
    if isinstance(value, str) and str(annotation).startswith("float"):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"setting {key!r}: expected a number, got {value!r}") from None
    return value
