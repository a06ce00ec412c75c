"""The one loader: :func:`load_model` reads every model file squeezelab knows, detecting its format from the
first bytes.

* squeezelab model files and training checkpoints (``torch.save`` dicts with a ``format`` header);
* plain ``state_dict`` files such as torchvision's ``.pth`` checkpoints (the architecture is named by ``arch``);
* squeezelab compressed ``.sqz`` files (``SQZL`` magic), decoded by :mod:`squeezelab.compress`;
* the Deep Compression SqueezeNet release (``compressed_SqueezeNet.net``).

Everything is read with ``weights_only=True`` or as raw bytes: no file ever executes code. Every command that
takes a model file goes through :func:`load_model` (re-exported as ``squeezelab.load_model``); the library
functions below it (training, compression, export) take modules.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from squeezelab.models import create_model, list_models
from squeezelab.models.files import MODEL_FILE_FORMAT, model_from_record
from squeezelab.models.pretrained import is_pretrained_tag, pretrained_weights
from squeezelab.models.registry import model_config, model_spec, set_model_config
from squeezelab.utils.files import safe_torch_load

from .caffe import import_caffe_compressed
from .classes import IMAGENET_NUM_CLASSES, imagenet_class_names

SQZ_MAGIC = b"SQZL"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2 = b"\x80\x02"  # torch's legacy (pre-1.6) serialization starts with a pickle header
KNOWN_FORMATS = "squeezelab .pt, torch state_dict .pth, .sqz, Deep Compression .net"
# Wrappers that training scripts put around a state_dict.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def detect_format(path: str | os.PathLike) -> str:
    """``"squeezelab-compressed"``, ``"torch"`` (a ``torch.save`` file) or ``"caffe-deep-compression"``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == SQZ_MAGIC:
        return "squeezelab-compressed"
    if head == ZIP_MAGIC or head.startswith(PICKLE_PROTOCOL_2):
        return "torch"
    return "caffe-deep-compression"


def load_model(path: str | os.PathLike, arch: str | None = None, num_classes: int | None = None) -> nn.Module:
    """The model in ``path``, in eval mode, with ``default_cfg`` (preprocessing, class names) and ``model_spec``.

    Reads squeezelab model files and training checkpoints, ``.sqz`` files, the Deep Compression ``.net``
    release and plain state dicts (torchvision's ``.pth``; ``module.`` prefixes and ``state_dict`` /
    ``model_state_dict`` wrappers are removed). ``arch`` (a registered model name) is needed only for plain
    state dicts, which name no architecture; for the other formats it is checked against the file, as is
    ``num_classes``. ``path`` may also be a pretrained tag (``squeezenet1_0.dc_in1k``, see
    ``squeezelab.list_pretrained()``): the file shipped in the package. Errors are one line naming the file and
    what was expected.
    """
    path = model_file(path)
    kind = detect_format(path)
    if kind == "torch":
        content = safe_torch_load(path)
        if not (isinstance(content, Mapping) and content.get("format") == MODEL_FILE_FORMAT):
            return model_from_state_dict(_state_dict_of(content, path), arch, num_classes, source=str(path))
        model = model_from_record(dict(content), source=str(path))
    elif kind == "squeezelab-compressed":
        from squeezelab.compress import load_compressed  # compression code is needed for .sqz files only

        model = load_compressed(path)
    else:
        model = _caffe_release(path)
    _check_requested(model, arch, num_classes, str(path))
    return model.eval()


def model_file(ref: str | os.PathLike) -> Path:
    """``ref`` as a path; a pretrained tag (when no file of that name exists) becomes its shipped file."""
    path = Path(ref)
    if not path.exists() and is_pretrained_tag(str(ref)):
        return pretrained_weights(str(ref)).path
    return path


def _caffe_release(path: str | os.PathLike) -> nn.Module:
    try:
        return import_caffe_compressed(path)
    except ValueError:
        if Path(path).suffix == ".net":
            raise  # the decoder's message says what is wrong with the file
        raise ValueError(f"{path}: not a model file squeezelab reads ({KNOWN_FORMATS})") from None


def _check_requested(model: nn.Module, arch: str | None, num_classes: int | None, source: str) -> None:
    """A file that names its own architecture must hold the one asked for (a wrong file fails here, not later)."""
    held = model_spec(model)["name"]
    if arch is not None and arch != held:
        raise ValueError(f"{source}: holds a {held!r} model, not {arch!r}")
    classes = model_config(model).num_classes
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"{source}: holds a {classes}-class {held} model, not {num_classes} classes")


def load_model_or_name(ref: str | os.PathLike, arch: str | None = None) -> nn.Module:
    """A model file (any format :func:`load_model` reads) or a registered model name (random weights)."""
    if model_file(ref).is_file():
        return load_model(ref, arch=arch)
    if str(ref) in list_models():
        return create_model(str(ref)).eval()
    raise ValueError(f"{ref}: neither a model file nor a registered model name (see 'squeezelab models')")


def _state_dict_of(content: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(content, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise ValueError(f"{path}: neither a squeezelab model file nor a state_dict of tensors")
    # nn.DataParallel / DistributedDataParallel save every key under "module.".
    if all(key.startswith("module.") for key in content):
        return {key[len("module."):]: value for key, value in content.items()}
    return dict(content)


def model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: str | None, num_classes: int | None = None, source: str = "state_dict"
) -> nn.Module:
    """Build ``arch`` and load ``state_dict`` strictly; 1000-class models get the ImageNet class names."""
    if arch is None:
        raise ValueError(
            f"{source}: a plain state_dict does not name its architecture; pass arch (--arch), e.g. squeezenet1_0"
        )
    model = create_model(arch, num_classes=num_classes)
    mismatch = state_dict_mismatch(model.state_dict(), state_dict)
    if mismatch:
        raise ValueError(f"{source}: weights do not fit {arch}: {mismatch}")
    model.load_state_dict(state_dict, strict=True)
    cfg = model_config(model)
    if cfg.num_classes == IMAGENET_NUM_CLASSES and not cfg.class_names:
        set_model_config(model, replace(cfg, class_names=imagenet_class_names()))
    return model.eval()


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """A one-line summary of missing keys, unexpected keys and shape differences ("" if ``found`` fits)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key} {tuple(found[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in found and tuple(found[key].shape) != tuple(value.shape)
    ]
    parts = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes))
        if items
    ]
    return "; ".join(parts)
