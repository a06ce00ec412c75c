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
    per_round: tuple[int, ...] = ()  # calls per interleaved round, in order (empty: one block)

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.seconds, 90))

    @property
    def round_medians(self) -> tuple[float, ...]:
        """Median of each round: how far they scatter is the run-to-run noise of this machine."""
        bounds = np.cumsum((0, *self.per_round)) if self.per_round else (0, len(self.seconds))
        return tuple(float(np.median(self.seconds[a:b])) for a, b in zip(bounds[:-1], bounds[1:]) if b > a)

    @property
    def spread(self) -> float:
        """(slowest - fastest round median) / overall median; 0 with a single round."""
        medians = self.round_medians
        return (max(medians) - min(medians)) / self.median if medians else 0.0


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
    return {name: Timing(tuple(values), tuple(c for c in per_round if c)) for name, values in samples.items()}
