"""Reference of vkmtp.ops.matvec: y = x W^T (+ y) with the weight dequantized by vkmtp.gguf, in float64."""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import dequantize


def matvec(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int, x: np.ndarray,
           y: np.ndarray | None = None) -> np.ndarray:
    """Args:
        weight: [n_rows, row_bytes] u8 raw GGUF rows (or the flat bytes)
        x: [n_tok, n_k] f32 activations
        y: [n_tok, n_rows] f32 to accumulate into (the residual), or None
    Returns:
        [n_tok, n_rows] f64: x @ W.T (+ y)
    """
    w = dequantize(np.ascontiguousarray(weight).reshape(-1), ggml_type, (n_rows, n_k)).astype(np.float64)
    out = np.asarray(x, np.float64).reshape(-1, n_k) @ w.T
    return out if y is None else out + np.asarray(y, np.float64)


def matvec_error_bound(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int, x: np.ndarray,
                       rel: float) -> np.ndarray:
    """[n_tok, n_rows] f64: rel * sum_k |W[r, k] x[c, k]|, the scale of f32 rounding error of a dot product."""
    w = dequantize(np.ascontiguousarray(weight).reshape(-1), ggml_type, (n_rows, n_k)).astype(np.float64)
    return rel * (np.abs(np.asarray(x, np.float64).reshape(-1, n_k)) @ np.abs(w).T)
