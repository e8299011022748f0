"""NumPy reference of shaders/rms_norm.comp (vkmtp.ops.rms_norm.RmsNorm), qwen35-mtp.md §3.1."""

from __future__ import annotations

import numpy as np


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x) in float64, stable for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    return x * np.exp(-np.logaddexp(0.0, -x))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float = 1e-6, residual: np.ndarray | None = None,
             gate: np.ndarray | None = None) -> np.ndarray:
    """RMSNorm over the last axis, computed in float64.

    Args:
        x: [n_tok, n_head, n] (or [n_tok, n]) f32.
        w: [n] weight, shared by all heads and tokens (GGUF value: Qwen's +1 is already in it).
        eps: added to the mean of squares.
        residual: same shape as x; the kernel writes x + residual (an f32 add) back to x and norms the sum.
        gate: same shape as x; the result is multiplied by silu(gate) (GDN output norm).
    Returns:
        y, same shape as x, f32.
    """
    xs = np.asarray(x, dtype=np.float32)
    if residual is not None:
        xs = xs + np.asarray(residual, dtype=np.float32)
    x64 = xs.astype(np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps) * np.asarray(w, dtype=np.float64)
    if gate is not None:
        y = y * silu(gate)
    return y.astype(np.float32)
