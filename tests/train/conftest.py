import pytest

from squeezelab.train import TrainConfig
from tests.data.conftest import private_cache  # noqa: F401  (the same per-test cache folder)


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(single_thread):
    yield


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
