"""Command-line spellings of per-layer and per-stage settings: ``0.33`` or ``conv3x3=0.33,classifier=0.2``.

Each parser names its option in its errors and checks values before any model or data loads; the library
takes the parsed values (:class:`squeezelab.compress.CompressionConfig` fields, :func:`squeezelab.compress.prune` specs).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from squeezelab.compress.pruning import DEEP_COMPRESSION_DENSITIES, GRANULARITIES, DensitySpec, StdThreshold, check_density

T = TypeVar("T", int, float, str)


def parse_per_layer(text: str, convert: Callable[[str], T], option: str) -> T | dict[str, T]:
    """Parse ``0.33`` or ``conv3x3=0.33,classifier=0.2`` (values converted by ``convert``)."""
    try:
        if "=" not in text:
            return convert(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {key.strip(): convert(value) for key, value in pairs}
    except ValueError:
        raise ValueError(f"{option}: cannot read {text!r}; expected a value or KEY=VALUE,KEY=VALUE") from None


def parse_density_spec(text: str) -> DensitySpec:
    """``0.3`` (one global target), ``conv3x3=0.33,classifier=0.2`` (by layer/kind), ``std:0.7``
    (Han's threshold) or ``deep-compression`` (the released SqueezeNet's layer densities).

    Values are checked here, before any model is loaded: densities must lie in (0, 1] and std scales be
    finite and > 0 (a scale <= 0 prunes nothing, since no ``|w|`` is below ``scale * std``).
    """
    if text == "deep-compression":
        return dict(DEEP_COMPRESSION_DENSITIES)
    is_std = text.startswith("std:")
    values = parse_per_layer(text[4:], float, "--density std:") if is_std else parse_per_layer(text, float, "--density")
    try:
        if is_std:
            return StdThreshold(values)
        for density in values.values() if isinstance(values, Mapping) else [values]:
            check_density(density)
        return values
    except ValueError as exc:
        raise ValueError(f"--density {text}: {exc}") from None


def density_settings(text: str) -> dict[str, Any]:
    """The ``density`` and ``std_threshold`` settings of a compression that ``--density text`` gives."""
    spec = parse_density_spec(text)
    if isinstance(spec, StdThreshold):
        return {"density": None, "std_threshold": spec.scale}
    return {"density": spec, "std_threshold": None}


def parse_granularity_spec(text: str) -> str | dict[str, str]:
    """``kernel`` for every layer or ``conv3x3=kernel,default=weight`` by layer name / kind."""
    spec = parse_per_layer(text, str.strip, "--granularity")
    for value in spec.values() if isinstance(spec, Mapping) else [spec]:
        if value not in GRANULARITIES:
            raise ValueError(f"--granularity: expected {' or '.join(GRANULARITIES)} (or LAYER=... pairs of them), got {value!r}")
    return spec


def parse_keep_filters(text: str) -> float | dict[str, float]:
    """``0.75`` of every layer's filters kept or ``conv1x1=0.5,...`` by layer name / kind."""
    return parse_per_layer(text, float, "--keep-filters")


def parse_bits_spec(text: str) -> int | dict[str, int]:
    """``6`` for every layer or ``conv=8,classifier=5`` by layer name / kind."""
    return parse_per_layer(text, int, "--bits")


def parse_stage_epochs(text: str) -> dict[str, int]:
    """``prune5=16,quantized=4`` -> ``{"prune5": 16, "quantized": 4}`` (the ``--stage-epochs`` option)."""
    return _parse_stage_values(text, int, "--stage-epochs", "STAGE=N,... such as prune5=16,quantized=4")


def parse_stage_lr(text: str) -> dict[str, float]:
    """``quantized=0.005`` -> ``{"quantized": 0.005}`` (the ``--stage-lr`` option)."""
    return _parse_stage_values(text, float, "--stage-lr", "STAGE=LR,... such as prune3=0.02,quantized=0.005")


def _parse_stage_values(text: str, convert: Callable[[str], T], option: str, expected: str) -> dict[str, T]:
    parsed = parse_per_layer(text, convert, option)
    if not isinstance(parsed, dict):
        raise ValueError(f"{option}: expected {expected}, got {text!r}")
    return parsed
