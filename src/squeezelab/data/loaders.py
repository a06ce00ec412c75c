"""``DataLoader``s for :class:`DatasetSplits`: shuffling, batched augmentation, distributed sharding.

All randomness of a training loader (sample order, augmentation, worker seeds) is derived from
``(seed, epoch)`` when ``set_epoch`` is called, as ``DistributedSampler.set_epoch`` does for the order: a run
resumed at an epoch boundary therefore sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sized, cast

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .augment import BatchCollate
from .datasets import DatasetSplits


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for one epoch of one random stream (order, augmentation, dropout, ...)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class EpochLoader(DataLoader):
    """A ``DataLoader`` whose randomness is re-seeded from ``(seed, epoch)`` by :meth:`set_epoch`.

    ``sharded`` is True when each process of a distributed run sees only its part of the data, so that
    evaluation knows to sum its counts over processes.
    """

    def __init__(self, dataset: Dataset, *, seed: int = 0, sharded: bool = False, **kwargs) -> None:
        super().__init__(dataset, **kwargs)
        self.seed = seed
        self.sharded = sharded

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(epoch_seed(self.seed, epoch, 0))
        if isinstance(self.collate_fn, BatchCollate):
            self.collate_fn.set_seed(epoch_seed(self.seed, epoch, 1), epoch, self.seed)


@dataclass
class Loaders:
    """Train / val / test loaders (None where the split is absent) and the splits they came from."""

    train: EpochLoader | None
    val: EpochLoader | None
    test: EpochLoader | None
    splits: DatasetSplits


def default_workers(splits: DatasetSplits) -> int:
    """0 for in-memory data (batches are tensor slices); up to 4 decoding processes for file-backed data."""
    return 0 if splits.in_memory else min(4, os.cpu_count() or 1)


def build_loaders(
    splits: DatasetSplits,
    batch_size: int,
    workers: int | None = None,
    distributed: bool = False,
    *,
    eval_batch_size: int | None = None,
    seed: int = 0,
    drop_last: bool = True,
    pin_memory: bool | None = None,
) -> Loaders:
    """Loaders yielding ``(float images normalised as splits says, int64 labels)``.

    ``batch_size`` is per process (the PyTorch convention for DDP). With ``distributed=True`` (an initialised
    ``torch.distributed`` process group) training uses a ``DistributedSampler`` and evaluation loaders give
    each process a disjoint shard without padding. Training drops the last incomplete batch (``drop_last``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs an initialised torch.distributed process group (use torchrun)")
    workers = default_workers(splits) if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
        "seed": seed,
    }
    eval_batch = eval_batch_size or batch_size
    normalization = splits.normalization

    def evaluation(dataset: Dataset | None) -> EpochLoader | None:
        if dataset is None:
            return None
        sampler = _shard(len(cast(Sized, dataset))) if distributed else None
        return EpochLoader(
            dataset, batch_size=eval_batch, sampler=sampler, collate_fn=BatchCollate(normalization), sharded=distributed, **options
        )

    train = None
    if splits.train is not None:
        drop = drop_last and len(cast(Sized, splits.train)) >= batch_size * (dist.get_world_size() if distributed else 1)
        collate = BatchCollate(normalization, splits.augment)
        if distributed:
            shards: DistributedSampler = DistributedSampler(splits.train, shuffle=True, seed=seed, drop_last=drop)
            train = EpochLoader(
                splits.train, batch_size=batch_size, sampler=shards, drop_last=drop, collate_fn=collate,
                generator=torch.Generator(), sharded=True, **options,
            )
        else:
            train = EpochLoader(
                splits.train, batch_size=batch_size, shuffle=True, drop_last=drop, collate_fn=collate,
                generator=torch.Generator(), **options,
            )
        train.set_epoch(0)
    return Loaders(train, evaluation(splits.val), evaluation(splits.test), splits)


def _shard(length: int) -> list[int]:
    """This process's evaluation indices: every world_size-th sample, so shards are disjoint and complete."""
    return list(range(dist.get_rank(), length, dist.get_world_size()))
