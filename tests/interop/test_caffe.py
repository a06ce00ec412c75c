import numpy as np
import pytest
import torch

from squeezelab.interop.caffe import (
    CODEBOOK_SIZE,
    MAX_GAP,
    PLAUSIBLE_MAGNITUDE,
    caffe_layer_names,
    check_against_prototxt,
    decode_caffe_compressed,
    import_caffe_compressed,
    read_prototxt_convolutions,
)
from squeezelab.interop.classes import imagenet_class_names
from squeezelab.interop.evaluate import labelled_images, topk_accuracy
from squeezelab.utils.errors import DamagedFileError
from tests.conftest import SHARED_DATA, SHARED_MODELS, require
from tests.interop.helpers import encode_deep_compression

RELEASE = SHARED_MODELS / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
PROTOTXT = RELEASE.with_name("SqueezeNet_deploy.prototxt")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    data, layers = encode_deep_compression(seed=1)
    path = tmp_path_factory.mktemp("caffe") / "synthetic.net"
    path.write_bytes(data)
    return path, layers


def test_decoder_recovers_known_weights(synthetic):
    path, expected = synthetic
    layers = decode_caffe_compressed(path)
    assert [layer.caffe_name for layer in layers] == caffe_layer_names()
    for layer, truth in zip(layers, expected):
        assert layer.shape == truth["shape"]
        np.testing.assert_array_equal(layer.dense_weight(), truth["weight"])
        np.testing.assert_array_equal(layer.bias, truth["bias"])
        np.testing.assert_array_equal(layer.mask(), truth["weight"] != 0)
        assert layer.nonzero == int((truth["weight"] != 0).sum())
        assert np.all(np.diff(layer.positions) > 0)


def test_import_builds_caffe_squeezenet_with_its_preprocessing(synthetic):
    path, expected = synthetic
    model = import_caffe_compressed(path)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv, truth in zip(convs, expected):
        np.testing.assert_array_equal(conv.weight.detach().numpy(), truth["weight"])
    assert model.classifier[1].padding == (1, 1)
    assert model.model_spec == {
        "name": "squeezenet1_0",
        "kwargs": {"num_classes": 1000, "in_chans": 3, "final_conv_padding": 1},
    }
    cfg = model.default_cfg
    assert (cfg.channel_order, cfg.pixel_scale, cfg.mean, cfg.std) == ("BGR", 255.0, (104.0, 117.0, 123.0), (1.0, 1.0, 1.0))
    assert (cfg.input_size, cfg.resize_size, cfg.antialias) == ((3, 227, 227), 256, False)
    assert cfg.class_names == imagenet_class_names()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "truncated in layer"),
        (lambda data: data + b"\0" * 7, "7 unexpected bytes after the last layer"),
        (lambda data: b"\xff" * 200, "not a Deep Compression SqueezeNet"),
        (lambda data: b"", "not a Deep Compression SqueezeNet file (only 0 bytes)"),
    ],
    ids=["truncated", "trailing-bytes", "foreign", "empty"],
)
def test_damaged_files_fail_with_one_line_naming_the_file(synthetic, tmp_path, damage, message):
    bad = tmp_path / "bad.net"
    bad.write_bytes(damage(synthetic[0].read_bytes()))
    with pytest.raises(ValueError) as info:
        decode_caffe_compressed(bad)
    assert str(bad) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_position_stream_is_detected(synthetic, tmp_path):
    data = bytearray(synthetic[0].read_bytes())
    count = int(np.frombuffer(bytes(data[:4]), "<u4")[0])
    gaps_start = 26 * 4 + 4 * 256 + 4 * 96 + count
    data[gaps_start : gaps_start + (count + 1) // 2] = b"\xff" * ((count + 1) // 2)  # every gap 16: runs past the end
    bad = tmp_path / "gaps.net"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="positions run past"):
        decode_caffe_compressed(bad)


