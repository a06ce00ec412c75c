"""OpenVINO export and runtime: parity with PyTorch (random and real images), int8 paths, deploy, bad files."""

import sys

import numpy as np
import pytest
import torch

from squeezelab.cli.main import main
from squeezelab.interop.deploy import deploy
from squeezelab.interop.evaluate import labelled_images
from squeezelab.interop.export import export_model
from squeezelab.interop.loading import load_model
from squeezelab.interop.parity import logit_difference, top1_agreement
from squeezelab.interop.quantize import calibration_batch
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from squeezelab.utils.optional import MissingDependency
from tests.conftest import SHARED_DATA, SHARED_MODELS, require
from tests.interop.helpers import write_images

pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install squeezelab[openvino]")

from squeezelab.interop.openvino_ir import OpenVinoModel, openvino_core, openvino_metadata  # noqa: E402

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
SAMPLE = SHARED_DATA / "imagenet-sample"
CALIBRATION = SHARED_DATA / "cifar10-jpeg" / "train"
# fp32 IR against PyTorch: float32 rounding only (measured about 3e-6 on SqueezeNet logits of scale 1-30).
FP32_TOLERANCE = 1e-4
REAL_IMAGES = 100


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("squeezenet1_1_cifar").eval()
    tmp = tmp_path_factory.mktemp("openvino")
    calibration = calibration_batch(write_images(tmp / "calib", 16, size=40), model.default_cfg, 16, progress=False)
    return model, tmp, calibration


def test_fp32_ir_matches_pytorch_and_keeps_the_config(cifar):
    model, tmp, _ = cifar
    path = export_model(model, tmp / "fp32.xml", "openvino")
    assert path.with_suffix(".bin").is_file()
    runtime = OpenVinoModel(path, threads=1)
    assert runtime.default_cfg == model.default_cfg and runtime.precision == "fp32"
    for batch_size in (1, 3):  # the dynamic batch axis is kept
        assert logit_difference(model, runtime, model.default_cfg, batch_size) < FP32_TOLERANCE
    assert '"squeezenet1_1_cifar"' in openvino_metadata(path)["squeezelab.model_spec"]


@pytest.mark.parametrize("quantizer", ["squeezelab", "nncf"])
def test_int8_ir_tracks_fp32(cifar, quantizer):
    if quantizer == "nncf":
        pytest.importorskip("nncf", reason="NNCF comes with the openvino extra")
    model, tmp, calibration = cifar
    path = export_model(model, tmp / f"int8_{quantizer}.xml", "openvino-int8", calibration=calibration, quantizer=quantizer)
    runtime = OpenVinoModel(path, threads=1)
    assert runtime.precision == "int8"
    assert runtime.file_bytes < 0.5 * OpenVinoModel(export_model(model, tmp / "ref.xml", "openvino")).file_bytes
    batch = torch.from_numpy(calibration[:8])
    with torch.inference_mode():
        reference = model(batch).numpy()
    assert np.corrcoef(reference.ravel(), runtime(batch).numpy().ravel())[0, 1] > 0.95


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return load_model(require(RELEASE)).eval()


def test_real_images_fp32_agree_with_pytorch(release, tmp_path):
    images = labelled_images(require(SAMPLE)).paths[:REAL_IMAGES]
    runtime = OpenVinoModel(export_model(release, tmp_path / "v10.xml", "openvino"), threads=2)
    agreement = top1_agreement(release, runtime, images, release.default_cfg)
    assert agreement.top1_agreement == 100.0 and agreement.max_abs_difference < 1e-3


def test_real_images_int8_mostly_agree_with_pytorch(release, tmp_path):
    images = labelled_images(require(SAMPLE)).paths[:REAL_IMAGES]
    calibration = calibration_batch(require(CALIBRATION), release.default_cfg, 64, progress=False)
    path = export_model(release, tmp_path / "v10_int8.xml", "openvino-int8", calibration=calibration)
    agreement = top1_agreement(release, OpenVinoModel(path, threads=2), images, release.default_cfg)
    # int8 flips close calls between the top classes; accuracy itself stays within a point (see docs/interop.md).
    assert agreement.top1_agreement >= 80.0


def test_deploy_prefers_openvino_for_int8_and_runs_exported_files(tmp_path):
    torch.manual_seed(0)
    model = create_model("squeezenet1_1_cifar", num_classes=3)
    path = tmp_path / "model.pt"
    save_model(model, path)
    fp32 = deploy(path, "auto")
    assert fp32.backend == "onnx" and fp32.artifact == tmp_path / "model.pt.onnx"  # onnxruntime is faster at fp32
    assert logit_difference(model, fp32.model, fp32.cfg) < FP32_TOLERANCE
    assert deploy(fp32.artifact, "onnx").backend == "onnx"  # an ONNX file on the runtime asked for
    calibration = tmp_path / "calibration"
    write_images(calibration, 8, size=32)
    assert deploy(path, "auto", calibration=calibration, calibration_count=8, progress=False).backend == "openvino_int8"
    xml = export_model(model.eval(), tmp_path / "model.xml", "openvino")
    assert deploy(xml).backend == "openvino"


def test_classify_refuses_a_corrupt_ir_in_one_line(tmp_path, capsys):
    image = write_images(tmp_path / "images", 1, size=32)[0]
    bad = tmp_path / "bad.xml"
    bad.write_text("<net><layers><layer id='0' type='Parameter'")
    assert main(["classify", "--model", str(bad), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.xml" in err and "OpenVINO cannot read it" in err


def test_missing_openvino_names_the_extra(monkeypatch):
    openvino_core.cache_clear()
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependency, match=r"squeezelab\[openvino\]"):
        openvino_core()
    openvino_core.cache_clear()
