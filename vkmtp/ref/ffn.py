"""Feed-forward blocks of Qwen3.5 for the NumPy model reference: dense SwiGLU and MoE.

Composed from the op oracles (docs/REFERENCE.md): SwiGLU and the gated add from vkmtp.ref.ops.elementwise,
the routing from vkmtp.ref.ops.moe_router, the weighted sum of expert outputs from vkmtp.ref.ops.matvec_id.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import DenseFfnTensors, MoeFfnTensors
from vkmtp.ref.ops.elementwise import sigmoid_scale_add, swiglu
from vkmtp.ref.ops.matvec import linear
from vkmtp.ref.ops.matvec_id import weighted_sum
from vkmtp.ref.ops.moe_router import moe_router


def swiglu_ffn(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """down(silu(gate x) * up x).  x: [n_tokens, n_embd]; gate/up: [n_ff, n_embd]; down: [n_embd, n_ff]."""
    return linear(swiglu(linear(x, gate), linear(x, up), dtype=x.dtype), down)


def dense_ffn(x: np.ndarray, names: DenseFfnTensors, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    return swiglu_ffn(x, weights[names.gate.name], weights[names.up.name], weights[names.down.name])


def moe_ffn(
    x: np.ndarray, names: MoeFfnTensors, weights: Mapping[str, np.ndarray], cfg: ModelConfig
) -> np.ndarray:
    """Routed experts plus the shared expert scaled by sigmoid(ffn_gate_inp_shexp . x).

    Args:
        x: [n_tokens, n_embd] normed FFN input.
    Returns:
        [n_tokens, n_embd] in x's dtype.
    """
    n_tokens, n_used = x.shape[0], cfg.n_expert_used
    ids, expert_w = moe_router(linear(x, weights[names.gate_inp.name]), n_used, dtype=x.dtype)
    gate_exps = weights[names.gate_exps.name]  # [n_expert, n_ff_exp, n_embd]
    up_exps = weights[names.up_exps.name]
    down_exps = weights[names.down_exps.name]  # [n_expert, n_embd, n_ff_exp]
    slots = np.concatenate([
        swiglu_ffn(x[t : t + 1], gate_exps[e], up_exps[e], down_exps[e])
        for t in range(n_tokens) for e in ids[t]
    ])  # [n_tokens * n_used, n_embd], row t * n_used + j for expert ids[t, j]
    routed = weighted_sum(slots, expert_w, x.shape[1]).astype(x.dtype)
    shexp_gate = weights[names.gate_inp_shexp.name].reshape(1, -1)  # [1, n_embd] whichever layout
    shared = swiglu_ffn(
        x, weights[names.gate_shexp.name], weights[names.up_shexp.name], weights[names.down_shexp.name]
    )
    return sigmoid_scale_add(shared, linear(x, shexp_gate)[:, 0], routed, dtype=x.dtype)
