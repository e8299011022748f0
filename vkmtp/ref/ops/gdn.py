"""NumPy oracle of shaders/gdn.comp: the Gated DeltaNet recurrence with fused gates and q/k L2 norm.

The one delta rule of vkmtp.ref (docs/REFERENCE.md), evaluated token by token like llama.cpp's
GATED_DELTA_NET op, over a step of tokens from several sequences, each continuing from its own state slot.
Computed in float64; states are stored back as `dtype` (f32, as the GPU kernel keeps them) after every
token.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import sigmoid

SOFTPLUS_THRESHOLD = 20.0   # ggml and PyTorch: softplus(x) = x above this


def sequence_runs(seqs: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal sequence slots in a step: [(seq, first token, n_tokens), ...] in token order.

    Example: seqs [2, 2, 0, 5, 5, 5] -> [(2, 0, 2), (0, 2, 1), (5, 3, 3)].
    """
    runs: list[tuple[int, int, int]] = []
    for t, s in enumerate(np.asarray(seqs).tolist()):
        if runs and runs[-1][0] == s:
            runs[-1] = (s, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((s, t, 1))
    return runs


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), and x itself above SOFTPLUS_THRESHOLD."""
    safe = np.minimum(x, SOFTPLUS_THRESHOLD)
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(safe)))


def l2_normalize(x: np.ndarray, eps: float) -> np.ndarray:
    """x / max(||x||, eps) over the last axis (ggml l2_norm)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, eps)


def gated_delta_net(seqs: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, b: np.ndarray,
                    alpha: np.ndarray, ssm_a: np.ndarray, dt_bias: np.ndarray, state: np.ndarray,
                    eps: float, snapshots: np.ndarray | None = None, dtype: np.dtype = np.float32
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One step of tokens through the delta rule.

    Per value head h (key head h % H_k) and token: S <- exp(g) S;  S <- S + beta (v - S k) k^T;
    o = S q / sqrt(D), with beta = sigmoid(b), g = ssm_a * softplus(alpha + dt_bias) and q, k L2-normed.
    Args:
        seqs: [n_tok] sequence slot per token (tokens of a sequence contiguous, in order).
        q, k: [n_tok, H_k, D] conv outputs (not yet L2-normalised).  v: [n_tok, H_v, D_v].
        b, alpha: [n_tok, H_v] raw beta / alpha projections.  ssm_a, dt_bias: [H_v].
        state: [n_slots, H_v, D_v (value j), D (key i)] live states.
        snapshots: [n_slots, n_snap, H_v, D_v, D] or None; snapshot m of a slot receives the state after
            the sequence's token m of this step (m < n_snap); other entries are returned unchanged.
        dtype: the type states are rounded to after every token and `out` is returned in (f32: the kernel).
    Tokens whose slot is >= n_slots are skipped (out rows stay zero here; the kernel leaves them unwritten).
    Returns:
        out [n_tok, H_v, D_v], new state (copy), new snapshots (copy or None).
    """
    n_tok, h_k, d = q.shape
    h_v = v.shape[1]
    key_head = np.arange(h_v) % h_k
    scale = 1.0 / np.sqrt(d)
    qn = l2_normalize(q.astype(np.float64), eps)[:, key_head]            # [n_tok, H_v, D]
    kn = l2_normalize(k.astype(np.float64), eps)[:, key_head]
    beta = sigmoid(b)                                                     # [n_tok, H_v]
    g = ssm_a.astype(np.float64)[None, :] * softplus(alpha.astype(np.float64) + dt_bias[None, :])
    state = state.copy()
    snaps = None if snapshots is None else snapshots.copy()
    n_snap = 0 if snaps is None else snaps.shape[1]
    out = np.zeros(v.shape, dtype)
    for seq, first, count in sequence_runs(seqs):
        if seq >= state.shape[0]:
            continue   # the kernel skips tokens of slots it does not have
        s = state[seq].astype(np.float64)                                  # [H_v, D(j), D(i)]
        for m in range(count):
            t = first + m
            s = s * np.exp(g[t])[:, None, None]
            kv_mem = np.einsum("hji,hi->hj", s, kn[t])                     # [H_v, D]
            delta = (v[t].astype(np.float64) - kv_mem) * beta[t][:, None]
            s = s + delta[:, :, None] * kn[t][:, None, :]
            out[t] = np.einsum("hji,hi->hj", s, qn[t]) * scale
            s = s.astype(dtype).astype(np.float64)
            if m < n_snap:
                snaps[seq, m] = s
        state[seq] = s
    return out, state, snaps
