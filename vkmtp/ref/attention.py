"""Gated full attention of Qwen3.5 (qwen35-mtp.md §3.3): packed q+gate, q/k RMSNorm, partial IMROPE, GQA,
causal softmax attention over the KV cache, sigmoid output gate.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import AttentionTensors
from vkmtp.ref.norm import rms_norm_heads, sigmoid
from vkmtp.ref.rope import apply_rope_neox, rope_angles
from vkmtp.ref.state import KVCache


def linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """y = x W^T, one matrix-vector product per row.

    Row by row so that a token's result does not depend on the other rows in the batch (a batched GEMM may
    sum in another order): prefill, decode and speculative verify batches then agree bit for bit.
    Args:
        x: [n_tokens, n_in].
        weight: [n_out, n_in] (GGUF ne {n_in, n_out}).
    Returns:
        [n_tokens, n_out].
    """
    out = np.empty((x.shape[0], weight.shape[0]), dtype=np.result_type(x, weight))
    for t in range(x.shape[0]):
        out[t] = weight @ x[t]
    return out


def split_q_gate(qg: np.ndarray, n_head: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Unpack attn_q's output, per head [q_h (head_dim) | gate_h (head_dim)].

    Args:
        qg: [n_tokens, 2 * n_head * head_dim].
    Returns:
        q [n_tokens, n_head, head_dim], gate [n_tokens, n_head * head_dim].
    """
    n_tokens = qg.shape[0]
    per_head = qg.reshape(n_tokens, n_head, 2, head_dim)
    return per_head[:, :, 0, :].copy(), per_head[:, :, 1, :].reshape(n_tokens, n_head * head_dim)


def attention_core(q: np.ndarray, k: np.ndarray, v: np.ndarray, first_pos: int) -> np.ndarray:
    """Causal softmax attention with grouped KV heads (query head h reads KV head h // (n_head/n_head_kv)).

    Each query row is evaluated on its own (batch invariance, see `linear`).
    Args:
        q: [n_tokens, n_head, head_dim] queries at positions first_pos .. first_pos+n_tokens-1.
        k, v: [n_kv, n_head_kv, head_dim] cache rows for positions 0 .. n_kv-1 (includes the new tokens).
        first_pos: position of q[0].
    Returns:
        [n_tokens, n_head * head_dim]; scale 1/sqrt(head_dim), softmax in float64.
    """
    n_tokens, n_head, head_dim = q.shape
    n_head_kv = k.shape[1]
    kv_head = np.arange(n_head) // (n_head // n_head_kv)
    k64 = k.astype(np.float64)[:, kv_head, :]                            # [n_kv, n_head, head_dim]
    v64 = v.astype(np.float64)[:, kv_head, :]
    out = np.empty((n_tokens, n_head, head_dim), dtype=np.float64)
    for t in range(n_tokens):
        n_visible = first_pos + t + 1
        scores = np.einsum("hd,shd->hs", q[t].astype(np.float64), k64[:n_visible]) / np.sqrt(head_dim)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)                        # [n_head, n_visible]
        out[t] = np.einsum("hs,shd->hd", probs, v64[:n_visible])
    return out.reshape(n_tokens, n_head * head_dim).astype(q.dtype)


def gated_attention(a: np.ndarray, names: AttentionTensors, weights: Mapping[str, np.ndarray],
                    cache: KVCache, pos4: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """One full-attention mixer over n_tokens new tokens; appends their k/v to `cache`.

    Args:
        a: [n_tokens, n_embd] normed block input.
        pos4: [n_tokens, 4] IMROPE positions; the tokens must continue the cache (pos = cache.n_past + i).
    Returns:
        [n_tokens, n_embd] mixer output (before the residual add).
    """
    n_tokens = a.shape[0]
    h, h_kv, d = cfg.n_head, cfg.n_head_kv, cfg.head_dim
    q, gate = split_q_gate(linear(a, weights[names.q.name]), h, d)
    q = rms_norm_heads(q.reshape(n_tokens, h * d), weights[names.q_norm.name], h, cfg.rms_eps)
    k = rms_norm_heads(linear(a, weights[names.k.name]), weights[names.k_norm.name], h_kv, cfg.rms_eps)
    v = linear(a, weights[names.v.name]).reshape(n_tokens, h_kv, d)
    theta = rope_angles(pos4, cfg.n_rot, cfg.rope_freq_base, cfg.rope_sections)
    q = apply_rope_neox(q, theta)
    k = apply_rope_neox(k, theta)
    first_pos = cache.n_past
    cache.append(k, v)
    o = attention_core(q, cache.k, cache.v, first_pos)                   # [n_tokens, n_head * head_dim]
    o = o * sigmoid(gate)
    return linear(o, weights[names.output.name])
