"""Gated DeltaNet mixer of Qwen3.5 (qwen35-mtp.md §3.4), evaluated token by token like llama.cpp's fused
GATED_DELTA_NET op: causal depthwise conv + SiLU, L2-normed q/k, decay and beta gates, delta rule, gated
RMSNorm. V-side tensors are in GGUF's tiled head order: value head h reads key head h % H_k.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import DeltaNetTensors
from vkmtp.ref.attention import linear
from vkmtp.ref.norm import gated_rms_norm, l2_norm, sigmoid, silu
from vkmtp.ref.state import DeltaNetState

SOFTPLUS_THRESHOLD = 20.0   # ggml and PyTorch: softplus(x) = x above this


def softplus(x: np.ndarray) -> np.ndarray:
    safe = np.minimum(x, SOFTPLUS_THRESHOLD)
    return np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(safe)))


def causal_conv1d(u: np.ndarray, conv_state: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depthwise causal conv over the sequence, continuing from `conv_state` (no activation, no bias).

    out[t, c] = sum_k weight[c, k] * x[t + k, c] with x = [conv_state; u]; weight[c, K_c-1] multiplies the
    current token.
    Args:
        u: [n_tokens, conv_dim] raw attn_qkv output.
        conv_state: [K_c - 1, conv_dim] previous raw inputs, oldest first.
        weight: [conv_dim, K_c] ssm_conv1d.
    Returns:
        out [n_tokens, conv_dim], window [K_c - 1 + n_tokens, conv_dim] (the state after token t is
        window[t + 1 : t + K_c]).
    """
    n_tokens = u.shape[0]
    k_c = weight.shape[1]
    window = np.concatenate([conv_state.astype(u.dtype), u])
    out = np.zeros_like(u)
    for k in range(k_c):
        out += window[k: k + n_tokens] * weight[:, k][None, :]
    return out, window


def delta_net_gates(b: np.ndarray, alpha: np.ndarray, ssm_a: np.ndarray,
                    dt_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """beta = sigmoid(b); g = ssm_a * softplus(alpha + dt_bias) (log-decay, <= 0).

    b, alpha: [n_tokens, H_v]; ssm_a, dt_bias: [H_v]. Returns beta, g [n_tokens, H_v].
    """
    return sigmoid(b), ssm_a[None, :] * softplus(alpha + dt_bias[None, :])


def gated_delta_rule(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, beta: np.ndarray,
                     ssm: np.ndarray, keep_steps: int = 0) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The delta-rule recurrence, per value head h with key head h % H_k (tiled broadcast).

    For each token: S <- exp(g) S;  S <- S + k (x) beta (v - S^T k);  o = S^T q / sqrt(d_k).
    Computed in float64 per token, stored back in ssm's dtype after every token.
    Args:
        q, k: [n_tokens, H_k, d_k] L2-normed.  v: [n_tokens, H_v, d_v].  g, beta: [n_tokens, H_v].
        ssm: [H_v, d_v, d_k] state (S^T per head).
        keep_steps: also return the states after each of the last `keep_steps` tokens.
    Returns:
        o [n_tokens, H_v, d_v], final state [H_v, d_v, d_k], list of step states.
    """
    n_tokens, h_k, d_k = q.shape
    h_v = v.shape[1]
    key_head = np.arange(h_v) % h_k
    scale = 1.0 / np.sqrt(d_k)
    state = ssm.copy()
    out = np.zeros(v.shape, dtype=v.dtype)
    steps = []
    for t in range(n_tokens):
        s64 = state.astype(np.float64) * np.exp(g[t].astype(np.float64))[:, None, None]
        kt = k[t, key_head].astype(np.float64)                              # [H_v, d_k]
        qt = q[t, key_head].astype(np.float64)
        kv_mem = np.einsum("hvk,hk->hv", s64, kt)                           # [H_v, d_v]
        delta = (v[t].astype(np.float64) - kv_mem) * beta[t].astype(np.float64)[:, None]
        s64 += delta[:, :, None] * kt[:, None, :]
        out[t] = np.einsum("hvk,hk->hv", s64, qt) * scale
        state = s64.astype(ssm.dtype)
        if t >= n_tokens - keep_steps:
            steps.append(state.copy())
    return out, state, steps


def delta_net(a: np.ndarray, names: DeltaNetTensors, weights: Mapping[str, np.ndarray], state: DeltaNetState,
              cfg: ModelConfig, keep_steps: int = 0) -> tuple[np.ndarray, DeltaNetState, list[DeltaNetState]]:
    """One Gated DeltaNet mixer over n_tokens tokens, continuing from `state`.

    Args:
        a: [n_tokens, n_embd] normed block input.
    Returns:
        mixer output [n_tokens, n_embd], the new state, and the states after each of the last keep_steps
        tokens (for rollback).
    """
    n_tokens = a.shape[0]
    h_k, h_v, d_k, d_v = cfg.ssm_n_group, cfg.ssm_dt_rank, cfg.ssm_d_state, cfg.ssm_head_v_dim
    u = linear(a, weights[names.qkv.name])                                   # [n_tokens, conv_dim]
    z = linear(a, weights[names.gate.name]).reshape(n_tokens, h_v, d_v)
    beta, g = delta_net_gates(linear(a, weights[names.beta.name]), linear(a, weights[names.alpha.name]),
                              weights[names.a.name], weights[names.dt_bias.name])
    conv_out, window = causal_conv1d(u, state.conv, weights[names.conv1d.name])
    mixed = silu(conv_out)
    key_dim = cfg.ssm_key_dim
    q = l2_norm(mixed[:, :key_dim].reshape(n_tokens, h_k, d_k), cfg.rms_eps)
    k = l2_norm(mixed[:, key_dim: 2 * key_dim].reshape(n_tokens, h_k, d_k), cfg.rms_eps)
    v = mixed[:, 2 * key_dim:].reshape(n_tokens, h_v, d_v)
    o, ssm, ssm_steps = gated_delta_rule(q, k, v, g, beta, state.ssm, keep_steps)
    y = gated_rms_norm(o, z, weights[names.norm.name], cfg.rms_eps).reshape(n_tokens, h_v * d_v)
    k_c = cfg.ssm_conv_kernel
    new_state = DeltaNetState(window[window.shape[0] - (k_c - 1):].copy(), ssm)
    first = n_tokens - len(ssm_steps)
    steps = [DeltaNetState(window[first + i + 1: first + i + k_c].copy(), s) for i, s in enumerate(ssm_steps)]
    return linear(y, weights[names.out.name]), new_state, steps
