import pytest
import torch

from squeezelab import create_model
from squeezelab.data import build_datasets
from squeezelab.train import TrainConfig

TINY_KWARGS = {"layout": "v1_1_small", "base_e": 16, "incr_e": 16, "num_classes": 10, "in_chans": 1}


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(single_thread):
    yield


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The 1,797 real 8x8 digits (the embedded data set) split train / val / test, decoded once per session."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SQUEEZELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return build_datasets("digits", in_chans=1, input_size=8, progress=False, seed=3)


def tiny_model(seed: int = 0, **kwargs) -> torch.nn.Module:
    """A narrow SqueezeNet (about 14k weights) for 1x8x8 digits."""
    torch.manual_seed(seed)
    return create_model("squeezenet_generator", **{**TINY_KWARGS, **kwargs})


@pytest.fixture(scope="session")
def trained_state(digits):
    """The tiny model with batch norm after 8 epochs on the digits (about 45% test accuracy, 10 classes):
    a trained model to compress. Weights and config."""
    from squeezelab.train import fit

    model = tiny_model(batch_norm="all")
    config = TrainConfig(epochs=8, batch_size=32, lr=0.05, schedule="onecycle", device="cpu", amp="off", seed=7)
    result = fit(model, config, digits, progress=False, log=None)
    assert result.test["top1"] > 30.0  # well above chance: the model really learned something
    return {"state_dict": model.state_dict(), "default_cfg": model.default_cfg}


def trained_tiny(trained) -> torch.nn.Module:
    model = tiny_model(batch_norm="all")
    model.load_state_dict(trained["state_dict"])
    model.default_cfg = trained["default_cfg"]
    return model


@pytest.fixture
def tiny_config() -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=32, lr=0.05, device="cpu", amp="off", seed=7, schedule="constant")
