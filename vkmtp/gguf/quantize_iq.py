"""Quantizers for the non-linear 4-bit i-quants IQ4_NL (32-element blocks) and IQ4_XS (256-element blocks).

Each function maps `[n_blocks, block_elems] f32` (finite) to `[n_blocks, block_bytes] u8`, the exact inverse
of the layouts in `dequant_iq`. Values are coded as the nearest of the 16 fixed levels `IQ4_LEVELS` times a
scale. The scale starts as v / -127 (v = the value of largest magnitude, mapped onto the extreme level -127),
then is refined once by least squares over the chosen levels. This is round-to-nearest, not ggml's
importance-weighted search, so bytes differ from llama-quantize's but decode identically everywhere.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf.bitpack import f16_bytes, nearest_int, pack_nibbles, safe_reciprocal, signed_absmax, to_f16
from vkmtp.gguf.dequant_iq import IQ4_LEVELS

_LEVELS = IQ4_LEVELS.astype(np.float32)
_MIDPOINTS = (_LEVELS[:-1] + _LEVELS[1:]) / np.float32(2)


def nearest_level(v: np.ndarray) -> np.ndarray:
    """Index (0..15, u8) of the IQ4 level nearest to each value of `v` (in level units)."""
    return np.searchsorted(_MIDPOINTS, v).astype(np.uint8)


def fit_iq4_scale(x: np.ndarray) -> np.ndarray:
    """Per-group scale for x ~ s * L[idx]. x: [..., L] f32 -> [...] f32 (0 for an all-zero group)."""
    s = signed_absmax(x)[..., 0] / _LEVELS[0]
    levels = _LEVELS[nearest_level(x * safe_reciprocal(s)[..., None])]
    sum_ll = (levels * levels).sum(axis=-1)
    sum_xl = (x * levels).sum(axis=-1)
    return np.where(sum_ll > 0, sum_xl * safe_reciprocal(sum_ll), s).astype(np.float32)


def _pack_halves(idx: np.ndarray) -> np.ndarray:
    """[..., 32] level indices -> [..., 16] u8: element j low nibble, element j+16 high nibble of byte j."""
    return pack_nibbles(idx[..., :16], idx[..., 16:])


def quantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """[n, 32] f32 -> [n, 18] u8: d f16 | qs[16]."""
    d = to_f16(fit_iq4_scale(blocks)[:, None])                     # [n, 1]
    idx = nearest_level(blocks * safe_reciprocal(d))
    return np.concatenate([f16_bytes(d), _pack_halves(idx)], axis=1)


def quantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """[n, 256] f32 -> [n, 136] u8: d f16 | scales_h u16 | scales_l[4] | qs[128]."""
    n = blocks.shape[0]
    x = blocks.reshape(n, 8, 32)
    sub_scale = fit_iq4_scale(x)                                   # [n, 8]
    d = to_f16(signed_absmax(sub_scale, axis=1) / np.float32(-32))
    ls = np.clip(nearest_int(sub_scale * safe_reciprocal(d)), -32, 31)
    eff = (d * ls.astype(np.float32))[:, :, None]                  # [n, 8, 1]
    idx = nearest_level(x * safe_reciprocal(eff))                  # [n, 8, 32]
    u = (ls + 32).astype(np.uint16)                                # 0..63
    scales_h = ((u >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    scales_l = pack_nibbles(u[:, 0::2] & 0x0F, u[:, 1::2] & 0x0F)
    qs = _pack_halves(idx).reshape(n, 128)
    return np.concatenate([f16_bytes(d), scales_h.astype("<u2").view(np.uint8).reshape(n, 2), scales_l, qs],
                          axis=1)
