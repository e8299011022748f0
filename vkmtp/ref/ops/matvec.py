"""Reference of vkmtp.ops.matvec: y = x W^T (+ y) with the weight dequantized by vkmtp.gguf, in float64.

Also `linear`, the one dense matrix product of vkmtp.ref (the model reference's projections).
"""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import dequantize


def linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """y = x W^T, one matrix-vector product per row, in the result type of x and W.

    Row by row so that a token's result does not depend on the other rows in the batch (a batched GEMM may
    sum in another order): prefill, decode and speculative verify batches then agree bit for bit.
    Args:
        x: [n_tokens, n_in].
        weight: [n_out, n_in] (GGUF ne {n_in, n_out}).
    Returns:
        [n_tokens, n_out].
    """
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.result_type(x, weight))
    for t in range(x.shape[0]):
        out[t] = weight @ x[t]
    return out


def dequant(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int) -> np.ndarray:
    """weight: [n_rows, row_bytes] u8 (or flat bytes) -> [n_rows, n_k] f32, through vkmtp.gguf's dequantizers."""
    return dequantize(np.ascontiguousarray(weight).reshape(-1), ggml_type, (n_rows, n_k))


def dequant_f64(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int) -> np.ndarray:
    """[n_rows, row_bytes] u8 raw GGUF rows (or the flat bytes) -> [n_rows, n_k] float64."""
    return dequant(weight, ggml_type, n_rows, n_k).astype(np.float64)


def matvec(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int, x: np.ndarray,
           y: np.ndarray | None = None) -> np.ndarray:
    """Args:
        weight: [n_rows, row_bytes] u8 raw GGUF rows (or the flat bytes)
        x: [n_tok, n_k] f32 activations
        y: [n_tok, n_rows] f32 to accumulate into (the residual), or None
    Returns:
        [n_tok, n_rows] f64: x @ W.T (+ y)
    """
    out = linear(np.asarray(x, np.float64).reshape(-1, n_k), dequant_f64(weight, ggml_type, n_rows, n_k))
    return out if y is None else out + np.asarray(y, np.float64)


def matvec_error_bound(weight: np.ndarray, ggml_type: int, n_rows: int, n_k: int, x: np.ndarray,
                       rel: float) -> np.ndarray:
    """[n_tok, n_rows] f64: rel * sum_k |W[r, k] x[c, k]|, the scale of the f32 rounding error of a dot."""
    w = dequant_f64(weight, ggml_type, n_rows, n_k)
    return rel * (np.abs(np.asarray(x, np.float64).reshape(-1, n_k)) @ np.abs(w).T)
