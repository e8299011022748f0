"""Reference of vkmtp.ops.dequant: GGUF rows to f32 through vkmtp.gguf's NumPy dequantizers."""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import dequantize


def dequant(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int) -> np.ndarray:
    """weight: [n_rows, row_bytes] u8 (or flat bytes) -> [n_rows, n_k] f32."""
    return dequantize(np.ascontiguousarray(weight).reshape(-1), ggml_type, (n_rows, n_k))