def _layer_offsets(layers) -> list[dict[str, int]]:
    """Byte offsets of each layer's codebook, biases, codes and gaps in a file holding ``layers``."""
    offsets, offset = [], 4 * len(layers)
    for layer in layers:
        count = len(layer.indices)
        sizes = {"codebook": 4 * CODEBOOK_SIZE, "bias": 4 * layer.shape[0], "indices": count, "gaps": (count + 1) // 2}
        start = {}
        for section, size in sizes.items():
            start[section] = offset
            offset += size
        offsets.append(start)
    return offsets


def _float_at(data: bytearray, offset: int, value: float) -> None:
    data[offset : offset + 4] = np.float32(value).tobytes()


def _misplaced_filler(data: bytearray, layers, offsets) -> None:
    """Give a real weight that follows a short gap the zero code (a filler where no gap needs bridging)."""
    gaps = np.diff(np.concatenate([[-1], layers[0].positions])) - 1
    entry = int(np.flatnonzero(gaps < MAX_GAP)[0])
    data[offsets[0]["indices"] + entry] = 0


def _odd_stream_padding(data: bytearray, layers, offsets) -> None:
    """Set the unused high nibble at the end of a layer's odd-length position stream."""
    layer = next(i for i, layer in enumerate(layers) if len(layer.indices) % 2)
    data[offsets[layer]["gaps"] + (len(layers[layer].indices) + 1) // 2 - 1] |= 0x30


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data, layers, offsets: _float_at(data, offsets[0]["codebook"] + 4 * 7, 3e38), "codebook value of magnitude 3e+38"),
        (lambda data, layers, offsets: _float_at(data, offsets[3]["bias"], -1e20), "bias value of magnitude 1e+20"),
        (lambda data, layers, offsets: _float_at(data, offsets[2]["codebook"] + 4 * 9, float("nan")), "non-finite codebook"),
        (lambda data, layers, offsets: _float_at(data, offsets[1]["codebook"], 0.25), "the filler code, is 0.25, not 0"),
        (_misplaced_filler, "codes a zero weight but bridges no gap"),
        (_odd_stream_padding, "unused last nibble of its position stream is 3"),
    ],
    ids=["huge-codebook", "huge-bias", "nan-codebook", "nonzero-filler-code", "misplaced-filler", "stream-padding"],
)
def test_implausible_values_and_inconsistent_streams_are_refused(synthetic, tmp_path, damage, message):
    data = bytearray(synthetic[0].read_bytes())
    layers = decode_caffe_compressed(synthetic[0])
    damage(data, layers, _layer_offsets(layers))
    bad = tmp_path / "bad.net"
    bad.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError) as info:
        decode_caffe_compressed(bad)
    assert str(bad) in str(info.value) and message in str(info.value) and "\n" not in str(info.value)


def test_exponent_flips_in_the_release_codebooks_are_refused(tmp_path):
    """Flipping a float32's top exponent bit makes weights of 1e36-1e38, which used to load."""
    original = require(RELEASE).read_bytes()
    offsets = _layer_offsets(decode_caffe_compressed(RELEASE))
    rng = np.random.default_rng(0)
    bad = tmp_path / "flipped.net"
    for layer in rng.choice(len(offsets), 10, replace=False).tolist():
        data = bytearray(original)
        entry = int(rng.integers(1, CODEBOOK_SIZE))  # entry 0 is the filler code, refused for any change
        data[offsets[layer]["codebook"] + 4 * entry + 3] ^= 0x40  # little-endian: byte 3 holds the exponent's top bit
        bad.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="codebook value of magnitude"):
            decode_caffe_compressed(bad)


def test_random_byte_flips_of_the_release_end_in_one_line_or_plausible_weights(tmp_path):
    """No checksum: a flip either gets the one-line error or decodes to finite weights of plausible size."""
    original = require(RELEASE).read_bytes()
    rng = np.random.default_rng(1)
    bad = tmp_path / "flipped.net"
    for _ in range(60):
        data = bytearray(original)
        data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(data))
        try:
            layers = decode_caffe_compressed(bad)
        except DamagedFileError as exc:
            assert str(bad) in str(exc) and "\n" not in str(exc)
            continue
        for layer in layers:
            assert np.abs(layer.dense_weight()).max() <= PLAUSIBLE_MAGNITUDE
            assert np.abs(layer.bias).max() <= PLAUSIBLE_MAGNITUDE
            assert layer.positions[-1] < layer.numel


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.net"):
        decode_caffe_compressed(tmp_path / "nothing.net")


def test_release_matches_its_prototxt():
    layers = decode_caffe_compressed(require(RELEASE))
    check_against_prototxt(layers, require(PROTOTXT))
    convolutions = read_prototxt_convolutions(PROTOTXT)
    assert (convolutions[-1].name, convolutions[-1].pad, convolutions[0].kernel_size) == ("conv_final", 1, 7)
    density = sum(layer.nonzero for layer in layers) / sum(layer.numel for layer in layers)
    assert 0.30 < density < 0.36  # the paper's 33% of weights kept after pruning


def test_release_gives_published_accuracy_on_imagenet_sample():
    torch.set_num_threads(2)
    names = imagenet_class_names(require(SHARED_DATA / "imagenet_classes.tsv"))
    model = import_caffe_compressed(require(RELEASE), class_names=names)
    images = labelled_images(require(SHARED_DATA / "imagenet-sample"))
    scores = topk_accuracy(model, images, batch_size=50, progress=False)
    assert scores["images"] == 500
    assert round(scores["top1"], 1) == 60.8
    assert round(scores["top5"], 1) == 82.4


def test_prototxt_mismatch_is_reported(synthetic, tmp_path):
    text = require(PROTOTXT).read_text().replace("num_output: 1000", "num_output: 10")
    bad = tmp_path / "other.prototxt"
    bad.write_text(text)
    with pytest.raises(ValueError, match="conv_final"):
        check_against_prototxt(decode_caffe_compressed(synthetic[0]), bad)

