"""NumPy reference of shaders/rope.comp (vkmtp.ops.rope.Rope): per-head RMSNorm + partial NEOX RoPE.

Qwen3.5's IMROPE with text positions (pos, pos, pos, 0) and sections covering all rotary pairs is exactly
this rotation (qwen35-mtp.md §3.3 step 4). Angles in float64: theta_j = pos * base^(-2j/n_rot).
"""

from __future__ import annotations

import numpy as np


def rope(records: np.ndarray, x: np.ndarray, n_rot: int, freq_base: float,
         norm_weight: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """Rotate dims [0, n_rot) of every head, pairing j with j + n_rot/2; the other dims pass through.

    Args:
        records: [n_tok, 4] uint32 {token_id, pos, seq, flags}; pos is the rotation position.
        x: [n_tok, n_head, head_dim] f32.
        norm_weight: [head_dim]; when given each head is RMS-normed (weight shared by heads) first.
    Returns:
        [n_tok, n_head, head_dim] f32.
    """
    v = np.asarray(x, dtype=np.float64)
    if norm_weight is not None:
        v = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps) * np.asarray(norm_weight, np.float64)
    half = n_rot // 2
    pos = records[:, 1].astype(np.float64)
    inv_freq = float(freq_base) ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    theta = pos[:, None] * inv_freq[None, :]                              # [n_tok, n_rot/2]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = v.copy()
    x0, x1 = v[..., :half], v[..., half: 2 * half]
    out[..., :half] = x0 * cos - x1 * sin
    out[..., half: 2 * half] = x0 * sin + x1 * cos
    return out.astype(np.float32)
