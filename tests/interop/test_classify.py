import shutil
from dataclasses import replace

import pytest
import torch

from squeezelab.cli.main import main
from squeezelab.interop.classify import classify_files, expand_inputs
from squeezelab.interop.deploy import DESCRIPTIONS, deploy, fastest_backend, sidecar_paths
from squeezelab.interop.onnx_export import onnx_metadata
from squeezelab.models import create_model
from squeezelab.models.files import save_model
from tests.conftest import SHARED_DATA, SHARED_MODELS, require
from tests.interop.helpers import write_images

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
SAMPLE = SHARED_DATA / "imagenet-sample"


@pytest.fixture
def cifar_model(tmp_path):
    torch.manual_seed(0)
    model = create_model("squeezenet1_1_cifar", num_classes=3)
    model.default_cfg = replace(model.default_cfg, class_names=("ant", "bee", "cat"))
    path = tmp_path / "model.pt"
    save_model(model, path)
    return path


def test_classify_reports_bad_files_by_name_and_fails(tmp_path, cifar_model, capsys):
    images = write_images(tmp_path / "images", 3, size=32)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    inputs = [str(tmp_path / "images"), str(tmp_path / "missing.png")]
    code = main(["classify", "--model", str(cifar_model), "--topk", "2", *inputs])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"backend: {DESCRIPTIONS[fastest_backend('fp32')]}" in out  # onnxruntime: OpenVINO's f32 is slower
    assert all(str(path) in out for path in images)
    assert "broken.jpg" in err and "missing.png" in err and "2 of 5 images failed" in err
    assert out.count("%  ") == 3 * 2 and ("ant" in out or "bee" in out or "cat" in out)


def test_backends_agree_and_exports_are_cached_and_refreshed(tmp_path, cifar_model):
    images = write_images(tmp_path / "images", 4, size=32)
    eager = deploy(cifar_model, "eager")
    onnx = deploy(cifar_model, "auto")
    assert (eager.backend, onnx.backend) == ("eager", fastest_backend("fp32"))
    first = classify_files(eager.model, images, eager.cfg)
    second = classify_files(onnx.model, images, onnx.cfg)
    for a, b in zip(first.predictions, second.predictions):
        assert [name for name, _ in a.top] == [name for name, _ in b.top]
        assert a.top[0][1] == pytest.approx(b.top[0][1], abs=1e-5)
    sidecar = sidecar_paths(cifar_model)["onnx"]
    stamp = onnx_metadata(sidecar)["squeezelab.source_sha256"]
    save_model(create_model("squeezenet1_1_cifar", num_classes=3), cifar_model)  # new weights, same path
    deploy(cifar_model, "onnx")
    assert onnx_metadata(sidecar)["squeezelab.source_sha256"] != stamp


def test_int8_backend_is_built_from_calibration_then_preferred(tmp_path, cifar_model):
    calibration = tmp_path / "calibration"
    write_images(calibration, 12, size=32)
    with pytest.raises(ValueError, match="calibration"):
        deploy(cifar_model, "int8")
    built = deploy(cifar_model, "auto", calibration=calibration, calibration_count=8, progress=False)
    assert built.backend == fastest_backend("int8") and built.artifact == sidecar_paths(cifar_model)["int8"]
    assert deploy(cifar_model, "auto").backend == fastest_backend("int8")  # cached and fresh: no calibration needed any more
    stamp = onnx_metadata(built.artifact)["squeezelab.calibration_id"]
    deploy(cifar_model, "auto", calibration=calibration, calibration_count=8, progress=False)
    assert onnx_metadata(built.artifact)["squeezelab.calibration_id"] == stamp  # same images: reused
    other = tmp_path / "other-calibration"
    write_images(other, 6, size=32)
    deploy(cifar_model, "auto", calibration=other, calibration_count=6, progress=False)
    assert onnx_metadata(built.artifact)["squeezelab.calibration_id"] != stamp  # other images: rebuilt


def test_expand_inputs_rejects_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        expand_inputs([tmp_path / "empty"])


def test_classify_real_images_with_the_imported_release(tmp_path, capsys):
    model = tmp_path / "release.pt"
    assert main(["import-caffe-compressed", str(require(RELEASE)), "--out", str(model)]) == 0
    for name in ("n01440764_tench.JPEG", "n09472597_volcano.JPEG"):
        shutil.copy(require(SAMPLE) / name, tmp_path / name)
    (tmp_path / "notes.jpg").write_text("not an image")
    inputs = [str(tmp_path / name) for name in ("n01440764_tench.JPEG", "n09472597_volcano.JPEG", "notes.jpg")]
    code = main(["classify", "--model", str(model), *inputs])
    out, err = capsys.readouterr()
    assert code == 1 and "notes.jpg" in err
    lines = out.splitlines()
    top_tench = lines[lines.index(str(tmp_path / "n01440764_tench.JPEG")) + 1]
    top_volcano = lines[lines.index(str(tmp_path / "n09472597_volcano.JPEG")) + 1]
    assert top_tench.endswith("tench") and top_volcano.endswith("volcano")


def test_classify_with_no_model_uses_the_shipped_imagenet_squeezenet(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))  # its exports go to the user cache
    photos = sorted(require(SAMPLE).glob("*.JPEG"))[:2]
    assert main(["classify", *map(str, photos)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("model: squeezenet1_0.dc_in1k (ImageNet SqueezeNet v1.0 shipped")
    assert out.count("%  ") == 2 * 5
    assert sidecar_paths(tmp_path / "model.pt")["onnx"].parent == tmp_path  # any other file's: next to it
    assert list((tmp_path / "cache" / "exports").glob("squeezenet1_0.dc_in1k.sqz*.onnx"))
