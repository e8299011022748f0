"""NumPy reference of shaders/flash_attn.comp, flash_attn_dec.comp + flash_attn_reduce.comp (ops.flash_attn).

Plain causal softmax attention in float64 per query token over the cache rows of its own sequence, grouped
KV heads (query head h reads KV head h // (H / H_kv)), then o *= sigmoid(gate). The one attention
of vkmtp.ref; flash_attn_f16 models the roundings of the prefill kernel's float16 math (F16_MATH).
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


def flash_attn_f16(records: np.ndarray, q: np.ndarray, k_rows: np.ndarray, v_rows: np.ndarray, n_ctx: int,
                   gate: np.ndarray | None = None, scale: float | None = None,
                   dtype: np.dtype = np.float32) -> np.ndarray:
    """flash_attn with the roundings of the prefill kernel's float16 math (flash_attn.comp's F16_MATH).

    What is rounded to f16: q * scale (computed in f32), every K and V value (exact for f16 caches, Q8_0 values
    rounded), each q * k product and the running sum of a quad's 4 products (an f16 dot), each probability
    (exp in f32, then f16) and each p * v product. What is not: the sum over a head's quads, the softmax max
    and sum, and the P.V accumulation (f32 on the device, float64 here). The kernel takes its probabilities
    relative to the running max of its tiles rather than the row max (the same relative rounding, apart from
    f16 subnormals), and a device may fuse the dot's multiply-adds: the model and the kernel agree to a bound
    well below their common distance from `flash_attn` (tests/ops/test_flash_attn_f16.py measures both).
    """
    n_tok, n_head, head_dim = q.shape
    group = n_head // k_rows.shape[1]
    scale = 1.0 / np.sqrt(head_dim) if scale is None else scale
    qs = (q.astype(np.float32) * np.float32(scale)).astype(np.float16)
    k16, v16 = k_rows.astype(np.float16), v_rows.astype(np.float16)
    out = np.empty((n_tok, n_head, head_dim), dtype=np.float64)
    for t in range(n_tok):
        pos, seq = int(records[t, 1]), int(records[t, 2])
        rows = slice(seq * n_ctx, seq * n_ctx + pos + 1)
        k = np.repeat(k16[rows], group, axis=1)                            # [n_kv, n_head, head_dim] f16
        v = np.repeat(v16[rows], group, axis=1)
        prod = (qs[t][None] * k).reshape(k.shape[0], n_head, head_dim // 4, 4)   # f16 products
        quad = ((prod[..., 0] + prod[..., 1]) + prod[..., 2]) + prod[..., 3]      # f16 sums
        scores = quad.astype(np.float64).sum(axis=-1)                      # [n_kv, n_head]
        p = np.exp(scores - scores.max(axis=0)).astype(np.float32).astype(np.float16)
        pv = (p[:, :, None] * v).astype(np.float64)                        # f16 products
        out[t] = pv.sum(axis=0) / p.astype(np.float64).sum(axis=0)[:, None]
    if gate is not None:
        out = out * sigmoid(gate)
    return out.astype(dtype)
