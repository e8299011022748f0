"""Normalisations of the Qwen3.5 forward (qwen35-mtp.md §3.1), as llama.cpp evaluates them.

GGUF norm weights already contain HF's `+1`, so every RMSNorm here is the plain `x / rms(x) * w`. The mean of
squares is accumulated in float64 and the result cast back to the input dtype.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis.

    Args:
        x: [..., n] activations.
        weight: [n] scale (GGUF value, +1 already baked in where HF uses a zero-centred weight).
        eps: added to the mean of squares (attention.layer_norm_rms_epsilon).
    Returns:
        [..., n] in x's dtype.
    """
    x64 = x.astype(np.float64)
    inv_rms = 1.0 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    return (x64 * inv_rms).astype(x.dtype) * weight.astype(x.dtype)


def rms_norm_heads(x: np.ndarray, weight: np.ndarray, n_head: int, eps: float) -> np.ndarray:
    """Per-head RMSNorm with one weight shared by all heads (attention q/k norm, GDN output norm).

    Args:
        x: [n_tokens, n_head * head_dim].
        weight: [head_dim].
    Returns:
        [n_tokens, n_head, head_dim].
    """
    n_tokens = x.shape[0]
    return rms_norm(x.reshape(n_tokens, n_head, -1), weight, eps)


def l2_norm(x: np.ndarray, eps: float) -> np.ndarray:
    """llama.cpp's `ggml_l2_norm`: `x / max(||x||_2, eps)` over the last axis (GDN q and k heads).

    HF divides by `sqrt(||x||^2 + 1e-6)` instead; the two differ only for vectors with a tiny norm.
    """
    x64 = x.astype(np.float64)
    norm = np.sqrt(np.sum(x64 * x64, axis=-1, keepdims=True))
    return (x64 / np.maximum(norm, eps)).astype(x.dtype)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), stable for large |x|."""
    return x * sigmoid(x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def gated_rms_norm(o: np.ndarray, z: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """GDN output norm: `RMSNorm(o_h; w) * silu(z_h)` per value head (weight has no +1, §3.4 step 8).

    Args:
        o: [n_tokens, H_v, d_v] delta-rule output.
        z: [n_tokens, H_v, d_v] gate projection.
        weight: [d_v] ssm_norm.
    Returns:
        [n_tokens, H_v, d_v].
    """
    return rms_norm(o, weight, eps) * silu(z)
