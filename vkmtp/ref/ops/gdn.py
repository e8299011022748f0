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


def gdn_step_log(seqs: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, b: np.ndarray,
                 alpha: np.ndarray, ssm_a: np.ndarray, dt_bias: np.ndarray, state: np.ndarray, eps: float,
                 n_log: int) -> tuple[np.ndarray, np.ndarray]:
    """gdn.comp with LOG_STEPS: outputs as `gated_delta_net`, the live state unchanged, and the step log.

    Returns:
        out [n_tok, H_v, D_v]; log [n_slots, n_log, H_v, 1 + 2D] f32: per token m of a sequence the decay
        exp(g), delta [D_v] and the L2-normed key [D] its update used (entries of absent tokens are zero).
    """
    n_tok, h_k, d = q.shape
    h_v = v.shape[1]
    key_head = np.arange(h_v) % h_k
    kn = l2_normalize(k.astype(np.float64), eps)[:, key_head]
    beta = sigmoid(b)
    g = ssm_a.astype(np.float64)[None, :] * softplus(alpha.astype(np.float64) + dt_bias[None, :])
    out, _, _ = gated_delta_net(seqs, q, k, v, b, alpha, ssm_a, dt_bias, state, eps)
    log = np.zeros((state.shape[0], n_log, h_v, 1 + 2 * d), np.float32)
    for seq, first, count in sequence_runs(seqs):
        if seq >= state.shape[0]:
            continue
        if count > n_log:
            raise ValueError(f"sequence of {count} tokens in a step log of {n_log} entries")
        s = state[seq].astype(np.float64)
        for m in range(count):
            t = first + m
            decay = np.exp(g[t])
            s = s * decay[:, None, None]
            delta = (v[t].astype(np.float64) - np.einsum("hji,hi->hj", s, kn[t])) * beta[t][:, None]
            s = (s + delta[:, :, None] * kn[t][:, None, :]).astype(np.float32).astype(np.float64)
            log[seq, m, :, 0] = decay
            log[seq, m, :, 1: 1 + d] = delta
            log[seq, m, :, 1 + d:] = kn[t]
    return out, log


def gdn_replay(select: np.ndarray, log: np.ndarray, state: np.ndarray) -> np.ndarray:
    """NumPy oracle of shaders/gdn_replay.comp: state of slot s <- its state after logged tokens 0..m.

    Args:
        select: [n_sel, 2] uint32 {seq slot, m}; m is clamped to n_log - 1, slots >= n_slots are skipped.
        log: [n_groups, n_slots, n_log, H_v, 1 + 2D] f32 (gdn_step_log's, one per layer).
        state: [n_groups, n_slots, H_v, D (j), D (i)] f32.
    Returns:
        the new states (copy). Each update is s * decay rounded to f32, then k^_i * delta_j + s rounded once
        (the kernel's fma).
    """
    state = state.copy()
    n_slots, n_log = log.shape[1], log.shape[2]
    d = state.shape[-1]
    for seq, m in np.asarray(select, np.uint64).reshape(-1, 2).tolist():
        if seq >= n_slots:
            continue
        s = state[:, seq].astype(np.float32)
        for t in range(min(m, n_log - 1) + 1):
            entry = log[:, seq, t]                               # [G, H_v, 1 + 2D]
            s = (s * entry[:, :, 0, None, None]).astype(np.float32)
            upd = entry[:, :, 1: 1 + d, None].astype(np.float64) * entry[:, :, None, 1 + d:].astype(np.float64)
            s = (upd + s.astype(np.float64)).astype(np.float32)
        state[:, seq] = s
    return state
