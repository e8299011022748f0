"""ggml tensor types: block sizes, and the entry points that dequantize and quantize whole tensors.

Shapes are in NumPy order (outermost first), so a weight with ggml `ne = (K, M)` has shape `(M, K)` and one
row holds one output's K weights; quant blocks run along the last axis only. The per-type block codecs live
in `dequant_legacy`, `dequant_k`, `dequant_iq`, `quantize_legacy`, `quantize_k` and `quantize_iq`; this
module only validates sizes, splits the work into cache-sized chunks of blocks and dispatches.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from vkmtp.gguf import dequant_iq, dequant_k, dequant_legacy, quantize_iq, quantize_k, quantize_legacy

GGMLType = GGMLQuantizationType

BlockCodec = Callable[[np.ndarray], np.ndarray]

_DEQUANTIZERS: dict[GGMLType, BlockCodec] = {
    GGMLType.F32: dequant_legacy.dequantize_f32,
    GGMLType.F16: dequant_legacy.dequantize_f16,
    GGMLType.BF16: dequant_legacy.dequantize_bf16,
    GGMLType.Q4_0: dequant_legacy.dequantize_q4_0,
    GGMLType.Q4_1: dequant_legacy.dequantize_q4_1,
    GGMLType.Q5_0: dequant_legacy.dequantize_q5_0,
    GGMLType.Q5_1: dequant_legacy.dequantize_q5_1,
    GGMLType.Q8_0: dequant_legacy.dequantize_q8_0,
    GGMLType.Q2_K: dequant_k.dequantize_q2_k,
    GGMLType.Q3_K: dequant_k.dequantize_q3_k,
    GGMLType.Q4_K: dequant_k.dequantize_q4_k,
    GGMLType.Q5_K: dequant_k.dequantize_q5_k,
    GGMLType.Q6_K: dequant_k.dequantize_q6_k,
    GGMLType.IQ4_NL: dequant_iq.dequantize_iq4_nl,
    GGMLType.IQ4_XS: dequant_iq.dequantize_iq4_xs,
    GGMLType.IQ2_XXS: dequant_iq.dequantize_iq2_xxs,
    GGMLType.IQ2_XS: dequant_iq.dequantize_iq2_xs,
    GGMLType.IQ2_S: dequant_iq.dequantize_iq2_s,
    GGMLType.IQ3_XXS: dequant_iq.dequantize_iq3_xxs,
    GGMLType.IQ3_S: dequant_iq.dequantize_iq3_s,
}

_QUANTIZERS: dict[GGMLType, BlockCodec] = {
    GGMLType.F32: quantize_legacy.quantize_f32,
    GGMLType.F16: quantize_legacy.quantize_f16,
    GGMLType.BF16: quantize_legacy.quantize_bf16,
    GGMLType.Q4_0: quantize_legacy.quantize_q4_0,
    GGMLType.Q4_1: quantize_legacy.quantize_q4_1,
    GGMLType.Q5_0: quantize_legacy.quantize_q5_0,
    GGMLType.Q5_1: quantize_legacy.quantize_q5_1,
    GGMLType.Q8_0: quantize_legacy.quantize_q8_0,
    GGMLType.Q2_K: quantize_k.quantize_q2_k,
    GGMLType.Q3_K: quantize_k.quantize_q3_k,
    GGMLType.Q4_K: quantize_k.quantize_q4_k,
    GGMLType.Q5_K: quantize_k.quantize_q5_k,
    GGMLType.Q6_K: quantize_k.quantize_q6_k,
    GGMLType.IQ4_NL: quantize_iq.quantize_iq4_nl,
    GGMLType.IQ4_XS: quantize_iq.quantize_iq4_xs,
}

DEQUANTIZE_TYPES: frozenset[GGMLType] = frozenset(_DEQUANTIZERS)
QUANTIZE_TYPES: frozenset[GGMLType] = frozenset(_QUANTIZERS)

# Blocks per chunk: keeps every temporary of a chunk within a few MiB so the passes stay in cache.
_CHUNK_ELEMENTS = 1 << 18


def ggml_type(value: int | str | GGMLType) -> GGMLType:
    """A ggml type from its id, its name ("q4_k", "Q4_K") or the enum; ValueError if unknown."""
    if isinstance(value, str):
        try:
            return GGMLType[value.upper()]
        except KeyError:
            raise ValueError(f"unknown ggml type name {value!r}") from None
    try:
        return GGMLType(int(value))
    except ValueError:
        raise ValueError(f"unknown ggml type id {int(value)}") from None


def block_size(ggml_type_id: int | GGMLType) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type."""
    return GGML_QUANT_SIZES[ggml_type(ggml_type_id)]


