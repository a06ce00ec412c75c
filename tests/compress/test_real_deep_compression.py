"""Re-compress the original Deep Compression SqueezeNet v1.0 release (skipped when ../shared is absent)."""

import pytest
import torch

from squeezelab.compress import load_compressed, quantize, save_compressed
from squeezelab.compress.pruning import plain_state_dict
from squeezelab.data import build_datasets, build_loaders, dataset_options_from_config
from squeezelab.interop.caffe import import_caffe_compressed
from squeezelab.train import evaluate
from tests.conftest import SHARED_DATA, SHARED_MODELS, require

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
PAPER_BYTES = 470_000  # the paper's 0.47 MB (6-bit weights)
SUBSET = 100


def test_recompressed_release_is_smaller_than_the_paper_and_as_accurate(tmp_path):
    require(RELEASE)
    require(SHARED_DATA / "imagenet-sample")
    original = import_caffe_compressed(RELEASE)
    model = import_caffe_compressed(RELEASE)
    # 7-bit codebooks everywhere but the stem (8 bits: few weights, most sensitive), biases as float16.
    quantize(model, {"stem": 8, "default": 7})
    path = tmp_path / "squeezenet.sqz"
    report = save_compressed(model, path, tensor_dtype="float16")
    assert report.file_bytes == path.stat().st_size <= PAPER_BYTES
    decoded = load_compressed(path)
    for key, value in plain_state_dict(model).items():
        expected = value if key.endswith("weight") else value.half().float()
        assert torch.equal(decoded.state_dict()[key], expected), key

    splits = build_datasets(
        "imagenet", SHARED_DATA, limit=SUBSET, progress=False, **dataset_options_from_config(original.default_cfg)
    )
    loader = build_loaders(splits, 50, workers=0).test
    before, after = evaluate(original, loader), evaluate(decoded, loader)
    assert abs(after["top1"] - before["top1"]) <= 3.0 and abs(after["top5"] - before["top5"]) <= 3.0
    agree = (torch.tensor(before["confusion"]).argmax(1) == torch.tensor(after["confusion"]).argmax(1)).float().mean()
    assert before["images"] == SUBSET and agree >= 0.0
