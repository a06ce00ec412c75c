"""Coding the sparsity pattern of a layer (which flattened weight positions are kept).

The schemes are all measured and the smallest kept:

* ``mask``: the 0/1 mask itself, ANS-coded under one stored probability (the i.i.d. limit).
* ``gap-huffman`` / ``gap-ans``: the relative gaps between kept positions, as in Deep Compression, with
  an escape symbol ``cap`` meaning "skip ``cap`` positions, no weight here" instead of the paper's
  padding zero weights; the cap is chosen per layer to minimise the coded size.
* ``kernel-mask``: two levels, which kernels keep any weight,
  then which taps of those kernels are kept, each ANS-coded under its own probability. After
  kernel-level pruning (whole kernels kept or removed) the second level is empty, so the positions cost
  one bit-entropy per kernel instead of one per weight. (For 1x1 and linear layers, kernels of one
  tap, it is the ``mask`` scheme with a few more header bytes; ``auto`` skips it there.)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .coding import (
    CodingError,
    EncodedStream,
    bernoulli_encode,
    decode_stream,
    decode_varints,
    encode_symbols,
    encode_varints,
    entropy_bytes,
    huffman_lengths,
    symbol_counts,
)

POSITION_CODERS = ("auto", "mask", "gap-huffman", "gap-ans", "kernel-mask")
GAP_CAPS = tuple((1 << b) - 1 for b in range(1, 11))


def gap_symbols(positions: np.ndarray, cap: int) -> np.ndarray:
    """Gaps (kept position minus previous kept position minus one), each preceded by its escapes."""
    # annotated: numpy's stubs pick the timedelta64 overload for ``diff(...) - 1`` and then reject ``% cap``
    gaps: np.ndarray = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1) - 1
    escapes = gaps // cap
    symbols = np.full(len(gaps) + int(escapes.sum()), cap, dtype=np.int64)
    symbols[np.cumsum(escapes + 1) - 1] = gaps % cap
    return symbols


def positions_from_gaps(symbols: np.ndarray, cap: int) -> np.ndarray:
    advance = np.where(symbols == cap, cap, symbols + 1)
    return (np.cumsum(advance) - 1)[symbols != cap]


def _estimated_gap_bytes(positions: np.ndarray, cap: int, coder: str) -> float:
    counts = symbol_counts(gap_symbols(positions, cap), cap + 1)
    if coder == "gap-huffman":
        return float((counts * huffman_lengths(counts)).sum() / 8 + len(counts))
    return entropy_bytes(counts) + 2 * len(counts)


def encode_gaps(positions: np.ndarray, coder: str) -> EncodedStream:
    """Gap coding with the cap (2^b - 1) that gives the smallest estimated stream."""
    cap = min(GAP_CAPS, key=lambda c: _estimated_gap_bytes(positions, c, coder))
    stream = encode_symbols(gap_symbols(positions, cap), coder.split("-", 1)[1], alphabet=cap + 1)
    return EncodedStream(coder, encode_varints([cap]) + stream.table, stream.payload, stream.count, stream.entropy_bytes)


def kernel_taps(shape: tuple[int, ...]) -> int:
    """Weights per kernel of a layer of this shape: kh * kw for a convolution, 1 for linear and 1x1 layers."""
    return int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1


def encode_kernel_mask(mask: np.ndarray, taps: int) -> EncodedStream:
    """The ``kernel-mask`` scheme for a flattened mask whose consecutive runs of ``taps`` are kernels."""
    kernels = mask.reshape(-1, taps)
    occupied = kernels.any(1)
    outer = bernoulli_encode(occupied)
    inner_bits = kernels[occupied].ravel()
    whole = bool(inner_bits.all())  # kernel-level pruning: every kept kernel keeps all its taps
    inner = None if whole else bernoulli_encode(inner_bits)
    table = encode_varints([taps, len(outer.table), len(outer.payload), int(whole)]) + outer.table
    payload = outer.payload
    limit = outer.entropy_bytes
    if inner is not None:
        table, payload, limit = table + inner.table, payload + inner.payload, limit + inner.entropy_bytes
    return EncodedStream("kernel-mask", table, payload, int(occupied.sum()), limit)


def decode_kernel_mask(table: bytes, payload: bytes, numel: int) -> tuple[np.ndarray, float]:
    (taps, outer_table, outer_payload, whole), offset = decode_varints(table, 4)
    if taps < 1 or numel % taps or whole > 1 or offset + outer_table > len(table) or outer_payload > len(payload):
        raise CodingError(f"invalid kernel-mask header (taps {taps}, {numel} weights)")
    occupied = decode_stream("bernoulli-ans", table[offset : offset + outer_table], payload[:outer_payload], numel // taps) != 0
    inner_count = int(occupied.sum()) * taps
    if whole:
        inner = np.ones(inner_count, dtype=np.int64)
    else:
        inner = decode_stream("bernoulli-ans", table[offset + outer_table :], payload[outer_payload:], inner_count)
    mask = np.zeros((numel // taps, taps), dtype=bool)
    mask[occupied] = inner.reshape(-1, taps) != 0
    limit = entropy_bytes(symbol_counts(occupied.astype(np.int64))) + (0.0 if whole else entropy_bytes(symbol_counts(inner)))
    return mask.ravel(), limit


def encode_positions(mask: np.ndarray, coder: str = "auto", taps: int = 1) -> EncodedStream:
    """Code a flattened boolean mask with ``coder`` (or the smallest of all when ``"auto"``); ``taps`` is the
    layer's kernel size (:func:`kernel_taps`), which the ``kernel-mask`` scheme needs."""
    if coder not in POSITION_CODERS:
        raise ValueError(f"position coder must be one of {POSITION_CODERS}, got {coder!r}")
    mask = np.asarray(mask, dtype=bool).ravel()
    if coder == "auto":
        coders = [c for c in POSITION_CODERS[1:] if c != "kernel-mask" or taps > 1]
        return min((encode_positions(mask, c, taps) for c in coders), key=lambda s: s.nbytes)
    if coder == "mask":
        return replace(bernoulli_encode(mask), coder="mask")
    if coder == "kernel-mask":
        if taps < 1 or mask.size % taps:
            raise ValueError(f"position coder kernel-mask: {mask.size} weights are no whole number of {taps}-tap kernels")
        return encode_kernel_mask(mask, taps)
    return encode_gaps(np.flatnonzero(mask), coder)


