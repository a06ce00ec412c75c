"""Deep Compression: pruning, trained quantization (weight sharing), entropy coding, ``.sqz`` files.

See docs/compression.md. The pieces, in pipeline order: :func:`prune` / :func:`prune_filters`,
:func:`quantize`, :func:`correct_biases`, fine-tuning with ``squeezelab.train.fit`` (or :func:`distill`), :func:`save_compressed`
and :func:`load_compressed`; :func:`sweep` / :func:`allocate` for sensitivity-based budgets;
:func:`compress_and_evaluate` runs it all as a :class:`CompressionConfig` says; :func:`dense_sparse_dense` is DSD
training.
"""

from .biascorrection import correct_biases
from .config import CompressionConfig
from .dsd import DSDResult, dense_sparse_dense
from .finetune import distill, finetune, finetune_config, finetune_data
from .kmeans import kmeans_1d, kmeans_1d_many
from .layers import layer_kinds, prunable_layers, resolve_per_layer
from .pipeline import CompressionOutcome, compress_and_evaluate, quickstart_compress
from .pruning import (
    DEEP_COMPRESSION_DENSITIES,
    PruningMask,
    StdThreshold,
    bake,
    densities,
    iterative_prune,
    plain_copy,
    plain_state_dict,
    prune,
    resolve_densities,
    save_plain_model,
    strip,
)
from .report import LayerSize, SizeReport
from .sensitivity import Sensitivity, accuracy_scorer, allocate, distillation_scorer, file_fixed_bytes, sweep
from .sharing import LatentWeightSharing, WeightSharing, fix_assignments, quantize, shared_layers
from .sqz import CompressedFileError, inspect_compressed, load_compressed, non_weight_bytes, save_compressed
from .structured import prune_filters

__all__ = [
    "DEEP_COMPRESSION_DENSITIES",
    "CompressedFileError",
    "CompressionConfig",
    "CompressionOutcome",
    "DSDResult",
    "LayerSize",
    "PruningMask",
    "Sensitivity",
    "SizeReport",
    "StdThreshold",
    "WeightSharing",
    "LatentWeightSharing",
    "accuracy_scorer",
    "allocate",
    "bake",
    "compress_and_evaluate",
    "correct_biases",
    "dense_sparse_dense",
    "densities",
    "distill",
    "distillation_scorer",
    "file_fixed_bytes",
    "finetune",
    "finetune_config",
    "finetune_data",
    "inspect_compressed",
    "iterative_prune",
    "kmeans_1d",
    "kmeans_1d_many",
    "layer_kinds",
    "load_compressed",
    "non_weight_bytes",
    "plain_copy",
    "plain_state_dict",
    "prunable_layers",
    "prune",
    "prune_filters",
    "quantize",
    "quickstart_compress",
    "resolve_densities",
    "resolve_per_layer",
    "save_compressed",
    "save_plain_model",
    "shared_layers",
    "fix_assignments",
    "strip",
    "sweep",
]
