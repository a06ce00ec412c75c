"""The ``.sqz`` compressed model file: write, read, inspect.

Layout (little-endian)::

    magic "SQZL" | uint16 version | uint16 flags (0) | uint32 metadata length
    metadata: zlib-compressed JSON (model spec, preprocessing config, per-layer stream table)
    body: for each weight-shared layer, in order: codebook (float32), index table, index payload,
          position table, position payload; then every other state_dict tensor (raw, dtype in metadata;
          an all-zero floating-point tensor is stored as its shape only, dtype "zeros")
    uint32 CRC-32 of everything before it

Weight-shared layers store only their kept weights: the cluster index of each (entropy-coded) and the
sparsity pattern (entropy-coded, see :mod:`.positions`). Biases, batch-norm parameters and any layer
without weight sharing are stored raw as float32 or, if asked, float16 or as codes after a small per-tensor
header: 8-bit logarithmic ones for batch-norm scales and variances, 8- or 10-bit linear ones for the rest
(see :func:`save_compressed`). Decoding rebuilds the model
from its registered name and arguments; it never executes code from the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping, cast

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from squeezelab.models.registry import ModelConfig, create_model, model_skeleton, set_model_config
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import atomic_write_bytes

from .coding import EncodedStream, decode_stream, encode_symbols, entropy_bytes, symbol_counts
from .layers import layer_weight, prunable_layers
from .positions import decode_positions, encode_positions, kernel_taps
from .pruning import current_mask, plain_state_dict
from .report import LayerSize, SizeReport
from .sharing import WeightSharing, planned_sharing, set_weight_sharing, shared_layers, weight_sharing

MAGIC = b"SQZL"
# version 2: "zeros" tensors (folded batch norms absorb the bias of the convolution before them)
# version 3: "kernel-mask" positions (kernels kept, then taps kept in them)
# version 4: "log8" tensors (8-bit logarithmic codes), "linear10" tensors (10-bit linear codes)
FORMAT_VERSION = 4
HEADER = struct.Struct("<4sHHI")
CHECKSUM = struct.Struct("<I")
TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
ZEROS = "zeros"  # storage of an all-zero floating-point tensor: no bytes
# How floating-point tensors other than the coded weights may be stored (``uint8``: linear 8-bit codes).
FLOAT_STORAGE = ("float32", "float16", "uint8", "compact")
LINEAR_RANGE = struct.Struct("<ff")  # minimum, step of a tensor of linear codes
LINEAR_BITS = {"uint8": 8, "linear10": 10}  # per-tensor storages of linear codes, bit-packed
LOG8 = "log8"
LOG_RANGE = struct.Struct("<ffB")  # natural log of the smallest magnitude, log step, sign mode
LOG_SIGN_MODES = ("positive", "negative", "mixed")  # mixed: the top bit of each code is the sign


class CompressedFileError(DamagedFileError):
    """The file is not a readable squeezelab compressed model (message names the file)."""


@dataclasses.dataclass(frozen=True)
class _DecodedLayer:
    name: str
    codebook: np.ndarray
    indices: np.ndarray  # one per kept weight, in flattened order
    mask: np.ndarray  # flattened booleans
    shape: tuple[int, ...]
    index_stream: EncodedStream
    position_stream: EncodedStream | None


def save_compressed(
    model: nn.Module,
    path: str | os.PathLike,
    index_coder: str = "auto",
    position_coder: str = "auto",
    tensor_dtype: str = "float32",
    fold_batch_norm: bool = False,
) -> SizeReport:
    """Write ``model`` (its weight-shared layers entropy-coded, see :func:`quantize`) to ``path``.

    ``index_coder`` is ``"huffman"``, ``"ans"`` or ``"auto"`` (smaller per layer); ``position_coder``
    see :data:`.positions.POSITION_CODERS`. ``tensor_dtype`` (``"float32"``, ``"float16"`` or ``"uint8"``)
    is how biases and other small tensors are stored; float16 rounds them; uint8 and compact code batch-norm
    scales and variances in one byte each, logarithmically (sign, then 255 or 127 levels of log-magnitude
    between the tensor's smallest and largest: error at most half a step, relative), and every other tensor
    linearly between its minimum and maximum (error at most half a step): on 8 bits (uint8) or on 10
    (compact). Scales multiply, so their error should be relative: after pruning they span orders of
    magnitude (a channel whose inputs are gone has a variance near zero), and linear codes wipe out the
    small ones. The decoded model differs from ``model`` by that rounding only. ``fold_batch_norm`` stores each batch norm as the per-channel scale
    and shift it applies in eval mode (half its four tensors), with the bias of a convolution that feeds
    only that batch norm added into the shift (the bias is then stored as zeros, in no bytes); the decoded
    layer gets running mean 0 and variance ``1 - eps``, so its outputs in eval mode are unchanged
    (training it again starts from those statistics instead of the original ones).
    """
    _check_tensor_dtype(tensor_dtype)
    shared = shared_layers(model)
    if not shared:
        raise ValueError("the model has no weight-shared layer: run squeezelab.compress.quantize(model, bits) first")
    _model_spec(model)  # before the coding work, not after it
    layer_entries, sections, encoded = [], [], []
    for name, sharing in shared.items():
        entry, layer_sections, layer = _encode_layer(name, sharing, index_coder, position_coder)
        layer_entries.append(entry)
        sections += layer_sections
        encoded.append(layer)
    small = _SmallTensors.of(model, set(shared), tensor_dtype, fold_batch_norm)
    metadata = _metadata(model, layer_entries, small)
    sections += small.sections
    data = _assemble(metadata, sections)
    atomic_write_bytes(path, data)
    return _size_report(encoded, small.entries, len(data), small.state)


def non_weight_bytes(model: nn.Module, tensor_dtype: str = "float32", fold_batch_norm: bool = False) -> int:
    """Bytes of a ``.sqz`` file of ``model`` beyond its prunable layers' coded weights (what
    :func:`layer_bytes` counts): biases and batch norms stored as ``tensor_dtype`` and ``fold_batch_norm``
    say (see :func:`save_compressed`), metadata, header and checksum. Together with the layers' bytes this is
    the file size, to within a few bytes per layer: the metadata records each layer's stream lengths, which
    only the coded file knows (here: lengths of the usual number of digits)."""
    _check_tensor_dtype(tensor_dtype)
    layers = prunable_layers(model)
    small = _SmallTensors.of(model, set(layers), tensor_dtype, fold_batch_norm)
    entries = [_typical_layer_entry(name, tuple(layer_weight(module).shape)) for name, module in layers.items()]
    return len(_assemble(_metadata(model, entries, small), small.sections))


def _check_tensor_dtype(tensor_dtype: str) -> None:
    if tensor_dtype not in FLOAT_STORAGE:
        raise ValueError(f"tensor_dtype must be one of {', '.join(FLOAT_STORAGE)}, got {tensor_dtype!r}")


@dataclasses.dataclass
class _SmallTensors:
    """Every state_dict tensor but the coded weights, as stored: ``entries`` are ``[key, storage, shape]``."""

    state: dict[str, torch.Tensor]
    folded: list[str]
    entries: list[list[Any]]
    sections: list[bytes]

    @classmethod
    def of(cls, model: nn.Module, coded_layers: set[str], tensor_dtype: str, fold_batch_norm: bool) -> _SmallTensors:
        norms = batch_norms(model)
        folded = norms if fold_batch_norm else {}
        state = _folded_state(plain_state_dict(model), folded, sole_convolution_inputs(model, folded) if folded else {})
        coded_keys = {f"{name}.weight" for name in coded_layers}
        scales = {f"{name}.{kind}" for name in norms for kind in ("weight", "running_var")}
        entries, sections = [], []
        for key, tensor in state.items():
            if key in coded_keys:
                continue
            dtype = _storage(tensor, tensor_dtype, is_scale=key in scales)
            entries.append([key, dtype, list(tensor.shape)])
            sections.append(_tensor_bytes(tensor, dtype))
        return cls(state, sorted(folded), entries, sections)


def _model_spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "model_spec", None)
    if spec is None:
        raise ValueError("model has no model_spec: build it with squeezelab.create_model")
    return spec


def _metadata(model: nn.Module, layer_entries: list[dict[str, Any]], small: _SmallTensors) -> dict[str, Any]:
    cfg = getattr(model, "default_cfg", None)
    return {
        "format": "squeezelab-compressed",
        "model_spec": _model_spec(model),
        "default_cfg": cfg.to_dict() if isinstance(cfg, ModelConfig) else None,
        "layers": layer_entries,
        "tensors": small.entries,
        "folded_batch_norm": small.folded,
    }


def _encode_layer(
    name: str, sharing: WeightSharing, index_coder: str, position_coder: str
) -> tuple[dict[str, Any], list[bytes], _DecodedLayer]:
    mask = sharing.mask.detach().cpu().numpy().ravel()
    indices = sharing.indices.detach().cpu().numpy().ravel()[mask]
    codebook = sharing.codebook.detach().cpu().float().numpy()
    index_stream = encode_symbols(indices, index_coder, alphabet=len(codebook))
    taps = kernel_taps(tuple(sharing.mask.shape))
    position_stream = None if mask.all() else encode_positions(mask, position_coder, taps)
    entry = _layer_entry(
        name, tuple(sharing.mask.shape), int(mask.sum()), len(codebook),
        [index_stream.coder, len(index_stream.table), len(index_stream.payload)],
        None if position_stream is None
        else [position_stream.coder, len(position_stream.table), len(position_stream.payload), position_stream.count],
    )  # fmt: skip
    sections = [codebook.astype("<f4").tobytes(), index_stream.table, index_stream.payload]
    if position_stream is not None:
        sections += [position_stream.table, position_stream.payload]
    layer = _DecodedLayer(name, codebook, indices, mask, tuple(sharing.mask.shape), index_stream, position_stream)
    return entry, sections, layer


def _layer_entry(
    name: str, shape: tuple[int, ...], nonzeros: int, clusters: int, index: list, positions: list | None
) -> dict[str, Any]:
    """A layer's row of the metadata's stream table: ``index`` is [coder, table bytes, payload bytes],
    ``positions`` the same and the count of coded positions (None: the layer is dense)."""
    return {"name": name, "shape": list(shape), "nonzeros": nonzeros, "clusters": clusters, "index": index, "positions": positions}


def _typical_layer_entry(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """A stream-table row of about the compressed length a pruned, weight-shared layer of this shape gets.
    Its stream lengths vary from layer to layer as real ones do (the name seeds them): equal rows for layers
    of equal shape would compress to almost nothing."""
    rng = random.Random(name)
    weights = math.prod(shape)
    kept = max(1, round(weights * rng.uniform(0.1, 0.6)))
    index, positions = round(kept * rng.uniform(0.3, 0.4)), round(weights * rng.uniform(0.05, 0.15))
    return _layer_entry(name, shape, kept, 8, ["huffman", 9, index], ["mask", 3, positions, weights])


def layer_bytes(module: nn.Module, index_coder: str = "auto", position_coder: str = "auto", bits: int | None = None) -> int:
    """Bytes of a layer's weight in a ``.sqz`` file: coded streams if weight-shared (or, given ``bits``, as
    if weight-shared with that many bits and its current mask), otherwise an estimate for sparse float32
    storage (4 bytes per kept weight plus the coded positions)."""
    sharing = weight_sharing(module)
    if sharing is None and bits is not None:
        (sharing,) = planned_sharing([module], [bits])
    if sharing is not None:
        _, sections, _ = _encode_layer("", sharing, index_coder, position_coder)
        return sum(len(section) for section in sections)
    mask = current_mask(module).cpu().numpy().ravel()
    positions = 0 if mask.all() else encode_positions(mask, position_coder, kernel_taps(tuple(layer_weight(module).shape))).nbytes
    return 4 * int(mask.sum()) + positions


def _storage(tensor: torch.Tensor, tensor_dtype: str, is_scale: bool) -> str:
    """How one tensor is stored under the ``tensor_dtype`` policy of :func:`save_compressed`."""
    if not tensor.is_floating_point():
        return "int64"
    if not tensor.any():
        return ZEROS
    if tensor_dtype in ("uint8", "compact"):
        return LOG8 if is_scale else "linear10" if tensor_dtype == "compact" else "uint8"
    return tensor_dtype


def _tensor_bytes(tensor: torch.Tensor, dtype: str) -> bytes:
    if dtype == ZEROS:
        return b""
    if dtype in LINEAR_BITS:
        return _linear_codes(tensor.detach().cpu().double().flatten(), LINEAR_BITS[dtype])
    if dtype == LOG8:
        return _log_codes(tensor.detach().cpu().double().flatten())
    array = tensor.detach().cpu().to(TENSOR_DTYPES[dtype]).contiguous().numpy()
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def _linear_codes(values: torch.Tensor, bits: int) -> bytes:
    low = float(values.min()) if values.numel() else 0.0
    step = (float(values.max()) - low) / ((1 << bits) - 1) if values.numel() else 0.0
    codes = torch.zeros_like(values) if step == 0 else torch.round((values - low) / step)
    return LINEAR_RANGE.pack(low, step) + _packed(codes.to(torch.int64).numpy(), bits)


def _from_linear_codes(raw: bytes, shape: list[int], bits: int) -> torch.Tensor:
    low, step = LINEAR_RANGE.unpack(raw[: LINEAR_RANGE.size])
    codes = _unpacked(raw[LINEAR_RANGE.size :], int(np.prod(shape, dtype=np.int64)), bits)
    return torch.from_numpy((low + step * codes.astype(np.float64)).astype(np.float32).reshape(shape))


def _packed(codes: np.ndarray, bits: int) -> bytes:
    """``bits`` bits per code, most significant first (8-bit codes are one byte each)."""
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((codes[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpacked(raw: bytes, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: count * bits].astype(np.int64)
    return flat.reshape(count, bits) @ (1 << np.arange(bits - 1, -1, -1))


def _log_codes(values: torch.Tensor) -> bytes:
    """Code 0 is an exact zero; codes 1.. step evenly through log |value| from the smallest magnitude to the
    largest. With both signs present the top bit is the sign and 7 bits are left for the magnitude."""
    negative, nonzero = values < 0, values != 0
    mode = 2 if negative.any() and (values > 0).any() else int(bool(negative.any()))
    levels = 127 if mode == 2 else 255
    logs = values[nonzero].abs().log()
    low = float(logs.min())
    step = (float(logs.max()) - low) / (levels - 1)
    codes = torch.zeros_like(values)
    codes[nonzero] = 1 + (torch.round((logs - low) / step) if step > 0 else torch.zeros_like(logs))
    if mode == 2:
        codes += 128 * negative
    return LOG_RANGE.pack(low, step, mode) + codes.to(torch.uint8).numpy().tobytes()


def _from_log_codes(raw: bytes, shape: list[int]) -> torch.Tensor:
    low, step, mode = LOG_RANGE.unpack(raw[: LOG_RANGE.size])
    if mode >= len(LOG_SIGN_MODES):
        raise CompressedFileError(f"unknown sign mode {mode} of a log8 tensor")
    codes = np.frombuffer(raw[LOG_RANGE.size :], dtype=np.uint8).astype(np.int64)
    magnitudes = codes & 0x7F if mode == 2 else codes
    values = np.where(magnitudes > 0, np.exp(low + step * (magnitudes - 1)), 0.0)
    signs = np.where(codes >= 128, -1.0, 1.0) if mode == 2 else -1.0 if mode == 1 else 1.0
    return torch.from_numpy((signs * values).astype(np.float32).reshape(shape))


def _assemble(metadata: dict[str, Any], sections: list[bytes]) -> bytes:
    meta = zlib.compress(json.dumps(metadata, separators=(",", ":")).encode(), 9)
    body = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta)) + meta + b"".join(sections)
    return body + CHECKSUM.pack(zlib.crc32(body))


def _size_report(layers: list[_DecodedLayer], tensor_entries: list, file_bytes: int, state: dict) -> SizeReport:
    tensor_sizes = {key: _tensor_nbytes(dtype, shape) for key, dtype, shape in tensor_entries}
    rows = []
    for layer in layers:
        positions = layer.position_stream
        rows.append(
            LayerSize(
                name=layer.name,
                shape=layer.shape,
                params=int(layer.mask.size),
                nonzeros=int(layer.mask.sum()),
                clusters=len(layer.codebook),
                codebook_bytes=4 * len(layer.codebook),
                index_coder=layer.index_stream.coder,
                index_bytes=layer.index_stream.nbytes,
                index_limit_bytes=layer.index_stream.entropy_bytes,
                position_coder=positions.coder if positions else "dense",
                position_bytes=positions.nbytes if positions else 0,
                position_limit_bytes=positions.entropy_bytes if positions else 0.0,
                bias_bytes=tensor_sizes.pop(f"{layer.name}.bias", 0),
            )
        )
    other = sum(tensor_sizes.values())
    coded = sum(row.total_bytes for row in rows) + other
    parameters = sum(t.numel() for key, t in state.items() if t.is_floating_point() and not _is_buffer_key(key))
    return SizeReport(rows, other, file_bytes - coded, file_bytes, 4 * parameters)


def batch_norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The batch norms with running statistics and an affine part: those whose eval-mode map can be folded."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats and module.affine
    }


def sole_convolution_inputs(model: nn.Module, norms: Mapping[str, nn.Module], require_bias: bool = True) -> dict[str, str]:
    """For each batch norm in ``norms`` whose input is the output of a convolution (a biased one unless
    ``require_bias`` is False) used by nothing else, that convolution's name (from the ``torch.fx`` graph)."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    inputs: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in norms:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        conv = modules[source.target]
        if isinstance(conv, nn.modules.conv._ConvNd) and (conv.bias is not None or not require_bias):
            # a call_module node's target is its module's name (typed str | Callable for other node kinds)
            inputs[cast(str, node.target)] = cast(str, source.target)
    return inputs


