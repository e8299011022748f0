"""NumPy reference of the prefill matmul (vkmtp/ops/matmul.py).

The product is the mat-vec's (y = x W^T, + y) over n_tok columns; only the GPU kernel differs (tiled for many
tokens), so this delegates to vkmtp.ref.ops.matvec: one oracle for both kernels.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.matvec import matvec, matvec_error_bound


def matmul(weight: np.ndarray, ggml_type: int, n_rows: int, k: int, x: np.ndarray, y: np.ndarray | None,
           n_tok: int, accumulate: bool = False) -> np.ndarray:
    """Y[n][m] = sum_k W[m][k] X[n][k], plus Y's old value when `accumulate`.

    Args:
        weight: [n_rows, row_bytes] u8 raw GGUF rows of `ggml_type` (or the flat bytes).
        x: [n_tok, k] f32.  y: [n_tok, n_rows] f32, read only when `accumulate` (else may be None).
    Returns:
        [n_tok, n_rows] float64.
    """
    xs = np.asarray(x, np.float32).reshape(n_tok, k)
    return matvec(weight, ggml_type, n_rows, k, xs, np.asarray(y).reshape(n_tok, n_rows) if accumulate else None)


def matmul_error_bound(weight: np.ndarray, ggml_type: int, n_rows: int, k: int, x: np.ndarray, n_tok: int,
                       rel: float) -> np.ndarray:
    """[n_tok, n_rows] f64: rel * sum_k |W[m][k] X[n][k]|, the scale of f32 rounding error of each output."""
    return matvec_error_bound(weight, ggml_type, n_rows, k, np.asarray(x).reshape(n_tok, k), rel)
