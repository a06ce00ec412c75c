"""Deep Compression: pruning, trained quantization (weight sharing), entropy coding, ``.sqz`` files."""

from .layers import layer_kinds, parse_per_layer, prunable_layers, resolve_per_layer
from .pruning import (
    DEEP_COMPRESSION_DENSITIES,
    PruningMask,
    StdThreshold,
    bake,
    densities,
    iterative_prune,
    parse_density_spec,
    prune,
    resolve_densities,
    strip,
)
from .report import LayerSize, SizeReport
from .sharing import WeightSharing, parse_bits_spec, quantize, shared_layers
from .sqz import CompressedFileError, inspect_compressed, load_compressed, save_compressed

__all__ = [
    "DEEP_COMPRESSION_DENSITIES",
    "CompressedFileError",
    "LayerSize",
    "PruningMask",
    "SizeReport",
    "StdThreshold",
    "WeightSharing",
    "bake",
    "densities",
    "inspect_compressed",
    "iterative_prune",
    "layer_kinds",
    "load_compressed",
    "parse_bits_spec",
    "parse_density_spec",
    "parse_per_layer",
    "prunable_layers",
    "prune",
    "quantize",
    "resolve_densities",
    "resolve_per_layer",
    "save_compressed",
    "shared_layers",
    "strip",
]
