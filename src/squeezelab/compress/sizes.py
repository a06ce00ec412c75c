"""What a model's parts cost in a ``.sqz`` file: the coded streams of a weight-shared layer, the bytes a layer's
weight takes (:func:`layer_bytes`, for size budgets before a file exists) and the :class:`.report.SizeReport`
of a coded file. A layer is measured by coding it exactly as :func:`.sqz.save_compressed` writes it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .batchnorm import BATCH_NORM_BUFFERS
from .coding import EncodedStream, encode_symbols
from .layers import layer_weight
from .positions import encode_positions, kernel_taps
from .pruning import current_mask
from .report import LayerSize, SizeReport
from .sharing import WeightSharing, planned_sharing, weight_sharing
from .tensorcodecs import tensor_nbytes

CODEBOOK_ENTRY_BYTES = 4  # float32 centroids


@dataclasses.dataclass(frozen=True)
class CodedLayer:
    """A weight-shared layer as a file holds it: its codebook, the cluster index of each kept weight, which
    weights are kept, and the coded streams of the indices and of the positions (None: the layer is dense)."""

    name: str
    codebook: np.ndarray
    indices: np.ndarray  # one per kept weight, in flattened order
    mask: np.ndarray  # flattened booleans
    shape: tuple[int, ...]
    index_stream: EncodedStream
    position_stream: EncodedStream | None

    @property
    def codebook_bytes(self) -> int:
        return CODEBOOK_ENTRY_BYTES * len(self.codebook)

    @property
    def nbytes(self) -> int:
        """Bytes of its sections: codebook, index stream, position stream."""
        positions = self.position_stream.nbytes if self.position_stream is not None else 0
        return self.codebook_bytes + self.index_stream.nbytes + positions


def code_layer(name: str, sharing: WeightSharing, index_coder: str, position_coder: str) -> CodedLayer:
    """The layer shared by ``sharing``, its indices coded by ``index_coder`` and its positions by ``position_coder``
    (see :func:`.coding.encode_symbols` and :data:`.positions.POSITION_CODERS`)."""
    mask = sharing.mask.detach().cpu().numpy().ravel()
    indices = sharing.indices.detach().cpu().numpy().ravel()[mask]
    codebook = sharing.codebook.detach().cpu().float().numpy()
    index_stream = encode_symbols(indices, index_coder, alphabet=len(codebook))
    taps = kernel_taps(tuple(sharing.mask.shape))
    position_stream = None if mask.all() else encode_positions(mask, position_coder, taps)
    return CodedLayer(name, codebook, indices, mask, tuple(sharing.mask.shape), index_stream, position_stream)


def layer_bytes(module: nn.Module, index_coder: str = "auto", position_coder: str = "auto", bits: int | None = None) -> int:
    """Bytes of a layer's weight in a ``.sqz`` file: coded streams if weight-shared (or, given ``bits``, as
    if weight-shared with that many bits and its current mask), otherwise an estimate for sparse float32
    storage (4 bytes per kept weight plus the coded positions)."""
    sharing = weight_sharing(module)
    if sharing is None and bits is not None:
        (sharing,) = planned_sharing([module], [bits])
    if sharing is not None:
        return code_layer("", sharing, index_coder, position_coder).nbytes
    mask = current_mask(module).cpu().numpy().ravel()
    positions = 0 if mask.all() else encode_positions(mask, position_coder, kernel_taps(tuple(layer_weight(module).shape))).nbytes
    return 4 * int(mask.sum()) + positions


def size_report(layers: list[CodedLayer], tensor_entries: list[list[Any]], file_bytes: int, state: Mapping[str, torch.Tensor]) -> SizeReport:
    """The report of a file of ``file_bytes`` holding ``layers`` and the tensors of ``tensor_entries`` (its
    ``[key, storage, shape]`` table) of a model whose state is ``state`` (for the dense size to compare with)."""
    tensor_sizes = {key: tensor_nbytes(storage, shape) for key, storage, shape in tensor_entries}
    rows = [_layer_size(layer, bias_bytes=tensor_sizes.pop(f"{layer.name}.bias", 0)) for layer in layers]
    other = sum(tensor_sizes.values())
    coded = sum(row.total_bytes for row in rows) + other
    parameters = sum(t.numel() for key, t in state.items() if t.is_floating_point() and not _is_buffer_key(key))
    return SizeReport(rows, other, file_bytes - coded, file_bytes, 4 * parameters)


def _layer_size(layer: CodedLayer, bias_bytes: int) -> LayerSize:
    positions = layer.position_stream
    return LayerSize(
        name=layer.name,
        shape=layer.shape,
        params=int(layer.mask.size),
        nonzeros=int(layer.mask.sum()),
        clusters=len(layer.codebook),
        codebook_bytes=layer.codebook_bytes,
        index_coder=layer.index_stream.coder,
        index_bytes=layer.index_stream.nbytes,
        index_limit_bytes=layer.index_stream.entropy_bytes,
        position_coder=positions.coder if positions else "dense",
        position_bytes=positions.nbytes if positions else 0,
        position_limit_bytes=positions.entropy_bytes if positions else 0.0,
        bias_bytes=bias_bytes,
    )


def _is_buffer_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in BATCH_NORM_BUFFERS
