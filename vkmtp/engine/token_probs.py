"""Token probabilities a request asks for, and what each generated token reports: its own and the top-n.

Two kinds, as llama-server has them: pre-sampling log-probabilities of the model's raw logits (log softmax,
what `logprobs` / `top_logprobs` / `n_probs` report), and with `post_sampling_probs` the probabilities after
the request's sampler chain (penalties, grammar, top-k/top-p/min-p, temperature; renormalised; greedy gives
the chosen token p = 1). The Vulkan engine forms the first from the GPU's top-n pairs and log-sum-exp
(vkmtp.ops.token_probs), the reference engine from its own logits row; both come here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vkmtp.ops.token_probs import MAX_TOP
from vkmtp.ref.ops.token_probs import token_probs


@dataclass(frozen=True)
class ProbsRequest:
    """n_top: alternatives per token (0..MAX_TOP); post_sampling: p after the sampler chain, not raw log p."""

    n_top: int = 0
    post_sampling: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.n_top <= MAX_TOP:
            raise ValueError(f"token probabilities: n_top {self.n_top} outside 0..{MAX_TOP}")


@dataclass(frozen=True)
class TokenProbs:
    """One generated token: `value` is log p (pre-sampling) or p (post_sampling); `top` the n_top most likely
    (id, value) pairs, most likely first (ties: lower id first)."""

    id: int
    value: float
    top: tuple[tuple[int, float], ...]
    post_sampling: bool = False


def from_top_pairs(token: int, values: np.ndarray, ids: np.ndarray, lse: float, chosen_logit: float,
                   n_top: int) -> TokenProbs:
    """Log-probabilities from a row's top logits (descending), its log-sum-exp and the chosen token's logit."""
    top = tuple((int(i), float(np.float64(v) - lse)) for v, i in zip(values[:n_top], ids[:n_top]))
    return TokenProbs(int(token), float(np.float64(chosen_logit) - lse), top)


def from_logits(token: int, logits: np.ndarray, n_top: int) -> TokenProbs:
    """Log-probabilities from a whole logits row [n_vocab] (the reference engine, and host-side logits)."""
    vals, ids, lse, picked = token_probs(np.asarray(logits, np.float32)[None, :], n_top, np.array([token]))
    return from_top_pairs(token, vals[0], ids[0], float(lse[0]), float(picked[0]), n_top)


def post_sampling(token: int, ids: np.ndarray, probs: np.ndarray, n_top: int) -> TokenProbs:
    """Probabilities of the sampler chain's candidates (ids, probs: vkmtp.sampling.Sampler.distribution), most
    likely first; a token outside the candidates has p = 0."""
    order = np.lexsort((np.asarray(ids), -np.asarray(probs, np.float64)))
    top = tuple((int(ids[k]), float(probs[k])) for k in order[:n_top])
    hit = np.flatnonzero(np.asarray(ids) == token)
    return TokenProbs(int(token), float(probs[hit[0]]) if hit.size else 0.0, top, post_sampling=True)
