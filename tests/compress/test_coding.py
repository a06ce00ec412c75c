import numpy as np
import pytest

from squeezelab.compress.coding import (
    CodingError,
    ans_encode,
    bernoulli_encode,
    canonical_codes,
    decode_stream,
    decode_varints,
    encode_symbols,
    encode_varints,
    entropy_bytes,
    huffman_encode,
    huffman_lengths,
    symbol_counts,
)


def _streams():
    rng = np.random.default_rng(0)
    yield "uniform", rng.integers(0, 64, 20_000)
    yield "skewed", rng.choice(16, 30_000, p=rng.dirichlet(np.full(16, 0.2)))
    yield "geometric", np.minimum(rng.geometric(0.3, 25_000) - 1, 200)
    yield "one symbol", np.full(500, 3)
    yield "single", np.array([7])


@pytest.mark.parametrize("encode", [huffman_encode, ans_encode], ids=["huffman", "ans"])
def test_round_trip_and_size_near_entropy(encode):
    for name, symbols in _streams():
        stream = encode(symbols)
        decoded = decode_stream(stream.coder, stream.table, stream.payload, stream.count)
        np.testing.assert_array_equal(decoded, symbols, err_msg=name)
        limit = entropy_bytes(symbol_counts(symbols))
        assert stream.entropy_bytes == pytest.approx(limit)
        # Huffman is within 1 bit per symbol of the entropy, ANS within a fraction of a percent (+ 4-byte words).
        slack = len(symbols) / 8 if stream.coder == "huffman" else 0.003 * limit + 8
        assert len(stream.payload) <= limit + slack + 1, name


def test_ans_beats_huffman_on_very_skewed_data():
    symbols = np.random.default_rng(1).choice(4, 50_000, p=[0.9, 0.05, 0.03, 0.02])
    huffman, ans = huffman_encode(symbols), ans_encode(symbols)
    assert ans.nbytes < 0.8 * huffman.nbytes  # Huffman cannot spend less than 1 bit per symbol
    assert encode_symbols(symbols, "auto").coder == "ans"


def test_huffman_code_is_prefix_free_and_length_limited():
    counts = np.array([2**i for i in range(40)])  # would need 39-bit codes without a limit
    lengths = huffman_lengths(counts)
    assert lengths.max() <= 24
    assert sum(2.0 ** -lengths) <= 1.0  # Kraft inequality
    codes = canonical_codes(lengths)
    words = {format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths)}
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_bernoulli_mask_round_trip():
    bits = (np.random.default_rng(2).random(100_000) < 0.3).astype(np.int64)
    stream = bernoulli_encode(bits)
    np.testing.assert_array_equal(decode_stream(stream.coder, stream.table, stream.payload, len(bits)), bits)
    assert stream.nbytes <= stream.entropy_bytes * 1.01 + 8


def test_varints_and_damaged_tables():
    values = np.array([0, 1, 127, 128, 300, 2**40])
    decoded, offset = decode_varints(encode_varints(values), len(values))
    np.testing.assert_array_equal(decoded, values)
    stream = ans_encode(np.arange(10) % 3)
    with pytest.raises(CodingError):
        decode_stream("ans", stream.table[:1], stream.payload, 10)
    with pytest.raises(CodingError):
        decode_stream("zstd", b"", b"", 1)
