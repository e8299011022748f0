"""Partial NEOX RoPE with Qwen3.5's interleaved multi-section positions (IMROPE), qwen35-mtp.md §3.3 step 4.

Each token carries four position components (t, h, w, e). Rotary pair j (dims j and j + n_rot/2 of a head)
takes its position from one component, chosen by j's sector and `rope.dimension_sections`. For text
llama.cpp sets t = h = w = pos and e = 0; with sections that cover every pair (as Qwen's do) this is plain
NEOX RoPE on the first n_rot dims of each head. Dims [n_rot, head_dim) pass through.
"""

from __future__ import annotations

import numpy as np


def text_positions(positions: np.ndarray) -> np.ndarray:
    """[n_tokens] int positions -> [n_tokens, 4] (t, h, w, e) = (p, p, p, 0), llama.cpp's text convention."""
    positions = np.asarray(positions, dtype=np.int64)
    pos4 = np.zeros((positions.shape[0], 4), dtype=np.int64)
    pos4[:, :3] = positions[:, None]
    return pos4


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


def rope_angles(pos4: np.ndarray, n_rot: int, freq_base: float,
                sections: tuple[int, int, int, int]) -> np.ndarray:
    """Rotation angles theta[t, j] = pos4[t, comp(j)] * base^(-2j/n_rot), float64 [n_tokens, n_rot/2]."""
    j = np.arange(n_rot // 2, dtype=np.float64)
    inv_freq = freq_base ** (-2.0 * j / n_rot)                         # [n_rot/2]
    comp = imrope_components(n_rot, sections)
    pos = pos4[:, comp].astype(np.float64)                              # [n_tokens, n_rot/2]
    return pos * inv_freq[None, :]


def apply_rope_neox(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate pairs (j, j + n_rot/2) of the first n_rot dims of every head.

    Args:
        x: [n_tokens, n_head, head_dim].
        theta: [n_tokens, n_rot/2] angles (float64).
    Returns:
        [n_tokens, n_head, head_dim] in x's dtype.
    """
    half = theta.shape[1]
    cos = np.cos(theta)[:, None, :]
    sin = np.sin(theta)[:, None, :]
    x0 = x[..., :half].astype(np.float64)
    x1 = x[..., half: 2 * half].astype(np.float64)
    out = x.copy()
    out[..., :half] = x0 * cos - x1 * sin
    out[..., half: 2 * half] = x0 * sin + x1 * cos
    return out
