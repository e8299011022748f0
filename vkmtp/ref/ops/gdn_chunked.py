"""NumPy oracle of shaders/gdn_chunked.comp: the Gated DeltaNet recurrence evaluated a chunk at a time (WY/UT form).

The same delta rule as vkmtp.ref.ops.gdn.gated_delta_net, rewritten per chunk of C tokens of a sequence (S0 the
state before the chunk, G_t the cumulative log-decay within the chunk):
  delta_t = beta_t (v_t - e^{G_t} S0^T k^_t) - sum_{s<t} beta_t e^{G_t - G_s} (k^_t . k^_s) delta_s
  o_t     = scale (e^{G_t} S0^T q^_t + sum_{s<=t} e^{G_t - G_s} (q^_t . k^_s) delta_s)
  S       = e^{G_last} S0 + sum_s e^{G_last - G_s} k^_s delta_s^T
In exact arithmetic this is the token-by-token recurrence (tests/ops/test_gdn_chunked.py checks both agree to
float64 rounding); in f32 the kernel rounds differently from gdn.comp, which is why prompt chunks only use it.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import sigmoid
from vkmtp.ref.ops.gdn import l2_normalize, sequence_runs, softplus


def chunked_gated_delta_net(seqs: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, b: np.ndarray,
                            alpha: np.ndarray, ssm_a: np.ndarray, dt_bias: np.ndarray, state: np.ndarray,
                            eps: float, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """One step of tokens through the delta rule, `chunk` tokens of a sequence at a time, in float64.

    Arguments as vkmtp.ref.ops.gdn.gated_delta_net (no snapshots). Returns out [n_tok, H_v, D] and the new
    state (copy), both float64; tokens of slots >= n_slots are skipped (their out rows stay zero).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n_tok, h_k, d = q.shape
    h_v = v.shape[1]
    key_head = np.arange(h_v) % h_k
    scale = 1.0 / np.sqrt(d)
    qn = l2_normalize(q.astype(np.float64), eps)[:, key_head]            # [n_tok, H_v, D]
    kn = l2_normalize(k.astype(np.float64), eps)[:, key_head]
    vv = v.astype(np.float64)
    beta = sigmoid(b).astype(np.float64)     # [n_tok, H_v], as the recurrence oracle (and the kernel) rounds it
    g = ssm_a.astype(np.float64)[None, :] * softplus(alpha.astype(np.float64) + dt_bias[None, :])
    state = state.astype(np.float64)
    out = np.zeros(v.shape, np.float64)
    for seq, first, count in sequence_runs(seqs):
        if seq >= state.shape[0]:
            continue
        s = state[seq]                                                    # [H_v, D (j), D (i)]
        for t0 in range(first, first + count, chunk):
            t1 = min(t0 + chunk, first + count)
            kc, qc, vc = kn[t0:t1], qn[t0:t1], vv[t0:t1]                   # [C, H_v, D]
            bc = beta[t0:t1]                                              # [C, H_v]
            gc = np.cumsum(g[t0:t1], axis=0)                              # G_t, [C, H_v]
            decay = np.exp(gc[:, None, :] - gc[None, :, :])               # [t, s, H_v]: e^{G_t - G_s}
            n_c = t1 - t0
            lower = np.tril(np.ones((n_c, n_c)), -1)[:, :, None]          # s < t
            a = bc[:, None, :] * decay * np.einsum("thi,shi->tsh", kc, kc) * lower
            r = bc[:, :, None] * (vc - np.exp(gc)[:, :, None] * np.einsum("hji,thi->thj", s, kc))
            delta = np.zeros_like(r)
            for t in range(n_c):                                          # forward substitution
                delta[t] = r[t] - np.einsum("sh,shj->hj", a[t, :t], delta[:t])
            bmat = decay * np.einsum("thi,shi->tsh", qc, kc) * (lower + np.eye(n_c)[:, :, None])
            o = np.exp(gc)[:, :, None] * np.einsum("hji,thi->thj", s, qc) + np.einsum("tsh,shj->thj", bmat, delta)
            out[t0:t1] = o * scale
            w = np.exp(gc[-1][None, :] - gc)                              # e^{G_last - G_s}, [C, H_v]
            s = np.exp(gc[-1])[:, None, None] * s + np.einsum("shj,shi->hji", delta * w[:, :, None], kc)
        state[seq] = s
    return out, state
