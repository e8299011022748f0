"""The Qwen3.5 MTP (NextN) head, exactly as llama.cpp's MTP graph computes it (qwen35-mtp.md §4).

For position p the head takes the token x_p and the trunk's post-norm hidden h_{p-1} (the vector whose
logits predicted x_p; zeros before the first token) and predicts x_{p+1}:

    e  = RMSNorm(emb(x_p); enorm)      hh = RMSNorm(h_{p-1}; hnorm)
    u0 = eh_proj [e ; hh]              (embedding half first)
    u2 = full-attention block blk.{n_layer} at position p, with the MTP's own KV cache
    hm = RMSNorm(u2; shared_head_norm) logits = head . hm

`hm` is the `h` input of the next chained draft step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from vkmtp.ref.attention import linear
from vkmtp.ref.norm import rms_norm
from vkmtp.ref.rope import text_positions
from vkmtp.ref.state import MtpState

if TYPE_CHECKING:
    from vkmtp.ref.model import ReferenceModel


def mtp_forward(model: "ReferenceModel", tokens: Sequence[int] | np.ndarray, hiddens: np.ndarray,
                mtp_state: MtpState) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate MTP entries at positions mtp_state.n_past, mtp_state.n_past+1, ... (llama.cpp's convention:
    the pair (h_{p-1}, x_p) sits at x_p's position p).

    Args:
        tokens: [n_tokens] x_p.
        hiddens: [n_tokens, n_embd] h_{p-1} for each token (trunk post-norm hidden, or the previous MTP
            step's `hm` while drafting).
        mtp_state: the MTP KV cache; its n_past must equal the first token's position.
    Returns:
        logits [n_tokens, n_vocab] (predicting x_{p+1}) and hm [n_tokens, n_embd].
    """
    mtp = model.tensors.mtp
    if mtp is None:
        raise ValueError(f"{model.cfg.source}: the model has no MTP block (nextn_predict_layers="
                         f"{model.cfg.n_nextn})")
    tokens = model.check_tokens(tokens)
    n_tokens = tokens.shape[0]
    hiddens = np.asarray(hiddens, dtype=model.dtype).reshape(n_tokens, -1)
    if hiddens.shape[1] != model.cfg.n_embd:
        raise ValueError(f"MTP hidden rows have {hiddens.shape[1]} values, expected n_embd={model.cfg.n_embd}")
    w, eps = model.weights, model.cfg.rms_eps
    e = rms_norm(model.embed(tokens, mtp.embed_tokens.name), w[mtp.enorm.name], eps)
    hh = rms_norm(hiddens, w[mtp.hnorm.name], eps)
    u0 = linear(np.concatenate([e, hh], axis=-1), w[mtp.eh_proj.name])     # [n_tokens, n_embd]
    pos4 = text_positions(mtp_state.n_past + np.arange(n_tokens))
    u2, _, _ = model.block(mtp.block, u0, pos4, mtp_state.kv)
    hm = rms_norm(u2, w[mtp.shared_head_norm.name], eps)
    return model.lm_head(hm, mtp.head.name), hm
