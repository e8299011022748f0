"""Gated full attention of Qwen3.5 for the NumPy model reference, composed from the op oracles.

Packed q+gate projection, per-head q/k RMSNorm and partial IMROPE (vkmtp.ref.ops.rope), causal softmax
attention over the KV cache with grouped KV heads and the sigmoid output gate (vkmtp.ref.ops.flash_attn).
The math: docs/REFERENCE.md.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import AttentionTensors
from vkmtp.ref.ops.flash_attn import flash_attn
from vkmtp.ref.ops.matvec import linear
from vkmtp.ref.ops.rope import rope_at
from vkmtp.ref.state import KVCache


def split_q_gate(qg: np.ndarray, n_head: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Unpack attn_q's output, per head [q_h (head_dim) | gate_h (head_dim)].

    Args:
        qg: [n_tokens, 2 * n_head * head_dim].
    Returns:
        q, gate: [n_tokens, n_head, head_dim] each.
    """
    per_head = qg.reshape(qg.shape[0], n_head, 2, head_dim)
    return per_head[:, :, 0, :], per_head[:, :, 1, :]


def gated_attention(
    a: np.ndarray,
    names: AttentionTensors,
    weights: Mapping[str, np.ndarray],
    cache: KVCache,
    positions: np.ndarray,
    cfg: ModelConfig,
) -> np.ndarray:
    """One full-attention mixer over n_tokens new tokens; appends their k/v to `cache`.

    Args:
        a: [n_tokens, n_embd] normed block input.
        positions: [n_tokens] rotation positions; the tokens continue the cache (pos = cache.n_past + i).
    Returns:
        [n_tokens, n_embd] mixer output (before the residual add), in a's dtype.
    """
    n_tokens, dtype = a.shape[0], a.dtype
    h, h_kv, d = cfg.n_head, cfg.n_head_kv, cfg.head_dim
    rope_args = (cfg.n_rot, cfg.rope_freq_base)
    rope_kw = dict(eps=cfg.rms_eps, sections=cfg.rope_sections, dtype=dtype)
    q, gate = split_q_gate(linear(a, weights[names.q.name]), h, d)
    q = rope_at(positions, q, *rope_args, weights[names.q_norm.name], **rope_kw)  # [n_tokens, h, d]
    k = linear(a, weights[names.k.name]).reshape(n_tokens, h_kv, d)
    k = rope_at(positions, k, *rope_args, weights[names.k_norm.name], **rope_kw)
    v = linear(a, weights[names.v.name]).reshape(n_tokens, h_kv, d)
    records = np.zeros((n_tokens, 4), np.int64)  # {token, pos, seq, flags}: one sequence in slot 0
    records[:, 1] = cache.n_past + np.arange(n_tokens)
    cache.append(k, v)
    o = flash_attn(records, q, cache.k, cache.v, cache.n_past, gate, dtype=dtype)  # [n_tokens, h, d]
    return linear(o.reshape(n_tokens, h * d), weights[names.output.name])
