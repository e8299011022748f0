"""Dequantizers for the i-quants: IQ4_NL, IQ4_XS (non-linear 4-bit) and IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
IQ3_S (lattice "grid" codebooks with sign masks).

Each function maps `[n_blocks, block_bytes] u8` to `[n_blocks, block_elems] f32`. The codebooks are data,
not code: they are read once from the installed `gguf` package (which mirrors ggml's `iq2xxs_grid` etc.),
as float tables `[n_entries, 4 or 8]`. The 7-bit sign codes of IQ2_XXS / IQ2_XS / IQ3_XXS expand to 8 sign
bits where bit 7 makes the number of set bits even; that table is computed here.

Block layouts (all with d = f16 at bytes 0-1, QK_K = 256 elements, 8 groups of 32 elements):
    IQ2_XXS  66 B: 8 x (u32 grid bytes: four 8-value entries of a 256-grid; u32: 4 x 7-bit sign codes,
                   bits 28-31 scale s).                        group scale = d * (0.5 + s) / 4
    IQ2_XS   74 B: qs[32] u16 (bits 0-8 index into a 512-grid, bits 9-15 sign code) | scales[8]
                   (one nibble per 16 elements).                scale = d * (0.5 + s) / 4
    IQ2_S    82 B: grid low bytes[32] | sign bytes[32] | qh[8] (2 high index bits per entry, 1024-grid) |
                   scales[8] (nibble per 16 elements).          scale = d * (0.5 + s) / 4
    IQ3_XXS  98 B: grid bytes[64] (4-value entries of a 256-grid) | 8 x u32 (4 x 7-bit sign codes,
                   bits 28-31 scale s).                         scale = d * (0.5 + s) / 2
    IQ3_S   110 B: grid low bytes[64] | qh[8] (9th index bit, 512-grid) | sign bytes[32] |
                   scales[4] (nibble per 32 elements).          scale = d * (1 + 2s)
"""

from __future__ import annotations

import numpy as np
from gguf import quants as _gguf_quants

from vkmtp.gguf.bitpack import bits_little, read_f16, read_u16, read_u32, split_nibbles

QK_K = 256

# kvalues_iq4nl: the 16 non-linear levels shared by IQ4_NL and IQ4_XS.
IQ4_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                      dtype=np.int8)
_IQ4_LEVELS_F32 = IQ4_LEVELS.astype(np.float32)


def _load_grid(name: str) -> np.ndarray:
    """The codebook of i-quant `name` from the gguf package: [n_entries, entry_len] f32."""
    cls = getattr(_gguf_quants, name)
    cls.init_grid()
    return np.ascontiguousarray(cls.grid.reshape(cls.grid_shape), dtype=np.float32)


def _even_parity_signs() -> np.ndarray:
    """[128, 8] f32 of +-1: code c -> sign bits c | (parity(c) << 7); bit j set means element j negative."""
    codes = np.arange(128, dtype=np.uint8)
    parity = np.unpackbits(codes[:, None], axis=1).sum(axis=1) & 1
    sign_bytes = codes | (parity.astype(np.uint8) << 7)
    bits = np.unpackbits(sign_bytes[:, None], axis=1, bitorder="little")
    return np.where(bits == 1, np.float32(-1), np.float32(1))


GRID_IQ2_XXS = _load_grid("IQ2_XXS")   # [256, 8]
GRID_IQ2_XS = _load_grid("IQ2_XS")     # [512, 8]
GRID_IQ2_S = _load_grid("IQ2_S")       # [1024, 8]
GRID_IQ3_XXS = _load_grid("IQ3_XXS")   # [256, 4]
GRID_IQ3_S = _load_grid("IQ3_S")       # [512, 4]
SIGNS_7BIT = _even_parity_signs()      # [128, 8]


def _signs_from_bits(sign_bytes: np.ndarray) -> np.ndarray:
    """[n, m] u8 of explicit sign bits -> [n, 8m] f32 of +-1 (bit j of byte k -> element 8k + j)."""
    return np.where(bits_little(sign_bytes) == 1, np.float32(-1), np.float32(1))


def dequantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """IQ4_NL, 18 bytes: d f16 | qs[16]. e[j] = d * L[low nibble], e[j+16] = d * L[high nibble]."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    idx = split_nibbles(blocks[:, 2:18]).reshape(n, 32)
    return d * _IQ4_LEVELS_F32[idx]


def dequantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """IQ4_XS, 136 bytes: d f16 | scales_h u16 | scales_l[4] | qs[128]; 6-bit scale per 32 elements."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    low = split_nibbles(blocks[:, 4:8]).transpose(0, 2, 1).reshape(n, 8)     # b: byte b//2, nibble b%2
    high = (read_u16(blocks, 2) >> (2 * np.arange(8, dtype=np.uint16))) & np.uint16(3)   # [n, 8]
    ls = (low | (high.astype(np.uint8) << np.uint8(4))).astype(np.int8) - np.int8(32)
    dl = (d * ls.astype(np.float32))[:, :, None]                            # [n, 8, 1]
    idx = split_nibbles(blocks[:, 8:136].reshape(n * 8, 16)).reshape(n, 8, 32)
    return (dl * _IQ4_LEVELS_F32[idx]).reshape(n, QK_K)


