"""Text generation with the NumPy reference: plain decoding and llama.cpp's `draft-mtp` speculative loop.

The MTP loop is the step vkmtp/spec/step.py describes, run on the host: draft with the MTP head, verify
[last token + drafts] in one trunk batch, accept with `vkmtp.spec.verifier.verify` (the rule the Vulkan
engine runs), roll the trunk back to the accepted position, and catch the MTP KV cache up with the true hidden
states so it mirrors the committed prefix. Because the reference is batch invariant and the sampled verifier
draws as plain sampling draws, speculative output equals plain output token for token (greedy, and seeded
sampling too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from vkmtp.ref.model import ReferenceModel
from vkmtp.ref.state import ModelState, MtpState
from vkmtp.sampling import Sampler, SamplingParams
from vkmtp.spec.config import SpecConfig
from vkmtp.spec.stats import SpecStats
from vkmtp.spec.config import draft_rows
from vkmtp.spec.step import draft_budget, draft_p_top1, keep_drafts, n_taken
from vkmtp.spec.verifier import verify


@dataclass
class GenerationResult:
    tokens: list[int]  # generated tokens, without the prompt and without the stop token
    stop_reason: str  # "stop_token" or "max_tokens"
    stats: SpecStats | None = None  # only for speculative generation
    # memory at the end: the prompt and every generated token except the newest one (never evaluated)
    state: ModelState | None = None
    mtp_state: MtpState | None = None


class _Output:
    """Collects generated tokens and decides when to stop."""

    def __init__(self, max_tokens: int, stop_tokens: Iterable[int]):
        self.max_tokens = max_tokens
        self.stop_tokens = set(int(t) for t in stop_tokens)
        self.tokens: list[int] = []
        self.stop_reason = ""

    def emit(self, token: int) -> bool:
        """Add a token; True when generation must end."""
        if token in self.stop_tokens:
            self.stop_reason = "stop_token"
            return True
        self.tokens.append(token)
        if len(self.tokens) >= self.max_tokens:
            self.stop_reason = "max_tokens"
            return True
        return False

    def looked(self, tokens: list[int]) -> int:
        """How many of `tokens` `emit` would take in before it stops (the stopping one included)."""
        return n_taken(tokens, self.stop_tokens, self.remaining)

    @property
    def remaining(self) -> int:
        return self.max_tokens - len(self.tokens)


def _start(
    model: ReferenceModel, prompt: Sequence[int], params: SamplingParams, max_tokens: int, kv_dtype
) -> tuple[Sampler, ModelState, np.ndarray, np.ndarray]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sampler = Sampler(params)
    for token in prompt:
        sampler.accept(token)
    state = model.new_state(kv_dtype)
    logits, hidden = model.forward(prompt, state)
    return sampler, state, logits, hidden


def generate(
    model: ReferenceModel,
    prompt: Sequence[int],
    max_tokens: int,
    params: SamplingParams | None = None,
    stop_tokens: Iterable[int] = (),
    kv_dtype: np.dtype | None = None,
) -> GenerationResult:
    """Plain autoregressive decoding: one trunk forward per generated token.

    Args:
        prompt: token ids evaluated in one batch; they also seed the sampler's penalty window.
        max_tokens: generate at most this many tokens (>= 1).
        params: sampling chain; default greedy.
        stop_tokens: end-of-generation ids (not included in the result).
        kv_dtype: KV cache dtype (np.float16 = llama.cpp's default cache type).
    """
    params = params or SamplingParams.greedy_params()
    sampler, state, logits, _ = _start(model, prompt, params, max_tokens, kv_dtype)
    out = _Output(max_tokens, stop_tokens)
    while True:
        token = sampler.sample(logits[-1])
        sampler.accept(token)
        if out.emit(token):
            return GenerationResult(out.tokens, out.stop_reason, None, state)
        logits, _ = model.forward([token], state)


def draft_mtp(
    model: ReferenceModel,
    mtp_state: MtpState,
    id_last: int,
    pending_h: np.ndarray,
    budget: int,
    spec: SpecConfig,
    sampler: Sampler | None = None,
) -> list[int]:
    """Step 1 of vkmtp/spec/step.py: chain the MTP head from (id_last, pending_h) at position
    mtp_state.n_past, greedily (with temperature > 0: argmax(l / T + g), `Sampler.draft`), with the p_min cut
    on the raw logits; then the n_min check and the truncation to `budget`.
    With spec.draft_vocab = N the draft sees only the logits of token ids < N (the reduced draft head).
    Leaves the draft-time entries in mtp_state (the caller drops them)."""
    tokens: list[int] = []
    token, h = id_last, pending_h.reshape(1, -1)
    for i in range(spec.n_max):
        logits, hm = model.mtp_forward([token], h, mtp_state)
        row = logits[0][: draft_rows(spec.draft_vocab, logits.shape[-1])]
        token, p_top1 = draft_p_top1(row)
        if sampler is not None and not sampler.params.greedy:   # the target's noise at this position
            token = sampler.draft(row, i)
        if p_top1 < spec.p_min:
            break
        tokens.append(token)
        h = hm
    return keep_drafts(tokens, spec, budget)


@dataclass
class SpecStep:
    """What one draft/verify step did."""

    tokens: list[int]  # output tokens: accepted drafts, then the target's own token
    n_drafted: int  # drafts verified (already cut to the step's budget)
    n_accepted: int
    pending_h: np.ndarray  # [n_embd] hidden of the last token kept in memory (it chose the next id_last)
    logits: np.ndarray  # [n_vocab] logits of that token
    rows: np.ndarray | None = None  # [len(tokens), n_vocab] the verify logits row that chose each output token


def mtp_catch_up(
    model: ReferenceModel,
    tokens: Sequence[int],
    hidden: np.ndarray,
    h_before: np.ndarray,
    mtp_state: MtpState,
) -> None:
    """Give the MTP cache entries for tokens the trunk just evaluated: entry p is (x_p, h_{p-1}).

    hidden: [n_tokens, n_embd] the trunk's rows for `tokens`; h_before: [n_embd] the hidden of the token
    before the first one (zeros at position 0).
    """
    h_rows = np.concatenate([np.asarray(h_before, hidden.dtype).reshape(1, -1), hidden[:-1]])
    model.mtp_forward(tokens, h_rows, mtp_state)


def speculative_step(
    model: ReferenceModel,
    state: ModelState,
    mtp_state: MtpState,
    sampler: Sampler,
    id_last: int,
    pending_h: np.ndarray,
    budget: int,
    spec: SpecConfig,
    looked: Callable[[list[int]], int],
) -> SpecStep:
    """One step of vkmtp/spec/step.py from `id_last` (sampled, not yet evaluated) and `pending_h`.

    `looked(tokens)` says how many output tokens the sequence takes in before it stops; memory keeps what
    plain decoding would hold after them. The caller emits the tokens and accepts them into the sampler.
    """
    n_past = state.n_past
    drafted = draft_mtp(model, mtp_state, id_last, pending_h, budget, spec, sampler) if budget > 0 else []
    drafted = sampler.allowed_drafts(drafted)   # a draft the grammar forbids ends the draft
    mtp_state.rollback(n_past)
    batch = [id_last] + drafted
    logits, hidden = model.forward(batch, state, keep_steps=len(batch))
    mtp_catch_up(model, batch, hidden, pending_h, mtp_state)  # with the true hidden states
    out, m = verify(drafted, logits, sampler)
    row = min(m, looked(out) - 1)  # row j's logits chose out[j]; memory keeps id_last, out[:row]
    state.rollback(n_past + row + 1)
    mtp_state.rollback(n_past + row + 1)
    return SpecStep(out, len(drafted), m, hidden[row], logits[row], logits[: len(out)])


def generate_mtp(
    model: ReferenceModel,
    prompt: Sequence[int],
    max_tokens: int,
    params: SamplingParams | None = None,
    stop_tokens: Iterable[int] = (),
    spec: SpecConfig | None = None,
    kv_dtype: np.dtype | None = None,
) -> GenerationResult:
    """Speculative decoding with the model's own MTP head (llama.cpp `--spec-type draft-mtp`); arguments as
    `generate`, plus the draft settings. The result carries the acceptance statistics."""
    if not model.has_mtp:
        raise ValueError(f"{model.cfg.source}: no MTP block, cannot use MTP speculative decoding")
    params = params or SamplingParams.greedy_params()
    spec = spec or SpecConfig()
    sampler, state, logits, hidden = _start(model, prompt, params, max_tokens, kv_dtype)
    mtp_state = model.new_mtp_state(kv_dtype)
    mtp_catch_up(model, prompt, hidden, np.zeros(hidden.shape[1], hidden.dtype), mtp_state)  # h_{-1} = 0
    pending_h = hidden[-1]
    stats = SpecStats()
    out = _Output(max_tokens, stop_tokens)
    id_last = sampler.sample(logits[-1])
    sampler.accept(id_last)
    if out.emit(id_last):
        return GenerationResult(out.tokens, out.stop_reason, stats, state, mtp_state)
    while True:
        budget = draft_budget(spec.n_max, state.n_past, None, out.remaining)
        step = speculative_step(
            model, state, mtp_state, sampler, id_last, pending_h, budget, spec, out.looked
        )
        if step.n_drafted:   # a step without drafts is a plain decode for llama-server's counters
            stats.record(step.n_drafted, step.n_accepted)
        for token in step.tokens:
            sampler.accept(token)
            if out.emit(token):
                return GenerationResult(out.tokens, out.stop_reason, stats, state, mtp_state)
        id_last, pending_h = step.tokens[-1], step.pending_h
