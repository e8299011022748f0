"""Feed-forward blocks of Qwen3.5: dense SwiGLU (§3.5) and the MoE with a sigmoid-gated shared expert (§3.6)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import DenseFfnTensors, MoeFfnTensors
from vkmtp.ref.attention import linear
from vkmtp.ref.norm import sigmoid, silu

MOE_WEIGHT_SUM_MIN = 6.103515625e-5   # llama.cpp clamps the top-k probability sum from below (2^-14)


def swiglu(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """down(silu(gate x) * up x).  x: [n_tokens, n_embd]; gate/up: [n_ff, n_embd]; down: [n_embd, n_ff]."""
    return linear(silu(linear(x, gate)) * linear(x, up), down)


def dense_ffn(x: np.ndarray, names: DenseFfnTensors, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    return swiglu(x, weights[names.gate.name], weights[names.up.name], weights[names.down.name])


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64, returned in x's dtype."""
    x64 = x.astype(np.float64)
    x64 = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (x64 / x64.sum(axis=-1, keepdims=True)).astype(x.dtype)


def route_experts(router_logits: np.ndarray, n_used: int) -> tuple[np.ndarray, np.ndarray]:
    """softmax -> top-k on probabilities -> renormalise (sum clamped at 2^-14), as llama.cpp's build_moe_ffn.

    Args:
        router_logits: [n_tokens, n_expert].
    Returns:
        expert ids [n_tokens, n_used] (descending probability) and their weights [n_tokens, n_used].
    """
    probs = softmax(router_logits)
    ids = np.argsort(-probs, axis=-1, kind="stable")[:, :n_used]
    chosen = np.take_along_axis(probs, ids, axis=-1)
    total = np.maximum(chosen.sum(axis=-1, keepdims=True), MOE_WEIGHT_SUM_MIN)
    return ids, chosen / total


def moe_ffn(x: np.ndarray, names: MoeFfnTensors, weights: Mapping[str, np.ndarray],
            cfg: ModelConfig) -> np.ndarray:
    """Routed experts plus the shared expert scaled by sigmoid(ffn_gate_inp_shexp . x).

    Args:
        x: [n_tokens, n_embd] normed FFN input.
    Returns:
        [n_tokens, n_embd].
    """
    ids, expert_w = route_experts(linear(x, weights[names.gate_inp.name]), cfg.n_expert_used)
    gate_exps = weights[names.gate_exps.name]       # [n_expert, n_ff_exp, n_embd]
    up_exps = weights[names.up_exps.name]
    down_exps = weights[names.down_exps.name]       # [n_expert, n_embd, n_ff_exp]
    routed = np.zeros_like(x)
    for t in range(x.shape[0]):
        xt = x[t: t + 1]
        for slot in range(cfg.n_expert_used):
            e = ids[t, slot]
            routed[t] += expert_w[t, slot] * swiglu(xt, gate_exps[e], up_exps[e], down_exps[e])[0]
    shexp_gate = weights[names.gate_inp_shexp.name].reshape(1, -1)     # [1, n_embd] whichever layout
    gamma = sigmoid(linear(x, shexp_gate))                              # [n_tokens, 1]
    shared = swiglu(x, weights[names.gate_shexp.name], weights[names.up_shexp.name],
                    weights[names.down_shexp.name])
    return routed + gamma * shared