def _folded_state(
    state: dict[str, torch.Tensor], norms: Mapping[str, nn.modules.batchnorm._BatchNorm], conv_inputs: dict[str, str]
) -> dict[str, torch.Tensor]:
    """``state`` with each batch norm in ``norms`` reduced to its eval-mode scale (as weight) and shift (as bias);
    the bias of the convolution in ``conv_inputs`` that feeds it moves into the shift (the bias becomes zero)."""
    state = dict(state)
    for name, norm in norms.items():
        scale = state[f"{name}.weight"] / torch.sqrt(state[f"{name}.running_var"] + norm.eps)
        conv_bias = state[f"{conv_inputs[name]}.bias"] if name in conv_inputs else 0.0
        state[f"{name}.bias"] = state[f"{name}.bias"] + (conv_bias - state[f"{name}.running_mean"]) * scale
        state[f"{name}.weight"] = scale
        if isinstance(conv_bias, torch.Tensor):  # a tensor exactly when name is in conv_inputs
            state[f"{conv_inputs[name]}.bias"] = torch.zeros_like(conv_bias)
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            state.pop(f"{name}.{buffer}", None)
    return state


def _unfolded_state(state: dict[str, torch.Tensor], model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Running statistics that make folded batch norms apply exactly their stored scale and shift (``names``
    are batch norms of ``model``: the reader checks that before decoding)."""
    state = dict(state)
    norms = batch_norms(model)
    for name in names:
        norm = norms[name]
        state[f"{name}.running_mean"] = torch.zeros(norm.num_features)
        state[f"{name}.running_var"] = torch.full((norm.num_features,), 1.0 - norm.eps)
        state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return state


def _tensor_nbytes(dtype: str, shape: list[int]) -> int:
    if dtype == ZEROS:
        return 0
    count = int(np.prod(shape, dtype=np.int64))
    if dtype in LINEAR_BITS:
        return LINEAR_RANGE.size + (count * LINEAR_BITS[dtype] + 7) // 8
    if dtype == LOG8:
        return LOG_RANGE.size + count
    if dtype not in TENSOR_DTYPES:
        raise CompressedFileError(f"unknown tensor storage {dtype!r}")
    return count * torch.empty(0, dtype=TENSOR_DTYPES[dtype]).element_size()


def _is_buffer_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


# --- reading ----------------------------------------------------------------------------------------
# A file may be damaged or crafted, and a valid CRC-32 proves nothing about a crafted one. So every count,
# length and shape it holds is checked against what its model allows before anything is decoded or allocated:
# the model spec is checked and built on the meta device (shapes, no memory), the stream tables are checked
# against that skeleton, each stream's counts against its layer, and the real model is built last.

METADATA_LIMIT = 4 << 20  # bytes of inflated metadata; real files need a few kB (1000 ImageNet class names: 20 kB)
METADATA_DEPTH = 32  # nesting of the metadata's JSON; real files nest 4 deep, a little more in default_cfg.extra
STORAGES = (*TENSOR_DTYPES, ZEROS, LOG8, *LINEAR_BITS)
MAX_DIMENSIONS = 8
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# What malformed content can still raise below a check this reader lacks: turned into CompressedFileError, so
# that a bad file never shows a traceback (RecursionError is a RuntimeError, so it is listed before those).
MALFORMED_CONTENT = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError, struct.error, zlib.error)


@dataclasses.dataclass(frozen=True)
class _DecodedFile:
    metadata: dict[str, Any]
    cfg: ModelConfig | None
    layers: list[_DecodedLayer]
    tensors: dict[str, torch.Tensor]


def load_compressed(path: str | os.PathLike, parametrized: bool = False) -> nn.Module:
    """Decode a ``.sqz`` file into a ready model (in eval mode).

    With ``parametrized=True`` the weight-shared layers keep their codebook/assignment parametrization,
    so the centroids can be fine-tuned further. A missing file raises FileNotFoundError; a truncated,
    corrupted, foreign or crafted one CompressedFileError, one line naming the file, within bounded time and
    memory; no model is returned unless every part decoded and fitted.
    """
    path = Path(path)
    decoded = _read(path)
    with _refusals(path):
        model = _built_model(decoded)
        if parametrized:
            _restore_weight_sharing(model, decoded.layers)
    return model.eval()


def inspect_compressed(path: str | os.PathLike) -> SizeReport:
    """The size report of a ``.sqz`` file (decodes the streams to measure their Shannon limits)."""
    decoded = _read(Path(path))
    state = _plain_state(decoded.layers, decoded.tensors)
    return _size_report(decoded.layers, decoded.metadata["tensors"], Path(path).stat().st_size, state)


def _plain_state(layers: list[_DecodedLayer], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(tensors)
    for layer in layers:
        state[f"{layer.name}.weight"] = _layer_weight(layer)
    return state


def _read(path: Path) -> _DecodedFile:
    """The checked metadata, the model's config and the decoded weight-shared layers and other tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    with _refusals(path):
        metadata, body = _checked_parts(data)
        skeleton = _skeleton(metadata)
        _check_tables(metadata, skeleton)
        cfg = _model_config(metadata)
        layers, tensors = _decode_body(metadata, body)
    return _DecodedFile(metadata, cfg, layers, tensors)


@contextlib.contextmanager
def _refusals(path: Path) -> Iterator[None]:
    """Any failure of reading ``path`` as one CompressedFileError, one line naming the file."""
    try:
        yield
    except CompressedFileError as exc:
        raise CompressedFileError(f"{path}: {first_line(exc)}") from None
    except MALFORMED_CONTENT as exc:
        raise CompressedFileError(f"{path}: damaged compressed model ({first_line(exc)})") from None
    except RuntimeError as exc:  # torch refusing the weights
        raise CompressedFileError(f"{path}: weights do not fit the model: {first_line(exc)}") from None


def _skeleton(metadata: dict[str, Any]) -> nn.Module:
    """The model of the file's spec on the meta device: shapes to check the tables against, no memory."""
    try:
        return model_skeleton(metadata["model_spec"])
    except ValueError as exc:
        raise CompressedFileError(f"cannot rebuild the model: {first_line(exc)}") from None


def _model_config(metadata: dict[str, Any]) -> ModelConfig | None:
    if not metadata.get("default_cfg"):
        return None
    try:
        return ModelConfig.from_dict(metadata["default_cfg"])
    except ValueError as exc:
        raise CompressedFileError(first_line(exc)) from None


def _built_model(decoded: _DecodedFile) -> nn.Module:
    """The real model (built only now that every section decoded) with the file's weights."""
    spec = decoded.metadata["model_spec"]
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if decoded.cfg is not None:
        set_model_config(model, decoded.cfg)
    state = _unfolded_state(_plain_state(decoded.layers, decoded.tensors), model, decoded.metadata["folded_batch_norm"])
    model.load_state_dict(state, strict=True)
    return model


def _checked_parts(data: bytes) -> tuple[dict[str, Any], memoryview]:
    if len(data) < HEADER.size + CHECKSUM.size or data[:4] != MAGIC:
        raise CompressedFileError("not a squeezelab compressed model (no 'SQZL' header)")
    (stored,) = CHECKSUM.unpack_from(data, len(data) - CHECKSUM.size)
    if zlib.crc32(data[: -CHECKSUM.size]) != stored:
        raise CompressedFileError("checksum mismatch: the file is truncated or corrupted")
    _, version, _, meta_length = HEADER.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CompressedFileError(f"format version {version} is newer than this squeezelab reads ({FORMAT_VERSION})")
    if version < 1:
        raise CompressedFileError(f"unknown format version {version}")
    body_start = HEADER.size + meta_length
    if body_start > len(data) - CHECKSUM.size:
        raise CompressedFileError(f"metadata of {meta_length} bytes runs past the end of the file")
    metadata = _checked_metadata(_parsed_json(_inflated(data[HEADER.size : body_start])))
    return metadata, memoryview(data)[body_start : -CHECKSUM.size]


def _inflated(raw: bytes) -> bytes:
    """The metadata's JSON text, refused beyond :data:`METADATA_LIMIT` bytes (a zlib bomb inflates 1000-fold)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(raw, METADATA_LIMIT + 1)
    except zlib.error as exc:
        raise CompressedFileError(f"unreadable metadata ({exc})") from None
    if len(text) > METADATA_LIMIT:
        raise CompressedFileError(f"metadata inflates to more than {METADATA_LIMIT} bytes")
    if not inflater.eof or inflater.unused_data:
        raise CompressedFileError("unreadable metadata (truncated, or followed by stray bytes)")
    return text


def _parsed_json(text: bytes) -> Any:
    try:
        value = json.loads(text, parse_constant=_refuse_non_finite)
    except RecursionError:
        raise CompressedFileError("metadata is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise CompressedFileError(f"unreadable metadata ({first_line(exc)})") from None
    if _nesting_depth(value) > METADATA_DEPTH:
        raise CompressedFileError(f"metadata is nested more than {METADATA_DEPTH} deep")
    return value


def _refuse_non_finite(constant: str) -> Any:
    raise ValueError(f"non-finite number {constant} in the metadata")


def _nesting_depth(value: Any) -> int:
    """Levels of nested lists and objects, level by level (a recursive walk could itself overflow the stack)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for item in level if isinstance(item, (list, dict)) for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def _checked_metadata(metadata: Any) -> dict[str, Any]:
    """``metadata`` if it has the structure :func:`_metadata` writes (the model spec and config are checked with
    the model, see :func:`_skeleton`); tables of the wrong kinds are refused here, before they are used."""
    if not isinstance(metadata, dict) or metadata.get("format") != "squeezelab-compressed":
        raise CompressedFileError("metadata is not a squeezelab compressed model")
    metadata.setdefault("folded_batch_norm", [])  # absent before format version 2
    tables = {"layers": _layer_entry_problem, "tensors": _tensor_entry_problem, "folded_batch_norm": _name_problem}
    for table, problem_of in tables.items():
        rows = metadata.get(table)
        if not isinstance(rows, list):
            raise CompressedFileError(f"metadata: {table} is not a list")
        for number, row in enumerate(rows):
            problem = problem_of(row)
            if problem:
                raise CompressedFileError(f"metadata: {table} entry {number} {problem}")
    return metadata


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= MAX_DIMENSIONS and all(_is_count(n) for n in value)


def _stream_row_problem(row: Any, counts: int) -> str | None:
    """A stream's row is [coder, then ``counts`` lengths and counts]."""
    if isinstance(row, list) and len(row) == 1 + counts and isinstance(row[0], str) and all(_is_count(n) for n in row[1:]):
        return None
    return f"must be [coder, {counts} counts], got {str(row)[:60]}"


def _layer_entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return "is not a named layer"
    if not _is_shape(entry.get("shape")) or not _is_count(entry.get("nonzeros")) or not _is_count(entry.get("clusters")):
        return "needs a shape and counts of weights and clusters"
    if "positions" not in entry:
        return "has no position stream entry (null for a dense layer)"
    positions = entry["positions"]
    return _stream_row_problem(entry.get("index"), 2) or (None if positions is None else _stream_row_problem(positions, 3))


def _tensor_entry_problem(entry: Any) -> str | None:
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[1] in STORAGES and _is_shape(entry[2]):
        return None
    return f"must be [key, storage, shape], got {str(entry)[:60]}"


def _name_problem(name: Any) -> str | None:
    return None if isinstance(name, str) else "is not a name"


def _check_tables(metadata: dict[str, Any], skeleton: nn.Module) -> None:
    """The file stores exactly the model's tensors, in their shapes, before a byte of them is decoded: each
    coded layer is a convolution or linear layer of the model, each other tensor is one of its tensors, stored
    as a floating-point or integer tensor as it is, and none is missing (the statistics of folded batch norms
    are not stored: decoding sets them)."""
    state = skeleton.state_dict()
    norms, prunable = batch_norms(skeleton), prunable_layers(skeleton)
    folded = metadata["folded_batch_norm"]
    for name in folded:
        if name not in norms:
            raise CompressedFileError(f"folded batch norm {_quoted(name)} is not a batch norm of the model")
    expected = set(state) - {f"{name}.{buffer}" for name in folded for buffer in BUFFERS}
    stored: set[str] = set()
    for entry in metadata["layers"]:
        if entry["name"] not in prunable:
            raise CompressedFileError(f"coded layer {_quoted(entry['name'])} is not a convolution or linear layer of the model")
        _check_stored(f"{entry['name']}.weight", entry["shape"], expected, state, stored)
    for key, storage, shape in metadata["tensors"]:
        _check_stored(key, shape, expected, state, stored)
        if (storage == "int64") == state[key].is_floating_point():
            raise CompressedFileError(f"{key} is a {state[key].dtype} tensor stored as {storage}")
    missing = sorted(expected - stored)
    if missing:
        raise CompressedFileError(f"lacks {missing[0]}" + (f" and {len(missing) - 1} more tensors" if len(missing) > 1 else ""))


def _check_stored(key: str, shape: list[int], expected: set[str], state: dict[str, torch.Tensor], stored: set[str]) -> None:
    if key not in expected:
        raise CompressedFileError(f"holds {_quoted(key)}, which the model does not have")
    if key in stored:
        raise CompressedFileError(f"holds {key!r} twice")
    if tuple(shape) != tuple(state[key].shape):
        raise CompressedFileError(f"{key} has shape {tuple(shape)} in the file, {tuple(state[key].shape)} in the model")
    stored.add(key)


SECTION_FIELDS = {  # the parts of a coded layer, in file order, and the stream-table field holding each one's length
    "codebook": ("clusters", None),
    "index-table": ("index", 1),
    "index-payload": ("index", 2),
    "position-table": ("positions", 1),
    "position-payload": ("positions", 2),
}


def section_layout(metadata: dict[str, Any]) -> list[tuple[str, int]]:
    """The body's sections in file order as ``(label, bytes)``, from a well-formed file's metadata (for tools that
    inspect or alter files section by section): ``LAYER:PART`` (parts as :data:`SECTION_FIELDS`; position parts
    only for sparse layers), then each other tensor by its key."""
    sections = []
    for entry in metadata["layers"]:
        for part, (field, position) in SECTION_FIELDS.items():
            if field == "clusters":
                sections.append((f"{entry['name']}:{part}", 4 * entry["clusters"]))
            elif entry[field] is not None:
                sections.append((f"{entry['name']}:{part}", entry[field][position]))
    return sections + [(key, _tensor_nbytes(storage, shape)) for key, storage, shape in metadata["tensors"]]


def _quoted(name: str, length: int = 60) -> str:
    """A name read from the file, for a message: quoted, and cut short (a crafted one can be any length)."""
    return repr(name if len(name) <= length else name[: length - 3] + "...")


class _Reader:
    def __init__(self, body: memoryview) -> None:
        self.body = body
        self.offset = 0

    def take(self, length: int) -> bytes:
        if length < 0 or self.offset + length > len(self.body):
            raise CompressedFileError("a section runs past the end of the file")
        chunk = bytes(self.body[self.offset : self.offset + length])
        self.offset += length
        return chunk


def _decode_body(metadata: dict[str, Any], body: memoryview) -> tuple[list[_DecodedLayer], dict[str, torch.Tensor]]:
    """The sections, in the order of the tables (whose shapes :func:`_check_tables` has checked)."""
    reader = _Reader(body)
    layers = [_decode_layer(entry, reader) for entry in metadata["layers"]]
    tensors = {}
    for key, storage, shape in metadata["tensors"]:
        tensors[key] = _decode_tensor(reader.take(_tensor_nbytes(storage, shape)), storage, shape)
        if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            raise CompressedFileError(f"{key} holds non-finite values")
    if reader.offset != len(body):
        raise CompressedFileError(f"{len(body) - reader.offset} unexpected bytes after the last section")
    return layers, tensors


def _decode_tensor(raw: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    if dtype == ZEROS:
        return torch.zeros(shape)
    # coded ranges from a damaged file can overflow: the values are checked for finiteness afterwards
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype in LINEAR_BITS:
            return _from_linear_codes(raw, shape, LINEAR_BITS[dtype])
        if dtype == LOG8:
            return _from_log_codes(raw, shape)
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.dtype(dtype))
    tensor = torch.from_numpy(array.reshape(shape))
    return tensor.float() if dtype == "float16" else tensor


def _decode_layer(entry: dict[str, Any], reader: _Reader) -> _DecodedLayer:
    """One weight-shared layer; its counts are bounded by its shape (checked against the model) before the
    streams are decoded, so no count in the file decides an allocation."""
    shape = tuple(entry["shape"])
    numel = math.prod(shape)
    nonzeros, clusters = entry["nonzeros"], entry["clusters"]
    if nonzeros > numel or clusters > max(nonzeros, 1):
        raise CompressedFileError(f"layer {entry['name']}: {nonzeros} weights in {clusters} clusters do not fit {shape}")
    codebook = np.frombuffer(reader.take(4 * clusters), dtype="<f4").astype(np.float32)
    if not np.isfinite(codebook).all():
        raise CompressedFileError(f"layer {entry['name']}: its codebook holds non-finite values")
    index_coder, table_length, payload_length = entry["index"]
    index_stream = EncodedStream(index_coder, reader.take(table_length), reader.take(payload_length), nonzeros, 0.0)
    indices = decode_stream(index_coder, index_stream.table, index_stream.payload, nonzeros, max_alphabet=clusters)
    if len(indices) and (indices.max() >= clusters or indices.min() < 0):
        raise CompressedFileError(f"layer {entry['name']}: cluster index outside its codebook")
    index_stream = _with_limit(index_stream, indices)
    position_stream = None
    if entry["positions"] is None:
        mask = np.ones(numel, dtype=bool)
    else:
        coder, table_length, payload_length, count = entry["positions"]
        position_stream = EncodedStream(coder, reader.take(table_length), reader.take(payload_length), count, 0.0)
        mask, limit = decode_positions(coder, position_stream.table, position_stream.payload, count, numel)
        position_stream = dataclasses.replace(position_stream, entropy_bytes=limit)
    if int(mask.sum()) != nonzeros:
        raise CompressedFileError(f"layer {entry['name']}: position stream does not match its weight count")
    return _DecodedLayer(entry["name"], codebook, indices, mask, shape, index_stream, position_stream)


def _with_limit(stream: EncodedStream, symbols: np.ndarray) -> EncodedStream:
    return dataclasses.replace(stream, entropy_bytes=entropy_bytes(symbol_counts(symbols)))


def _layer_weight(layer: _DecodedLayer) -> torch.Tensor:
    weight = np.zeros(layer.mask.size, dtype=np.float32)
    weight[layer.mask] = layer.codebook[layer.indices]
    return torch.from_numpy(weight.reshape(layer.shape))


def _restore_weight_sharing(model: nn.Module, layers: list[_DecodedLayer]) -> None:
    modules = prunable_layers(model)
    for layer in layers:
        indices = np.zeros(layer.mask.size, dtype=np.int64)
        indices[layer.mask] = layer.indices
        set_weight_sharing(
            modules[layer.name],
            torch.from_numpy(layer.codebook),
            torch.from_numpy(indices.reshape(layer.shape)),
            torch.from_numpy(layer.mask.reshape(layer.shape)),
        )
