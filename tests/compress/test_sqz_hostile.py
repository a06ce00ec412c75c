"""Damaged and crafted ``.sqz`` files (checksum recomputed, so only the reader's own checks stand): each is refused
with one CompressedFileError line naming the file, in bounded time and memory, and never loaded.

The regression inputs of ../shared/hostile-inputs are read in a worker process under a memory limit (so a
regression that aborts or blows up memory fails the test instead of killing the test run); the rest are mutations
made here, of real files of every coder and tensor storage (squeezelab.fuzz.make_sqz_sources).
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from squeezelab.compress import CompressedFileError, load_compressed
from squeezelab.compress.coding import CodingError, decode_stream, decode_varints, encode_varints, huffman_encode
from squeezelab.compress.positions import decode_positions, encode_positions
from squeezelab.fuzz import SqzParts, Worker, make_sqz_sources, sqz_file
from squeezelab.models import create_model
from squeezelab.models.files import model_from_record, model_record
from squeezelab.models.registry import MAX_MODEL_PARAMETERS, ModelConfig, check_model_spec, model_skeleton
from squeezelab.utils.errors import DamagedFileError
from tests.conftest import SHARED

HOSTILE = SHARED / "hostile-inputs"
# what each regression input must be refused for (a part of the message)
HOSTILE_REASONS = {
    "sqz_1GB_model_num_classes_2p20.sqz": "num_classes",
    "sqz_abort_gapans_count_2p40.sqz": "claims 1099511627776 symbols",
    "sqz_attributeerror_meta_list.sqz": "not a squeezelab compressed model",
    "sqz_mem_gapans_count_2p26.sqz": "claims 67108864 symbols",
    "sqz_mem_gaphuffman_count_2p29.sqz": "claims 536870912 symbols",
    "sqz_nan_codebook_accepted.sqz": "non-finite",
    "sqz_overflowerror_gap_cap.sqz": "longer than 9 bytes",
    "sqz_recursionerror_nested.sqz": "nested",
    "sqz_runtimeerror_alloc_num_classes_2p33.sqz": "num_classes",
    "sqz_runtimeerror_negative_dim.sqz": "stem_channels=-5",
    "sqz_typeerror_folded_bn.sqz": "folded_batch_norm entry 0 is not a name",
    "sqz_zlib_bomb_300MB.sqz": "inflates to more than",
}
MEMORY_MB = 1024  # the worker's address space beyond its imports
MAX_CASE_MB = 200  # resident memory a refused file may add to the worker's (decoding a real SqueezeNet takes less)
# source files (see SQZ_VARIANTS): 0 float32 tensors and gap-huffman positions (its stem dense), 1 folded batch norms,
# ans indices, kernel-mask positions, log8/linear10 tensors, 2 uint8 tensors and gap-huffman, 3 float16 and gap-ans
FLOAT32, FOLDED, UINT8, FLOAT16 = 0, 1, 2, 3


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    return make_sqz_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A reader process under a memory limit: what a file costs is measured, and an abort is an answer."""
    reader = Worker(MEMORY_MB, tmp_path_factory.mktemp("worker") / "worker.log")
    yield reader
    reader.close()


