"""Latency measurement: warm-up, then interleaved rounds so background load hits every backend alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of individual calls."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.seconds, 90))


def interleaved_timings(
    calls: Mapping[str, Callable[[], Any]], warmup: int = 5, iters: int = 30, rounds: int = 5
) -> dict[str, Timing]:
    """Time every call ``iters`` times after ``warmup`` calls, in ``rounds`` alternating blocks.

    Alternating blocks (A A B B C C, A A B B C C, ...) spread slow phases of a shared machine over all
    backends instead of penalising whichever happened to run during them.
    """
    if warmup < 0 or iters < 1 or rounds < 1:
        raise ValueError(f"need warmup >= 0, iters >= 1, rounds >= 1; got {warmup}, {iters}, {rounds}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    per_round = [iters // rounds + (1 if r < iters % rounds else 0) for r in range(rounds)]
    for count in per_round:
        for name, call in calls.items():
            for _ in range(count):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in samples.items()}
