"""The ``.sqz`` compressed model file: write, read, inspect.

Layout (little-endian)::

    magic "SQZL" | uint16 version | uint16 flags (0) | uint32 metadata length
    metadata: zlib-compressed JSON (model spec, preprocessing config, per-layer stream table)
    body: for each weight-shared layer, in order: codebook (float32), index table, index payload,
          position table, position payload; then every other state_dict tensor (stored as the metadata
          says, see :mod:`.tensorcodecs`; an all-zero floating-point tensor as its shape only, "zeros")
    uint32 CRC-32 of everything before it

Weight-shared layers store only their kept weights: the cluster index of each (entropy-coded) and the
sparsity pattern (entropy-coded, see :mod:`.positions`; the streams of a layer and what they cost:
:mod:`.sizes`). Biases, batch-norm parameters and any layer without weight sharing are stored raw as float32
or, if asked, float16 or as 8- or 10-bit codes (see :func:`save_compressed`); batch norms may be stored
folded (:mod:`.batchnorm`). Decoding rebuilds the model from its registered name and arguments; it never
executes code from the file.
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
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from squeezelab.models.registry import ModelConfig, create_model, model_skeleton, set_model_config
from squeezelab.utils.errors import DamagedFileError, first_line
from squeezelab.utils.files import atomic_write_bytes

from .batchnorm import BATCH_NORM_BUFFERS, batch_norms, folded_state, sole_convolution_inputs, unfolded_state
from .coding import EncodedStream, decode_stream, entropy_bytes, symbol_counts
from .layers import layer_weight, prunable_layers
from .positions import decode_positions
from .pruning import plain_state_dict
from .report import SizeReport
from .sharing import set_weight_sharing, shared_layers
from .sizes import CodedLayer, code_layer, size_report
from .sizes import layer_bytes as layer_bytes  # re-exported: tests import it from here
from .tensorcodecs import FLOAT_STORAGE, STORAGES, TensorCodingError, decode_tensor, tensor_bytes, tensor_nbytes, tensor_storage
from .tensorcodecs import from_log_codes as _from_log_codes  # noqa: F401  (tests/compress/test_sqz.py imports it from here)
from .tensorcodecs import log_codes as _log_codes  # noqa: F401  (tests/compress/test_sqz.py imports it from here)

MAGIC = b"SQZL"
# version 2: "zeros" tensors (folded batch norms absorb the bias of the convolution before them)
# version 3: "kernel-mask" positions (kernels kept, then taps kept in them)
# version 4: "log8" tensors (8-bit logarithmic codes), "linear10" tensors (10-bit linear codes)
FORMAT_VERSION = 4
HEADER = struct.Struct("<4sHHI")
CHECKSUM = struct.Struct("<I")


class CompressedFileError(DamagedFileError):
    """The file is not a readable squeezelab compressed model (message names the file)."""


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
    layers = [code_layer(name, sharing, index_coder, position_coder) for name, sharing in shared.items()]
    small = _SmallTensors.of(model, set(shared), tensor_dtype, fold_batch_norm)
    metadata = _metadata(model, [_coded_layer_entry(layer) for layer in layers], small)
    sections = [section for layer in layers for section in _layer_sections(layer)] + small.sections
    data = _assemble(metadata, sections)
    atomic_write_bytes(path, data)
    return size_report(layers, small.entries, len(data), small.state)


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
        state = folded_state(plain_state_dict(model), folded, sole_convolution_inputs(model, folded) if folded else {})
        coded_keys = {f"{name}.weight" for name in coded_layers}
        scales = {f"{name}.{kind}" for name in norms for kind in ("weight", "running_var")}
        entries, sections = [], []
        for key, tensor in state.items():
            if key in coded_keys:
                continue
            storage = tensor_storage(tensor, tensor_dtype, is_scale=key in scales)
            entries.append([key, storage, list(tensor.shape)])
            sections.append(tensor_bytes(tensor, storage))
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


def _layer_entry(
    name: str, shape: tuple[int, ...], nonzeros: int, clusters: int, index: list, positions: list | None
) -> dict[str, Any]:
    """A layer's row of the metadata's stream table: ``index`` is [coder, table bytes, payload bytes],
    ``positions`` the same and the count of coded positions (None: the layer is dense)."""
    return {"name": name, "shape": list(shape), "nonzeros": nonzeros, "clusters": clusters, "index": index, "positions": positions}


def _coded_layer_entry(layer: CodedLayer) -> dict[str, Any]:
    index, positions = layer.index_stream, layer.position_stream
    return _layer_entry(
        layer.name, layer.shape, int(layer.mask.sum()), len(layer.codebook),
        [index.coder, len(index.table), len(index.payload)],
        None if positions is None else [positions.coder, len(positions.table), len(positions.payload), positions.count],
    )  # fmt: skip


def _layer_sections(layer: CodedLayer) -> list[bytes]:
    """A coded layer's parts in file order (:data:`SECTION_FIELDS`); the position parts only if it is sparse."""
    sections = [layer.codebook.astype("<f4").tobytes(), layer.index_stream.table, layer.index_stream.payload]
    if layer.position_stream is not None:
        sections += [layer.position_stream.table, layer.position_stream.payload]
    return sections


