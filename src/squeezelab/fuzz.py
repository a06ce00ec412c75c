"""Mutation fuzzing of the model file readers: ``.sqz`` (:func:`~squeezelab.compress.load_compressed`), squeezelab
``.pt`` (:func:`~squeezelab.interop.loading.load_model`) and Deep Compression ``.net``
(:func:`~squeezelab.interop.caffe.import_caffe_compressed`).

Every case is a mutation of a real file, read in a worker process that runs under an address-space limit
(``RLIMIT_AS``) and a time limit, so that an abort, a memory blow-up or a hang is counted instead of ending the
campaign. Mutation families:

* ``sqz``: ``raw`` (bytes changed, the CRC-32 trailer left as it was), ``crc`` (bytes changed anywhere before the
  trailer, which is then recomputed), ``section`` (one body section altered or resized, its stream-table entry
  kept consistent, CRC recomputed) and ``metadata`` (a value, key or nesting of the JSON metadata changed, or its
  zlib stream altered; CRC recomputed);
* ``pt``: ``raw`` (bytes of the zip file changed) and ``record`` (an entry of the saved dict changed and saved
  again, so any digest is recomputed);
* ``net``: ``raw`` and ``structured`` (entry counts, codebook and bias values, codes and gaps changed).

A case ends in one of :data:`OUTCOMES`; the last five are failures:

* ``error``: the reader's own error (a ValueError; CompressedFileError for ``.sqz``), one line naming the file;
* ``identical``: it loaded weights bit-identical to the unmutated file's;
* ``changed``: it loaded other, finite weights where nothing could tell: the format has no checksum (``.net``) or
  the mutation recomputed it (all but the ``raw`` families of ``.sqz`` and ``.pt``);
* ``silent``: it loaded other weights although the file's checksum covers them;
* ``non-finite``: it loaded NaN or infinite weights;
* ``uncaught``: any other exception, or the reader's error type without the file's name or on several lines;
* ``crash``: the worker died (an abort, or killed at the memory limit);
* ``hang``: no answer within the time limit.

``tests/test_fuzz.py`` runs a small campaign; ``benchmarks/fuzz_sqz.py`` the full one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn

KINDS = ("sqz", "pt", "net")
FAMILIES = {"sqz": ("raw", "crc", "section", "metadata"), "pt": ("raw", "record"), "net": ("raw", "structured")}
CHECKSUMMED = {("sqz", "raw"), ("pt", "raw")}  # families whose changed weights the file's own checksum must catch
OUTCOMES = ("error", "identical", "changed", "silent", "non-finite", "uncaught", "crash", "hang")
FAILURES = OUTCOMES[3:]
DEFAULT_TIMEOUT = 30.0  # seconds per case: real cases take well under one, on a busy machine too
DEFAULT_MEMORY_MB = 1024  # address space a worker may add to what its imports take
EXAMPLES_PER_GROUP = 3  # failures kept per kind, family and outcome, with their files

Mutation = tuple[bytes, str]  # the mutated file and what was done to it
Mutator = Callable[[bytes, random.Random], Mutation]


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    family: str
    number: int
    source: Path
    data: bytes
    description: str


# --- source files ---------------------------------------------------------------------------------------


def _tiny_model(seed: int, **kwargs: Any) -> nn.Module:
    """A narrow SqueezeNet for 1x8x8 inputs (about 14k weights): real files of it are small and load fast."""
    from squeezelab.models import create_model

    torch.manual_seed(seed)
    arguments = {"layout": "v1_1_small", "base_e": 16, "incr_e": 16, "num_classes": 10, "in_chans": 1, **kwargs}
    model = create_model("squeezenet_generator", **arguments)
    # as after training: biases and batch-norm statistics away from their initial zeros and ones, so that every
    # kind of tensor storage holds real values
    norms = {name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)}
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            owner, field = key.rsplit(".", 1)
            if not tensor.is_floating_point() or field == "weight" and owner not in norms:
                continue  # counters, and the convolution weights (left to pruning and weight sharing)
            scale = field in ("weight", "running_var")  # positive, around one
            tensor.copy_(torch.rand_like(tensor) + 0.5 if scale else 0.1 * torch.randn_like(tensor))
    return model


SQZ_VARIANTS: list[tuple[dict[str, Any], dict[str, Any]]] = [  # (model arguments, save_compressed arguments)
    ({}, {}),
    ({"batch_norm": "all"}, {"index_coder": "ans", "position_coder": "kernel-mask", "tensor_dtype": "compact", "fold_batch_norm": True}),
    ({"bypass": "complex"}, {"index_coder": "huffman", "position_coder": "gap-huffman", "tensor_dtype": "uint8"}),
    ({"batch_norm": "fires"}, {"index_coder": "ans", "position_coder": "gap-ans", "tensor_dtype": "float16"}),
    ({"batch_norm": "all"}, {"index_coder": "huffman", "position_coder": "mask", "tensor_dtype": "uint8"}),
]


def make_sqz_sources(folder: Path) -> list[Path]:
    """Real ``.sqz`` files of pruned, weight-shared tiny SqueezeNets covering every coder and tensor storage (one
    layer left dense, so a file without a position stream is among them)."""
    from squeezelab.compress import prune, quantize, save_compressed

    paths = []
    for number, (model_kwargs, save_kwargs) in enumerate(SQZ_VARIANTS):
        model = _tiny_model(number, **model_kwargs)
        prune(model, {"stem": 1.0, "conv3x3": 0.3, "classifier": 0.2, "default": 0.6})
        quantize(model, {"stem": 6, "default": 4})
        path = folder / f"source{number}.sqz"
        save_compressed(model, path, **save_kwargs)
        paths.append(path)
    return paths


def make_pt_sources(folder: Path) -> list[Path]:
    """A model file, a float16 model file and a training checkpoint (with optimizer state) of tiny SqueezeNets."""
    from squeezelab.models.files import save_model
    from squeezelab.train.checkpoint import save_checkpoint

    model = _tiny_model(0, batch_norm="all")
    save_model(model, folder / "model.pt")
    save_model(_tiny_model(1), folder / "half.pt", half=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    save_checkpoint(folder / "checkpoint.pt", model, optimizer=optimizer.state_dict(), epoch=3, best_top1=42.5)
    return [folder / "model.pt", folder / "half.pt", folder / "checkpoint.pt"]


# --- generic byte mutations ------------------------------------------------------------------------------

INTERESTING_FLOATS = (math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, 1e30, -0.0)
INTERESTING_INTS = (0, 1, -1, 2, 255, 256, 65_535, 2**31 - 1, 2**31, 2**32, 2**40, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30)
INTERESTING_UINT32 = (0, 1, 2, 255, 65_535, 2**31, 2**32 - 1)


def _flip_bits(data: bytes, rng: random.Random) -> Mutation:
    out = bytearray(data)
    positions = [rng.randrange(len(out)) for _ in range(rng.randint(1, 8))]
    for position in positions:
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out), f"flip bits at {positions}"


def _set_bytes(data: bytes, rng: random.Random) -> Mutation:
    out = bytearray(data)
    positions = [rng.randrange(len(out)) for _ in range(rng.randint(1, 4))]
    for position in positions:
        out[position] ^= rng.randint(1, 255)  # xor with a non-zero value: the byte does change
    return bytes(out), f"change bytes at {positions}"


def _overwrite_run(data: bytes, rng: random.Random) -> Mutation:
    start, length = rng.randrange(len(data)), rng.randint(1, 64)
    fill = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80"]) * length if rng.random() < 0.6 else rng.randbytes(length)
    return data[:start] + fill[: len(data) - start] + data[start + length :], f"overwrite {length} bytes at {start}"


def _truncate(data: bytes, rng: random.Random) -> Mutation:
    end = rng.randrange(len(data))
    return data[:end], f"truncate to {end} bytes"


def _insert(data: bytes, rng: random.Random) -> Mutation:
    at, extra = rng.randrange(len(data) + 1), rng.randbytes(rng.randint(1, 64))
    return data[:at] + extra + data[at:], f"insert {len(extra)} bytes at {at}"


def _delete(data: bytes, rng: random.Random) -> Mutation:
    start, length = rng.randrange(len(data)), rng.randint(1, 64)
    return data[:start] + data[start + length :], f"delete {length} bytes at {start}"


def _duplicate(data: bytes, rng: random.Random) -> Mutation:
    start, length, at = rng.randrange(len(data)), rng.randint(1, 256), rng.randrange(len(data))
    return data[:at] + data[start : start + length] + data[at:], f"copy {length} bytes from {start} to {at}"


BYTE_MUTATIONS: tuple[Mutator, ...] = (_flip_bits, _flip_bits, _set_bytes, _overwrite_run, _truncate, _insert, _delete, _duplicate)


def mutate_bytes(data: bytes, rng: random.Random) -> Mutation:
    """One random byte-level change (never none: an unchanged file would prove nothing)."""
    while True:
        mutated, description = rng.choice(BYTE_MUTATIONS)(data, rng)
        if mutated != data:
            return mutated, description


def _same_length_change(data: bytes, rng: random.Random) -> Mutation:
    """A change that keeps the length (of a section whose length the metadata fixes)."""
    while True:
        mutated, description = rng.choice((_flip_bits, _set_bytes, _overwrite_run))(data, rng)
        if mutated != data:
            return mutated, description


def _put_float(data: bytes, rng: random.Random) -> Mutation:
    """An interesting float32 at an aligned offset (codebooks, biases, coded ranges)."""
    offset = 4 * rng.randrange(len(data) // 4)
    value = rng.choice(INTERESTING_FLOATS)
    return data[:offset] + struct.pack("<f", value) + data[offset + 4 :], f"float {value} at {offset}"


# --- JSON-like values (.sqz metadata, .pt records) -----------------------------------------------------

RAW = "\x00raw\x00"  # stands for a JSON fragment json.dumps cannot write (nesting deeper than its recursion)


def _interesting_values(rng: random.Random, for_json: bool) -> Any:
    choices: list[Any] = [*INTERESTING_INTS, 0.5, -0.5, 1e308, -1e308, math.nan, math.inf, "", "x" * 5000, "squeezenet1_0",
                          "vgg19", None, True, False, [], {}, [0] * 100_000, {"name": "squeezenet1_0"}, [[1, 2, 3]] * 3]
    # torch.save pickles recursively: 200 levels inside a record stay within Python's recursion limit to write
    choices.append(RAW if for_json else _nested_list(200))
    return rng.choice(choices)


def _nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _nodes(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, value) of a tree of dicts and lists (tensors are leaves)."""
    yield path, value
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _nodes(child, (*path, key))


