"""``squeezelab export``: one command for every format, checked against PyTorch; bad requests fail in one line."""

import pytest
import torch

from squeezelab.cli.main import main
from squeezelab.interop.export import FORMATS, export_model, format_suffix
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from tests.interop.helpers import write_images


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model(create_model("squeezenet1_1_cifar"), path)
    return path


def test_every_format_has_one_suffix():
    assert {format_suffix(fmt) for fmt in FORMATS} == {".onnx", ".xml", ".pte"}


def test_export_onnx_and_int8_report_parity(model_file, tmp_path, capsys):
    assert main(["export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "(onnx, input 3x32x32" in out and "onnxruntime fp32" in out and "max abs logit difference" in out
    calibration = tmp_path / "calibration"
    write_images(calibration, 8, size=32)
    images = tmp_path / "eval"
    write_images(images / "a", 3, size=32, seed=3)
    args = ["export", str(model_file), "--format", "onnx-int8", "--out", str(tmp_path / "m8.onnx"),
            "--calibration", str(calibration), "--calibration-count", "8", "--eval-data", str(images)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "calibrated on 8 images" in out and "onnxruntime int8" in out and "top-1 agreement with PyTorch" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "onnx-int8", "--out", "x.onnx"], "needs calibration images"),
        (["--format", "openvino", "--out", "x.onnx"], "writes a .xml file"),
    ],
)
def test_bad_requests_fail_in_one_line(model_file, tmp_path, capsys, args, message):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    assert main(["export", str(model_file), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(create_model("squeezenet1_1_cifar"), "x.tflite", "tflite")