def _typical_layer_entry(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """A stream-table row of about the compressed length a pruned, weight-shared layer of this shape gets.
    Its stream lengths vary from layer to layer as real ones do (the name seeds them): equal rows for layers
    of equal shape would compress to almost nothing."""
    rng = random.Random(name)
    weights = math.prod(shape)
    kept = max(1, round(weights * rng.uniform(0.1, 0.6)))
    index, positions = round(kept * rng.uniform(0.3, 0.4)), round(weights * rng.uniform(0.05, 0.15))
    return _layer_entry(name, shape, kept, 8, ["huffman", 9, index], ["mask", 3, positions, weights])


def _assemble(metadata: dict[str, Any], sections: list[bytes]) -> bytes:
    meta = zlib.compress(json.dumps(metadata, separators=(",", ":")).encode(), 9)
    body = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(meta)) + meta + b"".join(sections)
    return body + CHECKSUM.pack(zlib.crc32(body))


# --- reading ----------------------------------------------------------------------------------------
# A file may be damaged or crafted, and a valid CRC-32 proves nothing about a crafted one. So every count,
# length and shape it holds is checked against what its model allows before anything is decoded or allocated:
# the model spec is checked and built on the meta device (shapes, no memory), the stream tables are checked
# against that skeleton, each stream's counts against its layer, and the real model is built last.

METADATA_LIMIT = 4 << 20  # bytes of inflated metadata; real files need a few kB (1000 ImageNet class names: 20 kB)
METADATA_DEPTH = 32  # nesting of the metadata's JSON; real files nest 4 deep, a little more in default_cfg.extra
MAX_DIMENSIONS = 8
# What malformed content can still raise below a check this reader lacks: turned into CompressedFileError, so
# that a bad file never shows a traceback (RecursionError is a RuntimeError, so it is listed before those).
MALFORMED_CONTENT = (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError, RecursionError, struct.error, zlib.error)


@dataclasses.dataclass(frozen=True)
class _DecodedFile:
    metadata: dict[str, Any]
    cfg: ModelConfig | None
    layers: list[CodedLayer]
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
    return size_report(decoded.layers, decoded.metadata["tensors"], Path(path).stat().st_size, state)


def _plain_state(layers: list[CodedLayer], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    except (CompressedFileError, TensorCodingError) as exc:  # messages that say what is wrong already
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
    state = unfolded_state(_plain_state(decoded.layers, decoded.tensors), model, decoded.metadata["folded_batch_norm"])
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
    expected = set(state) - {f"{name}.{buffer}" for name in folded for buffer in BATCH_NORM_BUFFERS}
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
    return sections + [(key, tensor_nbytes(storage, shape)) for key, storage, shape in metadata["tensors"]]


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


def _decode_body(metadata: dict[str, Any], body: memoryview) -> tuple[list[CodedLayer], dict[str, torch.Tensor]]:
    """The sections, in the order of the tables (whose shapes :func:`_check_tables` has checked)."""
    reader = _Reader(body)
    layers = [_decode_layer(entry, reader) for entry in metadata["layers"]]
    tensors = {}
    for key, storage, shape in metadata["tensors"]:
        tensors[key] = decode_tensor(reader.take(tensor_nbytes(storage, shape)), storage, shape)
        if tensors[key].is_floating_point() and not torch.isfinite(tensors[key]).all():
            raise CompressedFileError(f"{key} holds non-finite values")
    if reader.offset != len(body):
        raise CompressedFileError(f"{len(body) - reader.offset} unexpected bytes after the last section")
    return layers, tensors


def _decode_layer(entry: dict[str, Any], reader: _Reader) -> CodedLayer:
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
    return CodedLayer(entry["name"], codebook, indices, mask, shape, index_stream, position_stream)


def _with_limit(stream: EncodedStream, symbols: np.ndarray) -> EncodedStream:
    return dataclasses.replace(stream, entropy_bytes=entropy_bytes(symbol_counts(symbols)))


def _layer_weight(layer: CodedLayer) -> torch.Tensor:
    weight = np.zeros(layer.mask.size, dtype=np.float32)
    weight[layer.mask] = layer.codebook[layer.indices]
    return torch.from_numpy(weight.reshape(layer.shape))


def _restore_weight_sharing(model: nn.Module, layers: list[CodedLayer]) -> None:
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
