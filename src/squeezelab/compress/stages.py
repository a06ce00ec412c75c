"""Runs made of named stages, one folder each, that resume where they stopped: the rules compression, DSD
and sweep trials share.

A stage that has run leaves a checkpoint file in its folder (``last.pt`` of a fine-tuning stage, ``model.pt``
of a finished DSD phase), holding everything the stages before it produced. A rerun therefore resumes at the
latest stage whose folder holds its checkpoint: the stages before it are superseded (skipped; their folders
may even be gone), that stage picks up from its checkpoint, and the stages after it run afresh. Resuming
trusts those checkpoints, so the run must start from the same weights with the same settings as the one that
wrote them: the first run records both, a rerun with others is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from squeezelab.train.checkpoint import LAST
from squeezelab.utils.files import atomic_write_text


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's tensor names and raw bytes: resuming must start from the same weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def has_checkpoint(folder: Path | None, checkpoint: str = LAST) -> bool:
    """Whether a stage's folder holds its checkpoint, which a rerun picks the stage up from."""
    return folder is not None and (folder / checkpoint).is_file()


class StagedRun:
    """The stages of one run, in order, each in the folder ``root/<stage>`` (no folders without a ``root``).

    Where the run resumes is fixed when it is created, before any stage writes its checkpoint.
    """

    def __init__(self, root: str | os.PathLike | None, stages: Sequence[str], checkpoint: str = LAST) -> None:
        self.root = Path(root) if root is not None else None
        self.stages = tuple(stages)
        started = [stage for stage in self.stages if has_checkpoint(self.folder(stage), checkpoint)]
        self.resume_stage = started[-1] if started else None

    def folder(self, stage: str) -> Path | None:
        return self.root / stage if self.root is not None else None

    def superseded(self, stage: str) -> bool:
        """Whether ``stage`` comes before the one the run resumes at (whose checkpoint holds all it left)."""
        return self.resume_stage is not None and self.stages.index(stage) < self.stages.index(self.resume_stage)

    def resumes(self, stage: str) -> bool:
        """Whether ``stage`` is the one the run resumes at: it picks up from the checkpoint in its folder."""
        return stage == self.resume_stage

    def claim(self, record: str, settings: Mapping[str, Any], is_main: bool, kind: str) -> None:
        """Record ``settings`` in ``root/record`` (rank 0) or refuse to resume a run started with others.

        ``kind`` names the run in the error ("a compression", "a DSD run"); a ``"model"`` entry is expected to
        be a :func:`fingerprint`. Nothing is recorded or checked without a ``root``.
        """
        if self.root is None:
            return
        path = self.root / record
        current = json.loads(json.dumps(settings, default=repr))  # objects without a JSON form (StdThreshold) keep their exact repr
        if not path.is_file():
            if is_main:
                atomic_write_text(path, json.dumps(current, indent=2) + "\n")
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            saved = f"{type(exc).__name__}: {exc}"
        if not isinstance(saved, dict):
            raise ValueError(f"{path}: unreadable settings of the run being resumed ({saved}); give another run directory")
        changed = _changes(saved, current)
        if changed:
            raise ValueError(f"{path}: this run directory holds {kind} with other settings ({'; '.join(changed)}); give another run directory")


def _changes(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What differs, setting by setting; within mappings on both sides (per-layer values, the fine-tuning
    settings) key by key, so a changed learning rate reads ``finetune.lr: 0.01 -> 0.02``."""
    changes = []
    for key in {**saved, **current}:
        before, after = saved.get(key), current.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            changes += _changes(before, after, f"{prefix}{key}.")
        else:
            changes.append("model: other weights" if prefix + key == "model" else f"{prefix}{key}: {before!r} -> {after!r}")
    return changes
