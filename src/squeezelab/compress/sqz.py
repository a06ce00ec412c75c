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

import dataclasses
import json
import math
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping, cast

import numpy as np
import torch
import torch.fx
import torch.nn as nn

from squeezelab.models.registry import ModelConfig, create_model, set_model_config
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


class CompressedFileError(ValueError):
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
    """Running statistics that make folded batch norms apply exactly their stored scale and shift."""
    state = dict(state)
    norms = batch_norms(model)
    for name in names:
        if name not in norms:
            raise CompressedFileError(f"folded batch norm {name!r} is not a batch norm of the model")
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


def load_compressed(path: str | os.PathLike, parametrized: bool = False) -> nn.Module:
    """Decode a ``.sqz`` file into a ready model (in eval mode).

    With ``parametrized=True`` the weight-shared layers keep their codebook/assignment parametrization,
    so the centroids can be fine-tuned further. A missing, truncated, corrupted or foreign file raises
    an error naming the file; no model is returned unless every part decoded and fitted.
    """
    metadata, model, layers, tensors = _read(path)
    try:
        state = _unfolded_state(_plain_state(layers, tensors), model, metadata.get("folded_batch_norm", []))
        model.load_state_dict(state, strict=True)
    except CompressedFileError as exc:
        raise CompressedFileError(f"{path}: {exc}") from None
    except RuntimeError as exc:
        raise CompressedFileError(f"{path}: weights do not fit the model: {_first_line(exc)}") from None
    if parametrized:
        _restore_weight_sharing(model, layers)
    return model.eval()


def inspect_compressed(path: str | os.PathLike) -> SizeReport:
    """The size report of a ``.sqz`` file (decodes the streams to measure their Shannon limits)."""
    metadata, _, layers, tensors = _read(path)
    return _size_report(layers, metadata["tensors"], Path(path).stat().st_size, _plain_state(layers, tensors))


def _plain_state(layers: list[_DecodedLayer], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(tensors)
    for layer in layers:
        state[f"{layer.name}.weight"] = _layer_weight(layer)
    return state


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], nn.Module, list[_DecodedLayer], dict[str, torch.Tensor]]:
    """The metadata, the model skeleton (rebuilt from the spec; every section is checked against its shapes before it
    is decoded), the decoded weight-shared layers and the other tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        metadata, body = _checked_parts(data)
        model = _skeleton(metadata)
        layers, tensors = _decode_body(metadata, body, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    except CompressedFileError as exc:
        raise CompressedFileError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
        raise CompressedFileError(f"{path}: damaged compressed model ({_first_line(exc)})") from None
    return metadata, model, layers, tensors


def _skeleton(metadata: dict[str, Any]) -> nn.Module:
    spec = metadata["model_spec"]
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except ValueError as exc:
        raise CompressedFileError(f"cannot rebuild the model: {_first_line(exc)}") from None
    if metadata.get("default_cfg"):
        set_model_config(model, ModelConfig.from_dict(metadata["default_cfg"]))
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _checked_parts(data: bytes) -> tuple[dict[str, Any], memoryview]:
    if len(data) < HEADER.size + CHECKSUM.size or data[:4] != MAGIC:
        raise CompressedFileError("not a squeezelab compressed model (no 'SQZL' header)")
    (stored,) = CHECKSUM.unpack_from(data, len(data) - CHECKSUM.size)
    if zlib.crc32(data[: -CHECKSUM.size]) != stored:
        raise CompressedFileError("checksum mismatch: the file is truncated or corrupted")
    _, version, _, meta_length = HEADER.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CompressedFileError(f"format version {version} is newer than this squeezelab reads ({FORMAT_VERSION})")
    start = HEADER.size
    try:
        metadata = json.loads(zlib.decompress(data[start : start + meta_length]))
    except (zlib.error, json.JSONDecodeError) as exc:
        raise CompressedFileError(f"unreadable metadata ({exc})") from None
    if metadata.get("format") != "squeezelab-compressed":
        raise CompressedFileError("metadata is not a squeezelab compressed model")
    return metadata, memoryview(data)[start + meta_length : -CHECKSUM.size]


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


def _decode_body(
    metadata: dict[str, Any], body: memoryview, shapes: dict[str, tuple[int, ...]]
) -> tuple[list[_DecodedLayer], dict[str, torch.Tensor]]:
    reader = _Reader(body)
    layers = []
    for entry in metadata["layers"]:
        _check_shape(f"{entry['name']}.weight", entry["shape"], shapes)
        layers.append(_decode_layer(entry, reader))
    tensors = {}
    for key, dtype, shape in metadata["tensors"]:
        _check_shape(key, shape, shapes)
        tensors[key] = _decode_tensor(reader.take(_tensor_nbytes(dtype, shape)), dtype, shape)
    if reader.offset != len(body):
        raise CompressedFileError(f"{len(body) - reader.offset} unexpected bytes after the last section")
    return layers, tensors


def _decode_tensor(raw: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    if dtype == ZEROS:
        return torch.zeros(shape)
    if dtype in LINEAR_BITS:
        return _from_linear_codes(raw, shape, LINEAR_BITS[dtype])
    if dtype == LOG8:
        return _from_log_codes(raw, shape)
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.dtype(dtype))
    tensor = torch.from_numpy(array.reshape(shape))
    return tensor.float() if dtype == "float16" else tensor


def _check_shape(key: str, shape: list[int], shapes: dict[str, tuple[int, ...]]) -> None:
    if key not in shapes:
        raise CompressedFileError(f"holds {key!r}, which the model does not have")
    if tuple(shape) != shapes[key]:
        raise CompressedFileError(f"{key} has shape {tuple(shape)} in the file, {shapes[key]} in the model")


def _decode_layer(entry: dict[str, Any], reader: _Reader) -> _DecodedLayer:
    shape = tuple(int(s) for s in entry["shape"])
    numel = int(np.prod(shape, dtype=np.int64))
    nonzeros, clusters = int(entry["nonzeros"]), int(entry["clusters"])
    if not 0 <= nonzeros <= numel or not 0 <= clusters <= max(nonzeros, 1):
        raise CompressedFileError(f"layer {entry['name']}: {nonzeros} weights in {clusters} clusters do not fit {shape}")
    codebook = np.frombuffer(reader.take(4 * clusters), dtype="<f4").astype(np.float32)
    index_coder, table_length, payload_length = entry["index"]
    index_stream = EncodedStream(index_coder, reader.take(table_length), reader.take(payload_length), nonzeros, 0.0)
    indices = decode_stream(index_coder, index_stream.table, index_stream.payload, nonzeros)
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
