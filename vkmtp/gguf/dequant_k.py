"""Dequantizers for the 256-element K-quant super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.

Each function maps `[n_blocks, block_bytes] u8` to `[n_blocks, 256] f32`. Byte layouts and element index
formulas are ggml's (docs/MODEL.md, Block layouts). As in ggml, each sub-block's scale (and min)
is formed first (`d * sc`, `dmin * m`) and then applied to the integer quant, which keeps the results
bit-identical to llama.cpp's CPU decode.

Worked example of the index math (Q2_K): element i = 128h + 32s + 16g + l reads bits 2s..2s+1 of
qs[32h + 16g + l]. Reshaping qs to [n, 2 (h), 32 (16g + l)] and splitting each byte into its four 2-bit
fields along a new axis s gives [n, 2, 4, 32], whose flattening is exactly i.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf.bitpack import read_f16, split_bits, split_crumbs, split_nibbles

QK_K = 256


def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K super-block.

    Args:
        scales: [n, 12] u8, bytes 4-15 of the block.
    Returns:
        (sc, mn): each [n, 8] u8, values 0..63, one per 32-element sub-block.
    """
    low_sc, low_mn, nib = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([low_sc & 63, (nib & 0x0F) | ((low_sc >> 6) << 4)], axis=1)
    mn = np.concatenate([low_mn & 63, (nib >> 4) | ((low_mn >> 6) << 4)], axis=1)
    return sc, mn


def unpack_scales_q3_k(scales: np.ndarray) -> np.ndarray:
    """The sixteen signed 6-bit scales of a Q3_K super-block: [n, 12] u8 -> [n, 16] i8 (-32..31)."""
    n = scales.shape[0]
    low = split_nibbles(scales[:, 0:8]).reshape(n, 16)             # t < 8: low nibble, t >= 8: high nibble
    high = split_crumbs(scales[:, 8:12]).reshape(n, 16)            # [n, 4 (t div 4), 4 (t mod 4)]
    return (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)


def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """Q2_K, 84 bytes: scales[16] | qs[64] | d f16 | dmin f16. e = d*(sc&15)*q - dmin*(sc>>4)."""
    n = blocks.shape[0]
    scales = blocks[:, 0:16]
    d = read_f16(blocks, 80)
    dmin = read_f16(blocks, 82)
    dl = (d * (scales & 0x0F).astype(np.float32))[:, :, None]      # [n, 16, 1]
    ml = (dmin * (scales >> 4).astype(np.float32))[:, :, None]
    q = split_crumbs(blocks[:, 16:80].reshape(n, 2, 32))           # [n, 2, 4, 32]
    q = q.reshape(n, 16, 16).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """Q3_K, 110 bytes: hmask[32] | qs[64] | scales[12] | d f16. e = d * sc * (low2 - 4 * !hbit)."""
    n = blocks.shape[0]
    d = read_f16(blocks, 108)
    dl = (d * unpack_scales_q3_k(blocks[:, 96:108]).astype(np.float32))[:, :, None]   # [n, 16, 1]
    low = split_crumbs(blocks[:, 32:96].reshape(n, 2, 32)).reshape(n, QK_K)
    hbit = split_bits(blocks[:, 0:32]).reshape(n, QK_K)           # bit b of hmask[j] -> element 32b + j
    q = low.astype(np.int8) - ((hbit ^ np.uint8(1)) << np.uint8(2)).astype(np.int8)
    return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


def _scale_min_k4(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sub-block (d * sc, dmin * mn) of a Q4_K/Q5_K block, each [n, 8, 1] f32."""
    d = read_f16(blocks, 0)
    dmin = read_f16(blocks, 2)
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    return (d * sc.astype(np.float32))[:, :, None], (dmin * mn.astype(np.float32))[:, :, None]


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Q4_K, 144 bytes: d | dmin | scales[12] | qs[128]. e = d*sc*q - dmin*mn."""
    n = blocks.shape[0]
    dl, ml = _scale_min_k4(blocks)
    q = split_nibbles(blocks[:, 16:144].reshape(n * 4, 32))        # [4n, 2, 32]: element 64c + 32g + l
    q = q.reshape(n, 8, 32).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """Q5_K, 176 bytes: d | dmin | scales[12] | qh[32] | qs[128]. q = nibble + 16 * bit."""
    n = blocks.shape[0]
    dl, ml = _scale_min_k4(blocks)
    low = split_nibbles(blocks[:, 48:176].reshape(n * 4, 32)).reshape(n, 8, 32)
    high = split_bits(blocks[:, 16:48])                            # [n, 8, 32]: bit b of qh[l] -> 32b + l
    q = (low | (high << np.uint8(4))).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K, 210 bytes: ql[128] | qh[64] | scales[16] i8 | d f16. e = d * sc * (q - 32)."""
    n = blocks.shape[0]
    d = read_f16(blocks, 208)
    dl = (d * blocks[:, 192:208].view(np.int8).astype(np.float32))[:, :, None]   # [n, 16, 1]
    # element 128h + 64(s>>1) + 32(s&1) + l
    low = split_nibbles(blocks[:, 0:128].reshape(n * 2, 64)).reshape(n, QK_K)
    high = split_crumbs(blocks[:, 128:192].reshape(n, 2, 32)).reshape(n, QK_K)   # 128h + 32s + l
    q = (low | (high << np.uint8(4))).astype(np.int8) - np.int8(32)
    return (dl * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)
