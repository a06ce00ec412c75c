"""How the small tensors of a ``.sqz`` file are stored: biases, batch-norm tensors and layers without weight sharing.

A storage policy (:data:`FLOAT_STORAGE`, the ``tensor_dtype`` of :func:`.sqz.save_compressed`) picks each
floating-point tensor's storage: raw float32 or float16, or codes after a small per-tensor header: 8-bit
logarithmic ones (``log8``) for batch-norm scales and variances, 8- or 10-bit linear ones (``uint8``,
``linear10``) for the rest. An all-zero floating-point tensor is stored as its shape only (``zeros``);
integer tensors as int64. Every storage is little-endian.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
ZEROS = "zeros"  # storage of an all-zero floating-point tensor: no bytes
# How floating-point tensors other than the coded weights may be stored (``uint8``: linear 8-bit codes).
FLOAT_STORAGE = ("float32", "float16", "uint8", "compact")
LINEAR_RANGE = struct.Struct("<ff")  # minimum, step of a tensor of linear codes
LINEAR_BITS = {"uint8": 8, "linear10": 10}  # per-tensor storages of linear codes, bit-packed
LOG8 = "log8"
LOG_RANGE = struct.Struct("<ffB")  # natural log of the smallest magnitude, log step, sign mode
LOG_SIGN_MODES = ("positive", "negative", "mixed")  # mixed: the top bit of each code is the sign
STORAGES = (*TENSOR_DTYPES, ZEROS, LOG8, *LINEAR_BITS)  # what a file may name as a tensor's storage


class TensorCodingError(ValueError):
    """Stored tensor bytes that do not decode (a damaged or crafted file)."""


def tensor_storage(tensor: torch.Tensor, tensor_dtype: str, is_scale: bool) -> str:
    """How one tensor is stored under the ``tensor_dtype`` policy (one of :data:`FLOAT_STORAGE`)."""
    if not tensor.is_floating_point():
        return "int64"
    if not tensor.any():
        return ZEROS
    if tensor_dtype in ("uint8", "compact"):
        return LOG8 if is_scale else "linear10" if tensor_dtype == "compact" else "uint8"
    return tensor_dtype


def tensor_bytes(tensor: torch.Tensor, storage: str) -> bytes:
    if storage == ZEROS:
        return b""
    if storage in LINEAR_BITS:
        return linear_codes(tensor.detach().cpu().double().flatten(), LINEAR_BITS[storage])
    if storage == LOG8:
        return log_codes(tensor.detach().cpu().double().flatten())
    array = tensor.detach().cpu().to(TENSOR_DTYPES[storage]).contiguous().numpy()
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def tensor_nbytes(storage: str, shape: list[int]) -> int:
    if storage == ZEROS:
        return 0
    count = int(np.prod(shape, dtype=np.int64))
    if storage in LINEAR_BITS:
        return LINEAR_RANGE.size + (count * LINEAR_BITS[storage] + 7) // 8
    if storage == LOG8:
        return LOG_RANGE.size + count
    if storage not in TENSOR_DTYPES:
        raise TensorCodingError(f"unknown tensor storage {storage!r}")
    return count * torch.empty(0, dtype=TENSOR_DTYPES[storage]).element_size()


def decode_tensor(raw: bytes, storage: str, shape: list[int]) -> torch.Tensor:
    """The tensor of ``raw`` (:func:`tensor_nbytes` long, from the file's table)."""
    if storage == ZEROS:
        return torch.zeros(shape)
    # coded ranges from a damaged file can overflow: the caller checks the values for finiteness
    with np.errstate(over="ignore", invalid="ignore"):
        if storage in LINEAR_BITS:
            return from_linear_codes(raw, shape, LINEAR_BITS[storage])
        if storage == LOG8:
            return from_log_codes(raw, shape)
    array = np.frombuffer(raw, dtype=np.dtype(storage).newbyteorder("<")).astype(np.dtype(storage))
    tensor = torch.from_numpy(array.reshape(shape))
    return tensor.float() if storage == "float16" else tensor


def linear_codes(values: torch.Tensor, bits: int) -> bytes:
    """``bits``-bit codes stepping evenly from the smallest value to the largest, after that range."""
    low = float(values.min()) if values.numel() else 0.0
    step = (float(values.max()) - low) / ((1 << bits) - 1) if values.numel() else 0.0
    codes = torch.zeros_like(values) if step == 0 else torch.round((values - low) / step)
    return LINEAR_RANGE.pack(low, step) + _packed(codes.to(torch.int64).numpy(), bits)


def from_linear_codes(raw: bytes, shape: list[int], bits: int) -> torch.Tensor:
    low, step = LINEAR_RANGE.unpack(raw[: LINEAR_RANGE.size])
    codes = _unpacked(raw[LINEAR_RANGE.size :], int(np.prod(shape, dtype=np.int64)), bits)
    return torch.from_numpy((low + step * codes.astype(np.float64)).astype(np.float32).reshape(shape))


def _packed(codes: np.ndarray, bits: int) -> bytes:
    """``bits`` bits per code, most significant first (8-bit codes are one byte each)."""
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((codes[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpacked(raw: bytes, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: count * bits].astype(np.int64)
    return flat.reshape(count, bits) @ (1 << np.arange(bits - 1, -1, -1))


def log_codes(values: torch.Tensor) -> bytes:
    """Code 0 is an exact zero; codes 1.. step evenly through log |value| from the smallest magnitude to the
    largest. With both signs present the top bit is the sign and 7 bits are left for the magnitude."""
    negative, nonzero = values < 0, values != 0
    mode = 2 if negative.any() and (values > 0).any() else int(bool(negative.any()))
    levels = 127 if mode == 2 else 255
    logs = values[nonzero].abs().log()
    low = float(logs.min())
    step = (float(logs.max()) - low) / (levels - 1)
    codes = torch.zeros_like(values)
    codes[nonzero] = 1 + (torch.round((logs - low) / step) if step > 0 else torch.zeros_like(logs))
    if mode == 2:
        codes += 128 * negative
    return LOG_RANGE.pack(low, step, mode) + codes.to(torch.uint8).numpy().tobytes()


def from_log_codes(raw: bytes, shape: list[int]) -> torch.Tensor:
    low, step, mode = LOG_RANGE.unpack(raw[: LOG_RANGE.size])
    if mode >= len(LOG_SIGN_MODES):
        raise TensorCodingError(f"unknown sign mode {mode} of a log8 tensor")
    codes = np.frombuffer(raw[LOG_RANGE.size :], dtype=np.uint8).astype(np.int64)
    magnitudes = codes & 0x7F if mode == 2 else codes
    values = np.where(magnitudes > 0, np.exp(low + step * (magnitudes - 1)), 0.0)
    signs = np.where(codes >= 128, -1.0, 1.0) if mode == 2 else -1.0 if mode == 1 else 1.0
    return torch.from_numpy((signs * values).astype(np.float32).reshape(shape))
