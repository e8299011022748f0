"""NumPy oracle of shaders/conv1d.comp: causal depthwise conv1d + SiLU with per-sequence conv states.

The one conv1d of vkmtp.ref (docs/REFERENCE.md): out_t[c] = silu(sum_k W[c, k] * u_{t-(K_c-1)+k}[c]), the
previous K_c-1 raw inputs of each sequence carried in its state slot. Computed in float64.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import silu
from vkmtp.ref.ops.gdn import sequence_runs


def conv1d(seqs: np.ndarray, u: np.ndarray, weight: np.ndarray, state: np.ndarray,
           snapshots: np.ndarray | None = None, dtype: np.dtype = np.float32
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One step of tokens through the conv.

    Args:
        seqs: [n_tok] sequence slot per token (tokens of a sequence contiguous, in order).
        u: [n_tok, n_ch] raw attn_qkv projection.
        weight: [n_ch, K_c] ssm_conv1d (weight[:, K_c-1] multiplies the current token).
        state: [n_slots, K_c - 1, n_ch] last raw inputs of each slot, oldest first.
        snapshots: [n_slots, n_snap, K_c - 1, n_ch] or None; snapshot m of a slot receives the state after
            the sequence's token m of this step (m < n_snap); other entries are returned unchanged.
        dtype: type of `out` (f32: the kernel).
    Tokens whose slot is >= n_slots are skipped (out rows stay zero here; the kernel leaves them unwritten).
    Returns:
        out [n_tok, n_ch], new state (copy), new snapshots (copy or None).
    """
    n_tok, n_ch = u.shape
    k_c = weight.shape[1]
    state = state.copy()
    snaps = None if snapshots is None else snapshots.copy()
    n_snap = 0 if snaps is None else snaps.shape[1]
    out = np.zeros((n_tok, n_ch), dtype)
    w = weight.astype(np.float64)
    for seq, first, count in sequence_runs(seqs):
        if seq >= state.shape[0]:
            continue
        x = np.concatenate([state[seq], u[first: first + count]]).astype(np.float64)   # [K_c-1+count, n_ch]
        for m in range(count):
            out[first + m] = silu(np.sum(w.T * x[m: m + k_c], axis=0))
            if m < n_snap:
                snaps[seq, m] = x[m + 1: m + k_c]
        state[seq] = x[count: count + k_c - 1]
    return out, state, snaps