def _set_at(root: Any, path: tuple, value: Any) -> None:
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _delete_at(root: Any, path: tuple) -> None:
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]


def _tweaked_number(value: Any, rng: random.Random) -> Any:
    return rng.choice([value + 1, value - 1, value * 2, value * 2**20, -value, value // 2 if isinstance(value, int) else value / 2])


def mutate_tree(root: Any, rng: random.Random, for_json: bool) -> str:
    """Change one node of ``root`` in place (a subtree picked first, so that small ones such as a model spec get
    as much attention as the long tables); returns what was done."""
    top = list(root) if isinstance(root, dict) else []
    subtree: tuple = (rng.choice(top),) if top and rng.random() < 0.9 else ()
    candidates = [(path, value) for path, value in _nodes(root) if path[: len(subtree)] == subtree and path]
    path, value = rng.choice(candidates)
    operation = rng.random()
    if operation < 0.1:
        _delete_at(root, path)
        return f"delete {list(path)}"
    if operation < 0.15 and isinstance(value, (dict, list)):
        if isinstance(value, dict):
            value["unexpected"] = _interesting_values(rng, for_json)
        else:
            value.append(copy.deepcopy(value[0]) if value else 0)
        return f"add an item to {list(path)}"
    if operation < 0.35 and isinstance(value, (int, float)) and not isinstance(value, bool):
        new = _tweaked_number(value, rng)
    elif isinstance(value, torch.Tensor):
        new = _altered_tensor(value, rng)
    else:
        new = _interesting_values(rng, for_json)
    _set_at(root, path, new)
    return f"set {list(path)} to {_short(new)}"


def _altered_tensor(tensor: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Another tensor for a record entry: other values (NaN, huge), another shape or dtype, or an empty one."""
    choice = rng.randrange(5)
    if choice == 0 and tensor.is_floating_point() and tensor.numel():
        altered = tensor.clone()
        altered.view(-1)[rng.randrange(tensor.numel())] = rng.choice(INTERESTING_FLOATS)
        return altered
    if choice == 1:
        return tensor.reshape(-1)[: max(tensor.numel() - 1, 0)].clone()
    if choice == 2:
        return tensor.to(rng.choice([torch.int64, torch.float16, torch.bool, torch.float64]))
    if choice == 3:
        return torch.zeros(0)
    return torch.full((2, 3), 1e30)


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {value.dtype}"
    if value is RAW:
        return "nesting 100,000 deep"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- .sqz mutations -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class SqzParts:
    """A well-formed ``.sqz`` file split into its format version, metadata and body sections, to be altered and
    written again (:meth:`file`) with a valid CRC-32."""

    version: int
    metadata: dict[str, Any]
    sections: list[tuple[str, bytes]]

    @classmethod
    def of(cls, data: bytes) -> SqzParts:
        from squeezelab.compress.sqz import HEADER, section_layout

        _, version, _, meta_length = HEADER.unpack_from(data)
        metadata = json.loads(zlib.decompress(data[HEADER.size : HEADER.size + meta_length]))
        offset, sections = HEADER.size + meta_length, []
        for label, length in section_layout(metadata):
            sections.append((label, data[offset : offset + length]))
            offset += length
        return cls(version, metadata, sections)

    def file(self, metadata_text: str | None = None) -> bytes:
        return sqz_file(metadata_text or json.dumps(self.metadata), b"".join(s for _, s in self.sections), self.version)


def sqz_file(metadata_text: str | bytes, body: bytes, version: int | None = None, compressed_metadata: bytes | None = None) -> bytes:
    """A ``.sqz`` file of this metadata and body, with a valid CRC-32 trailer (a forged file, for mutations)."""
    from squeezelab.compress.sqz import CHECKSUM, FORMAT_VERSION, HEADER, MAGIC

    text = metadata_text.encode() if isinstance(metadata_text, str) else metadata_text
    meta = compressed_metadata if compressed_metadata is not None else zlib.compress(text, 9)
    content = HEADER.pack(MAGIC, FORMAT_VERSION if version is None else version, 0, len(meta)) + meta + body
    return content + CHECKSUM.pack(zlib.crc32(content))


def with_crc(content: bytes) -> bytes:
    from squeezelab.compress.sqz import CHECKSUM

    return content + CHECKSUM.pack(zlib.crc32(content))


def mutate_sqz_raw(data: bytes, rng: random.Random) -> Mutation:
    return mutate_bytes(data, rng)


def mutate_sqz_crc(data: bytes, rng: random.Random) -> Mutation:
    content, description = mutate_bytes(data[:-4], rng)
    return with_crc(content), description + ", CRC recomputed"


def mutate_sqz_section(data: bytes, rng: random.Random) -> Mutation:
    """Alter one section's bytes, or resize a coded layer's section and its stream-table entry with it."""
    parts = SqzParts.of(data)
    number = rng.choice([i for i, (_, section) in enumerate(parts.sections) if section] or [0])
    label, section = parts.sections[number]
    if ":" in label and rng.random() < 0.35:
        description = _resize_section(parts, number, rng)
    elif len(section) >= 4 and rng.random() < 0.4:
        new, description = _put_float(section, rng)
        parts.sections[number] = (label, new)
    elif section:
        new, description = _same_length_change(section, rng)
        parts.sections[number] = (label, new)
    else:
        return mutate_sqz_crc(data, rng)
    return parts.file(), f"section {label}: {description}"


def _resize_section(parts: SqzParts, number: int, rng: random.Random) -> str:
    from squeezelab.compress.sqz import SECTION_FIELDS

    label, section = parts.sections[number]
    name, part = label.rsplit(":", 1)
    entry = next(e for e in parts.metadata["layers"] if e["name"] == name)
    field, position = SECTION_FIELDS[part]
    unit = 4 if field == "clusters" else 1  # a codebook holds whole float32 values
    length = unit * rng.choice([0, 1, len(section) // unit - 1, len(section) // unit + 1, 2 * len(section) // unit + 3, rng.randrange(64)])
    length = max(length, 0)
    new = section[:length] + (rng.randbytes(length - len(section)) if length > len(section) else b"")
    parts.sections[number] = (label, new)
    if field == "clusters":
        entry["clusters"] = length // 4
    else:
        entry[field][position] = length
    return f"resized from {len(section)} to {length} bytes"


def mutate_sqz_metadata(data: bytes, rng: random.Random) -> Mutation:
    """Change the metadata: mostly one JSON value, key or nesting; sometimes its zlib stream or header fields."""
    parts = SqzParts.of(data)
    body = b"".join(section for _, section in parts.sections)
    choice = rng.random()
    if choice < 0.08:
        return _zlib_mutation(parts, body, rng)
    if choice < 0.12:
        version = rng.choice([0, 1, 2, 3, 5, 65_535])
        return sqz_file(json.dumps(parts.metadata), body, version), f"format version {version}"
    description = mutate_tree(parts.metadata, rng, for_json=True)
    text = json.dumps(parts.metadata)  # NaN and Infinity as JSON's extensions write them
    text = text.replace(json.dumps(RAW), "[" * 100_000 + "]" * 100_000)
    return sqz_file(text, body, parts.version), f"metadata: {description}"


def _zlib_mutation(parts: SqzParts, body: bytes, rng: random.Random) -> Mutation:
    text = json.dumps(parts.metadata).encode()
    choice = rng.randrange(4)
    if choice == 0:  # a zlib bomb: padding that inflates a thousand-fold
        padded = dict(parts.metadata, default_cfg={**(parts.metadata.get("default_cfg") or {}), "extra": {"pad": " " * (16 << 20)}})
        return sqz_file(json.dumps(padded), body, parts.version), "metadata inflating to 16 MB"
    compressed = zlib.compress(text, 9)
    if choice == 1:
        return sqz_file(text, body, parts.version, compressed + rng.randbytes(8)), "bytes after the metadata's zlib stream"
    if choice == 2:
        return sqz_file(text, body, parts.version, compressed[: rng.randrange(len(compressed))]), "truncated zlib stream"
    return sqz_file(text, body, parts.version, zlib.compress(b"[" * 200_000)), "metadata nested 200,000 deep"


# --- .pt mutations ----------------------------------------------------------------------------------------


def mutate_pt_raw(data: bytes, rng: random.Random) -> Mutation:
    return mutate_bytes(data, rng)


def mutate_pt_record(data: bytes, rng: random.Random) -> Mutation:
    """Change one entry of the saved dict and save it again the way squeezelab does (any digest recomputed)."""
    from squeezelab.utils.files import atomic_torch_save

    record = torch.load(io.BytesIO(data), weights_only=True)
    description = mutate_tree(record, rng, for_json=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "record.pt"
        atomic_torch_save(record, path)
        return path.read_bytes(), f"record: {description}"


# --- .net mutations ---------------------------------------------------------------------------------------


@functools.cache
def _net_out_channels() -> tuple[int, ...]:
    """Output channels of the Deep Compression SqueezeNet's convolutions, in file order."""
    from squeezelab.interop.caffe import CAFFE_ARCH, CAFFE_ARCH_KWARGS
    from squeezelab.models.registry import model_skeleton

    skeleton = model_skeleton({"name": CAFFE_ARCH, "kwargs": CAFFE_ARCH_KWARGS})
    return tuple(m.out_channels for m in skeleton.modules() if isinstance(m, nn.Conv2d))


def _net_layout(data: bytes) -> list[dict[str, int]]:
    """Offsets of each layer's codebook, biases, codes and gaps in a well-formed Deep Compression file."""
    from squeezelab.interop.caffe import CODEBOOK_SIZE

    outputs = _net_out_channels()
    counts = struct.unpack_from(f"<{len(outputs)}I", data)
    offset, layers = 4 * len(outputs), []
    for number, (out_channels, count) in enumerate(zip(outputs, counts)):
        layer = {"number": number, "codebook": offset, "bias": offset + 4 * CODEBOOK_SIZE, "outputs": out_channels, "count": count}
        layer["codes"] = layer["bias"] + 4 * out_channels
        layer["gaps"] = layer["codes"] + count
        offset = layer["gaps"] + (count + 1) // 2
        layers.append(layer)
    return layers


def mutate_net_raw(data: bytes, rng: random.Random) -> Mutation:
    return mutate_bytes(data, rng)


def mutate_net_structured(data: bytes, rng: random.Random) -> Mutation:
    from squeezelab.interop.caffe import CODEBOOK_SIZE

    layer = rng.choice(_net_layout(data))
    out, choice = bytearray(data), rng.randrange(5)
    if choice == 0:
        value = rng.choice([*INTERESTING_UINT32, layer["count"] + rng.choice([-1, 1])])
        struct.pack_into("<I", out, 4 * layer["number"], value % 2**32)
        return bytes(out), f"layer {layer['number']}: entry count {value}"
    if choice in (1, 2):
        field, size = ("codebook", CODEBOOK_SIZE) if choice == 1 else ("bias", layer["outputs"])
        index, number = rng.randrange(size), rng.choice(INTERESTING_FLOATS)
        struct.pack_into("<f", out, layer[field] + 4 * index, number)
        return bytes(out), f"layer {layer['number']}: {field}[{index}] = {number}"
    if choice == 3:
        index = rng.randrange(layer["count"])
        out[layer["codes"] + index] ^= rng.randint(1, 255)
        return bytes(out), f"layer {layer['number']}: code of entry {index}"
    index = rng.randrange((layer["count"] + 1) // 2)
    out[layer["gaps"] + index] ^= rng.randint(1, 255)
    return bytes(out), f"layer {layer['number']}: gaps of entries {2 * index}, {2 * index + 1}"


MUTATORS: dict[tuple[str, str], Mutator] = {
    ("sqz", "raw"): mutate_sqz_raw,
    ("sqz", "crc"): mutate_sqz_crc,
    ("sqz", "section"): mutate_sqz_section,
    ("sqz", "metadata"): mutate_sqz_metadata,
    ("pt", "raw"): mutate_pt_raw,
    ("pt", "record"): mutate_pt_record,
    ("net", "raw"): mutate_net_raw,
    ("net", "structured"): mutate_net_structured,
}


def generate_cases(sources: dict[str, list[Path]], counts: dict[str, int], seed: int = 0) -> Iterator[Case]:
    """``counts[kind]`` cases per kind, the families and source files in turn; case ``n`` of a kind depends only
    on the seed, the kind and ``n`` (so one case can be made again on its own)."""
    originals = {path: path.read_bytes() for paths in sources.values() for path in paths}
    for kind in KINDS:
        families, paths = FAMILIES[kind], sources.get(kind, [])
        for number in range(counts.get(kind, 0) if paths else 0):
            family, source = families[number % len(families)], paths[number // len(families) % len(paths)]
            rng = random.Random(f"{seed}:{kind}:{number}")
            data, description = MUTATORS[kind, family](originals[source], rng)
            yield Case(kind, family, number, source, data, description)


# --- the worker process ------------------------------------------------------------------------------------


def _read_sqz(path: Path) -> dict[str, torch.Tensor]:
    from squeezelab.compress import inspect_compressed, load_compressed

    model = load_compressed(path)
    # the other ways in must take the file as well, without a traceback
    inspect_compressed(path)
    load_compressed(path, parametrized=True)
    return model.state_dict()


def _read_pt(path: Path) -> dict[str, torch.Tensor]:
    from squeezelab.interop.loading import load_model

    return load_model(path).state_dict()


def _read_net(path: Path) -> dict[str, torch.Tensor]:
    from squeezelab.interop.caffe import import_caffe_compressed

    return import_caffe_compressed(path).state_dict()


READERS: dict[str, Callable[[Path], dict[str, torch.Tensor]]] = {"sqz": _read_sqz, "pt": _read_pt, "net": _read_net}


def _expected_error(kind: str) -> type[Exception]:
    from squeezelab.compress import CompressedFileError

    return CompressedFileError if kind == "sqz" else ValueError


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and bytes: equal exactly when the weights are."""
    hasher = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        hasher.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def read_case(kind: str, path: Path) -> dict[str, Any]:
    """What reading one file gives, as the worker reports it."""
    try:
        state = READERS[kind](path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # also Rust panics (pyo3's PanicException is a BaseException)
        return {"result": "raised", "type": type(exc).__name__, "expected": isinstance(exc, _expected_error(kind)), "message": str(exc)[:2000]}
    return {"result": "loaded", "digest": state_digest(state), "finite": _all_finite(state)}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Start a new peak of resident memory (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # then the peak is the worker's lifetime peak: an upper bound


def _worker_main(memory_mb: int) -> None:
    """Read cases named on stdin, one JSON request per line; answer one JSON line each on the original stdout
    (anything the readers print goes to stderr instead, so it cannot corrupt the answers)."""
    import warnings

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    warnings.simplefilter("ignore")  # e.g. files without a digest: the outcome says everything
    torch.set_num_threads(1)
    # the readers' modules are imported now, before the memory limit applies and before the first case is timed
    import squeezelab.compress  # noqa: F401
    import squeezelab.interop.caffe  # noqa: F401
    import squeezelab.interop.loading  # noqa: F401

    limit = _status_kb("VmSize") * 1024 + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    answers.write(json.dumps({"ready": True, "baseline_mb": _status_kb("VmRSS") / 1024}) + "\n")
    answers.flush()
    for line in sys.stdin:
        request = json.loads(line)
        _reset_peak_rss()
        answer = read_case(request["kind"], Path(request["path"]))
        answer["peak_mb"] = _status_kb("VmHWM") / 1024
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class Worker:
    """A worker process; :meth:`read` gives its answer for one file, or a crash or hang (and a fresh worker)."""

    def __init__(self, memory_mb: int, log: Path) -> None:
        self.memory_mb, self.log = memory_mb, log
        self.baseline_mb = 0.0
        self._start()

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "squeezelab.fuzz", "--worker", str(self.memory_mb)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True,
            )  # fmt: skip
        self._buffer = b""
        ready = self._answer(timeout=300.0)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"the fuzz worker did not start (see {self.log})")
        self.baseline_mb = ready["baseline_mb"]

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        """The next line the worker writes, parsed; None if it wrote none in time or died."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.process.stdout], [], [], remaining)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def read(self, kind: str, path: Path, timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps({"kind": kind, "path": str(path)}) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died on the previous case's way out: counted below
        answer = self._answer(timeout)
        if answer is not None:
            return answer
        try:  # its output ended: it is dying (a crash), unless it is still running after a grace period (a hang)
            self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        hung = self.process.poll() is None
        self.close()
        detail = f"no answer in {timeout:.0f} s" if hung else f"worker exit status {self.process.returncode}: {self._last_words()}"
        self._start()
        return {"result": "hang" if hung else "crash", "message": detail}

    def _last_words(self) -> str:
        """The end of what the worker wrote to stderr (an abort's reason: a panic, a failed allocation)."""
        with open(self.log, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 400, 0))
            return " ".join(log.read().decode(errors="replace").split())

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a request still buffered for a dead worker
                    pipe.close()


# --- campaigns --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CampaignResult:
    counts: dict[str, Counter]  # "kind/family" -> outcome counts
    failures: list[dict[str, Any]]  # the first few of each kind, family and outcome
    peak_rss_mb: float
    baseline_rss_mb: float
    seconds: float
    settings: dict[str, Any]

    def total(self, outcomes: Iterable[str] = OUTCOMES, kind: str | None = None) -> int:
        return sum(c[o] for group, c in self.counts.items() for o in outcomes if kind is None or group.startswith(kind + "/"))

    @property
    def failure_count(self) -> int:
        return self.total(FAILURES)

    def rows(self) -> list[list[Any]]:
        """Table rows: kind/family, cases, then a count per outcome."""
        rows = [[group, sum(c.values()), *(c[o] for o in OUTCOMES)] for group, c in sorted(self.counts.items(), key=_group_order)]
        return rows + [["all", self.total(), *(self.total([o]) for o in OUTCOMES)]]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcomes": list(OUTCOMES),
            "failure_outcomes": list(FAILURES),
            "counts": {group: dict(c) for group, c in sorted(self.counts.items(), key=_group_order)},
            "failures": self.failures,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "baseline_rss_mb": round(self.baseline_rss_mb, 1),
            "seconds": round(self.seconds, 1),
            "settings": self.settings,
        }

    def markdown(self) -> str:
        header = ["kind/family", "cases", *OUTCOMES]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in self.rows()]
        lines += [
            "",
            f"{self.total()} cases in {self.seconds:.0f} s, {self.failure_count} failures ({', '.join(FAILURES)}). Peak resident "
            f"memory of a worker: {self.peak_rss_mb:.0f} MB, of which {self.baseline_rss_mb:.0f} MB is the imports (torch) "
            f"before any case; limit {self.settings['memory_mb']} MB of address space beyond those, {self.settings['timeout']:.0f} s per case.",
        ]
        for failure in self.failures:
            lines.append(f"- {failure['group']} case {failure['number']} ({failure['outcome']}): {failure['description']}: {failure['message']}")
        return "\n".join(lines) + "\n"


def _group_order(item: tuple[str, Any]) -> tuple[int, int]:
    kind, family = item[0].split("/")
    return KINDS.index(kind), FAMILIES[kind].index(family)


def classify(case: Case, path: Path, answer: dict[str, Any], reference: str) -> str:
    result = answer["result"]
    if result in ("hang", "crash"):
        return result
    if result == "raised":
        one_line = "\n" not in answer["message"].strip()
        return "error" if answer["expected"] and str(path) in answer["message"] and one_line else "uncaught"
    if not answer["finite"]:
        return "non-finite"
    if answer["digest"] == reference:
        return "identical"
    return "silent" if (case.kind, case.family) in CHECKSUMMED else "changed"


def run_campaign(
    sources: dict[str, list[Path]],
    counts: dict[str, int],
    seed: int = 0,
    workers: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    failures_folder: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> CampaignResult:
    """Fuzz the readers with ``counts[kind]`` mutations of ``sources[kind]`` on ``workers`` worker processes;
    failing cases are copied to ``failures_folder`` (if given) to be read again."""
    start = time.monotonic()
    settings = {"seed": seed, "workers": workers, "timeout": timeout, "memory_mb": memory_mb, "counts": counts}
    result = CampaignResult({}, [], 0.0, 0.0, 0.0, settings)
    cases, lock = generate_cases(sources, counts, seed), threading.Lock()
    errors: list[Exception] = []
    with tempfile.TemporaryDirectory(prefix="squeezelab-fuzz-") as scratch:
        folder = Path(scratch)
        readers = _started_workers(max(1, workers), memory_mb, folder)
        try:
            references = _references(sources, readers[0], timeout)

            def work(reader: Worker) -> None:
                while True:
                    with lock:
                        case = None if errors else next(cases, None)
                    if case is None:
                        return
                    path = folder / f"{id(reader)}-{case.kind}-{case.number}.{case.kind}"
                    path.write_bytes(case.data)
                    answer = reader.read(case.kind, path, timeout)
                    outcome = classify(case, path, answer, references[case.source])
                    with lock:
                        _record(result, case, answer, outcome, reader.baseline_mb, failures_folder)
                        if progress:
                            progress(result.total())
                    path.unlink()

            def guarded(reader: Worker) -> None:
                try:
                    work(reader)
                except Exception as exc:  # a fault of the harness, not a case: stop and report it
                    errors.append(exc)

            threads = [threading.Thread(target=guarded, args=(reader,)) for reader in readers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for reader in readers:
                reader.close()
    if errors:
        raise errors[0]
    result.seconds = time.monotonic() - start
    return result


def _started_workers(count: int, memory_mb: int, folder: Path) -> list[Worker]:
    """``count`` workers, started in parallel (each imports torch: seconds); none left running if one fails."""
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(Worker, memory_mb, folder / f"worker{n}.log") for n in range(count)]
    started = [future.result() for future in futures if future.exception() is None]
    if len(started) < count:
        for worker in started:
            worker.close()
        raise next(exc for future in futures if (exc := future.exception()) is not None)
    return started


def _references(sources: dict[str, list[Path]], reader: Worker, timeout: float) -> dict[Path, str]:
    """The digest of each unmutated source as a worker reads it (each must load, with finite weights)."""
    references = {}
    for kind, paths in sources.items():
        for path in paths:
            answer = reader.read(kind, path, timeout)
            if answer["result"] != "loaded" or not answer["finite"]:
                raise RuntimeError(f"fuzz source {path} does not load: {answer}")
            references[path] = answer["digest"]
    return references


def _record(result: CampaignResult, case: Case, answer: dict[str, Any], outcome: str, baseline: float, failures_folder: Path | None) -> None:
    group = f"{case.kind}/{case.family}"
    result.counts.setdefault(group, Counter())[outcome] += 1
    result.peak_rss_mb = max(result.peak_rss_mb, answer.get("peak_mb", 0.0))
    result.baseline_rss_mb = max(result.baseline_rss_mb, baseline)
    if outcome not in FAILURES:
        return
    kept = sum(1 for f in result.failures if f["group"] == group and f["outcome"] == outcome)
    if kept >= EXAMPLES_PER_GROUP:
        return
    message = " ".join(str(answer.get("message", answer.get("digest", ""))).split())[:300]
    failure = {"group": group, "number": case.number, "outcome": outcome, "source": case.source.name, "description": case.description,
               "error_type": answer.get("type"), "message": message}
    if failures_folder is not None:
        failures_folder.mkdir(parents=True, exist_ok=True)
        saved = failures_folder / f"{case.kind}-{case.family}-{case.number}-{outcome}.{case.kind}"
        saved.write_bytes(case.data)
        failure["file"] = saved.name
    result.failures.append(failure)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(int(sys.argv[2]))
