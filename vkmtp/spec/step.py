"""The rules of one speculative step, shared by the reference engine (on the host) and the Vulkan engine.

One step of a sequence whose memory holds n_past tokens, with `id_last` sampled but not yet evaluated and
`pending_h` the trunk's hidden state of the token before it:

1. draft: chain the MTP head from (id_last, pending_h) greedily up to `n_max` tokens, stopping at the first
   draft whose top-1 probability over the top DRAFT_TOP_K draft logits is below `p_min` (`draft_p_top1`);
   drop a draft shorter than `n_min`, then truncate it to `draft_budget` (`keep_drafts`), llama.cpp's order.
2. verify: one trunk batch over [id_last, d_1 .. d_k], keeping the recurrent state after every row.
3. accept: `vkmtp.spec.verifier.verify` on the k+1 rows: greedy matching for plain greedy requests,
   speculative rejection sampling with the request's sampler otherwise. It yields m accepted drafts and one
   token of the target's own (m + 1 tokens).
4. rollback: keep id_last, d_1 .. d_m in memory (n_past + m + 1 tokens; fewer when the sequence stops inside
   the step, as plain decoding would have it); the MTP cache is caught up from the verified hidden states.
5. count: llama-server's statistics (`count_drafts`).

The reference engine runs these steps one after another (vkmtp/ref/generate.py `speculative_step`). The
Vulkan engine records steps 1-4 for all sequences in one submission (vkmtp/graph/steps.py SpecGraph): the
p-min cut and the accept run in shaders/spec.comp (oracle: vkmtp/ref/ops/spec.py), each verified row's token
being its argmax (plain greedy) or its sample from shaders/sample.comp, which computes `verify_gumbel`'s draws
in the host sampler's arithmetic (only a sequence the GPU sampler cannot take reads its logits back and calls
the same `verify` on the host).
"""

from __future__ import annotations

import numpy as np

from vkmtp.spec.config import DRAFT_TOP_K, SpecConfig


def draft_budget(n_max: int, n_past: int, n_ctx: int | None, remaining: int | None) -> int:
    """Drafts worth checking: at most n_max, no draft whose token could not fit the context (the step's
    n_past + m + 2 tokens of prompt and output stay <= n_ctx), none past the request's remaining budget
    (llama.cpp drafts at most n_remaining - 1). None: no such limit."""
    budget = n_max
    if n_ctx is not None:
        budget = min(budget, n_ctx - n_past - 2)
    if remaining is not None:
        budget = min(budget, remaining - 1)
    return max(budget, 0)


def draft_p_top1(logits: np.ndarray) -> tuple[int, float]:
    """(the draft token, its probability in a softmax over the top DRAFT_TOP_K logits) of logits [n_vocab]."""
    top = np.argsort(-logits, kind="stable")[:DRAFT_TOP_K]
    values = logits[top].astype(np.float64)
    probs = np.exp(values - values.max())
    return int(top[0]), float(probs[0] / probs.sum())


def keep_drafts(tokens: list[int], spec: SpecConfig, budget: int) -> list[int]:
    """The drafts that are verified: none when fewer than n_min were drafted, else the first `budget`."""
    return tokens[:budget] if len(tokens) >= spec.n_min else []


def n_taken(tokens: list[int], stop_ids, left: int | None) -> int:
    """How many of a step's output tokens the sequence looks at before it stops: up to the first stop id
    (which ends it unkept) or until `left` more tokens are generated (None: no limit)."""
    for i, token in enumerate(tokens):
        if left is not None and i >= left:
            return left
        if token in stop_ids or (left is not None and i + 1 >= left):
            return i + 1
    return len(tokens)


def count_drafts(n_valid: int, n_accepted: int, budget: int) -> tuple[int, int]:
    """(drafted, accepted) as llama-server counts a step that checked n_valid drafts: drafts past the
    budget are neither drafted nor accepted (a step with none left is a plain decode)."""
    return min(n_valid, budget), min(n_accepted, budget)
