"""Inference benchmarks: latency/throughput per backend, size, MACs, achieved fraction of the fp32 peak."""

from .backends import BACKENDS, BASELINE, DEFAULT_BACKENDS, build_backend
from .peak import measure_peak_gflops
from .report import markdown_table, write_results
from .runner import BenchResult, BenchSettings, bench_models
from .timing import Timing, interleaved_timings

__all__ = [
    "BACKENDS",
    "BASELINE",
    "DEFAULT_BACKENDS",
    "BenchResult",
    "BenchSettings",
    "Timing",
    "bench_models",
    "build_backend",
    "interleaved_timings",
    "markdown_table",
    "measure_peak_gflops",
    "write_results",
]
