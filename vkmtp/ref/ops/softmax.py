"""NumPy reference of shaders/softmax.comp (vkmtp.ops.softmax.Softmax)."""

from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
    """Softmax over the last axis of x [n_rows, n], in float64; returns `dtype`."""
    x64 = np.asarray(x, np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)
