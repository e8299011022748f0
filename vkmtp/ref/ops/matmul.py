"""NumPy reference of the prefill matmul (vkmtp/ops/matmul.py).

The product is the mat-vec's (y = x W^T, + y) over n_tok columns; only the GPU kernel differs (tiled for many
tokens), so this delegates to vkmtp.ref.ops.matvec: one oracle for both kernels.

`matmul_q8_1` is the reference of the int8 kernel (shaders/matmul_q8.comp): the same product with the
activations first quantized per block of 32 as `quantize_q8_1` does (ggml's quantize_row_q8_1 rounding, scale
kept in f32).
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
    ys = np.asarray(y).reshape(n_tok, n_rows) if accumulate else None
    return matvec(weight, ggml_type, n_rows, k, xs, ys)


def quantize_q8_1(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Activations [n_tok, k] f32 -> (q [n_tok, k] int8, d [n_tok, k / 32] f32), per block of 32:
    d = amax / 127, q = round_half_away(x * (1 / d)) (0 where d == 0), all in f32 as the shader does."""
    xs = np.asarray(x, np.float32).reshape(-1, k // 32, 32)
    amax = np.abs(xs).max(axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / np.where(d == 0, np.float32(1), d)).astype(np.float32)
    t = (xs * inv[:, :, None]).astype(np.float32).astype(np.float64)   # one f32 rounding, as `precise` x * id
    a = np.abs(t)
    q = (np.sign(t) * (np.floor(a) + (a - np.floor(a) >= 0.5))).astype(np.int8)
    return q.reshape(-1, k), d


def dequantize_q8_1(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """(q, d) of `quantize_q8_1` -> [n_tok, k] float64: the activations the int8 kernel multiplies."""
    return (q.reshape(-1, k // 32, 32).astype(np.float64) * d[:, :, None].astype(np.float64)).reshape(-1, k)


def matmul_q8_1(weight: np.ndarray, ggml_type: int, n_rows: int, k: int, x: np.ndarray, y: np.ndarray | None,
                n_tok: int, accumulate: bool = False) -> np.ndarray:
    """Y[n][m] = sum_k W[m][k] Xq[n][k] (+ Y), Xq = the Q8_1-quantized activations; [n_tok, n_rows] float64."""
    q, d = quantize_q8_1(np.asarray(x, np.float32).reshape(n_tok, k), k)
    ys = np.asarray(y).reshape(n_tok, n_rows) if accumulate else None
    return matvec(weight, ggml_type, n_rows, k, dequantize_q8_1(q, d, k), ys)


def matmul_error_bound(weight: np.ndarray, ggml_type: int, n_rows: int, k: int, x: np.ndarray, n_tok: int,
                       rel: float) -> np.ndarray:
    """[n_tok, n_rows] f64: rel * sum_k |W[m][k] X[n][k]|, the scale of f32 rounding error of each output."""
    return matvec_error_bound(weight, ggml_type, n_rows, k, np.asarray(x).reshape(n_tok, k), rel)
