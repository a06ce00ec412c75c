import pytest
import torch

from squeezelab.train import TrainConfig
from tests.data.conftest import private_cache  # noqa: F401  (the same per-test cache folder)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models train faster on one thread (no OpenMP hand-offs per small op), on a busy machine by far."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A few-second run: a narrow SqueezeNet (with dropout and batch norm) on 300 8x8 digits, CPU fp32."""
    return TrainConfig(
        model="squeezenet_generator",
        model_kwargs={"layout": "v1_1_small", "base_e": 16, "incr_e": 16, "batch_norm": "all"},
        dataset="digits",
        input_size=[8, 8],
        in_chans=1,
        limit=300,
        epochs=2,
        batch_size=32,
        lr=0.05,
        device="cpu",
        amp="off",
        seed=7,
    )