def _scale_quarter(d: np.ndarray, nibble: np.ndarray) -> np.ndarray:
    """d * (0.5 + s) * 0.25 for 4-bit s, the IQ2 family's group scale."""
    return d * (np.float32(0.5) + nibble.astype(np.float32)) * np.float32(0.25)


def dequantize_iq2_xxs(blocks: np.ndarray) -> np.ndarray:
    """IQ2_XXS, 66 bytes (see module docstring). Returns [n, 256] f32."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    words = read_u32(blocks, 2, 16).reshape(n, 8, 2)                         # [n, group, (grid, signs)]
    aux = words[:, :, 1]
    db = _scale_quarter(d, aux >> np.uint32(28))[:, :, None, None]           # [n, 8, 1, 1]
    codes = (aux[:, :, None] >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(0x7F)
    grid = GRID_IQ2_XXS[blocks[:, 2:66].reshape(n, 8, 8)[:, :, 0:4]]        # [n, 8, 4, 8]
    return (db * grid * SIGNS_7BIT[codes]).reshape(n, QK_K)


def dequantize_iq2_xs(blocks: np.ndarray) -> np.ndarray:
    """IQ2_XS, 74 bytes (see module docstring). Returns [n, 256] f32."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    qs = blocks[:, 2:66].view("<u2")                                         # [n, 32]
    scales = split_nibbles(blocks[:, 66:74]).transpose(0, 2, 1).reshape(n, 16)   # per 16 elements
    db = _scale_quarter(d, scales).reshape(n, 16, 1, 1)
    grid = GRID_IQ2_XS[qs & np.uint16(511)].reshape(n, 16, 2, 8)
    signs = SIGNS_7BIT[qs >> np.uint16(9)].reshape(n, 16, 2, 8)
    return (db * grid * signs).reshape(n, QK_K)


def dequantize_iq2_s(blocks: np.ndarray) -> np.ndarray:
    """IQ2_S, 82 bytes (see module docstring). Returns [n, 256] f32."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    high = (blocks[:, 66:74, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & np.uint8(3)   # [n, 8, 4]
    index = blocks[:, 2:34].astype(np.uint16) | (high.reshape(n, 32).astype(np.uint16) << np.uint16(8))
    scales = split_nibbles(blocks[:, 74:82]).transpose(0, 2, 1).reshape(n, 16)
    db = _scale_quarter(d, scales).reshape(n, 16, 1, 1)
    grid = GRID_IQ2_S[index].reshape(n, 16, 2, 8)
    signs = _signs_from_bits(blocks[:, 34:66]).reshape(n, 16, 2, 8)
    return (db * grid * signs).reshape(n, QK_K)


def dequantize_iq3_xxs(blocks: np.ndarray) -> np.ndarray:
    """IQ3_XXS, 98 bytes (see module docstring). Returns [n, 256] f32."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    aux = read_u32(blocks, 66, 8)                                            # [n, 8]
    db = (d * (np.float32(0.5) + (aux >> np.uint32(28)).astype(np.float32)) * np.float32(0.5))
    codes = (aux[:, :, None] >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(0x7F)
    grid = GRID_IQ3_XXS[blocks[:, 2:66]].reshape(n, 8, 4, 8)
    return (db[:, :, None, None] * grid * SIGNS_7BIT[codes]).reshape(n, QK_K)


def dequantize_iq3_s(blocks: np.ndarray) -> np.ndarray:
    """IQ3_S, 110 bytes (see module docstring). Returns [n, 256] f32."""
    n = blocks.shape[0]
    d = read_f16(blocks, 0)
    index = blocks[:, 2:66].astype(np.uint16) | (bits_little(blocks[:, 66:74]).astype(np.uint16) << 8)
    scales = split_nibbles(blocks[:, 106:110]).transpose(0, 2, 1).reshape(n, 8)
    db = (d * (1 + 2 * scales)).reshape(n, 8, 1, 1)
    grid = GRID_IQ3_S[index].reshape(n, 8, 4, 8)
    signs = _signs_from_bits(blocks[:, 74:106]).reshape(n, 8, 4, 8)
    return (db * grid * signs).reshape(n, QK_K)