def _refusal(path: Path, reader: Callable[[Path], Any] = load_compressed) -> str:
    """The message ``path`` is refused with: one line, naming the file."""
    with pytest.raises(CompressedFileError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def _bounded_refusal(worker: Worker, path: Path) -> str:
    """As :func:`_refusal`, read by the worker: also within a time and a memory bound."""
    start = time.monotonic()
    answer = worker.read("sqz", path, timeout=60)
    assert answer["result"] == "raised", answer  # not "loaded", "crash" (an abort) or "hang"
    assert answer["type"] == "CompressedFileError" and answer["message"].startswith(f"{path}: ") and "\n" not in answer["message"]
    assert answer["peak_mb"] - worker.baseline_mb < MAX_CASE_MB, answer
    assert time.monotonic() - start < 20
    return answer["message"]


def _rewritten(source: Path, target: Path, change: Callable[[SqzParts], None]) -> Path:
    """``source`` changed by ``change`` and written to ``target`` with a valid checksum."""
    parts = SqzParts.of(source.read_bytes())
    change(parts)
    target.write_bytes(parts.file())
    return target


def _sparse_layer(parts: SqzParts, coder: str) -> dict[str, Any]:
    return next(e for e in parts.metadata["layers"] if e["positions"] and e["positions"][0] == coder)


def _set_section(parts: SqzParts, label: str, change: Callable[[bytes], bytes]) -> None:
    number = next(i for i, (name, _) in enumerate(parts.sections) if name == label)
    parts.sections[number] = (label, change(parts.sections[number][1]))


# --- the regression inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_REASONS))
def test_hostile_inputs_are_refused_in_bounded_memory(worker, name):
    path = HOSTILE / name
    if not path.is_file():
        pytest.skip(f"hostile input not found at {path} (set SQUEEZELAB_SHARED to the shared folder)")
    assert HOSTILE_REASONS[name] in _bounded_refusal(worker, path)


# --- defect 1: counts bounded by the layer before decoding -------------------------------------------------


@pytest.mark.parametrize("count", [2**40, 2**29, 2**26, "numel + 1"])
@pytest.mark.parametrize("source, coder", [(FLOAT32, "gap-huffman"), (FLOAT16, "gap-ans"), (FOLDED, "kernel-mask")])
def test_position_counts_beyond_the_layer_are_refused_before_decoding(sources, worker, tmp_path, source, coder, count):
    def huge_count(parts: SqzParts) -> None:
        layer = _sparse_layer(parts, coder)
        layer["positions"][3] = math.prod(layer["shape"]) + 1 if count == "numel + 1" else count

    path = _rewritten(sources[source], tmp_path / "count.sqz", huge_count)
    assert "symbols for a layer of" in _bounded_refusal(worker, path)


def test_stream_counts_and_lengths_are_bounded(sources, tmp_path):
    def change_layer(field: str, value: Any) -> Callable[[SqzParts], None]:
        return lambda parts: _sparse_layer(parts, "gap-huffman").__setitem__(field, value)

    cases = {
        "nonzeros": (change_layer("nonzeros", 10**12), "weights in"),
        "clusters": (change_layer("clusters", 2**40), "do not fit"),
        "index table": (lambda p: _sparse_layer(p, "gap-huffman")["index"].__setitem__(1, 2**40), "runs past the end"),
        "mask count": (lambda p: p.metadata["layers"][1].__setitem__("positions", ["mask", 3, 20, 5]), "claims 5 symbols"),
    }
    for name, (change, reason) in cases.items():
        assert reason in _refusal(_rewritten(sources[FLOAT32], tmp_path / f"{name}.sqz", change)), name


def test_a_long_huffman_payload_is_refused_before_decoding(sources, tmp_path):
    """A payload longer than its symbols' codes can fill would only cost decoding work."""

    def padded(parts: SqzParts) -> None:
        layer = parts.metadata["layers"][0]
        _set_section(parts, f"{layer['name']}:index-payload", lambda section: section + bytes(1 << 20))
        layer["index"][2] += 1 << 20

    assert "cannot hold" in _refusal(_rewritten(sources[FLOAT32], tmp_path / "long.sqz", padded))


# --- defect 2: the metadata's inflated size is capped ----------------------------------------------------


def test_metadata_zlib_bomb_is_refused_without_inflating_it(sources, tmp_path):
    def bomb(parts: SqzParts) -> None:
        parts.metadata["default_cfg"]["extra"] = {"pad": " " * (64 << 20)}

    path = _rewritten(sources[FLOAT32], tmp_path / "bomb.sqz", bomb)
    assert path.stat().st_size < 200_000  # 64 MB of metadata, deflated a thousand-fold
    start = time.monotonic()
    assert "inflates to more than" in _refusal(path)
    assert time.monotonic() - start < 5


# --- defect 3: the spec is checked, and the model built, only after the tables fit it -------------------------


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"num_classes": 2**20}, "num_classes"),
        ({"num_classes": 2**33}, "num_classes"),
        ({"stem_channels": -5}, "stem_channels=-5"),
        ({"base_e": 60_000}, "parameters, more than"),
        ({"num_fires": 10**6}, "num_fires"),
        ({"squeeze_ratio": float("nan")}, "unreadable metadata"),  # JSON's NaN extension is refused as such
        ({"layout": "nope"}, "cannot be built"),
        ({"fire_specs": [[[[1]]]]}, "fire_specs"),
    ],
)
def test_model_spec_is_checked_before_anything_is_built(sources, worker, tmp_path, kwargs, reason):
    def respec(parts: SqzParts) -> None:
        parts.metadata["model_spec"]["kwargs"].update(kwargs)

    assert reason in _bounded_refusal(worker, _rewritten(sources[FLOAT32], tmp_path / "spec.sqz", respec))


