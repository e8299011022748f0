"""NumPy reference of shaders/rope.comp (vkmtp.ops.rope.Rope): per-head RMSNorm + partial NEOX RoPE.

The one rope rotation of vkmtp.ref: rotary pair j (dims j and j + n_rot/2 of a head) turns by
theta_j = pos_j * base^(-2j/n_rot), in float64; dims [n_rot, head_dim) pass through. Qwen3.5's IMROPE gives
each pair the position component its sector selects (docs/REFERENCE.md); for text the components are
(pos, pos, pos, 0), so with sections that cover every pair (as Qwen's do, and as the kernel requires) every
pair turns with pos.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.rms_norm import rms_norm


def imrope_components(n_rot: int, sections: tuple[int, int, int, int]) -> np.ndarray:
    """For each rotary pair, the index (0=t, 1=h, 2=w, 3=e) of the position component it rotates with.

    Sector s = j mod sum(sections); pair -> h if s%3==1 and s < 3*sec[1], w if s%3==2 and s < 3*sec[2],
    t if s%3==0 and s < 3*sec[0], else e.  Example, sections (3, 3, 2, 0), n_rot 16:
    pairs 0..7 -> t h w t h w t h.
    """
    n_pairs = n_rot // 2
    sect_total = sum(sections) or n_pairs
    comp = np.full(n_pairs, 3, dtype=np.int64)
    for j in range(n_pairs):
        s = j % sect_total
        if s % 3 == 1 and s < 3 * sections[1]:
            comp[j] = 1
        elif s % 3 == 2 and s < 3 * sections[2]:
            comp[j] = 2
        elif s % 3 == 0 and s < 3 * sections[0]:
            comp[j] = 0
    return comp


def rope_angles(pos: np.ndarray, n_rot: int, freq_base: float,
                sections: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Angles theta[t, j] = pos_j(t) * base^(-2j/n_rot), float64 [n_tok, n_rot/2].

    pos: [n_tok] text positions. sections: IMROPE sections (pairs that select the e component, position 0
    for text, do not turn); None: every pair turns with pos (the kernel).
    """
    half = n_rot // 2
    pos_pairs = np.repeat(np.asarray(pos, np.float64).reshape(-1, 1), half, axis=1)   # [n_tok, n_rot/2]
    if sections is not None:
        pos_pairs[:, imrope_components(n_rot, sections) == 3] = 0.0
    inv_freq = float(freq_base) ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    return pos_pairs * inv_freq[None, :]


def rope_at(pos: np.ndarray, x: np.ndarray, n_rot: int, freq_base: float,
            norm_weight: np.ndarray | None = None, eps: float = 1e-6,
            sections: tuple[int, int, int, int] | None = None, dtype: np.dtype = np.float32) -> np.ndarray:
    """`rope` with the positions given directly: pos [n_tok]; x [n_tok, n_head, head_dim] -> `dtype`."""
    v = np.asarray(x, dtype=np.float64)
    if norm_weight is not None:
        v = rms_norm(v, norm_weight, eps, dtype=np.float64)
    theta = rope_angles(pos, n_rot, freq_base, sections)
    half = theta.shape[1]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = v.copy()
    x0, x1 = v[..., :half], v[..., half: 2 * half]
    out[..., :half] = x0 * cos - x1 * sin
    out[..., half: 2 * half] = x0 * sin + x1 * cos
    return out.astype(dtype)


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
    return rope_at(records[:, 1], x, n_rot, freq_base, norm_weight, eps)
