"""Verify drafted tokens against the target model: greedy matching, Gumbel-max sample matching, rejection sampling

Greedy matching runs for plain greedy requests, sample matching for every other request on both engines;
speculative rejection sampling is the general rule for drafts with their own distribution.

Sample matching (`verify_gumbel`): row j is sampled as plain decoding samples the token at its position
(`Sampler.sample_from`, Gumbel-max with noise keyed by seed and position) and the draft is accepted when it
equals the sample; the first mismatch's sample is the step's own token. The output is, token for token, what
sampling without drafts gives, so it is distributed exactly as the target and MTP cannot change it.

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

from vkmtp.sampling import Sampler


def verify_greedy(draft_ids: np.ndarray, target_ids: np.ndarray) -> tuple[list[int], int]:
    """Args: draft_ids [k] int; target_ids [k+1] int (argmax of each verified row).
    Returns (output tokens, number of accepted drafts): the target's own tokens up to the first mismatch."""
    k = len(draft_ids)
    n = 0
    while n < k and int(draft_ids[n]) == int(target_ids[n]):
        n += 1
    return [int(t) for t in target_ids[: n + 1]], n


def verify_sampled(draft_ids: np.ndarray, target_probs, rng: np.random.Generator,
                   draft_probs: np.ndarray | None = None) -> tuple[list[int], int]:
    """Speculative rejection sampling.

    Args:
        draft_ids: [k] drafted tokens.
        target_probs: k+1 rows, the target's sampling distribution at each verified row (after temperature,
            top-k, top-p, min-p, penalties): an array [k+1, n_vocab], or (candidate ids, probabilities)
            pairs as `Sampler.distributions` gives them.
        rng: a generator for the accept draws and the residual samples.
        draft_probs: [k, n_vocab] the draft distributions (one-hot: a greedy draft).
    Returns (output tokens, number of accepted drafts).
    """
    k = len(draft_ids)
    rows = [_candidates(row) for row in target_probs[: k + 1]]
    out: list[int] = []
    for j in range(k):
        d = int(draft_ids[j])
        ids, p = rows[j]
        p_d = float(p[ids == d].sum())
        n = max(int(ids.max()), d) + 1 if draft_probs is None else len(draft_probs[j])
        if draft_probs is None:   # a greedy draft: q is one-hot at d
            q = np.zeros(n)
            q[d] = 1.0
        else:
            q = np.asarray(draft_probs[j], dtype=np.float64)
        if q[d] > 0 and rng.random() < min(1.0, p_d / q[d]):
            out.append(d)
            continue
        dense = np.zeros_like(q)
        dense[ids] = p
        residual = np.maximum(dense - q, 0.0)
        total = residual.sum()
        if total <= 0:  # p was (numerically) all on d yet d was rejected: p == q, take p itself
            residual, total = dense, dense.sum()
        out.append(int(rng.choice(len(residual), p=residual / total)))
        return out, j
    ids, p = rows[k]
    out.append(int(rng.choice(ids, p=p / p.sum())))
    return out, k


def verify_gumbel(draft_ids: list[int], rows, sampler: Sampler) -> tuple[list[int], int]:
    """Sample matching: rows are the k+1 verified rows' chain candidates ((ids, penalised logits) pairs as
    `Sampler.rows` gives them, row j after drafts[:j]); row j is sampled at position sampler.pos + j.
    Returns (output tokens, accepted drafts)."""
    out: list[int] = []
    for j, (ids, cand) in enumerate(rows[: len(draft_ids) + 1]):
        token = sampler.sample_from(ids, cand, j)
        out.append(token)
        if j == len(draft_ids) or token != int(draft_ids[j]):
            return out, j
    raise AssertionError("unreachable")


def verify(draft_ids: list[int], logits: np.ndarray, sampler: Sampler) -> tuple[list[int], int]:
    """The accept rule of both engines: logits [k+1, n_vocab] of the verified rows (last token + k drafts).

    Plain greedy requests (no penalties) match drafts against the argmax (`verify_greedy`, what spec.comp
    does on the GPU); every other request goes through `verify_gumbel` with its own sampler's chain.
    Returns (output tokens, number of accepted drafts); the caller accepts the tokens into the sampler."""
    if sampler.params.plain_argmax:
        return verify_greedy(np.asarray(draft_ids), np.argmax(logits, axis=-1))
    return verify_gumbel(draft_ids, sampler.rows(logits, draft_ids), sampler)


def _candidates(row) -> tuple[np.ndarray, np.ndarray]:
    """(ids, probabilities) of a dense row [n_vocab] or of an (ids, probabilities) pair."""
    if isinstance(row, tuple):
        ids, p = row
        return np.asarray(ids), np.asarray(p, dtype=np.float64)
    p = np.asarray(row, dtype=np.float64)
    return np.arange(p.size), p


def synthetic_accept(n_drafted: int, rate: float, rng: np.random.Generator) -> int:
    """BENCHMARK MODE (llama.cpp's --spec-synth-*): how many of `n_drafted` drafts to accept when each one is
    accepted with probability `rate`, independently, up to the first rejection."""
    n = 0
    while n < n_drafted and rng.random() < rate:
        n += 1
    return n
