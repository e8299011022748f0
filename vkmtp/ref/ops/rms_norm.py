"""NumPy reference of shaders/rms_norm.comp (vkmtp.ops.rms_norm.RmsNorm), the one RMSNorm of vkmtp.ref.

GGUF norm weights already hold HF's `+1` (Qwen's zero-centred norms), so every RMSNorm is plain
`x / sqrt(mean(x^2) + eps) * w` (docs/REFERENCE.md).
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import silu


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float = 1e-6, residual: np.ndarray | None = None,
             gate: np.ndarray | None = None, dtype: np.dtype = np.float32) -> np.ndarray:
    """RMSNorm over the last axis, computed in float64.

    Args:
        x: [n_tok, n_head, n] (or [n_tok, n]) activations, read as `dtype`.
        w: [n] weight, shared by all heads and tokens (GGUF value: Qwen's +1 is already in it).
        eps: added to the mean of squares.
        residual: same shape as x; the kernel writes x + residual (an add in `dtype`) back to x and norms
            the sum.
        gate: same shape as x; the result is multiplied by silu(gate) (GDN output norm).
        dtype: storage type of the activations: f32 like the kernel; the model reference passes its own.
    Returns:
        y, same shape as x, `dtype`.
    """
    xs = np.asarray(x, dtype=dtype)
    if residual is not None:
        xs = xs + np.asarray(residual, dtype=dtype)
    x64 = xs.astype(np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps) * np.asarray(w, dtype=np.float64)
    if gate is not None:
        y = y * silu(gate)
    return y.astype(dtype)
