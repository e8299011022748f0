"""One Qwen3.5 decoder block of the NumPy model reference, shared by the trunk and the MTP head.

x + mixer(RMSNorm(x; attn_norm)), then + FFN(RMSNorm(.; post_attention_norm)); the mixer is gated attention
or a Gated DeltaNet, the FFN dense SwiGLU or MoE (docs/REFERENCE.md).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vkmtp.model.config import LayerKind, ModelConfig
from vkmtp.model.weights import BlockTensors, DenseFfnTensors
from vkmtp.ref.attention import gated_attention
from vkmtp.ref.delta_net import delta_net
from vkmtp.ref.ffn import dense_ffn, moe_ffn
from vkmtp.ref.ops.rms_norm import rms_norm
from vkmtp.ref.state import DeltaNetState, KVCache


def check_tokens(tokens: Sequence[int] | np.ndarray, n_vocab: int) -> np.ndarray:
    """Token ids as a flat int64 array; ValueError when empty or outside [0, n_vocab)."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if tokens.size == 0:
        raise ValueError("no tokens to evaluate")
    bad = tokens[(tokens < 0) | (tokens >= n_vocab)]
    if bad.size:
        raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {n_vocab})")
    return tokens


def decoder_block(
    blk: BlockTensors,
    x: np.ndarray,
    positions: np.ndarray,
    memory: KVCache | DeltaNetState,
    weights: Mapping[str, np.ndarray],
    cfg: ModelConfig,
    keep_steps: int = 0,
) -> tuple[np.ndarray, DeltaNetState | None, list[DeltaNetState]]:
    """One decoder block over x [n_tokens, n_embd] at positions [n_tokens].

    Returns the block output, the new GDN state (None for attention blocks, whose KVCache is updated in
    place) and the GDN states after each of the last `keep_steps` tokens.
    """
    a = rms_norm(x, weights[blk.attn_norm.name], cfg.rms_eps, dtype=x.dtype)
    new_state, steps = None, []
    if blk.kind is LayerKind.ATTENTION:
        mixed = gated_attention(a, blk.mixer, weights, memory, positions, cfg)
    else:
        mixed, new_state, steps = delta_net(a, blk.mixer, weights, memory, cfg, keep_steps)
    x = x + mixed
    f = rms_norm(x, weights[blk.ffn_norm.name], cfg.rms_eps, dtype=x.dtype)
    if isinstance(blk.ffn, DenseFfnTensors):
        x = x + dense_ffn(f, blk.ffn, weights)
    else:
        x = x + moe_ffn(f, blk.ffn, weights, cfg)
    return x, new_state, steps
