"""vkmtp's own NumPy dequantizers against `gguf.quants.dequantize` (bit-exact) and against per-element
decoders written straight from ggml's documented byte maps."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import quants as gguf_quants

from vkmtp.gguf import DEQUANTIZE_TYPES, GGMLType, dequantize
from vkmtp.gguf import quants as vk_quants
from vkmtp.gguf.dequant_iq import IQ4_LEVELS, SIGNS_7BIT

# Byte offsets of the f16 scale fields of each block type; everything else in a block may be any byte.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "IQ2_XXS": [0], "IQ2_XS": [0], "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0],
}
SHAPES = [(1, 1), (3, 5), (7, 3), (2, 33)]   # (rows, blocks per row)


def random_blocks(t: GGMLType, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """[n_blocks, block_bytes] u8 of random valid blocks: random bytes with finite f16 scales."""
    elems, nbytes = GGML_QUANT_SIZES[t]
    if t == GGMLType.F32:
        return rng.standard_normal(n_blocks).astype("<f4").view(np.uint8).reshape(n_blocks, 4)
    if t == GGMLType.F16:
        return rng.standard_normal(n_blocks).astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    blocks = rng.integers(0, 256, (n_blocks, nbytes), dtype=np.uint8)
    if t == GGMLType.BF16:
        return blocks                                   # any bf16 pattern, NaNs included, must pass through
    for offset in F16_FIELDS[t.name]:
        scale = rng.standard_normal((n_blocks, 1)) * 10.0 ** rng.integers(-4, 2, (n_blocks, 1))
        blocks[:, offset:offset + 2] = scale.astype("<f2").view(np.uint8)
    return blocks


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    expected_bits = expected.astype(np.float32).view(np.uint32).ravel()
    bad = np.flatnonzero(actual.view(np.uint32).ravel() != expected_bits)
    assert bad.size == 0, (f"{bad.size} values differ, first at {bad[:5]}: "
                           f"{actual.ravel()[bad[:5]]} vs {expected.ravel()[bad[:5]]}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}blk")
@pytest.mark.parametrize("t", sorted(DEQUANTIZE_TYPES, key=int), ids=lambda t: t.name.lower())
def test_dequantize_matches_gguf_bit_exact(t: GGMLType, shape: tuple[int, int]) -> None:
    rows, n_blocks = shape
    elems, nbytes = GGML_QUANT_SIZES[t]
    rng = np.random.default_rng(int(t) * 100 + rows)
    raw = random_blocks(t, rows * n_blocks, rng).reshape(rows, n_blocks * nbytes)
    expected = np.asarray(gguf_quants.dequantize(raw, t), dtype=np.float32)
    assert_bits_equal(dequantize(raw, t, (rows, n_blocks * elems)), expected)


@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.IQ2_S, GGMLType.F16], ids=lambda t: t.name.lower())
def test_dequantize_chunk_boundaries(t: GGMLType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks with a ragged last one decode the same as one chunk."""
    elems, nbytes = GGML_QUANT_SIZES[t]
    raw = random_blocks(t, 3 * 37, np.random.default_rng(5)).reshape(3, -1)
    whole = dequantize(raw, t, (3, 37 * elems))
    monkeypatch.setattr(vk_quants, "_CHUNK_ELEMENTS", 4 * elems)
    assert_bits_equal(dequantize(raw, t, (3, 37 * elems)), whole)


def test_dequantize_accepts_bytes_and_3d_shapes() -> None:
    raw = random_blocks(GGMLType.Q8_0, 2 * 3 * 2, np.random.default_rng(1))
    out = dequantize(raw.tobytes(), GGMLType.Q8_0, (2, 3, 64))
    assert out.shape == (2, 3, 64)
    assert_bits_equal(out.reshape(6, 64), dequantize(raw, GGMLType.Q8_0, (6, 64)))


def test_dequantize_rejects_bad_input() -> None:
    raw = np.zeros(144, dtype=np.uint8)
    with pytest.raises(ValueError, match="needs 288 bytes, got 144"):
        dequantize(raw, GGMLType.Q4_K, (2, 256))
    with pytest.raises(ValueError, match="not a whole number of Q4_K blocks"):
        dequantize(raw, GGMLType.Q4_K, (1, 100))
    with pytest.raises(ValueError, match="cannot dequantize ggml type IQ1_S"):
        dequantize(np.zeros(50, np.uint8), GGMLType.IQ1_S, (1, 256))
    with pytest.raises(ValueError, match="unknown ggml type id 99"):
        dequantize(raw, 99, (1, 256))


def test_sign_table_matches_ggml_ksigns() -> None:
    ksigns = np.frombuffer(gguf_quants.IQ2_XXS.ksigns, dtype=np.uint8)
    bits = np.unpackbits(ksigns[:, None], axis=1, bitorder="little")
    np.testing.assert_array_equal(SIGNS_7BIT, np.where(bits == 1, -1.0, 1.0))