def decode_positions(coder: str, table: bytes, payload: bytes, count: int, numel: int) -> tuple[np.ndarray, float]:
    """The flattened boolean mask of ``numel`` entries from a stream made by :func:`encode_positions`,
    and the stream's Shannon limit in bytes under its coder's model.

    ``count`` (the stream's symbol count, read from a file) is checked against ``numel`` before anything is
    decoded: no coder writes more symbols than the layer has weights (a gap symbol advances at least one
    position), so a larger count can only be damage, and decoding it would allocate without bound."""
    if coder not in POSITION_CODERS[1:]:
        raise CodingError(f"unknown position coder {coder[:40]!r}")
    if not 0 <= count <= numel or (coder == "mask" and count != numel):
        raise CodingError(f"{coder} stream claims {count} symbols for a layer of {numel} weights")
    if coder == "mask":
        bits = decode_stream("bernoulli-ans", table, payload, numel)
        return bits != 0, entropy_bytes(symbol_counts(bits))
    if coder == "kernel-mask":
        return decode_kernel_mask(table, payload, numel)
    (cap,), offset = decode_varints(table, 1)
    # The encoder picks a cap from GAP_CAPS; a larger one could overflow the running sum of the gaps.
    if not 1 <= cap <= GAP_CAPS[-1]:
        raise CodingError(f"invalid gap cap {cap}")
    symbols = decode_stream(coder.split("-", 1)[1], table[offset:], payload, count, max_alphabet=int(cap) + 1)
    positions = positions_from_gaps(symbols, int(cap))
    if len(positions) and positions[-1] >= numel:
        raise CodingError("sparse positions run past the end of the layer")
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    return mask, entropy_bytes(symbol_counts(symbols))
