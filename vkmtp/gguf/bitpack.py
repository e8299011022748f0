"""Byte- and bit-level helpers shared by the block dequantizers and quantizers.

Every helper works on a whole batch of blocks at once: `blocks` is `[n_blocks, block_bytes] u8`, C-contiguous
in its last axis, and fields are addressed by byte offset inside a block. All multi-byte fields are
little-endian, as in ggml.
"""

from __future__ import annotations

import numpy as np

NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8)
CRUMB_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)   # the four 2-bit fields of a byte
BIT_SHIFTS = np.arange(8, dtype=np.uint8)


def read_f16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The f16 field at byte `offset` of every block, widened to f32. Returns [n_blocks, 1] f32."""
    return blocks[:, offset:offset + 2].view(np.float16).astype(np.float32)


def read_u16(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian u16 field at byte `offset`. Returns [n_blocks, 1] u16."""
    return blocks[:, offset:offset + 2].view("<u2")


def read_u32(blocks: np.ndarray, offset: int, count: int = 1) -> np.ndarray:
    """`count` consecutive little-endian u32 fields from byte `offset`. Returns [n_blocks, count] u32."""
    return blocks[:, offset:offset + 4 * count].view("<u4")


def split_nibbles(packed: np.ndarray) -> np.ndarray:
    """Low nibbles then high nibbles of each row: [n, m] u8 -> [n, 2, m] u8 (axis 1: low, high)."""
    return (packed[:, None, :] >> NIBBLE_SHIFTS[None, :, None]) & np.uint8(0x0F)


def split_crumbs(packed: np.ndarray) -> np.ndarray:
    """The four 2-bit fields of each byte, lowest first: [n, ..., m] u8 -> [n, ..., 4, m] u8."""
    return (packed[..., None, :] >> CRUMB_SHIFTS[:, None]) & np.uint8(3)


def split_bits(packed: np.ndarray) -> np.ndarray:
    """The eight bits of each byte, bit 0 first: [n, m] u8 -> [n, 8, m] u8 (bit b of byte k at [:, b, k])."""
    return (packed[:, None, :] >> BIT_SHIFTS[:, None]) & np.uint8(1)


def bits_little(packed: np.ndarray) -> np.ndarray:
    """Bits of each row in little-endian order (bit j of byte k at position 8k + j): [n, m] -> [n, 8m] u8."""
    return np.unpackbits(packed, axis=-1, bitorder="little")


def pack_bits_little(bits: np.ndarray) -> np.ndarray:
    """Inverse of `bits_little`: [n, 8m] of 0/1 -> [n, m] u8."""
    return np.packbits(bits.astype(np.uint8), axis=-1, bitorder="little")


def pack_nibbles(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """One byte per pair: `low` in bits 0-3, `high` in bits 4-7 (both 0..15)."""
    return (low.astype(np.uint8) & np.uint8(0x0F)) | (high.astype(np.uint8) << np.uint8(4))


def pack_crumbs(crumbs: np.ndarray) -> np.ndarray:
    """Inverse of `split_crumbs`: [n, ..., 4, m] of 0..3 -> [n, ..., m] u8."""
    c = crumbs.astype(np.uint8) & np.uint8(3)
    return c[..., 0, :] | (c[..., 1, :] << 2) | (c[..., 2, :] << 4) | (c[..., 3, :] << 6)


def f16_bytes(values: np.ndarray) -> np.ndarray:
    """[n, k] f32 -> [n, 2k] u8 little-endian f16 (round to nearest even); ValueError beyond +-65504."""
    with np.errstate(over="ignore"):
        half = np.ascontiguousarray(values, dtype=np.float32).astype("<f2")
    if np.isinf(half).any():
        raise ValueError("a value or block scale is outside the f16 range (|x| > 65504); scale the data down")
    return half.view(np.uint8)


def to_f16(values: np.ndarray) -> np.ndarray:
    """Round f32 values to the nearest f16 and back to f32 (what a stored f16 scale decodes to)."""
    with np.errstate(over="ignore"):
        return values.astype(np.float16).astype(np.float32)


def pack_bit_planes(bits: np.ndarray) -> np.ndarray:
    """Inverse of `split_bits`: [n, 8, m] of 0/1 (plane b = bit b) -> [n, m] u8."""
    planes = bits.astype(np.uint8) << BIT_SHIFTS[:, None]
    return np.bitwise_or.reduce(planes, axis=1)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C `roundf` (half away from zero), exact for every f32 input; NumPy's `round` rounds half to even."""
    whole = np.trunc(x)
    frac = x - whole                                    # exact in binary floating point
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0).astype(x.dtype)


def nearest_int(x: np.ndarray) -> np.ndarray:
    """Round to nearest, ties away from zero, as int32 (inputs must be finite and within int32 range)."""
    return round_half_away(x).astype(np.int32)


def signed_absmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The element of largest magnitude along `axis`, sign kept (first one on ties), keepdims."""
    idx = np.abs(x).argmax(axis=axis, keepdims=True)
    return np.take_along_axis(x, idx, axis=axis)


def safe_reciprocal(d: np.ndarray) -> np.ndarray:
    """1/d where d != 0, else 0 (ggml's `id = d ? 1/d : 0`)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
