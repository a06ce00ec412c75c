import json

import numpy as np
import onnx
import pytest
import torch

from squeezelab.interop.onnx_export import DEFAULT_OPSET, export_onnx, onnx_config, onnx_parity, random_images
from squeezelab.interop.runtime import OnnxModel
from squeezelab.models import create_model, list_models

# One of each family/feature: v1.0 at ImageNet size, v1.1 small-input, bypass, SqueezeNext, AlexNet baseline.
# The bound is 1e-4 on the logits, unless float32 PyTorch itself is further than that from float64 (a
# randomly initialised 23-block SqueezeNext is, by about 2e-4).
REPRESENTATIVE = [
    "squeezenet1_0",
    "squeezenet1_1_cifar",
    "squeezenet1_1_complex_bypass",
    "sqnxt23_w1_cifar",
    "alexnet_cifar",
]


def with_data_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm running statistics from a few batches, as after training: untrained statistics let deep
    residual nets (SqueezeNext) reach logits near 1e3, where float32 rounding alone exceeds 1e-4."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for seed in range(2):
            model(random_images(model.default_cfg, 4, seed=seed))
    return model.eval()


def float32_rounding(model: torch.nn.Module, batch: torch.Tensor) -> float:
    """How far PyTorch's own float32 logits are from float64 ones: no runtime can be held closer than that."""
    with torch.inference_mode():
        single = model(batch).double()
        double = model.double()(batch.double())
    model.float()
    return float((single - double).abs().max())


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_onnxruntime_matches_pytorch(tmp_path, name):
    if name not in list_models():
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    model = with_data_statistics(create_model(name))
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    # onnx_parity's batch: the same seeded random images.
    tolerance = max(1e-4, 2 * float32_rounding(model, random_images(model.default_cfg, 3)))
    assert onnx_parity(model, path, batch_size=3) <= tolerance
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= DEFAULT_OPSET
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_metadata_carries_preprocessing_and_spec(tmp_path):
    model = create_model("squeezenet1_1_cifar", num_classes=7)
    path = export_onnx(model, tmp_path / "m.onnx", metadata={"note": "x"})
    assert onnx_config(path) == model.default_cfg
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["squeezelab.model_spec"]) == model.model_spec
    assert meta["note"] == "x"


def test_dynamic_size_export_runs_other_sizes(tmp_path):
    model = create_model("squeezenet1_1").eval()
    runner = OnnxModel(export_onnx(model, tmp_path / "d.onnx", dynamic_size=True))
    x = torch.randn(2, 3, 160, 192)
    with torch.inference_mode():
        assert float((runner(x) - model(x)).abs().max()) <= 1e-4


def test_bad_inputs_are_rejected(tmp_path):
    model = create_model("squeezenet1_1_cifar")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=11)
    with pytest.raises(ValueError, match="input size"):
        export_onnx(model, tmp_path / "b.onnx", input_size=(3, 0, 32))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx at all")
    with pytest.raises(ValueError, match="junk.onnx"):
        OnnxModel(junk)
    assert not (tmp_path / "a.onnx").exists()


def test_decompressed_model_exports(tmp_path):
    compress = pytest.importorskip("squeezelab.compress")
    model = create_model("squeezenet_tiny_cifar")
    compress.quantize(model, 4)
    compress.save_compressed(model, tmp_path / "m.sqz")
    decompressed = compress.load_compressed(tmp_path / "m.sqz")
    path = export_onnx(decompressed, tmp_path / "m.onnx")
    assert onnx_parity(decompressed, path) <= 1e-4
    assert np.isfinite(onnx_parity(decompressed, path))
