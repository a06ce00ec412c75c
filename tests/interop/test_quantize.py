import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from squeezelab.cli.main import main
from squeezelab.data.images import ImageDecodeError
from squeezelab.interop.onnx_export import export_onnx, onnx_metadata
from squeezelab.interop.quantize import calibration_batch, head_nodes, quantize_int8
from squeezelab.interop.runtime import OnnxModel
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from tests.interop.helpers import write_images


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = create_model("squeezenet1_1_cifar").eval()
    fp32 = export_onnx(model, tmp / "fp32.onnx")
    calibration = calibration_batch(write_images(tmp / "calib", 24, size=40), model.default_cfg, 16, progress=False)
    return model, fp32, quantize_int8(fp32, tmp / "int8.onnx", calibration)


def test_int8_model_is_quantized_but_keeps_a_float_head(int8_model):
    _, fp32, int8 = int8_model
    proto = onnx.load(str(int8))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and "Conv" in ops
    weights = {init.name: init for init in proto.graph.initializer}
    assert any(w.data_type == onnx.TensorProto.INT8 for w in weights.values())
    producer = {out: node for node in proto.graph.node for out in node.output}
    pool = next(node for node in proto.graph.node if node.op_type == "GlobalAveragePool")
    assert producer[pool.input[0]].op_type == "DequantizeLinear"  # pooling and logits stay float
    assert head_nodes(onnx.load(str(fp32)))
    assert onnx_metadata(int8)["squeezelab.precision"] == "int8"


def test_concat_inputs_and_output_share_one_scale(int8_model):
    proto = onnx.load(str(int8_model[2]))
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    producer = {out: node for node in proto.graph.node for out in node.output}
    concats = [node for node in proto.graph.node if node.op_type == "Concat"]
    assert concats
    for concat in concats:
        scales = {float(values[producer[name].input[1]]) for name in concat.input}
        assert len(scales) == 1


def test_int8_logits_track_fp32(int8_model, tmp_path):
    model, fp32, int8 = int8_model
    images = write_images(tmp_path / "eval", 8, size=40, seed=5)
    batch = torch.from_numpy(calibration_batch(images, model.default_cfg, 8, progress=False))
    with torch.inference_mode():
        reference = model(batch).numpy()
    found = OnnxModel(int8)(batch).numpy()
    assert np.corrcoef(reference.ravel(), found.ravel())[0, 1] > 0.95


def test_small_images_become_mosaics(tmp_path):
    write_images(tmp_path, 40, size=64)
    cfg = create_model("squeezenet1_1").default_cfg
    batch = calibration_batch(tmp_path, cfg, 2, progress=False)
    assert batch.shape == (2, 3, 224, 224)  # 4 x 4 tiles of 64 px per 256 px mosaic, centre crop 224
    rows = batch[0, 0]
    # Tiles at native resolution: after the 16 px crop offset, rows 48 and 112 lie in different images.
    assert not np.allclose(rows[40:48], rows[104:112])


def test_calibration_needs_images(tmp_path):
    cfg = create_model("squeezenet1_1").default_cfg
    with pytest.raises(ValueError, match="no image files"):
        calibration_batch(tmp_path, cfg, 4)


@pytest.mark.parametrize("size", [256, 64], ids=["whole-images", "mosaic-tiles"])
def test_an_unreadable_calibration_image_fails_naming_it(tmp_path, size):
    # calibrating on the readable remainder (1 of 3 images) used to succeed silently
    write_images(tmp_path, 1, size=size)
    for name in ("broken.jpg", "empty.png"):
        (tmp_path / name).write_bytes(b"no image" if name == "broken.jpg" else b"")
    with pytest.raises(ImageDecodeError, match=r"(broken\.jpg|empty\.png): cannot decode image"):
        calibration_batch(tmp_path, create_model("squeezenet1_1").default_cfg, 4, progress=False)


def test_quantize_command_refuses_unreadable_calibration_images(tmp_path, capsys):
    model = tmp_path / "model.pt"
    save_model(create_model("squeezenet1_1_cifar"), model)
    write_images(tmp_path / "calib", 1, size=32)
    (tmp_path / "calib" / "broken.jpg").write_bytes(b"no image")
    code = main(["quantize-int8", str(model), "--out", str(tmp_path / "int8.onnx"), "--calibration", str(tmp_path / "calib")])
    err = capsys.readouterr().err
    assert code == 2 and "broken.jpg: cannot decode image" in err and err.count("\n") == 1
    assert not (tmp_path / "int8.onnx").exists()
