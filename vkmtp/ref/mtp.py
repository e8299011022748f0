"""The Qwen3.5 MTP (NextN) head of the NumPy model reference, as llama.cpp's MTP graph computes it.

For position p the head takes the token x_p and the trunk's post-norm hidden h_{p-1} (the vector whose
logits predicted x_p; zeros before the first token) and predicts x_{p+1}:

    e  = RMSNorm(emb(x_p); enorm)      hh = RMSNorm(h_{p-1}; hnorm)
    u0 = eh_proj [e ; hh]              (embedding half first)
    u2 = full-attention block blk.{n_layer} at position p, with the MTP's own KV cache
    hm = RMSNorm(u2; shared_head_norm) logits = head . hm

`hm` is the `h` input of the next chained draft step.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import MtpTensors
from vkmtp.ref.block import check_tokens, decoder_block
from vkmtp.ref.ops.matvec import linear
from vkmtp.ref.ops.rms_norm import rms_norm
from vkmtp.ref.state import MtpState


def mtp_forward(
    cfg: ModelConfig,
    mtp: MtpTensors | None,
    weights: Mapping[str, np.ndarray],
    tokens: Sequence[int] | np.ndarray,
    hiddens: np.ndarray,
    mtp_state: MtpState,
    dtype: np.dtype = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate MTP entries at positions mtp_state.n_past, mtp_state.n_past+1, ... (llama.cpp's convention:
    the pair (h_{p-1}, x_p) sits at x_p's position p).

    Args:
        mtp: the MTP block's tensors (None: the model has none, a ValueError).
        tokens: [n_tokens] x_p.
        hiddens: [n_tokens, n_embd] h_{p-1} for each token (trunk post-norm hidden, or the previous MTP
            step's `hm` while drafting).
        mtp_state: the MTP KV cache; its n_past must equal the first token's position.
        dtype: activation type (the weights' type in the reference).
    Returns:
        logits [n_tokens, n_vocab] (predicting x_{p+1}) and hm [n_tokens, n_embd].
    """
    if mtp is None:
        raise ValueError(f"{cfg.source}: the model has no MTP block (nextn_predict_layers={cfg.n_nextn})")
    tokens = check_tokens(tokens, cfg.n_vocab)
    n_tokens = tokens.shape[0]
    hiddens = np.asarray(hiddens, dtype=dtype).reshape(n_tokens, -1)
    if hiddens.shape[1] != cfg.n_embd:
        raise ValueError(f"MTP hidden rows have {hiddens.shape[1]} values, expected n_embd={cfg.n_embd}")
    w, eps = weights, cfg.rms_eps
    e = rms_norm(w[mtp.embed_tokens.name][tokens], w[mtp.enorm.name], eps, dtype=dtype)
    hh = rms_norm(hiddens, w[mtp.hnorm.name], eps, dtype=dtype)
    u0 = linear(np.concatenate([e, hh], axis=-1), w[mtp.eh_proj.name])  # [n_tokens, n_embd]
    positions = mtp_state.n_past + np.arange(n_tokens)
    u2, _, _ = decoder_block(mtp.block, u0, positions, mtp_state.kv, w, cfg)
    hm = rms_norm(u2, w[mtp.shared_head_norm.name], eps, dtype=dtype)
    return linear(hm, w[mtp.head.name]), hm
