"""NumPy reference of shaders/gumbel.comp (vkmtp.ops.gumbel.GumbelNoise), in f32 as the shader computes."""

from __future__ import annotations

import numpy as np

from vkmtp.sampling import gumbel_uniform


def gumbel_noise(x: np.ndarray, params: np.ndarray, draft_index: int) -> np.ndarray:
    """x [n_rows, n_cols] f32; params [n_rows, 4] uint32 {key, pos, inv_T bits, on}. Returns the new x."""
    out = np.array(x, dtype=np.float32)
    for r, (key, pos, inv_t_bits, on) in enumerate(np.asarray(params, np.uint32)):
        if not on:
            continue
        inv_t = np.array([inv_t_bits], np.uint32).view(np.float32)[0]
        u = gumbel_uniform(int(key), int(pos) + draft_index, np.arange(out.shape[1])).astype(np.float32)
        out[r] = out[r] * inv_t - np.log(-np.log(u))
    return out
