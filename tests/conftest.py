import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUEEZELAB_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"

torch.set_num_threads(min(2, torch.get_num_threads()))


def require(path: Path) -> Path:
    """Skip the test with a clear reason when a piece of ../shared is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set SQUEEZELAB_SHARED to its folder)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return require(SHARED_DATA)


@pytest.fixture
def shared_models() -> Path:
    return require(SHARED_MODELS)


@pytest.fixture
def single_thread():
    """Tiny models run faster on one thread (no OpenMP hand-offs per small op), on a busy machine by far."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchrun_squeezelab(args: list[str], tmp_path: Path, processes: int = 2, timeout: float = 240) -> tuple[str, str]:
    """Run ``torchrun -m squeezelab ARGS`` with one thread per process; returns (stdout, stderr) of a
    successful run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SQUEEZELAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "squeezelab", *args]
    # A new session, so that on a timeout the workers die with their launcher instead of lingering.
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, stderr[-4000:]
    return stdout, stderr
