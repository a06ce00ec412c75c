"""A user-level cache of decoded image arrays, so later runs skip decoding (never inside the repo or the data).

The cache lives in ``$SQUEEZELAB_CACHE`` or ``$XDG_CACHE_HOME/squeezelab`` (default ``~/.cache/squeezelab``).
Entries are keyed by a hash of what produced them (source paths, their sizes and modification times, output
size, channels), written atomically, and read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from squeezelab.utils.files import atomic_torch_save, safe_torch_load

CACHE_FORMAT_VERSION = 1


def cache_root() -> Path:
    """The squeezelab cache folder (not created here)."""
    explicit = os.environ.get("SQUEEZELAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "squeezelab"


def cached(key: dict[str, Any], build: Callable[[], dict[str, Any]], enabled: bool = True) -> dict[str, Any]:
    """``build()``'s result, from the cache when an entry for ``key`` exists, else built and stored."""
    if not enabled:
        return build()
    digest = hashlib.sha256(json.dumps({"v": CACHE_FORMAT_VERSION, **key}, sort_keys=True).encode()).hexdigest()
    path = cache_root() / "decoded" / f"{digest[:24]}.pt"
    if path.is_file():
        try:
            return safe_torch_load(path)
        except ValueError as exc:
            print(f"squeezelab: ignoring unreadable cache entry ({exc})", file=sys.stderr)
    value = build()
    try:
        atomic_torch_save(value, path)
    except OSError as exc:
        # A read-only or full cache disk must not stop training: the data is already in memory.
        print(f"squeezelab: could not write the decoded-image cache {path}: {exc}", file=sys.stderr)
    return value


def files_fingerprint(paths: list[Path]) -> dict[str, Any]:
    """Identify a list of (absolute) files by their paths, total size and newest modification time."""
    digest = hashlib.sha256()
    total_size = 0
    newest = 0
    for path in paths:
        stat = path.stat()
        digest.update(str(path).encode() + b"\0")
        total_size += stat.st_size
        newest = max(newest, stat.st_mtime_ns)
    return {"paths": digest.hexdigest(), "count": len(paths), "bytes": total_size, "mtime_ns": newest}
