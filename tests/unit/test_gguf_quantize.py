"""vkmtp's NumPy quantizers: bit-exact with `gguf.quants.quantize` where the gguf package has the type, and
for the others, round trips within each format's expected error and blocks that llama.cpp decodes alike."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants as gguf_quants

from vkmtp.gguf import QUANTIZE_TYPES, GGMLType, dequantize, quantize, row_bytes

GGUF_QUANTIZABLE = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0,
                    GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]

# Relative RMS error bound of dequantize(quantize(x)) on Gaussian rows (scale-free). Measured with
# vkmtp's round-to-nearest quantizers on 16 x 1024 N(0, s^2) values (s = 0.02, 1, 30 all give the same):
# F16 0.02%, BF16 0.17%, Q8_0 0.54%, Q6_K 1.84%, Q5_0 4.3%, Q5_1 3.8%, Q5_K 3.8%, Q4_0 8.7%, Q4_1 7.8%,
# Q4_K 7.6%, IQ4_NL 7.8%, IQ4_XS 7.8%, Q3_K 15.0%, Q2_K 28.7%. Bounds leave ~15-30% headroom.
REL_RMS_BOUND = {
    GGMLType.F32: 0.0, GGMLType.F16: 0.001, GGMLType.BF16: 0.005, GGMLType.Q8_0: 0.01,
    GGMLType.Q6_K: 0.025, GGMLType.Q5_0: 0.05, GGMLType.Q5_1: 0.05, GGMLType.Q5_K: 0.05,
    GGMLType.Q4_0: 0.10, GGMLType.Q4_1: 0.10, GGMLType.Q4_K: 0.10, GGMLType.IQ4_NL: 0.10,
    GGMLType.IQ4_XS: 0.10, GGMLType.Q3_K: 0.20, GGMLType.Q2_K: 0.35,
}
ALL_TYPES = sorted(QUANTIZE_TYPES, key=int)


def _ids(t: GGMLType) -> str:
    return t.name.lower()


def gaussian_rows(n_rows: int, k: int, sigma: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n_rows, k)) * sigma).astype(np.float32)


def awkward_rows(k: int) -> np.ndarray:
    """Rows that stress rounding and scale edge cases: zeros, a constant, exact .5 ties, one sign only,
    a wide dynamic range and a lone outlier. [6, k] f32."""
    rng = np.random.default_rng(3)
    ties = np.resize(np.array([127, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 3.5], dtype=np.float32), k)
    wide = (rng.standard_normal(k) * 10.0 ** rng.uniform(-3, 2, k)).astype(np.float32)
    outlier = (rng.standard_normal(k) * 0.01).astype(np.float32)
    outlier[k // 3] = 8.0
    return np.stack([np.zeros(k), np.full(k, 0.75), ties, -np.abs(wide), wide, outlier]).astype(np.float32)


@pytest.mark.parametrize("t", GGUF_QUANTIZABLE, ids=_ids)
def test_quantize_matches_gguf_bit_exact(t: GGMLType) -> None:
    x = np.concatenate([gaussian_rows(5, 256, 0.05, int(t)), gaussian_rows(2, 256, 40.0, 1),
                        awkward_rows(256)])
    ours = quantize(x, t)
    theirs = np.ascontiguousarray(gguf_quants.quantize(x, t)).view(np.uint8).reshape(ours.shape)
    assert ours.shape == (len(x), row_bytes(t, 256)) and ours.dtype == np.uint8
    diff = np.argwhere(ours != theirs)
    assert diff.size == 0, f"{len(diff)} bytes differ, first (row, byte): {diff[:4].tolist()}"


@pytest.mark.parametrize("sigma", [0.02, 1.0])
@pytest.mark.parametrize("t", ALL_TYPES, ids=_ids)
def test_round_trip_error_within_format_bound(t: GGMLType, sigma: float) -> None:
    x = gaussian_rows(16, 1024, sigma, seed=int(t))
    y = dequantize(quantize(x, t), t, x.shape)
    rel_rms = float(np.sqrt(np.mean((y - x) ** 2) / np.mean(x ** 2)))
    assert rel_rms <= REL_RMS_BOUND[t], f"{t.name}: relative RMS error {rel_rms:.4f} > {REL_RMS_BOUND[t]}"


@pytest.mark.parametrize("t", ALL_TYPES, ids=_ids)
def test_quantized_blocks_decode_identically_in_gguf(t: GGMLType) -> None:
    """Our blocks are valid ggml blocks: gguf's port of llama.cpp's decoders reads them the same way."""
    x = np.concatenate([gaussian_rows(3, 512, 0.3, int(t)), awkward_rows(512)])
    packed = quantize(x, t)
    ours = dequantize(packed, t, x.shape)
    theirs = np.asarray(gguf_quants.dequantize(packed, t), dtype=np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("t", ALL_TYPES, ids=_ids)
def test_zero_and_constant_rows(t: GGMLType) -> None:
    x = np.stack([np.zeros(256), np.full(256, -1.25), np.full(256, 3.0)]).astype(np.float32)
    y = dequantize(quantize(x, t), t, x.shape)
    assert np.all(y[0] == 0)
    np.testing.assert_allclose(y[1:], x[1:], rtol=0.01)


def test_quantize_keeps_leading_axes() -> None:
    x = gaussian_rows(6, 64, 1.0, 0).reshape(2, 3, 64)
    packed = quantize(x, GGMLType.Q8_0)
    assert packed.shape == (2, 3, 68)
    np.testing.assert_array_equal(packed.reshape(6, 68), quantize(x.reshape(6, 64), GGMLType.Q8_0))


def test_quantize_rejects_bad_input() -> None:
    x = np.ones((2, 256), dtype=np.float32)
    with pytest.raises(ValueError, match="not a whole number of Q4_K blocks"):
        quantize(x[:, :100], GGMLType.Q4_K)
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantize(np.where(np.eye(2, 256) > 0, np.nan, x), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="cannot quantize to ggml type IQ2_XXS"):
        quantize(x, GGMLType.IQ2_XXS)
    with pytest.raises(ValueError, match="f16 range"):
        quantize(x * 1e6, GGMLType.Q4_0)
    with pytest.raises(ValueError, match="f16 range"):
        quantize(x * 1e5, GGMLType.F16)
    with pytest.raises(ValueError, match="unknown ggml type name"):
        quantize(x, "q9_z")
