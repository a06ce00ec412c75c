"""Transfer learning: a trained model with a new classifier for another number of classes.

Which layers belong to the classifier is not guessed from names: they are the tensors whose shape depends on
the number of classes, found by building the architecture twice on the meta device with different class
counts. That holds for every registered model (SqueezeNet's final 1x1 convolution, a linear head, ...).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from .registry import create_model, model_config, model_spec, set_model_config


def class_dependent_keys(model: nn.Module) -> set[str]:
    """``state_dict`` keys of ``model`` whose shape changes with the number of classes (its classifier)."""
    spec = model_spec(model)
    kwargs = dict(spec.get("kwargs", {}))
    classes = model_config(model).num_classes
    with torch.device("meta"):
        other = create_model(spec["name"], **{**kwargs, "num_classes": classes + 1}).state_dict()
    return {key for key, value in model.state_dict().items() if key in other and other[key].shape != value.shape}


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model``'s classifier (see :func:`class_dependent_keys`)."""
    named = dict(model.named_parameters())
    return [named[key] for key in sorted(class_dependent_keys(model)) if key in named]


def with_num_classes(model: nn.Module, num_classes: int, class_names: tuple[str, ...] | None = None) -> nn.Module:
    """``model`` itself if it already has ``num_classes`` outputs, else the same architecture with a new,
    freshly initialised classifier for ``num_classes`` and every other weight copied from ``model``.

    ``class_names`` name the new classes (default: none). The result is in training mode when it is new.
    """
    cfg = model_config(model)
    if num_classes == cfg.num_classes:
        return model
    spec = model_spec(model)
    kwargs = {**spec.get("kwargs", {}), "num_classes": num_classes}
    fresh = create_model(spec["name"], **kwargs)
    head = class_dependent_keys(model)
    kept = {key: value for key, value in model.state_dict().items() if key not in head}
    missing, unexpected = fresh.load_state_dict(kept, strict=False)
    if unexpected or set(missing) != head:  # cannot happen for registry models; guards custom builders
        raise ValueError(f"{spec['name']}: cannot move its weights to a {num_classes}-class model ({sorted(set(missing) ^ head)[:1]})")
    set_model_config(fresh, replace(cfg, num_classes=num_classes, class_names=class_names))
    return fresh
