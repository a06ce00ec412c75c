"""Entropy coders for symbol streams: canonical Huffman (numpy-vectorised) and ANS (``constriction``).

Every coder turns a 1-D array of small non-negative integers into ``(table, payload)`` bytes: the table
is what the decoder needs besides the payload (code lengths for Huffman, quantised frequencies for ANS,
one probability for a Bernoulli mask). :func:`entropy_bytes` gives the Shannon limit of a stream under
the same i.i.d. model, so reports can say how close each coder gets.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import constriction
import numpy as np
import numpy.typing as npt

HUFFMAN_MAX_LENGTH = 24
ANS_FREQUENCY_TOTAL = 1 << 14  # probabilities are stored as integer frequencies summing to about this
BERNOULLI_SCALE = 1 << 16  # a mask's probability of "kept" is stored as a uint16 fraction of this


class CodingError(ValueError):
    """A stream cannot be decoded (corrupt table or payload)."""


@dataclass(frozen=True)
class EncodedStream:
    """One coded stream: its coder, the decoder's side information, the payload, and its Shannon limit."""

    coder: str
    table: bytes
    payload: bytes
    count: int
    entropy_bytes: float

    @property
    def nbytes(self) -> int:
        return len(self.table) + len(self.payload)


def symbol_counts(symbols: np.ndarray, alphabet: int | None = None) -> np.ndarray:
    symbols = np.asarray(symbols)
    size = alphabet if alphabet is not None else (int(symbols.max()) + 1 if symbols.size else 0)
    return np.bincount(symbols.astype(np.int64, copy=False), minlength=size)


def entropy_bytes(counts: np.ndarray) -> float:
    """Shannon limit, in bytes, of a stream with these symbol counts under its own i.i.d. distribution."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    return float(-(counts * np.log2(counts / total)).sum() / 8)


# --- variable-length integers (LEB128), for the small tables ---------------------------------------


def encode_varints(values: npt.ArrayLike) -> bytes:
    out = bytearray()
    for value in np.asarray(values, dtype=np.int64).tolist():
        if value < 0:
            raise ValueError(f"varint needs a non-negative value, got {value}")
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out)


VARINT_MAX_BYTES = 9  # 63 bits: every value fits an int64


def decode_varints(data: bytes, count: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """Read ``count`` varints from ``data`` at ``offset``; returns the values and the offset after them.

    A number longer than :data:`VARINT_MAX_BYTES` is refused: it could not be an int64, and a damaged table
    must not make Python build an arbitrarily long integer."""
    values = np.empty(count, dtype=np.int64)
    for i in range(count):
        value = shift = 0
        while True:
            if offset >= len(data):
                raise CodingError("table ends inside a number")
            if shift >= 7 * VARINT_MAX_BYTES:
                raise CodingError(f"a number in the table is longer than {VARINT_MAX_BYTES} bytes")
            byte = data[offset]
            offset += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values[i] = value
    return values, offset


# --- canonical Huffman ------------------------------------------------------------------------------


def huffman_lengths(counts: np.ndarray, max_length: int = HUFFMAN_MAX_LENGTH) -> np.ndarray:
    """Optimal code lengths (0 for absent symbols); flattened until no code exceeds ``max_length`` bits."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    present = np.flatnonzero(counts)
    if len(present) == 1:
        lengths[present] = 1
        return lengths
    weights = counts.astype(np.float64)
    while len(present) > 1:
        lengths[present] = _huffman_tree_depths(weights[present])
        if lengths.max() <= max_length:
            break
        # Halving rare counts (keeping them >= 1) flattens the tree; converges in a few rounds.
        weights = np.maximum(np.floor(weights / 2), 1) * (counts > 0)
    return lengths


def _huffman_tree_depths(weights: np.ndarray) -> np.ndarray:
    heap: list[tuple[float, int, tuple[int, ...]]] = [(float(w), i, (i,)) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    depths = np.zeros(len(weights), dtype=np.int64)
    tie = len(weights)
    while len(heap) > 1:
        w1, _, leaves1 = heapq.heappop(heap)
        w2, _, leaves2 = heapq.heappop(heap)
        merged = leaves1 + leaves2
        depths[list(merged)] += 1
        heapq.heappush(heap, (w1 + w2, tie, merged))
        tie += 1
    return depths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman code values: symbols sorted by (length, symbol) get consecutive codes."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    code = 0
    previous = int(lengths[order[0]]) if len(order) else 0
    for symbol in order.tolist():
        length = int(lengths[symbol])
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int | None = None) -> EncodedStream:
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = symbol_counts(symbols, alphabet)
    lengths = huffman_lengths(counts)
    table = encode_varints([len(lengths)]) + bytes(lengths.astype(np.uint8))
    return EncodedStream("huffman", table, _pack_codes(symbols, lengths), len(symbols), entropy_bytes(counts))


