"""This machine's fp32 peak, measured the way BLAS libraries reach it: a large square matrix multiply."""

from __future__ import annotations

import time

import torch


def measure_peak_gflops(size: int = 2048, repeats: int = 8) -> float:
    """Best fp32 GFLOP/s of ``size`` x ``size`` matrix multiplies on the current torch thread count."""
    if size < 64 or repeats < 1:
        raise ValueError(f"need size >= 64 and repeats >= 1, got {size}, {repeats}")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9