def row_bytes(ggml_type_id: int | GGMLType, n_elements: int) -> int:
    """Bytes of one row of `n_elements` values; ValueError unless it is a whole number of blocks."""
    t = ggml_type(ggml_type_id)
    elems, nbytes = GGML_QUANT_SIZES[t]
    if n_elements % elems:
        raise ValueError(f"a row of {n_elements} values is not a whole number of {t.name} blocks "
                         f"({elems} values each)")
    return n_elements // elems * nbytes


def tensor_bytes(ggml_type_id: int | GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes of a whole tensor of `shape` (NumPy order; blocks run along the last axis)."""
    if len(shape) == 0:
        return row_bytes(ggml_type_id, 1)
    n_rows = int(np.prod(shape[:-1], dtype=np.int64))
    return n_rows * row_bytes(ggml_type_id, int(shape[-1]))


def _run_blocks(codec: BlockCodec, blocks: np.ndarray, out: np.ndarray, elems_per_block: int) -> None:
    """Apply `codec` to `blocks` [n, a] chunk by chunk, writing its [n, b] results into `out`."""
    chunk = max(1, _CHUNK_ELEMENTS // elems_per_block)
    for start in range(0, blocks.shape[0], chunk):
        stop = min(start + chunk, blocks.shape[0])
        out[start:stop] = codec(blocks[start:stop])


def _as_bytes(raw: np.ndarray | bytes) -> np.ndarray:
    """The bytes of `raw` as a flat u8 array, without a copy where possible."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return np.frombuffer(raw, dtype=np.uint8)
    arr = np.asarray(raw)
    if arr.dtype != np.uint8:
        arr = np.ascontiguousarray(arr).view(np.uint8)
    return arr.reshape(-1)


def dequantize(raw: np.ndarray, ggml_type_id: int | GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Decode packed tensor data to float32.

    Args:
        raw: the tensor's packed bytes, any shape, u8 (e.g. a memory-mapped view from `GGUFFile.raw`).
        ggml_type_id: the ggml type of the data.
        shape: the tensor shape in NumPy order; its last axis must be a whole number of blocks.
    Returns:
        A new float32 array of `shape`.
    """
    t = ggml_type(ggml_type_id)
    codec = _DEQUANTIZERS.get(t)
    if codec is None:
        raise ValueError(f"cannot dequantize ggml type {t.name} (id {int(t)}); supported: "
                         f"{', '.join(sorted(x.name for x in DEQUANTIZE_TYPES))}")
    shape = tuple(int(s) for s in shape)
    expected = tensor_bytes(t, shape)
    flat = _as_bytes(raw)
    if flat.size != expected:
        raise ValueError(f"{t.name} data of shape {shape} needs {expected} bytes, got {flat.size}")
    elems, nbytes = GGML_QUANT_SIZES[t]
    n_blocks = expected // nbytes
    # Damaged or hand-made blocks may hold inf/NaN scales; decode them faithfully, without warnings.
    with np.errstate(invalid="ignore", over="ignore"):
        if elems == 1:                   # float types: one vectorised conversion, no temporaries to bound
            return codec(flat.reshape(n_blocks, nbytes)).reshape(shape)
        out = np.empty((n_blocks, elems), dtype=np.float32)
        _run_blocks(codec, flat.reshape(n_blocks, nbytes), out, elems)
    return out.reshape(shape)


def quantize(x: np.ndarray, ggml_type_id: int | GGMLType) -> np.ndarray:
    """Encode float data as packed ggml blocks, row by row along the last axis.

    Args:
        x: [..., K] float (converted to f32); K must be a whole number of blocks; values must be finite.
        ggml_type_id: the target type (see `QUANTIZE_TYPES`).
    Returns:
        [..., row_bytes(type, K)] u8, rows laid out exactly as llama.cpp stores them in a GGUF file.
    """
    t = ggml_type(ggml_type_id)
    codec = _QUANTIZERS.get(t)
    if codec is None:
        raise ValueError(f"cannot quantize to ggml type {t.name} (id {int(t)}); supported: "
                         f"{', '.join(sorted(x.name for x in QUANTIZE_TYPES))}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("quantize needs at least one axis (rows of values along the last axis)")
    if not np.isfinite(x).all():
        raise ValueError(f"cannot quantize to {t.name}: input contains NaN or infinity")
    elems, nbytes = GGML_QUANT_SIZES[t]
    n_row_bytes = row_bytes(t, x.shape[-1])
    n_blocks = x.size // elems
    out = np.empty((n_blocks, nbytes), dtype=np.uint8)
    _run_blocks(codec, np.ascontiguousarray(x).reshape(n_blocks, elems), out, elems)
    return out.reshape(*x.shape[:-1], n_row_bytes)
