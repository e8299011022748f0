"""Quantizers for the K-quant super-blocks (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): round to nearest, vectorised.

Each function maps `[n_blocks, 256] f32` (finite) to `[n_blocks, block_bytes] u8` in llama.cpp's layout
(ggml's layouts; the packing here is the exact inverse of `dequant_k`).
These are not ggml's search-based quantizers (`make_qkx2_quants` etc.), so the bytes differ from
llama-quantize's, but every block is valid and decodes identically everywhere. The recipe:

1. Per sub-block, fit a scale (and for Q2_K/Q4_K/Q5_K a non-negative min, x ~ scale * q - min) from the
   sub-block's extremes, then refine it once by least squares over the rounded quants.
2. Quantize the sub-block scales (and mins) against one f16 super-block scale `d` (and `dmin`).
3. Round every value against its *stored* effective scale `f16(d) * sc` (and min), so rounding error is not
   compounded by scale error.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf.bitpack import (f16_bytes, nearest_int, pack_bit_planes, pack_crumbs, pack_nibbles,
                                safe_reciprocal, signed_absmax, to_f16)

QK_K = 256


def _round_clip(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(nearest_int(v), lo, hi)


def _least_squares_scale(x: np.ndarray, q: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """argmin_s sum (x - s q)^2 over the last axis; `fallback` where all q are 0. Shapes [..., L] -> [...]."""
    qf = q.astype(np.float32)
    sum_qq = (qf * qf).sum(axis=-1)
    sum_xq = (x * qf).sum(axis=-1)
    return np.where(sum_qq > 0, sum_xq * safe_reciprocal(sum_qq), fallback).astype(np.float32)


def fit_symmetric(x: np.ndarray, q_lo: int, q_hi: int) -> np.ndarray:
    """Sub-block scales for x ~ s * q, q in [q_lo, q_hi] (q_lo = -q_hi - 1), largest |x| mapped to q_lo.

    Args:
        x: [n, n_sub, sub_len] f32.
    Returns:
        s: [n, n_sub] f32 (may be negative; 0 for an all-zero sub-block).
    """
    s = signed_absmax(x)[..., 0] / np.float32(q_lo)
    q = _round_clip(x * safe_reciprocal(s)[..., None], q_lo, q_hi)
    return _least_squares_scale(x, q, s)


def fit_scale_min(x: np.ndarray, q_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-block (scale >= 0, min >= 0) for x ~ scale * q - min, q in [0, q_max].

    Args:
        x: [n, n_sub, sub_len] f32.
    Returns:
        (scale, mn): each [n, n_sub] f32.
    """
    lo = np.minimum(x.min(axis=-1), 0)
    scale = (x.max(axis=-1) - lo) / np.float32(q_max)
    q = _round_clip((x - lo[..., None]) * safe_reciprocal(scale)[..., None], 0, q_max).astype(np.float32)
    # Refit x ~ a q + b by least squares, keeping b <= 0 (ggml's min is never positive).
    mean_q = q.mean(axis=-1)
    mean_x = x.mean(axis=-1)
    var_q = (q * q).mean(axis=-1) - mean_q * mean_q
    a = ((q * x).mean(axis=-1) - mean_q * mean_x) * safe_reciprocal(var_q)
    b = mean_x - a * mean_q
    a = np.where(b > 0, _least_squares_scale(x, q, scale), a)
    b = np.minimum(b, 0)
    usable = (var_q > 1e-6) & (a > 0)
    return np.where(usable, a, scale).astype(np.float32), np.where(usable, -b, -lo).astype(np.float32)