def _pack_codes(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    if symbols.size == 0:
        return b""
    codes = canonical_codes(lengths)
    sym_lengths = lengths[symbols]
    width = int(sym_lengths.max())
    # Each code left-aligned in a `width`-bit row; keep the first `length` bits of each row.
    shifts = width - 1 - np.arange(width)
    aligned = codes[symbols] << (width - sym_lengths)
    bits = ((aligned[:, None] >> shifts) & 1).astype(np.uint8)
    keep = np.arange(width) < sym_lengths[:, None]
    return np.packbits(bits[keep]).tobytes()


def _alphabet(table: bytes, max_alphabet: int | None) -> tuple[int, int]:
    """The alphabet size at the start of a table, checked against the table's length (one or more bytes
    per symbol follow) and against ``max_alphabet`` (what the caller can use, e.g. a codebook's size), so
    a damaged table cannot ask for an absurd amount of work."""
    (alphabet,), offset = decode_varints(table, 1)
    if alphabet > len(table) - offset:
        raise CodingError(f"table claims {alphabet} symbols in {len(table)} bytes")
    if max_alphabet is not None and alphabet > max(max_alphabet, 1):
        raise CodingError(f"table claims {alphabet} symbols, at most {max_alphabet} are possible")
    return int(alphabet), offset


def huffman_decode(table: bytes, payload: bytes, count: int, max_alphabet: int | None = None) -> np.ndarray:
    alphabet, offset = _alphabet(table, max_alphabet)
    lengths = np.frombuffer(table, dtype=np.uint8, count=alphabet, offset=offset).astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    _check_code_lengths(lengths)
    width = int(lengths.max())
    # Every code takes 1 to `width` bits: a payload outside those bounds is damaged, and one longer than
    # the codes need would only cost decoding work (the decoder looks at every bit).
    if not count <= 8 * len(payload) <= count * width + 7:
        raise CodingError(f"Huffman payload of {len(payload)} bytes cannot hold {count} codes of 1 to {width} bits")
    symbol_of, length_of = _decode_table(lengths, width)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    nbits = len(bits)
    # The `width`-bit window starting at every bit position, then its decoded symbol and code length.
    padded = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    windows = np.zeros(nbits, dtype=np.int64)
    for j in range(width):
        windows = (windows << 1) | padded[j : j + nbits]
    starts = _code_starts(np.minimum(np.arange(nbits) + length_of[windows], nbits), count)
    if starts[-1] >= nbits or starts[-1] + length_of[windows[starts[-1]]] > nbits:
        raise CodingError("Huffman payload is shorter than its symbol count")
    return symbol_of[windows[starts]].astype(np.int64)


def _check_code_lengths(lengths: np.ndarray) -> None:
    """Code lengths a Huffman code can have: some present, none over the limit, and prefix-free (Kraft:
    the codes' shares of the ``2**HUFFMAN_MAX_LENGTH`` windows add up to at most all of them)."""
    if not lengths.any() or lengths.max() > HUFFMAN_MAX_LENGTH:
        raise CodingError("invalid Huffman code lengths")
    present = lengths[lengths > 0]
    if int((1 << (HUFFMAN_MAX_LENGTH - present)).sum()) > 1 << HUFFMAN_MAX_LENGTH:
        raise CodingError("Huffman code lengths do not form a prefix code")


def _decode_table(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables indexed by a `width`-bit window: the symbol whose code prefixes it, and its length.
    (int32 and uint8: at the 24-bit limit they have 16.7 million entries, 84 MB rather than 268.)"""
    codes = canonical_codes(lengths)
    symbol_of = np.zeros(1 << width, dtype=np.int32)
    length_of = np.full(1 << width, width, dtype=np.uint8)  # unused windows: advance, decode garbage
    for symbol in np.flatnonzero(lengths).tolist():
        span = width - int(lengths[symbol])
        first = int(codes[symbol]) << span
        symbol_of[first : first + (1 << span)] = symbol
        length_of[first : first + (1 << span)] = lengths[symbol]
    return symbol_of, length_of


def _code_starts(next_start: np.ndarray, count: int) -> np.ndarray:
    """Bit positions of the first ``count`` codes: the orbit of 0 under ``next_start``, by pointer doubling."""
    jump = np.append(next_start, len(next_start))  # a sentinel that maps to itself
    starts = np.zeros(1, dtype=np.int64)
    while len(starts) < count:
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    return starts[:count]


# --- ANS (constriction's stack coder) ---------------------------------------------------------------


def quantized_frequencies(counts: np.ndarray, total: int = ANS_FREQUENCY_TOTAL) -> np.ndarray:
    """Counts scaled to about ``total``, every present symbol keeping a frequency of at least 1."""
    counts = np.asarray(counts, dtype=np.float64)
    scaled = np.round(counts * total / max(counts.sum(), 1.0)).astype(np.int64)
    return np.where(counts > 0, np.maximum(scaled, 1), 0)


def _categorical(frequencies: np.ndarray):
    # constriction needs at least two outcomes; a padding outcome of frequency 0 leaves the rest unchanged.
    probabilities = np.zeros(max(len(frequencies), 2))
    probabilities[: len(frequencies)] = frequencies
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _coder_words(payload: bytes) -> np.ndarray:
    if len(payload) % 4:
        raise CodingError("ANS payload length is not a multiple of 4 bytes")
    return np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def ans_encode(symbols: np.ndarray, alphabet: int | None = None) -> EncodedStream:
    symbols = np.asarray(symbols, dtype=np.int32)
    counts = symbol_counts(symbols, alphabet)
    frequencies = quantized_frequencies(counts)
    table = encode_varints(np.concatenate([[len(frequencies)], frequencies]))
    coder = constriction.stream.stack.AnsCoder()
    if symbols.size:
        coder.encode_reverse(symbols, _categorical(frequencies))
    payload = coder.get_compressed().astype("<u4").tobytes()
    return EncodedStream("ans", table, payload, len(symbols), entropy_bytes(counts))


def ans_decode(table: bytes, payload: bytes, count: int, max_alphabet: int | None = None) -> np.ndarray:
    alphabet, offset = _alphabet(table, max_alphabet)
    frequencies, _ = decode_varints(table, alphabet, offset)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    _check_frequencies(frequencies)
    coder = constriction.stream.stack.AnsCoder(_coder_words(payload))
    return coder.decode(_categorical(frequencies), count).astype(np.int64)


def _check_frequencies(frequencies: np.ndarray) -> None:
    """Frequencies :func:`quantized_frequencies` can give: rounding and the minimum of 1 per present symbol add
    at most one per symbol to the total (larger ones could overflow the sum or underflow a probability)."""
    if not frequencies.any():
        raise CodingError("ANS frequency table is empty")
    # the largest first: an int64 sum of larger ones could wrap around
    if int(frequencies.max()) > ANS_FREQUENCY_TOTAL or int(frequencies.sum()) > ANS_FREQUENCY_TOTAL + len(frequencies):
        raise CodingError(f"ANS frequencies exceed their total of {ANS_FREQUENCY_TOTAL}")


def bernoulli_encode(bits: npt.ArrayLike) -> EncodedStream:
    """A 0/1 stream with one stored probability (the i.i.d. limit for a sparsity mask)."""
    bits = np.asarray(bits, dtype=np.int32)
    ones = int(bits.sum())
    # Keep the stored probability strictly inside (0, 1) so both outcomes stay codable.
    scaled = min(max(round(ones * BERNOULLI_SCALE / max(len(bits), 1)), 1), BERNOULLI_SCALE - 1)
    coder = constriction.stream.stack.AnsCoder()
    if bits.size:
        coder.encode_reverse(bits, _bernoulli(scaled))
    payload = coder.get_compressed().astype("<u4").tobytes()
    counts = np.array([len(bits) - ones, ones])
    return EncodedStream("bernoulli-ans", encode_varints([scaled]), payload, len(bits), entropy_bytes(counts))


def _bernoulli(scaled: int):
    return constriction.stream.model.Bernoulli(scaled / BERNOULLI_SCALE, perfect=False)


def bernoulli_decode(table: bytes, payload: bytes, count: int) -> np.ndarray:
    (scaled,), _ = decode_varints(table, 1)
    if not 0 < scaled < BERNOULLI_SCALE:
        raise CodingError(f"invalid Bernoulli probability {scaled}/{BERNOULLI_SCALE}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    coder = constriction.stream.stack.AnsCoder(_coder_words(payload))
    return coder.decode(_bernoulli(int(scaled)), count).astype(np.int64)


SYMBOL_ENCODERS = {"huffman": huffman_encode, "ans": ans_encode}
SYMBOL_DECODERS = {"huffman": huffman_decode, "ans": ans_decode}
DECODERS = ("huffman", "ans", "bernoulli-ans")


def encode_symbols(symbols: np.ndarray, coder: str = "auto", alphabet: int | None = None) -> EncodedStream:
    """Encode with ``coder`` ("huffman", "ans", or "auto" = whichever is smaller)."""
    if coder == "auto":
        return min((encode(symbols, alphabet) for encode in SYMBOL_ENCODERS.values()), key=lambda s: s.nbytes)
    if coder not in SYMBOL_ENCODERS:
        raise ValueError(f"symbol coder must be one of {['auto', *SYMBOL_ENCODERS]}, got {coder!r}")
    return SYMBOL_ENCODERS[coder](symbols, alphabet)


def decode_stream(coder: str, table: bytes, payload: bytes, count: int, max_alphabet: int | None = None) -> np.ndarray:
    """``count`` symbols of a stream made by ``coder``; ``max_alphabet`` bounds the symbols its table may declare
    (the caller's use for them: a codebook's size, a gap cap), so the table cannot ask for more work."""
    if coder not in DECODERS:
        raise CodingError(f"unknown coder {coder[:40]!r}")
    if count < 0:
        raise CodingError(f"negative symbol count {count}")
    try:
        if coder in SYMBOL_DECODERS:
            return SYMBOL_DECODERS[coder](table, payload, count, max_alphabet)
        return bernoulli_decode(table, payload, count)
    except (ValueError, IndexError, RuntimeError, OverflowError) as exc:
        if isinstance(exc, CodingError):
            raise
        raise CodingError(f"{coder} stream does not decode ({exc})") from None
