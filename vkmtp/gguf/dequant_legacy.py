"""Dequantizers for the float types and the 32-element "legacy" quants (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).

Each function maps `[n_blocks, block_bytes] u8` to `[n_blocks, block_elems] f32`. Byte layouts follow
ggml's block layouts (docs/MODEL.md, Block layouts). The float operations are done in the same order as ggml's
`dequantize_row_*` (scale times integer, then add the min), so results are bit-identical to llama.cpp's
CPU decode and to `gguf.quants.dequantize`.
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf.bitpack import bits_little, read_f16, split_nibbles


def dequantize_f32(blocks: np.ndarray) -> np.ndarray:
    """[n, 4] u8 -> [n, 1] f32."""
    return blocks.view("<f4").astype(np.float32)


def dequantize_f16(blocks: np.ndarray) -> np.ndarray:
    """[n, 2] u8 -> [n, 1] f32."""
    return blocks.view("<f2").astype(np.float32)


def dequantize_bf16(blocks: np.ndarray) -> np.ndarray:
    """[n, 2] u8 -> [n, 1] f32: bf16 is the upper half of an f32, so shift it into place."""
    return (blocks.view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


def _nibbles_32(qs: np.ndarray) -> np.ndarray:
    """[n, 16] u8 -> [n, 32] u8: low nibbles are elements 0-15, high nibbles 16-31."""
    return split_nibbles(qs).reshape(qs.shape[0], 32)


def _high_bits_32(qh_bytes: np.ndarray) -> np.ndarray:
    """[n, 4] u8 (a little-endian u32) -> [n, 32] u8 with bit j of the u32 shifted to value 16 at j."""
    return bits_little(qh_bytes) << np.uint8(4)


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0, 18 bytes: d f16 | qs[16]. e = d * (q - 8)."""
    d = read_f16(blocks, 0)                                        # [n, 1]
    q = _nibbles_32(blocks[:, 2:18]).astype(np.int8) - np.int8(8)  # [n, 32] -8..7
    return d * q.astype(np.float32)


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """Q4_1, 20 bytes: d f16 | m f16 | qs[16]. e = d * q + m."""
    d = read_f16(blocks, 0)
    m = read_f16(blocks, 2)
    q = _nibbles_32(blocks[:, 4:20]).astype(np.float32)            # [n, 32] 0..15
    return d * q + m


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0, 22 bytes: d f16 | qh u32 | qs[16]. e = d * (q - 16), q = nibble | bit << 4."""
    d = read_f16(blocks, 0)
    q = _nibbles_32(blocks[:, 6:22]) | _high_bits_32(blocks[:, 2:6])
    return d * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """Q5_1, 24 bytes: d f16 | m f16 | qh u32 | qs[16]. e = d * q + m."""
    d = read_f16(blocks, 0)
    m = read_f16(blocks, 2)
    q = _nibbles_32(blocks[:, 8:24]) | _high_bits_32(blocks[:, 4:8])
    return d * q.astype(np.float32) + m


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0, 34 bytes: d f16 | qs[32] i8. e = q * d."""
    d = read_f16(blocks, 0)
    return blocks[:, 2:34].view(np.int8).astype(np.float32) * d
