"""The storages of a ``.sqz`` file's small tensors on their own, and how the reader refuses one that does not decode."""

import pytest
import torch

from squeezelab.compress import CompressedFileError, load_compressed, prune, quantize, save_compressed
from squeezelab.compress.tensorcodecs import FLOAT_STORAGE, LOG_RANGE, decode_tensor, tensor_bytes, tensor_nbytes, tensor_storage
from squeezelab.fuzz import SqzParts

from .conftest import tiny_model


@pytest.mark.parametrize("policy", FLOAT_STORAGE)
@pytest.mark.parametrize("is_scale", [False, True])
def test_every_storage_takes_the_bytes_the_reader_reads(policy, is_scale):
    tensor = torch.linspace(0.01, 2.0, 37)
    storage = tensor_storage(tensor, policy, is_scale)
    raw = tensor_bytes(tensor, storage)
    assert len(raw) == tensor_nbytes(storage, [37])
    # within half a step of the coarsest codes: 8-bit linear (absolute), 8-bit logarithmic (relative)
    assert torch.allclose(decode_tensor(raw, storage, [37]), tensor, rtol=0.011, atol=0.004)


def test_zeros_and_integers_keep_their_storage_whatever_the_policy():
    zeros, counts = torch.zeros(2, 3), torch.tensor([3, -1])
    assert tensor_storage(zeros, "compact", is_scale=True) == "zeros" and tensor_nbytes("zeros", [2, 3]) == 0
    assert torch.equal(decode_tensor(tensor_bytes(zeros, "zeros"), "zeros", [2, 3]), zeros)
    assert tensor_storage(counts, "float16", is_scale=False) == "int64"
    assert torch.equal(decode_tensor(tensor_bytes(counts, "int64"), "int64", [2]), counts)


def test_a_log8_tensor_of_an_unknown_sign_mode_is_refused_naming_the_file(tmp_path):
    model = tiny_model(batch_norm="all")
    prune(model, 0.5)
    quantize(model, 4)
    path = tmp_path / "model.sqz"
    save_compressed(model, path, tensor_dtype="compact")
    parts = SqzParts.of(path.read_bytes())
    key = next(key for key, storage, _ in parts.metadata["tensors"] if storage == "log8")
    number = next(i for i, (label, _) in enumerate(parts.sections) if label == key)
    section = parts.sections[number][1]
    parts.sections[number] = (key, section[: LOG_RANGE.size - 1] + bytes([3]) + section[LOG_RANGE.size :])  # the sign mode
    path.write_bytes(parts.file())
    with pytest.raises(CompressedFileError) as refusal:
        load_compressed(path)
    assert str(refusal.value) == f"{path}: unknown sign mode 3 of a log8 tensor"
