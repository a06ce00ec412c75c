import math

import numpy as np
import pytest
import torch

from squeezelab.compress import (
    CompressedFileError,
    inspect_compressed,
    load_compressed,
    non_weight_bytes,
    prunable_layers,
    prune,
    quantize,
    save_compressed,
    shared_layers,
)
from squeezelab.compress.positions import POSITION_CODERS, decode_positions, encode_positions
from squeezelab.compress.pruning import plain_state_dict
from squeezelab.compress.sqz import layer_bytes
from squeezelab.models.profile import fp32_size_bytes

from .conftest import tiny_model

VARIANTS = {
    "plain": {},
    "batch norm": {"batch_norm": "all"},
    "complex bypass": {"bypass": "complex"},
    "simple bypass + bn": {"bypass": "simple", "batch_norm": "fires", "pct_3x3": 0.25},
}


def _compressed(**kwargs):
    model = tiny_model(**kwargs)
    prune(model, {"conv3x3": 0.3, "classifier": 0.2, "default": 0.6})
    quantize(model, {"stem": 6, "default": 4})
    return model


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_is_bit_exact(tmp_path, variant):
    model = _compressed(**VARIANTS[variant])
    path = tmp_path / "model.sqz"
    report = save_compressed(model, path)
    decoded = load_compressed(path)
    expected = plain_state_dict(model)
    assert decoded.state_dict().keys() == expected.keys()
    for key, value in decoded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert decoded.model_spec == model.model_spec and decoded.default_cfg == model.default_cfg
    assert report.file_bytes == path.stat().st_size
    assert report.dense_fp32_bytes == fp32_size_bytes(tiny_model(**VARIANTS[variant]))
    assert inspect_compressed(path) == report


def test_float16_tensors_and_coder_choices(tmp_path):
    model = _compressed(batch_norm="all")
    sizes = {}
    for index_coder in ("huffman", "ans"):
        for position_coder in POSITION_CODERS:
            path = tmp_path / f"{index_coder}-{position_coder}.sqz"
            sizes[index_coder, position_coder] = save_compressed(model, path, index_coder, position_coder).file_bytes
            decoded = load_compressed(path).state_dict()
            assert all(torch.equal(decoded[k], v) for k, v in plain_state_dict(model).items())
    assert sizes["huffman", "auto"] <= min(sizes["huffman", p] for p in POSITION_CODERS[1:])
    half = save_compressed(model, tmp_path / "half.sqz", tensor_dtype="float16")
    full = save_compressed(model, tmp_path / "full.sqz")
    assert half.file_bytes < full.file_bytes and half.other_tensor_bytes < 0.6 * full.other_tensor_bytes
    decoded = load_compressed(tmp_path / "half.sqz").state_dict()
    for key, value in plain_state_dict(model).items():
        expected = value if "weight" in key and key.rsplit(".", 1)[0] in shared_layers(model) or not value.is_floating_point() else value.half().float()
        assert torch.equal(decoded[key], expected), key


