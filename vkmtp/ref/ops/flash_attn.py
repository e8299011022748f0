"""NumPy reference of shaders/flash_attn.comp, flash_attn_dec.comp + flash_attn_reduce.comp (ops.flash_attn).

Plain causal softmax attention in float64 per query token over the cache rows of its own sequence, grouped
KV heads (query head h reads KV head h // (H / H_kv)), then o *= sigmoid(gate). The one attention
of vkmtp.ref.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import sigmoid, softmax


def flash_attn(records: np.ndarray, q: np.ndarray, k_rows: np.ndarray, v_rows: np.ndarray, n_ctx: int,
               gate: np.ndarray | None = None, scale: float | None = None,
               dtype: np.dtype = np.float32) -> np.ndarray:
    """Attention of each token t over cache rows seq_t * n_ctx + [0, pos_t].

    Args:
        records: [n_tok, 4] uint32 {token_id, pos, seq, flags}.
        q: [n_tok, n_head, head_dim] f32.
        k_rows, v_rows: [n_slots * n_ctx, n_head_kv, head_dim] f32 cache contents (decoded f16 / Q8_0).
        gate: [n_tok, n_head, head_dim] or None.
        scale: None for 1 / sqrt(head_dim).
        dtype: type of the result (f32: the kernel).
    Returns:
        [n_tok, n_head, head_dim] `dtype`.
    """
    n_tok, n_head, head_dim = q.shape
    group = n_head // k_rows.shape[1]
    scale = 1.0 / np.sqrt(head_dim) if scale is None else scale
    out = np.empty((n_tok, n_head, head_dim), dtype=np.float64)
    for t in range(n_tok):
        pos, seq = int(records[t, 1]), int(records[t, 2])
        rows = slice(seq * n_ctx, seq * n_ctx + pos + 1)
        k = np.repeat(k_rows[rows].astype(np.float64), group, axis=1)     # [n_kv, n_head, head_dim]
        v = np.repeat(v_rows[rows].astype(np.float64), group, axis=1)
        probs = softmax(np.einsum("hd,shd->hs", q[t].astype(np.float64), k) * scale, dtype=np.float64)
        out[t] = np.einsum("hs,shd->hd", probs, v)
    if gate is not None:
        out = out * sigmoid(gate)
    return out.astype(dtype)