# ---- per-element decoders written from the documented byte maps (independent of gguf's code) ----

def _f16(block: np.ndarray, offset: int) -> float:
    return float(block[offset:offset + 2].view("<f2")[0])


def _k4_scale_min(scales: np.ndarray, b: int) -> tuple[int, int]:
    if b < 4:
        return int(scales[b] & 63), int(scales[b + 4] & 63)
    sc = (scales[b + 4] & 0xF) | ((scales[b - 4] >> 6) << 4)
    mn = (scales[b + 4] >> 4) | ((scales[b] >> 6) << 4)
    return int(sc), int(mn)


def _doc_q2_k(blk: np.ndarray, i: int) -> float:
    h, s, g, j = i // 128, (i // 32) % 4, (i // 16) % 2, i % 16
    q = (int(blk[16 + 32 * h + 16 * g + j]) >> (2 * s)) & 3
    sc = int(blk[8 * h + 2 * s + g])
    return _f16(blk, 80) * (sc & 0xF) * q - _f16(blk, 82) * (sc >> 4)


def _doc_q3_k(blk: np.ndarray, i: int) -> float:
    h, s, g, j = i // 128, (i // 32) % 4, (i // 16) % 2, i % 16
    lo = (int(blk[32 + 32 * h + 16 * g + j]) >> (2 * s)) & 3
    hb = (int(blk[16 * g + j]) >> (4 * h + s)) & 1
    t = 8 * h + 2 * s + g
    scales = blk[96:108].astype(int)
    low4 = scales[t] & 0xF if t < 8 else scales[t - 8] >> 4
    sc = (low4 | (((scales[8 + t % 4] >> (2 * (t // 4))) & 3) << 4)) - 32
    return _f16(blk, 108) * sc * (lo - (0 if hb else 4))


def _doc_q4_k(blk: np.ndarray, i: int) -> float:
    c, g, j = i // 64, (i // 32) % 2, i % 32
    byte = int(blk[16 + 32 * c + j])
    q = byte & 0xF if g == 0 else byte >> 4
    sc, mn = _k4_scale_min(blk[4:16], 2 * c + g)
    return _f16(blk, 0) * sc * q - _f16(blk, 2) * mn


def _doc_q5_k(blk: np.ndarray, i: int) -> float:
    c, g, j = i // 64, (i // 32) % 2, i % 32
    byte = int(blk[48 + 32 * c + j])
    q = (byte & 0xF if g == 0 else byte >> 4) + 16 * ((int(blk[16 + j]) >> (2 * c + g)) & 1)
    sc, mn = _k4_scale_min(blk[4:16], 2 * c + g)
    return _f16(blk, 0) * sc * q - _f16(blk, 2) * mn


def _doc_q6_k(blk: np.ndarray, i: int) -> float:
    h, s, j = i // 128, (i // 32) % 4, i % 32
    byte = int(blk[64 * h + 32 * (s & 1) + j])
    low4 = byte & 0xF if s < 2 else byte >> 4
    hi2 = (int(blk[128 + 32 * h + j]) >> (2 * s)) & 3
    sc = int(blk[192 + 8 * h + 2 * s + j // 16].view(np.int8))
    return _f16(blk, 208) * sc * ((low4 | hi2 << 4) - 32)


def _doc_iq4_xs(blk: np.ndarray, i: int) -> float:
    b, j = i // 32, i % 32
    scales_h = int(blk[2:4].view("<u2")[0])
    ls = ((int(blk[4 + b // 2]) >> (4 * (b % 2))) & 0xF) | (((scales_h >> (2 * b)) & 3) << 4)
    byte = int(blk[8 + 16 * b + j % 16])
    return _f16(blk, 0) * (ls - 32) * int(IQ4_LEVELS[byte & 0xF if j < 16 else byte >> 4])


DOC_DECODERS = {GGMLType.Q2_K: _doc_q2_k, GGMLType.Q3_K: _doc_q3_k, GGMLType.Q4_K: _doc_q4_k,
                GGMLType.Q5_K: _doc_q5_k, GGMLType.Q6_K: _doc_q6_k, GGMLType.IQ4_XS: _doc_iq4_xs}


@pytest.mark.parametrize("t", list(DOC_DECODERS), ids=lambda t: t.name.lower())
def test_dequantize_matches_documented_layout(t: GGMLType) -> None:
    blocks = random_blocks(t, 2, np.random.default_rng(int(t)))
    expected = np.array([[DOC_DECODERS[t](blk, i) for i in range(256)] for blk in blocks])
    np.testing.assert_allclose(dequantize(blocks, t, (2, 256)), expected,
                               rtol=1e-6, atol=1e-6 * np.abs(expected).max())