@pytest.mark.parametrize("tensor_dtype, linear_bits, max_ratio", [("uint8", 8, 0.45), ("compact", 10, 0.52)])
def test_coded_tensors_are_within_half_a_step_in_a_third_of_the_bytes(tmp_path, tensor_dtype, linear_bits, max_ratio):
    """Linear codes (absolute half-step error) for shifts and means, logarithmic ones (relative) for scales."""
    model = _compressed(batch_norm="all")
    torch.manual_seed(2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 3.0)
            module.running_var[0] = 1e-4  # a channel whose inputs were all pruned
            module.bias.data.normal_()
    full = save_compressed(model, tmp_path / "full.sqz")
    codes = save_compressed(model, tmp_path / "coded.sqz", tensor_dtype=tensor_dtype)
    coded_weights = {f"{name}.weight" for name in shared_layers(model)}
    state = {key: value for key, value in plain_state_dict(model).items() if key not in coded_weights}
    norms = [name for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    scales = {f"{name}.{kind}" for name in norms for kind in ("weight", "running_var")}
    assert scales <= state.keys()
    assert codes.other_tensor_bytes < max_ratio * full.other_tensor_bytes  # 8-10 bits per value, 8-9 bytes per tensor
    decoded = load_compressed(tmp_path / "coded.sqz").state_dict()
    for key, value in plain_state_dict(model).items():
        if key in coded_weights or not value.is_floating_point():
            assert torch.equal(decoded[key], value), key
        elif key in scales:
            half_step = math.log(value.max() / value.min()) / 254 / 2
            assert torch.all((decoded[key] / value).log().abs() <= half_step + 1e-6), key
        else:
            half_step = (value.max() - value.min()) / ((1 << linear_bits) - 1) / 2
            assert torch.all((decoded[key] - value).abs() <= half_step + 1e-6), key
            assert decoded[key].min() == pytest.approx(float(value.min()), abs=1e-6)


@pytest.mark.parametrize("values", [[-2.0, 0.0, 1e-3, 3.0, -0.5], [-4.0, -1e-2, 0.0], [5.0, 5.0]])
def test_log_codes_keep_signs_zeros_and_relative_precision(values):
    from squeezelab.compress.sqz import _from_log_codes, _log_codes

    tensor = torch.tensor(values, dtype=torch.float64)
    decoded = _from_log_codes(_log_codes(tensor), [len(values)]).double()
    assert torch.equal(decoded.sign(), tensor.sign())
    nonzero = tensor != 0
    levels = 126 if (tensor < 0).any() and (tensor > 0).any() else 254
    magnitudes = tensor[nonzero].abs()
    half_step = math.log(magnitudes.max() / magnitudes.min()) / levels / 2
    assert torch.all((decoded[nonzero] / tensor[nonzero]).log().abs() <= half_step + 1e-6)


def test_folded_batch_norm_keeps_eval_outputs_in_fewer_bytes(tmp_path):
    model = _compressed(batch_norm="all")
    torch.manual_seed(1)
    for module in model.modules():  # trained-looking parameters, so that folding has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.Conv2d)):
            module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    full = save_compressed(model, tmp_path / "full.sqz")
    folded = save_compressed(model, tmp_path / "folded.sqz", fold_batch_norm=True)
    assert folded.other_tensor_bytes < 0.55 * full.other_tensor_bytes
    # every convolution but the classifier feeds a batch norm, which absorbs its bias
    assert {row.name: row.bias_bytes for row in folded.layers if row.bias_bytes} == {"classifier.1": 4 * 10}
    assert all(row.bias_bytes for row in full.layers)
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_compressed(tmp_path / "folded.sqz")(images), model(images), rtol=1e-5, atol=1e-5)
    assert inspect_compressed(tmp_path / "folded.sqz") == folded


@pytest.mark.parametrize("tensor_dtype", ["float32", "compact"])
@pytest.mark.parametrize("fold", [False, True])
def test_non_weight_bytes_and_layer_bytes_add_up_to_the_file(tmp_path, tensor_dtype, fold):
    model = _compressed(batch_norm="all", bypass="simple").eval()
    report = save_compressed(model, tmp_path / "m.sqz", tensor_dtype=tensor_dtype, fold_batch_norm=fold)
    layers = prunable_layers(model)
    predicted = non_weight_bytes(model, tensor_dtype, fold) + sum(layer_bytes(m) for m in layers.values())
    # only the metadata's record of each layer's stream lengths is estimated
    assert abs(predicted - report.file_bytes) <= 2 * len(layers)
    with pytest.raises(ValueError, match="tensor_dtype"):
        non_weight_bytes(model, "int4")


def test_parametrized_load_fine_tunes_further(tmp_path):
    path = tmp_path / "m.sqz"
    save_compressed(_compressed(), path)
    model = load_compressed(path, parametrized=True)
    layers = shared_layers(model)
    assert layers and all(s.codebook.requires_grad for s in layers.values())
    model(torch.randn(2, 1, 8, 8)).sum().backward()


