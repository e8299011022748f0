"""NumPy references of shaders/elementwise.comp (vkmtp.ops.elementwise): add, SwiGLU, sigmoid-gated add.

Also the one `sigmoid` and `silu` of vkmtp.ref (float64, stable for large |x|), used by every other oracle.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64, as exp(-log(1 + exp(-x))) so that no exp overflows."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, np.float64)))


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) in float64."""
    x = np.asarray(x, np.float64)
    return x * sigmoid(x)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n_tok, n] f32 + [n_tok, n] f32 (exact in f32)."""
    return np.asarray(a, np.float32) + np.asarray(b, np.float32)


def swiglu(gate: np.ndarray, up: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
    """silu(gate) * up, [n_tok, n], computed in float64 and returned as `dtype`."""
    return (silu(gate) * np.asarray(up, np.float64)).astype(dtype)


def sigmoid_scale_add(x: np.ndarray, s: np.ndarray, y: np.ndarray,
                      dtype: np.dtype = np.float32) -> np.ndarray:
    """y + sigmoid(s_t) * x_t for x, y [n_tok, n] and s [n_tok]; returns the new y as `dtype`."""
    gate = sigmoid(s)[:, None]
    return (np.asarray(y, np.float64) + gate * np.asarray(x, np.float64)).astype(dtype)


def softmax(x: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
    """Softmax over the last axis, in float64; returns `dtype` (the flash-attention and router oracles' one
    softmax; the GPU computes it inside those kernels)."""
    x64 = np.asarray(x, np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)
