"""Coding the sparsity pattern of a layer (which flattened weight positions are kept).

Two schemes, both measured, the smaller one kept:

* ``mask``: the 0/1 mask itself, ANS-coded under one stored probability (the i.i.d. limit).
* ``gap-huffman`` / ``gap-ans``: the relative gaps between kept positions, as in Deep Compression, with
  an escape symbol ``cap`` meaning "skip ``cap`` positions, no weight here" instead of the paper's
  padding zero weights; the cap is chosen per layer to minimise the coded size.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .coding import (
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

POSITION_CODERS = ("auto", "mask", "gap-huffman", "gap-ans")
GAP_CAPS = tuple((1 << b) - 1 for b in range(1, 11))


def gap_symbols(positions: np.ndarray, cap: int) -> np.ndarray:
    """Gaps (kept position minus previous kept position minus one), each preceded by its escapes."""
    gaps = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1) - 1
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


def encode_positions(mask: np.ndarray, coder: str = "auto") -> EncodedStream:
    """Code a flattened boolean mask with ``coder`` (or the smallest of all when ``"auto"``)."""
    if coder not in POSITION_CODERS:
        raise ValueError(f"position coder must be one of {POSITION_CODERS}, got {coder!r}")
    mask = np.asarray(mask, dtype=bool).ravel()
    if coder == "auto":
        return min((encode_positions(mask, c) for c in POSITION_CODERS[1:]), key=lambda s: s.nbytes)
    if coder == "mask":
        return replace(bernoulli_encode(mask), coder="mask")
    return encode_gaps(np.flatnonzero(mask), coder)


def decode_positions(coder: str, table: bytes, payload: bytes, count: int, numel: int) -> tuple[np.ndarray, np.ndarray]:
    """The flattened boolean mask of ``numel`` entries from a stream made by :func:`encode_positions`,
    and the stream's decoded symbols (to measure its entropy)."""
    if coder == "mask":
        bits = decode_stream("bernoulli-ans", table, payload, numel)
        return bits != 0, bits
    if coder not in POSITION_CODERS[2:]:
        raise ValueError(f"unknown position coder {coder!r}")
    (cap,), offset = decode_varints(table, 1)
    if cap < 1:
        raise ValueError(f"invalid gap cap {cap}")
    symbols = decode_stream(coder.split("-", 1)[1], table[offset:], payload, count)
    positions = positions_from_gaps(symbols, int(cap))
    if len(positions) and positions[-1] >= numel:
        raise ValueError("sparse positions run past the end of the layer")
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    return mask, symbols