def quantize_scales_unsigned(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative sub-block values against one f16 super scale -> (d [n, 1] f32, [n, n_sub] int 0..top)."""
    d = to_f16(values.max(axis=1, keepdims=True) / np.float32(top))
    return d, _round_clip(values * safe_reciprocal(d), 0, top)


def quantize_scales_signed(values: np.ndarray, s_lo: int, s_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed sub-block scales against one f16 super scale; the largest |value| maps to s_lo."""
    d = to_f16(signed_absmax(values, axis=1) / np.float32(s_lo))
    return d, _round_clip(values * safe_reciprocal(d), s_lo, s_hi)


def _quants_with_min(x: np.ndarray, d: np.ndarray, sc: np.ndarray, dmin: np.ndarray, mq: np.ndarray,
                     q_max: int) -> np.ndarray:
    """Final quants of x ~ (d*sc) q - (dmin*mq) using the stored scales. x [n, n_sub, L] -> [n, n_sub, L]."""
    eff_scale = (d * sc.astype(np.float32))[..., None]
    eff_min = (dmin * mq.astype(np.float32))[..., None]
    return _round_clip((x + eff_min) * safe_reciprocal(eff_scale), 0, q_max)


def _quants_symmetric(x: np.ndarray, d: np.ndarray, sc: np.ndarray, q_lo: int, q_hi: int) -> np.ndarray:
    eff_scale = (d * sc.astype(np.float32))[..., None]
    return _round_clip(x * safe_reciprocal(eff_scale), q_lo, q_hi)


def pack_scale_min_k4(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Inverse of `dequant_k.unpack_scale_min_k4`: two [n, 8] arrays of 0..63 -> [n, 12] u8."""
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    low_sc = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    low_mn = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    return np.concatenate([low_sc, low_mn, pack_nibbles(sc[:, 4:8], mn[:, 4:8])], axis=1)


def quantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 84] u8: scales[16] (scale | min << 4) | qs[64] | d f16 | dmin f16."""
    n = blocks.shape[0]
    x = blocks.reshape(n, 16, 16)
    scale, mn = fit_scale_min(x, 3)
    d, sc = quantize_scales_unsigned(scale, 15)
    dmin, mq = quantize_scales_unsigned(mn, 15)
    q = _quants_with_min(x, d, sc, dmin, mq, 3)
    qs = pack_crumbs(q.reshape(n, 2, 4, 32)).reshape(n, 64)        # element 128h + 32s + 16g + l
    return np.concatenate([pack_nibbles(sc, mq), qs, f16_bytes(d), f16_bytes(dmin)], axis=1)


def quantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 110] u8: hmask[32] | qs[64] | scales[12] | d f16."""
    n = blocks.shape[0]
    x = blocks.reshape(n, 16, 16)
    d, sc = quantize_scales_signed(fit_symmetric(x, -4, 3), -32, 31)
    u = (_quants_symmetric(x, d, sc, -4, 3) + 4).astype(np.uint8).reshape(n, QK_K)   # 0..7
    hmask = pack_bit_planes((u >> 2).reshape(n, 8, 32))           # bit b of hmask[j]: element 32b + j
    qs = pack_crumbs((u & 3).reshape(n, 2, 4, 32)).reshape(n, 64)
    sc6 = (sc + 32).astype(np.uint8)                               # [n, 16] 0..63
    low = sc6 & np.uint8(0x0F)
    scales = np.concatenate([pack_nibbles(low[:, 0:8], low[:, 8:16]),
                             pack_crumbs((sc6 >> 4).reshape(n, 4, 4))], axis=1)
    return np.concatenate([hmask, qs, scales, f16_bytes(d)], axis=1)


def _quantize_k4_family(blocks: np.ndarray, q_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Shared part of Q4_K/Q5_K: (header [n, 16] u8 = d | dmin | scales[12], quants [n, 8, 32] int)."""
    n = blocks.shape[0]
    x = blocks.reshape(n, 8, 32)
    scale, mn = fit_scale_min(x, q_max)
    d, sc = quantize_scales_unsigned(scale, 63)
    dmin, mq = quantize_scales_unsigned(mn, 63)
    q = _quants_with_min(x, d, sc, dmin, mq, q_max)
    header = np.concatenate([f16_bytes(d), f16_bytes(dmin), pack_scale_min_k4(sc, mq)], axis=1)
    return header, q


def _pack_k4_nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 8, 32] 0..15 -> [n, 128] u8: element 64c + 32g + l in nibble g of qs[32c + l]."""
    q = q.reshape(q.shape[0], 4, 2, 32)
    return pack_nibbles(q[:, :, 0], q[:, :, 1]).reshape(q.shape[0], 128)


def quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 144] u8: d | dmin | scales[12] | qs[128]."""
    header, q = _quantize_k4_family(blocks, 15)
    return np.concatenate([header, _pack_k4_nibbles(q)], axis=1)


def quantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 176] u8: d | dmin | scales[12] | qh[32] | qs[128]."""
    header, q = _quantize_k4_family(blocks, 31)
    q = q.astype(np.uint8)
    qh = pack_bit_planes(q >> 4)                                   # bit b of qh[l]: element 32b + l
    return np.concatenate([header, qh, _pack_k4_nibbles(q & np.uint8(0x0F))], axis=1)


def quantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 210] u8: ql[128] | qh[64] | scales[16] i8 | d f16."""
    n = blocks.shape[0]
    x = blocks.reshape(n, 16, 16)
    d, sc = quantize_scales_signed(fit_symmetric(x, -32, 31), -128, 127)
    u = (_quants_symmetric(x, d, sc, -32, 31) + 32).astype(np.uint8).reshape(n, 2, 2, 64)   # [h, s>>1, ..]
    ql = pack_nibbles(u[:, :, 0] & np.uint8(0x0F), u[:, :, 1] & np.uint8(0x0F)).reshape(n, 128)
    qh = pack_crumbs((u >> 4).reshape(n, 2, 4, 32)).reshape(n, 64)
    return np.concatenate([ql, qh, sc.astype(np.int8).view(np.uint8), f16_bytes(d)], axis=1)
