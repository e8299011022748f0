"""NumPy oracles of shaders/moe_router.comp and shaders/moe_experts_used.comp.

Routing as llama.cpp's build_moe_ffn does for qwen35moe: softmax over all experts, top-k on the
probabilities (ties -> lower expert id), weights renormalised by the chosen sum clamped from below.
"""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.elementwise import softmax

WEIGHT_SUM_MIN = 6.103515625e-5   # llama.cpp clamps the sum of the chosen probabilities from below (2^-14)
NO_EXPERT = 0xFFFFFFFF


def moe_router(logits: np.ndarray, n_used: int,
               dtype: np.dtype = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Top-k routing of each token.

    Args:
        logits: [n_tok, n_expert] router logits (ffn_gate_inp @ x).
        n_used: k, experts per token.
    Returns:
        ids [n_tok, n_used] uint32 in rank order, weights [n_tok, n_used] `dtype` (float64 math).
    """
    probs = softmax(logits, dtype=np.float64)
    ids = np.argsort(-probs, axis=-1, kind="stable")[:, :n_used]       # stable: equal p keep id order
    chosen = np.take_along_axis(probs, ids, axis=-1)
    weights = chosen / np.maximum(chosen.sum(axis=-1, keepdims=True), WEIGHT_SUM_MIN)
    return ids.astype(np.uint32), weights.astype(dtype)


def experts_used(ids: np.ndarray, n_expert: int) -> np.ndarray:
    """The distinct experts of a step in moe_experts_used.comp's format.

    Args:
        ids: [n_tok, n_used] uint32 expert ids (ids >= n_expert ignored).
    Returns:
        [1 + capacity] uint32: n_distinct, the distinct ids ascending, NO_EXPERT up to capacity
        = min(n_expert, ids.size). Example: ids [[3, 1], [1, 7]], n_expert 8 ->
        [3, 1, 3, 7, NO_EXPERT].
    """
    flat = np.asarray(ids, np.uint64).reshape(-1)
    distinct = np.unique(flat[flat < n_expert]).astype(np.uint32)
    capacity = min(n_expert, flat.size)
    out = np.full(1 + capacity, NO_EXPERT, np.uint32)
    out[0] = distinct.size
    out[1: 1 + distinct.size] = distinct
    return out