def test_the_model_is_built_only_after_the_tables_fit_it(sources, tmp_path, monkeypatch):
    """A spec of another (valid) model is refused from its meta-device skeleton, before a real model exists."""

    def wider(parts: SqzParts) -> None:
        parts.metadata["model_spec"]["kwargs"]["base_e"] = 32

    path = _rewritten(sources[FLOAT32], tmp_path / "wider.sqz", wider)
    monkeypatch.setattr("squeezelab.compress.sqz.create_model", lambda *a, **k: pytest.fail("built a real model"))
    assert "in the file, " in _refusal(path)


def test_model_spec_checks():
    check_model_spec({"name": "squeezenet_generator", "kwargs": {"fire_specs": [[16, 64, 64]] * 8, "squeeze_ratio": 0.25}})
    bad = {
        "not a dict": [],
        "unknown model": {"name": "resnet_hostile"},
        "kwargs a list": {"name": "squeezenet1_0", "kwargs": [1]},
        "negative": {"name": "squeezenet1_0", "kwargs": {"num_classes": -1}},
        "infinite": {"name": "squeezenet1_0", "kwargs": {"dropout": math.inf}},
        "dict argument": {"name": "squeezenet1_0", "kwargs": {"dropout": {}}},
        "long list": {"name": "squeezenet_generator", "kwargs": {"remove_fires": [2] * 1000}},
        "extra key": {"name": "squeezenet1_0", "code": "print(1)"},
    }
    for name, spec in bad.items():
        with pytest.raises(ValueError, match="model spec|unknown model"):
            check_model_spec(spec)
    skeleton = model_skeleton({"name": "vgg19", "kwargs": {}})  # the largest registered model: no memory on meta
    assert next(skeleton.parameters()).is_meta and sum(p.numel() for p in skeleton.parameters()) < MAX_MODEL_PARAMETERS
    with pytest.raises(ValueError, match="more than"):
        model_skeleton({"name": "vgg19", "kwargs": {"num_classes": 100_000}})


def test_model_config_from_a_file_is_checked():
    cfg = create_model("squeezenet1_0").default_cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    for change in ({"input_size": "x"}, {"mean": [math.nan]}, {"unknown": 1}, {"num_classes": True}, {"antialias": "yes"}):
        with pytest.raises(ValueError, match="default_cfg"):
            ModelConfig.from_dict({**cfg.to_dict(), **change})
    with pytest.raises(ValueError, match="mapping"):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_model_records_are_checked_before_the_model_is_built(monkeypatch):
    record = model_record(create_model("squeezenet_tiny_cifar"))
    assert model_from_record(dict(record)).model_spec == record["model_spec"]
    nan_state = {**record["state_dict"], "classifier.1.bias": torch.full((10,), math.nan)}
    bad = {
        "version None": ({**record, "version": None}, "invalid model file version"),
        "spec a list": ({**record, "model_spec": [1]}, "model spec"),
        "huge model": ({**record, "model_spec": {"name": "squeezenet_tiny_cifar", "kwargs": {"num_classes": 2**20}}}, "num_classes"),
        "state a list": ({**record, "state_dict": [1]}, "not a mapping"),
        "sparse weights": ({**record, "state_dict": {**record["state_dict"], "classifier.1.bias": torch.ones(10).to_sparse()}}, "dense"),
        "missing weight": ({**record, "state_dict": {}}, "is missing"),
        "config a list": ({**record, "default_cfg": [1]}, "default_cfg"),
        "NaN weights": ({**record, "state_dict": nan_state}, "non-finite"),
    }
    for name, (content, reason) in bad.items():
        with pytest.raises(DamagedFileError) as info:
            model_from_record(content, source="bad.pt")
        assert str(info.value).startswith("bad.pt: ") and reason in str(info.value), name
    monkeypatch.setattr("squeezelab.models.files.create_model", lambda *a, **k: pytest.fail("built a real model"))
    with pytest.raises(DamagedFileError, match="has shape"):
        model_from_record({**record, "model_spec": {"name": "squeezenet_tiny_cifar", "kwargs": {"num_classes": 100}}})


# --- defect 4: malformed content gives the reader's own error, not a traceback -------------------------------


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