@pytest.mark.parametrize("density", [1.0, 0.9, 0.3, 0.02, 0.0])
def test_position_coders_round_trip(density):
    mask = np.random.default_rng(0).random(555 * 9) < density  # 555 kernels of 3x3
    for coder in POSITION_CODERS:
        stream = encode_positions(mask, coder, taps=9)
        decoded, limit = decode_positions(stream.coder, stream.table, stream.payload, stream.count, mask.size)
        np.testing.assert_array_equal(decoded, mask)
        assert limit == pytest.approx(stream.entropy_bytes)  # the decoder measures the limit the encoder reported


@pytest.mark.parametrize("kept_taps", [1.0, 0.5])
def test_kernel_mask_codes_whole_kernels_per_kernel_not_per_weight(kept_taps):
    rng = np.random.default_rng(1)
    kernels = rng.random(4000) < 0.15
    mask = (kernels[:, None] & (rng.random((4000, 9)) < kept_taps)).ravel()
    stream = encode_positions(mask, "kernel-mask", taps=9)
    decoded, _ = decode_positions(stream.coder, stream.table, stream.payload, stream.count, mask.size)
    np.testing.assert_array_equal(decoded, mask)
    per_weight = encode_positions(mask, "mask")
    if kept_taps == 1.0:  # kernel-level pruning: about 9x fewer position bytes
        assert stream.nbytes < per_weight.nbytes / 6 and encode_positions(mask, "auto", taps=9).coder == "kernel-mask"
    else:  # kernels half full: still cheaper than one probability for every weight
        assert stream.nbytes < per_weight.nbytes
    with pytest.raises(ValueError, match="no whole number of 7-tap kernels"):
        encode_positions(mask, "kernel-mask", taps=7)
    with pytest.raises(ValueError, match="kernel-mask header"):
        decode_positions("kernel-mask", stream.table, stream.payload, stream.count, mask.size - 1)


def test_damaged_files_give_one_line_errors(tmp_path):
    path = tmp_path / "m.sqz"
    save_compressed(_compressed(), path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "corrupted": data[:200] + bytes([data[200] ^ 0x40]) + data[201:],
        "foreign": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "empty": b"",
    }
    for name, content in cases.items():
        damaged = tmp_path / f"{name}.sqz"
        damaged.write_bytes(content)
        with pytest.raises(CompressedFileError) as error:
            load_compressed(damaged)
        message = str(error.value)
        assert str(damaged) in message and "\n" not in message, name
    torch.save({"a": torch.ones(2)}, tmp_path / "torch.pt")
    with pytest.raises(CompressedFileError, match="not a squeezelab compressed model"):
        load_compressed(tmp_path / "torch.pt")
    with pytest.raises(FileNotFoundError, match="missing.sqz"):
        load_compressed(tmp_path / "missing.sqz")


def test_saving_needs_shared_weights(tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        save_compressed(tiny_model(), tmp_path / "m.sqz")
    assert not (tmp_path / "m.sqz").exists()


def test_well_formed_file_that_does_not_fit_its_model(tmp_path):
    """A file whose checksum is right but whose spec builds a different model is refused before decoding."""
    import json
    import struct
    import zlib

    path = tmp_path / "m.sqz"
    save_compressed(_compressed(), path)
    data = path.read_bytes()
    magic, version, flags, length = struct.unpack_from("<4sHHI", data)
    metadata = json.loads(zlib.decompress(data[12 : 12 + length]))
    metadata["model_spec"]["kwargs"]["base_e"] = 32
    meta = zlib.compress(json.dumps(metadata).encode())
    body = struct.pack("<4sHHI", magic, version, flags, len(meta)) + meta + data[12 + length : -4]
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    with pytest.raises(CompressedFileError, match="in the file, .* in the model"):
        load_compressed(path)
