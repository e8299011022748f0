"""ggml quantization types: block sizes and NumPy dequantization.

Shapes: `raw` is the packed byte array of one tensor; `shape` is in NumPy order (outermost first), so a weight
with ggml `ne = (K, M)` has shape `(M, K)` and one row = one output's K weights.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as _gq

GGMLType = GGMLQuantizationType


def block_size(ggml_type: int) -> tuple[int, int]:
    """(elements per block, bytes per block) of a ggml type."""
    return GGML_QUANT_SIZES[GGMLType(ggml_type)]


def row_bytes(ggml_type: int, n_elements: int) -> int:
    """Bytes of one row of `n_elements` values (must be a whole number of blocks)."""
    elems, nbytes = block_size(ggml_type)
    if n_elements % elems:
        raise ValueError(f"row of {n_elements} values is not a whole number of {GGMLType(ggml_type).name} blocks")
    return n_elements // elems * nbytes


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """Dequantize packed data of `ggml_type` to float32 of `shape` (NumPy order)."""
    t = GGMLType(ggml_type)
    if t == GGMLType.F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
    if t == GGMLType.F16:
        return np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(shape)
    out = _gq.dequantize(np.asarray(raw, dtype=np.uint8).reshape(-1), t)
    return np.asarray(out, dtype=np.float32).reshape(shape)
