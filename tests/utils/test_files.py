import json
import os
import pickle
import stat
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch

from squeezelab.utils import files
from squeezelab.utils.digest import DIGEST_KEY, record_digest
from squeezelab.utils.errors import DamagedFileError
from squeezelab.utils.files import (
    UnverifiedFileWarning,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    safe_torch_load,
)
from tests.utils.torchfiles import flip_tensor_byte


def _record() -> dict:
    return {"format": "test", "state_dict": {"w": torch.arange(12.0).reshape(3, 4), "n": torch.tensor(5)}, "epoch": 3}


def test_saved_records_carry_a_digest_that_loading_checks_and_removes(tmp_path):
    path = tmp_path / "record.pt"
    atomic_torch_save(_record(), path)
    assert DIGEST_KEY in torch.load(path, weights_only=True)  # stored in the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified file loads without a word
        loaded = safe_torch_load(path)
    assert DIGEST_KEY not in loaded and torch.equal(loaded["state_dict"]["w"], _record()["state_dict"]["w"])


def test_a_flipped_tensor_byte_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "record.pt"
    atomic_torch_save(_record(), path)
    flip_tensor_byte(path, offset=5)
    with pytest.raises(DamagedFileError, match=r"record\.pt: damaged: its contents do not match the SHA-256 digest") as caught:
        safe_torch_load(path)
    assert "\n" not in str(caught.value)


def test_the_digest_covers_names_shapes_dtypes_and_other_values():
    base = record_digest(_record())
    renamed = {**_record(), "state_dict": {"v": torch.arange(12.0).reshape(3, 4), "n": torch.tensor(5)}}
    reshaped = {**_record(), "state_dict": {"w": torch.arange(12.0).reshape(4, 3), "n": torch.tensor(5)}}
    retyped = {**_record(), "state_dict": {"w": torch.arange(12.0).reshape(3, 4), "n": torch.tensor(5.0)}}
    later = {**_record(), "epoch": 4}
    assert len({base, *(record_digest(r) for r in (renamed, reshaped, retyped, later))}) == 5
    # the order entries were added in does not matter; a non-contiguous view hashes as its values
    reordered = {"epoch": 3, "state_dict": {"n": torch.tensor(5), "w": torch.arange(12.0).reshape(4, 3).T.contiguous().T.reshape(3, 4)},
                 "format": "test"}
    assert record_digest(reordered) == base


def test_files_without_a_digest_load_with_one_warning(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"features.0.weight": torch.ones(2, 2)}, path)  # as torchvision's weights: no digest
    with pytest.warns(UnverifiedFileWarning, match=r"foreign\.pth: no squeezelab digest"):
        assert set(safe_torch_load(path)) == {"features.0.weight"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        safe_torch_load(path)  # said once per file


@pytest.mark.parametrize(
    "error",
    [
        KeyError("name"),
        AttributeError("'list' object has no attribute 'get'"),
        TypeError("unhashable type: 'dict'"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        EOFError("Ran out of input"),
        RuntimeError("PytorchStreamReader failed reading zip archive:\nfailed finding central directory"),
        pickle.UnpicklingError("Weights only load failed.\nUnsupported global: os.system"),
        zipfile.BadZipFile("Bad CRC-32"),
        RecursionError("maximum recursion depth exceeded"),
        OverflowError("cannot fit 'int' into an index-sized integer"),
        ValueError("bad marshal data"),
        IndexError("list index out of range"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_unpickler_error_is_one_line_naming_the_file(tmp_path, monkeypatch, error):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"anything")

    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(files.torch, "load", failing_load)
    with pytest.raises(DamagedFileError) as caught:
        safe_torch_load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_are_refused_naming_the_file(tmp_path, damage):
    path = tmp_path / "model.pt"
    atomic_torch_save(_record(), path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": bytes(range(256)) * 4, "empty": b""}[damage])
    with pytest.raises(DamagedFileError, match=r"model\.pt: ") as caught:
        safe_torch_load(path)
    assert "\n" not in str(caught.value)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_write_removes_temporaries_of_killed_writers_only(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    orphans = [tmp_path / f".last.pt.{dead}.abcd1234.tmp", tmp_path / ".last.pt.k2j4h5g6.tmp"]  # the latter: no pid (older versions)
    kept = [tmp_path / f".last.pt.{alive}.efgh5678.tmp", tmp_path / f".best.pt.{dead}.abcd1234.tmp", tmp_path / "notes.tmp"]
    for path in orphans + kept:
        path.write_bytes(b"partial")
    atomic_write_text(tmp_path / "last.pt", "new")
    assert (tmp_path / "last.pt").read_text() == "new"
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in kept)  # a live writer's file, another target's, not the writer's
    assert remove_stale_temporaries(tmp_path) == [tmp_path / f".best.pt.{dead}.abcd1234.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", kept[0].name, "notes.tmp"])


def test_a_write_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", recording_fsync)
    atomic_write_text(tmp_path / "a.txt", "text")
    assert synced == ["file", "folder"]


def test_json_writer_turns_non_finite_numbers_into_null(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"loss": float("nan"), "top1": [float("inf"), 1.5], "nested": {"x": -float("inf")}, "n": 3})

    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "top1": [None, 1.5], "nested": {"x": None}, "n": 3}
