"""A bounded fuzz campaign of the model file readers (the full one: benchmarks/fuzz_sqz.py).

Fresh mutations of real .sqz, .pt and Deep Compression .net files, each read in a worker process under a memory
and a time limit: every case must end in the reader's own one-line error or a load of finite weights, which must
be bit-identical to the original's wherever a checksum covers them (see squeezelab/fuzz.py).
"""

from __future__ import annotations

import os
import signal
import warnings

from squeezelab.fuzz import DEFAULT_MEMORY_MB, FAILURES, Worker, make_pt_sources, make_sqz_sources, run_campaign
from tests.conftest import SHARED_MODELS

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
COUNTS = {"sqz": 160, "pt": 30, "net": 20}  # under a minute on two busy cores
SEED = 20_251  # fixed, so a failure can be made again (the benchmark's seeds differ)


def test_bounded_fuzz_campaign(tmp_path):
    sources = {"sqz": make_sqz_sources(tmp_path), "pt": make_pt_sources(tmp_path), "net": [RELEASE] if RELEASE.is_file() else []}
    if not sources["net"]:
        warnings.warn(f"no .net cases: the Deep Compression release is not at {RELEASE}", stacklevel=1)
    result = run_campaign(sources, COUNTS, seed=SEED, workers=2, timeout=60, failures_folder=tmp_path / "failures")
    summary = result.markdown()
    assert result.failure_count == 0, f"{', '.join(FAILURES)} must not happen:\n{summary}"
    assert result.total(kind="sqz") == COUNTS["sqz"] and result.total(kind="pt") == COUNTS["pt"], summary
    # the mutations reach past the checksum: crafted files are refused by the later checks, or load
    assert result.counts["sqz/section"]["error"] and result.counts["sqz/metadata"]["error"], summary
    assert result.total(["identical", "changed"], kind="sqz"), summary


def test_crashes_and_hangs_are_counted_not_fatal(tmp_path):
    """A worker that dies (as on an abort) or stops answering gives "crash" or "hang", and a fresh one takes over."""
    source = make_pt_sources(tmp_path)[0]
    worker = Worker(DEFAULT_MEMORY_MB, tmp_path / "worker.log")
    try:
        os.kill(worker.process.pid, signal.SIGKILL)
        assert worker.read("pt", source, timeout=30)["result"] == "crash"
        os.kill(worker.process.pid, signal.SIGSTOP)
        assert worker.read("pt", source, timeout=2)["result"] == "hang"
        assert worker.read("pt", source, timeout=30)["result"] == "loaded"
    finally:
        worker.close()
