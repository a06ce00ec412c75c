import os
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
