"""The settings record of a resumable multi-stage run (compression, DSD).

Resuming trusts the stage checkpoints already in a run directory, so the run must start from the same
weights with the same settings as the one that wrote them; the first run records both, a rerun checks them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn

from squeezelab.utils.files import atomic_write_text


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's tensor names and raw bytes: resuming must start from the same weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def claim_run_dir(record: Path, settings: dict, is_main: bool, kind: str) -> None:
    """Write ``settings`` to ``record`` (rank 0) or check them against those of the run being resumed.

    ``kind`` names the run in the error ("a compression", "a DSD run"); a ``"model"`` entry is expected to
    be a :func:`fingerprint`.
    """
    current = json.loads(json.dumps(settings, default=repr))  # objects without a JSON form (StdThreshold) keep their exact repr
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            saved = f"{type(exc).__name__}: {exc}"
        if not isinstance(saved, dict):
            raise ValueError(f"{record}: unreadable settings of the run being resumed ({saved}); give another run directory")
        changed = [_change(key, saved.get(key), current.get(key)) for key in {**saved, **current} if saved.get(key) != current.get(key)]
        if changed:
            raise ValueError(f"{record}: this run directory holds {kind} with other settings "
                             f"({'; '.join(changed)}); give another run directory")  # fmt: skip
    elif is_main:
        atomic_write_text(record, json.dumps(current, indent=2) + "\n")


def _change(key: str, saved, current) -> str:
    return "model: other weights" if key == "model" else f"{key}: {saved!r} -> {current!r}"
