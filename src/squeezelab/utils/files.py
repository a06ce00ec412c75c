"""Atomic writes (temporary file in the same folder, then ``os.replace``) and code-free, verified loading."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Iterator

import torch
import yaml

from .digest import DIGEST_KEY, record_digest
from .errors import DamagedFileError, first_line

# The atomic writer's temporary files: ".<target name>.<writer's pid>.<random>.tmp" beside the target
# (older versions wrote no pid: such files are treated as left by a writer long gone).
_TEMPORARY_NAME = r"^\.(?P<target>{target})\.(?:(?P<pid>\d+)\.)?[^.]+\.tmp$"


class UnverifiedFileWarning(UserWarning):
    """A torch file without squeezelab's digest (written elsewhere or by an older squeezelab): loaded unchecked."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only if the block succeeds.

    An exception or Ctrl-C mid-write leaves any previous ``path`` untouched and removes the temporary file.
    A process killed outright (``kill -9``, power loss) cannot clean up: its temporary file stays until the
    next write of ``path`` (or :func:`remove_stale_temporaries` on the folder) removes it. The file's data
    and, after the rename, its folder are fsynced, so a completed write survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(path.parent)


def remove_stale_temporaries(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (only those of ``target``, if given).

    A temporary file is stale when the process that created it no longer runs; files from writers still
    running (another process saving the same file) are left alone. Returns the paths removed.
    """
    pattern = re.compile(_TEMPORARY_NAME.format(target=".+?" if target is None else re.escape(target)))
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(os.fspath(folder)):
            match = pattern.match(entry.name)
            if match is None or _writer_alive(match["pid"]):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _writer_alive(pid_text: str | None) -> bool:
    """Whether the writer of a temporary file may still be running (older squeezelab names hold no pid:
    those writers are long gone)."""
    if pid_text is None:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this process's own writes clean up after themselves
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or no such pid at all)
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON, atomically; NaN and infinities become ``null``, since JSON has no such
    numbers (``json.dumps`` would write ``NaN``, which JSON readers refuse)."""
    atomic_write_text(path, json.dumps(finite_json(data), indent=2, allow_nan=False) + "\n")


def finite_json(value: Any) -> Any:
    """``value`` (dicts, lists, tuples, scalars) with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically; a dict (model file, checkpoint, ``state_dict``) gets a digest of its
    contents under :data:`~squeezelab.utils.digest.DIGEST_KEY`, which :func:`safe_torch_load` checks and removes."""
    if isinstance(obj, dict):
        obj = {**obj, DIGEST_KEY: record_digest(obj)}
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never code.

    A digest written by :func:`atomic_torch_save` is verified and removed from the result; a file without
    one (torchvision's weights, older squeezelab files) loads unchecked, with one
    :class:`UnverifiedFileWarning` per file. Every failure is one line naming the file
    (:class:`~squeezelab.utils.errors.DamagedFileError`, or ``FileNotFoundError``): not a torch file,
    truncated, damaged, holding pickled objects, or not matching its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    content = _torch_load(path, map_location)
    if isinstance(content, dict) and DIGEST_KEY in content:
        return _verified(content, path)
    _warn_unverified(path)
    return content


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only's refusal of anything but tensors and plain containers (and pickle's own errors)
        raise DamagedFileError(f"{path}: refused to load (not a plain weights file): {first_line(exc)}") from None
    except OSError as exc:
        raise DamagedFileError(f"{path}: cannot read ({first_line(exc)})") from None
    except Exception as exc:
        # A damaged or crafted file makes the unpickler and zip reader fail in any number of ways
        # (KeyError, TypeError, UnicodeDecodeError, EOFError, zipfile.BadZipFile, RecursionError, ...).
        raise DamagedFileError(f"{path}: damaged or not a PyTorch file ({type(exc).__name__}: {first_line(exc)})") from None


def _verified(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record`` without its digest entry, after checking that entry against the contents."""
    stored = record.pop(DIGEST_KEY)
    try:
        computed = record_digest(record)
    except (RuntimeError, TypeError, ValueError) as exc:  # a crafted file's exotic tensors (sparse, quantized)
        raise DamagedFileError(f"{path}: cannot verify its digest ({first_line(exc)})") from None
    if stored != computed:
        raise DamagedFileError(f"{path}: damaged: its contents do not match the SHA-256 digest stored when it was written")
    return record


_warned_unverified: set[Path] = set()


def _warn_unverified(path: Path) -> None:
    resolved = path.resolve()
    if resolved not in _warned_unverified:
        _warned_unverified.add(resolved)
        warnings.warn(f"{path}: no squeezelab digest (written elsewhere or by an older version): loaded without an integrity check",
                      UnverifiedFileWarning, stacklevel=3)


def read_mapping(path: str | os.PathLike, what: str = "settings") -> dict[str, Any]:
    """A YAML (or, for ``.json``, JSON) file holding a mapping; errors name the file and say what it should be."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"{path}: not valid {kind}: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {what}, got {type(data).__name__}")
    return data


def write_mapping(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as YAML (or, for ``.json``, JSON), atomically: the files :func:`read_mapping` reads."""
    path = Path(path)
    text = json.dumps(data, indent=2) + "\n" if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(path, text)
