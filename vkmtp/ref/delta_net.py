"""Gated DeltaNet mixer of Qwen3.5 for the NumPy model reference, composed from the op oracles.

Causal depthwise conv + SiLU (vkmtp.ref.ops.conv1d), L2-normed q/k, decay and beta gates and the delta rule
(vkmtp.ref.ops.gdn), gated RMSNorm (vkmtp.ref.ops.rms_norm). V-side tensors are in GGUF's tiled head order:
value head h reads key head h % H_k. The math: docs/REFERENCE.md.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import DeltaNetTensors
from vkmtp.ref.ops.conv1d import conv1d
from vkmtp.ref.ops.gdn import gated_delta_net
from vkmtp.ref.ops.matvec import linear
from vkmtp.ref.ops.rms_norm import rms_norm
from vkmtp.ref.state import DeltaNetState


def delta_net(
    a: np.ndarray,
    names: DeltaNetTensors,
    weights: Mapping[str, np.ndarray],
    state: DeltaNetState,
    cfg: ModelConfig,
    keep_steps: int = 0,
) -> tuple[np.ndarray, DeltaNetState, list[DeltaNetState]]:
    """One Gated DeltaNet mixer over n_tokens tokens of one sequence, continuing from `state`.

    Args:
        a: [n_tokens, n_embd] normed block input.
    Returns:
        mixer output [n_tokens, n_embd], the new state, and the states after each of the last keep_steps
        tokens (for rollback).
    """
    n_tokens, dtype = a.shape[0], a.dtype
    h_k, h_v, d_k, d_v = cfg.ssm_n_group, cfg.ssm_dt_rank, cfg.ssm_d_state, cfg.ssm_head_v_dim
    keep_steps = min(keep_steps, n_tokens)
    seqs = np.zeros(n_tokens, np.int64)  # the oracles take a step of sequences: this one is slot 0

    def snapshots(live: np.ndarray) -> np.ndarray | None:  # room for the state after every token
        return np.zeros((1, n_tokens) + live.shape, dtype) if keep_steps else None

    u = linear(a, weights[names.qkv.name])  # [n_tokens, conv_dim]
    mixed, conv, conv_steps = conv1d(
        seqs, u, weights[names.conv1d.name], state.conv[None], snapshots(state.conv), dtype=dtype
    )
    key_dim = cfg.ssm_key_dim
    o, ssm, ssm_steps = gated_delta_net(
        seqs,
        mixed[:, :key_dim].reshape(n_tokens, h_k, d_k),
        mixed[:, key_dim : 2 * key_dim].reshape(n_tokens, h_k, d_k),
        mixed[:, 2 * key_dim :].reshape(n_tokens, h_v, d_v),
        linear(a, weights[names.beta.name]),
        linear(a, weights[names.alpha.name]),
        weights[names.a.name],
        weights[names.dt_bias.name],
        state.ssm[None],
        cfg.rms_eps,
        snapshots(state.ssm),
        dtype=dtype,
    )
    z = linear(a, weights[names.gate.name]).reshape(n_tokens, h_v, d_v)
    y = rms_norm(o, weights[names.norm.name], cfg.rms_eps, gate=z, dtype=dtype).reshape(n_tokens, h_v * d_v)
    steps = [DeltaNetState(conv_steps[0, t], ssm_steps[0, t]) for t in range(n_tokens - keep_steps, n_tokens)]
    return linear(y, weights[names.out.name]), DeltaNetState(conv[0], ssm[0]), steps
