"""NumPy reference of the prefill matmul (vkmtp/ops/matmul.py): dequantize the weight, multiply in float64."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vkmtp.gguf import GGMLType, dequantize, row_bytes


def dequantize_weight(weight: np.ndarray | Sequence[np.ndarray], ggml_type: int, n_rows: int,
                      k: int) -> np.ndarray:
    """Packed weight bytes (one array, or row-split parts in order) -> [n_rows, k] float32."""
    raw = np.concatenate([np.asarray(p, np.uint8).reshape(-1) for p in weight]) \
        if isinstance(weight, (list, tuple)) else np.asarray(weight, np.uint8).reshape(-1)
    need = n_rows * row_bytes(ggml_type, k)
    if raw.nbytes < need:
        raise ValueError(f"weight holds {raw.nbytes} B, [{n_rows}, {k}] {GGMLType(ggml_type).name} "
                         f"needs {need} B")
    return dequantize(raw[:need], ggml_type, (n_rows, k))


def matmul(weight: np.ndarray | Sequence[np.ndarray], ggml_type: int, n_rows: int, k: int, x: np.ndarray,
           y: np.ndarray | None, n_tok: int, accumulate: bool = False) -> np.ndarray:
    """Y[n][m] = sum_k W[m][k] X[n][k], plus Y's old value when `accumulate`.

    Args:
        weight: packed bytes of W [n_rows, k] in `ggml_type` (GGUF row layout), or row-split parts.
        x: [n_tok, k] f32.  y: [n_tok, n_rows] f32, read only when `accumulate` (else may be None).
    Returns:
        [n_tok, n_rows] float64.
    """
    w = dequantize_weight(weight, ggml_type, n_rows, k).astype(np.float64)     # [n_rows, k]
    xs = np.asarray(x, np.float64).reshape(n_tok, k)                            # [n_tok, k]
    out = xs @ w.T                                                               # [n_tok, n_rows]
    if accumulate:
        out += np.asarray(y, np.float64).reshape(n_tok, n_rows)
    return out
