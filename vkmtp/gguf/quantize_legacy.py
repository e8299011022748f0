"""Quantizers for the float types and the 32-element legacy quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).

Each function maps `[n_blocks, block_elems] f32` (finite) to `[n_blocks, block_bytes] u8`. They follow the
round-to-nearest reference quantizers of ggml (`quantize_row_*_ref`) step by step in f32, so the bytes equal
llama.cpp's reference output and `gguf.quants.quantize`:
    symmetric (Q4_0, Q5_0): d = v / -2^(bits-1) where v is the value of largest magnitude, so v maps to the
        lowest level exactly; q = trunc(x / d + 2^(bits-1) + 0.5), clamped to the top level.
    with min (Q4_1, Q5_1):  d = (max - min) / (2^bits - 1); q = trunc((x - min) / d + 0.5), clamped.
    Q8_0: d = max|x| / 127; q = roundf(x / d).
Divisions are done as multiplication by the f32 reciprocal, as in ggml.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf.bitpack import (f16_bytes, pack_bits_little, pack_nibbles, round_half_away, safe_reciprocal,
                                signed_absmax)


def quantize_f32(blocks: np.ndarray) -> np.ndarray:
    """[n, 1] f32 -> [n, 4] u8."""
    return np.ascontiguousarray(blocks, dtype="<f4").view(np.uint8)


def quantize_f16(blocks: np.ndarray) -> np.ndarray:
    """[n, 1] f32 -> [n, 2] u8 (IEEE round to nearest even); ValueError beyond the f16 range."""
    return f16_bytes(blocks)


def quantize_bf16(blocks: np.ndarray) -> np.ndarray:
    """[n, 1] f32 -> [n, 2] u8: the top 16 bits of the f32, rounded to nearest even (finite inputs)."""
    bits = np.ascontiguousarray(blocks, dtype="<f4").view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
    return rounded.astype("<u2").view(np.uint8)


def _pack_nibble_halves(q: np.ndarray) -> np.ndarray:
    """[n, 32] 0..15 -> [n, 16] u8: element j in the low nibble of byte j, element j+16 in the high one."""
    return pack_nibbles(q[:, :16], q[:, 16:])


def _quantize_symmetric(blocks: np.ndarray, half_range: int) -> tuple[np.ndarray, np.ndarray]:
    """(d [n, 1] f32, q [n, 32] u8 in 0..2*half_range-1) for Q4_0 (half_range 8) and Q5_0 (16)."""
    d = (signed_absmax(blocks) / np.float32(-half_range)).astype(np.float32)
    inv_d = safe_reciprocal(d)
    q = np.trunc(blocks * inv_d + np.float32(half_range + 0.5))
    return d, np.minimum(q, 2 * half_range - 1).astype(np.uint8)


def _quantize_with_min(blocks: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d, min, q) for Q4_1 (16 levels) and Q5_1 (32 levels); d and min [n, 1] f32, q [n, 32] u8."""
    lo = blocks.min(axis=1, keepdims=True)
    hi = blocks.max(axis=1, keepdims=True)
    d = ((hi - lo) / np.float32(n_levels - 1)).astype(np.float32)
    inv_d = safe_reciprocal(d)
    q = np.trunc((blocks - lo) * inv_d + np.float32(0.5))
    return d, lo, np.minimum(q, n_levels - 1).astype(np.uint8)


def quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 18] u8: d f16 | qs[16]."""
    d, q = _quantize_symmetric(blocks, 8)
    return np.concatenate([f16_bytes(d), _pack_nibble_halves(q)], axis=1)


def quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 20] u8: d f16 | m f16 | qs[16]."""
    d, lo, q = _quantize_with_min(blocks, 16)
    return np.concatenate([f16_bytes(d), f16_bytes(lo), _pack_nibble_halves(q)], axis=1)


def quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 22] u8: d f16 | qh u32 (bit 4 of each q) | qs[16] (low nibbles)."""
    d, q = _quantize_symmetric(blocks, 16)
    qh = pack_bits_little(q >> np.uint8(4))
    return np.concatenate([f16_bytes(d), qh, _pack_nibble_halves(q & np.uint8(0x0F))], axis=1)


def quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 24] u8: d f16 | m f16 | qh u32 | qs[16]."""
    d, lo, q = _quantize_with_min(blocks, 32)
    qh = pack_bits_little(q >> np.uint8(4))
    return np.concatenate([f16_bytes(d), f16_bytes(lo), qh, _pack_nibble_halves(q & np.uint8(0x0F))], axis=1)


def quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 34] u8: d f16 | qs[32] i8."""
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    q = round_half_away(blocks * safe_reciprocal(d)).astype(np.int8)
    return np.concatenate([f16_bytes(d), q.view(np.uint8)], axis=1)