METADATA_CHANGES: dict[str, tuple[Callable[[dict], Any], str]] = {
    # name: (change of the metadata dict, returning a replacement for the whole metadata if not None; reason)
    "metadata a list": (lambda m: [m], "not a squeezelab compressed model"),
    "nested in the config": (lambda m: m["default_cfg"]["extra"].update(deep=_nested(100)), "nested more than"),
    "folded norm a list": (lambda m: m.update(folded_batch_norm=[["features.1"]]), "is not a name"),
    "folded norm not a norm": (lambda m: m.update(folded_batch_norm=["features.0"]), "is not a batch norm"),
    "layers a dict": (lambda m: m.update(layers={}), "layers is not a list"),
    "layer a number": (lambda m: m["layers"].__setitem__(0, 5), "is not a named layer"),
    "shape a string": (lambda m: m["layers"][0].update(shape="64x1"), "needs a shape"),
    "huge shape": (lambda m: m["layers"][0].update(shape=[2**70, 1]), "in the file, "),
    "length negative": (lambda m: m["layers"][0]["index"].__setitem__(2, -1), "must be [coder"),
    "length a float": (lambda m: m["layers"][0]["index"].__setitem__(2, 1.5), "must be [coder"),
    "coder a list": (lambda m: m["layers"][1]["positions"].__setitem__(0, []), "must be [coder"),
    "unknown coder": (lambda m: m["layers"][0]["index"].__setitem__(0, "z" * 10_000), "unknown coder"),
    "a layer twice": (lambda m: m["layers"].append(m["layers"][0]), "twice"),
    "not a coded layer": (lambda m: m["layers"][0].update(name="features.1"), "not a convolution or linear layer"),
    "tensor row short": (lambda m: m["tensors"].__setitem__(0, ["features.0.bias"]), "must be [key, storage, shape]"),
    "unknown storage": (lambda m: m["tensors"][0].__setitem__(1, "pickle"), "must be [key, storage, shape]"),
    "integer storage": (lambda m: m["tensors"][0].__setitem__(1, "int64"), "stored as int64"),
    "missing tensor": (lambda m: m["tensors"].__delitem__(0), "lacks features.0.bias"),
    "spec None": (lambda m: m.update(model_spec=None), "model spec"),
    "kwargs a list": (lambda m: m["model_spec"].update(kwargs=[1]), "kwargs"),
    "config a list": (lambda m: m.update(default_cfg=[1]), "default_cfg"),
    "config field": (lambda m: m["default_cfg"].update(input_size="large"), "input_size"),
    "integer of 4000 digits": (lambda m: m["layers"][0].update(nonzeros=10**3999), "do not fit"),
}


@pytest.mark.parametrize("name", sorted(METADATA_CHANGES))
def test_malformed_metadata_gives_one_line(sources, tmp_path, name):
    change, reason = METADATA_CHANGES[name]

    def apply(parts: SqzParts) -> None:
        replacement = change(parts.metadata)
        if replacement is not None:
            parts.metadata = replacement

    assert reason in _refusal(_rewritten(sources[FOLDED if "folded" in name else FLOAT32], tmp_path / "m.sqz", apply))


