"""ExecuTorch export (XNNPACK delegate, fp32 and int8) and runtime: parity with PyTorch, bad models and files."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from squeezelab.cli.main import main
from squeezelab.interop.deploy import deploy
from squeezelab.interop.evaluate import labelled_images
from squeezelab.interop.export import export_model
from squeezelab.interop.loading import load_model
from squeezelab.interop.onnx_export import random_images
from squeezelab.interop.parity import top1_agreement
from squeezelab.interop.quantize import calibration_batch
from squeezelab.models import ModelConfig, create_model
from tests.conftest import SHARED_DATA, SHARED_MODELS, require
from tests.interop.helpers import write_images

pytest.importorskip("executorch", reason="ExecuTorch is an optional extra: pip install squeezelab[executorch]")

from squeezelab.interop.executorch_pte import MAX_BATCH, ConversionError, ExecuTorchModel, export_executorch  # noqa: E402

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
SAMPLE = SHARED_DATA / "imagenet-sample"
# fp32 XNNPACK against PyTorch, relative to the largest logit: float32 rounding only (measured about 1e-6).
FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fast_cifar(tmp_path_factory):
    """squeezenet_fast_cifar: batch norm, GELU and a global max pool that ExecuTorch's op set lacks."""
    torch.manual_seed(0)
    model = create_model("squeezenet_fast_cifar").eval()
    tmp = tmp_path_factory.mktemp("executorch")
    return model, tmp, export_executorch(model, tmp / "fast.pte")


def test_fp32_program_matches_pytorch_for_every_batch_size(fast_cifar):
    model, _, path = fast_cifar
    runtime = ExecuTorchModel(path, threads=1)
    assert runtime.default_cfg == model.default_cfg and runtime.precision == "fp32"
    for batch_size in (1, MAX_BATCH, 2 * MAX_BATCH + 3):  # larger batches run in chunks
        batch = random_images(model.default_cfg, batch_size, seed=batch_size)
        with torch.inference_mode():
            expected = model(batch)
        # Relative to the logits' scale: a freshly initialised network has logits far below 1.
        assert (runtime(batch) - expected).abs().max() <= FP32_TOLERANCE * expected.abs().max()


def test_int8_program_tracks_fp32(fast_cifar):
    torch.manual_seed(0)
    model = create_model("squeezenet1_1_cifar").eval()
    _, tmp, _ = fast_cifar
    calibration = calibration_batch(write_images(tmp / "calib", 16, size=40), model.default_cfg, 16, progress=False)
    path = export_model(model, tmp / "int8.pte", "executorch-int8", calibration=calibration)
    runtime = ExecuTorchModel(path, threads=1)
    assert runtime.precision == "int8"
    assert runtime.file_bytes < 0.5 * 4 * sum(p.numel() for p in model.parameters())
    batch = torch.from_numpy(calibration[:8])
    with torch.inference_mode():
        reference = model(batch).numpy()
    assert np.corrcoef(reference.ravel(), runtime(batch).numpy().ravel())[0, 1] > 0.95


def test_real_images_agree_with_pytorch(tmp_path):
    release = load_model(require(RELEASE)).eval()
    images = labelled_images(require(SAMPLE)).paths[:50]
    runtime = ExecuTorchModel(export_model(release, tmp_path / "v10.pte", "executorch"), threads=2)
    agreement = top1_agreement(release, runtime, images, release.default_cfg)
    assert agreement.top1_agreement == 100.0 and agreement.max_abs_difference < 1e-3


def test_unconvertible_layer_is_named(tmp_path):
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3)
            self.pool = nn.AdaptiveMaxPool2d(2)  # not in ExecuTorch's op set, and not a global pool we can rewrite
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    model = Pooled().eval()
    model.default_cfg = ModelConfig(input_size=(3, 16, 16), num_classes=2)
    with pytest.raises(ConversionError, match=r"executorch cannot convert Pooled: layer pool \(AdaptiveMaxPool2d\): .*adaptive_max_pool2d"):
        export_executorch(model, tmp_path / "pooled.pte")


def test_classify_runs_a_program_and_refuses_a_corrupt_one(fast_cifar, tmp_path, capsys):
    _, _, path = fast_cifar
    images = [str(p) for p in write_images(tmp_path / "images", 2, size=32)]
    assert deploy(path).backend == "executorch"
    assert main(["classify", "--model", str(path), *images]) == 0
    assert "backend: ExecuTorch (XNNPACK)" in capsys.readouterr().out
    bad = tmp_path / "bad.pte"
    bad.write_bytes(path.read_bytes()[:1000])
    assert main(["classify", "--model", str(bad), *images]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pte" in err and "ExecuTorch cannot load it" in err


def test_ceil_mode_pools_become_floor_mode_only_where_sizes_agree():
    from squeezelab.interop.executorch_pte import exportable

    model = create_model("squeezenet1_1").eval()
    pools = lambda m: [p.ceil_mode for p in m.modules() if isinstance(p, nn.MaxPool2d)]  # noqa: E731
    assert all(pools(model))
    at_224 = exportable(model, (3, 224, 224))
    assert not any(pools(at_224))  # XNNPACK takes them now
    batch = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(at_224(batch), model(batch))
    assert pools(exportable(model, (3, 225, 225)))[0]  # 112 -> 55 (floor) or 56 (ceil): kept as it is
