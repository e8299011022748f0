"""Verify drafted tokens against the target model: greedy matching or speculative rejection sampling.

Terms (as vLLM's rejection sampler uses them): a draft is *accepted* or rejected; at the first rejection a
*recovered* token is sampled from the residual distribution; when every draft is accepted a *bonus* token is
sampled from the target's last row. The output of one verify step is accepted drafts + one recovered or bonus
token, so it always advances by at least one token.

Rejection sampling (Leviathan et al., 2023, arXiv 2211.17192; Chen et al., 2023, arXiv 2302.01318): accept
draft d with probability min(1, p(d) / q(d)); on rejection sample from norm(max(0, p - q)). The output is then
distributed exactly as the target p, whatever the draft q. With a greedy draft q is one-hot, so d is accepted
with probability p(d) and the residual is p with d removed.
"""

from __future__ import annotations

import numpy as np


def verify_greedy(draft_ids: np.ndarray, target_ids: np.ndarray) -> tuple[list[int], int]:
    """Args: draft_ids [k] int; target_ids [k+1] int (argmax of each verified row).
    Returns (output tokens, number of accepted drafts): the target's own tokens up to the first mismatch."""
    k = len(draft_ids)
    n = 0
    while n < k and int(draft_ids[n]) == int(target_ids[n]):
        n += 1
    return [int(t) for t in target_ids[: n + 1]], n


def verify_sampled(draft_ids: np.ndarray, target_probs: np.ndarray, rng: np.random.Generator,
                   draft_probs: np.ndarray | None = None) -> tuple[list[int], int]:
    """Speculative rejection sampling.

    Args:
        draft_ids: [k] drafted tokens.
        target_probs: [k+1, n_vocab] f64/f32, the target's sampling distribution at each verified row (after
            temperature, top-k, top-p, min-p, penalties).
        rng: the request's generator (seeded runs repeat exactly).
        draft_probs: [k, n_vocab] the draft distributions, or None for greedy (one-hot) drafts.
    Returns (output tokens, number of accepted drafts).
    """
    k = len(draft_ids)
    out: list[int] = []
    for j in range(k):
        d = int(draft_ids[j])
        p = np.asarray(target_probs[j], dtype=np.float64)
        q_d = 1.0 if draft_probs is None else float(draft_probs[j][d])
        if q_d > 0 and rng.random() < min(1.0, p[d] / q_d):
            out.append(d)
            continue
        if draft_probs is None:
            residual = p.copy()
            residual[d] = 0.0
        else:
            residual = np.maximum(p - np.asarray(draft_probs[j], dtype=np.float64), 0.0)
        total = residual.sum()
        if total <= 0:  # p was (numerically) all on d yet d was rejected: p == q, take p itself
            residual, total = p, p.sum()
        out.append(int(rng.choice(len(residual), p=residual / total)))
        return out, j
    last = np.asarray(target_probs[k], dtype=np.float64)
    out.append(int(rng.choice(len(last), p=last / last.sum())))
    return out, k


def synthetic_accept(n_drafted: int, rate: float, rng: np.random.Generator) -> int:
    """BENCHMARK MODE (llama.cpp's --spec-synth-*): how many of `n_drafted` drafts to accept when each one is
    accepted with probability `rate`, independently, up to the first rejection."""
    n = 0
    while n < n_drafted and rng.random() < rate:
        n += 1
    return n