def test_unparseable_metadata_gives_one_line(sources, tmp_path):
    body = b"".join(section for _, section in SqzParts.of(sources[FLOAT32].read_bytes()).sections)
    cases = {
        "nested 100,000 deep": (sqz_file("[" * 100_000 + "]" * 100_000, body), "nested too deeply"),
        "not JSON": (sqz_file(b"\xff\xfe{", body), "unreadable metadata"),
        "not zlib": (sqz_file("{}", body, compressed_metadata=b"plain text"), "unreadable metadata"),
        "bytes after zlib": (sqz_file("{}", body, compressed_metadata=zlib.compress(b"{}") + b"xx"), "stray bytes"),
        "Infinity": (sqz_file('{"format": Infinity}', body), "non-finite number"),
        "metadata past the end": (_with_header_length(sqz_file("{}", body), 10**9), "runs past the end"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / "meta.sqz"
        path.write_bytes(data)
        assert reason in _refusal(path), name


def _with_header_length(data: bytes, length: int) -> bytes:
    content = data[:8] + struct.pack("<I", length) + data[12:-4]
    return content + struct.pack("<I", zlib.crc32(content))


@pytest.mark.parametrize(
    "source, coder, table, reason",
    [
        (FLOAT32, "gap-huffman", b"\xff" * 12 + b"\x01", "longer than 9 bytes"),  # a gap cap of ~2^84 (OverflowError)
        (FLOAT32, "gap-huffman", encode_varints([2**62]), "invalid gap cap"),  # the gaps' running sum would overflow
        (FOLDED, "kernel-mask", b"\xff" * 40, "longer than 9 bytes"),
        (FOLDED, "kernel-mask", encode_varints([9, 2**60, 2**60, 0]), "kernel-mask header"),
    ],
)
def test_huge_numbers_in_stream_tables_give_one_line(sources, tmp_path, source, coder, table, reason):
    def new_table(parts: SqzParts) -> None:
        layer = _sparse_layer(parts, coder)
        _set_section(parts, f"{layer['name']}:position-table", lambda _: table)
        layer["positions"][1] = len(table)

    assert reason in _refusal(_rewritten(sources[source], tmp_path / "table.sqz", new_table))


def test_inspect_and_parametrized_loading_refuse_alike(sources, tmp_path):
    from squeezelab.compress import inspect_compressed

    path = _rewritten(sources[FLOAT32], tmp_path / "list.sqz", lambda parts: setattr(parts, "metadata", [1]))
    for reader in (inspect_compressed, lambda p: load_compressed(p, parametrized=True)):
        assert "not a squeezelab compressed model" in _refusal(path, reader)


# --- defect 7: non-finite values are refused ------------------------------------------------------------------


def _first_section(parts: SqzParts, storage: str) -> str:
    return next(key for key, kind, _ in parts.metadata["tensors"] if kind == storage)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_codebook_is_refused(sources, tmp_path, value):
    def poisoned(parts: SqzParts) -> None:
        _set_section(parts, "features.0:codebook", lambda section: struct.pack("<f", value) + section[4:])

    assert "codebook holds non-finite values" in _refusal(_rewritten(sources[FLOAT32], tmp_path / "nan.sqz", poisoned))


@pytest.mark.parametrize(
    "source, storage, poison",
    [
        (FLOAT32, "float32", lambda section: struct.pack("<f", math.nan) + section[4:]),
        (FLOAT16, "float16", lambda section: struct.pack("<e", math.inf) + section[2:]),
        (UINT8, "uint8", lambda section: struct.pack("<ff", 0.0, math.nan) + section[8:]),  # the step of the linear codes
        (FOLDED, "linear10", lambda section: struct.pack("<ff", -math.inf, 1.0) + section[8:]),
        (FOLDED, "log8", lambda section: struct.pack("<ffB", 80.0, 10.0, 0) + section[9:]),  # exp overflows to inf
    ],
)
def test_non_finite_tensors_are_refused(sources, tmp_path, source, storage, poison):
    def poisoned(parts: SqzParts) -> None:
        _set_section(parts, _first_section(parts, storage), poison)

    with np.errstate(all="raise"):  # and the decoding does not warn about the overflow either
        assert "holds non-finite values" in _refusal(_rewritten(sources[source], tmp_path / "inf.sqz", poisoned))


def test_untouched_sources_still_load_bit_exactly(sources, tmp_path):
    """The checks refuse nothing a writer makes: every coder and storage, rewritten through the same path."""
    for source in sources:
        copy = _rewritten(source, tmp_path / source.name, lambda parts: None)
        original, rewritten = load_compressed(source).state_dict(), load_compressed(copy).state_dict()
        assert all(torch.equal(original[key], value) for key, value in rewritten.items())


# --- the stream decoders on their own ---------------------------------------------------------------------------


def test_stream_decoders_bound_their_work():
    with pytest.raises(CodingError, match="longer than 9 bytes"):
        decode_varints(b"\x80" * 20 + b"\x01", 1)
    assert decode_varints(encode_varints([2**63 - 1]), 1)[0][0] == 2**63 - 1
    stream = huffman_encode(np.arange(100) % 7)
    with pytest.raises(CodingError, match="at most 3 are possible"):
        decode_stream("huffman", stream.table, stream.payload, 100, max_alphabet=3)
    with pytest.raises(CodingError, match="negative"):
        decode_stream("huffman", stream.table, stream.payload, -1)
    with pytest.raises(CodingError, match="prefix code"):
        decode_stream("huffman", encode_varints([3]) + bytes([1, 1, 1]), b"\x00", 1)
    with pytest.raises(CodingError, match="exceed"):
        decode_stream("ans", encode_varints([2, 2**40, 1]), b"\x01\x00\x00\x00", 1)
    mask = np.random.default_rng(0).random(1000) < 0.3
    for coder in ("gap-huffman", "gap-ans", "mask", "kernel-mask"):
        encoded = encode_positions(mask, coder, taps=10)
        start = time.monotonic()
        with pytest.raises(CodingError, match="symbols for a layer of 1000"):
            decode_positions(coder, encoded.table, encoded.payload, 2**40, mask.size)
        assert time.monotonic() - start < 1
