"""Text generation with the NumPy reference: plain decoding and llama.cpp's `draft-mtp` speculative loop.

The MTP loop follows qwen35-mtp.md §5.3: draft up to n_max tokens greedily with the MTP head (stop when the
top-1 probability over the top-10 draft logits is below p_min), verify [last token + drafts] in one trunk
batch, accept to the first mismatch with the request's own sampler, roll the trunk back to the accepted
position, and catch the MTP KV cache up with the true hidden states so it mirrors the committed prefix.
Because the reference is batch invariant, speculative output equals plain output token for token (greedy,
and seeded sampling too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from vkmtp.ref.model import ReferenceModel
from vkmtp.ref.state import ModelState, MtpState
from vkmtp.sampling import Sampler, SamplingParams
from vkmtp.spec.stats import SpecStats


@dataclass(frozen=True)
class MtpDraftParams:
    """llama.cpp's draft-mtp settings (defaults since #23269)."""

    n_max: int = 3  # --spec-draft-n-max
    n_min: int = 0  # --spec-draft-n-min: shorter drafts are discarded
    p_min: float = 0.0  # --spec-draft-p-min: stop drafting below this top-1 probability
    top_k: int = 10  # candidates the draft probability is computed over

    def __post_init__(self) -> None:
        if self.n_max < 1 or self.n_min < 0 or self.top_k < 1 or not 0.0 <= self.p_min <= 1.0:
            raise ValueError(f"invalid MTP draft parameters {self}")


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
    n_draft_max: int,
    draft: MtpDraftParams,
) -> list[int]:
    """Chain the MTP head from (id_last, pending_h) at position mtp_state.n_past; greedy, top-k probability
    check against p_min. Leaves the draft-time entries in mtp_state (the caller drops them).

    As llama.cpp (qwen35-mtp.md §5.3): draft up to n_max, drop a draft shorter than n_min, then truncate to
    the context/budget limit n_draft_max."""
    tokens: list[int] = []
    token, h = id_last, pending_h.reshape(1, -1)
    for _ in range(draft.n_max):
        logits, hm = model.mtp_forward([token], h, mtp_state)
        top = np.argsort(-logits[0], kind="stable")[: draft.top_k]
        top_logits = logits[0, top].astype(np.float64)
        probs = np.exp(top_logits - top_logits.max())
        probs /= probs.sum()
        if probs[0] < draft.p_min:
            break
        tokens.append(int(top[0]))
        token, h = int(top[0]), hm
    return tokens[:n_draft_max] if len(tokens) >= draft.n_min else []


@dataclass
class SpecStep:
    """What one draft/verify step did."""

    n_drafted: int
    n_accepted: int
    id_last: int  # the newest sampled token (not in memory yet)
    done: bool  # `emit` asked to stop
    pending_h: np.ndarray  # [n_embd] hidden of the last token in memory (it chose id_last)
    logits: np.ndarray  # [n_vocab] logits of that token


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
    n_draft_max: int,
    draft: MtpDraftParams,
    emit: Callable[[int], bool],
) -> SpecStep:
    """One step of the draft-mtp loop from `id_last` (sampled, not yet evaluated) and `pending_h`.

    Drafts up to n_draft_max tokens, verifies [id_last + drafts] in one trunk batch, catches the MTP cache
    up, samples each verified row with the request's sampler (each token goes to `emit`, which returns True
    to stop) until the first mismatch, and rolls trunk and MTP memory back to the kept prefix.
    """
    n_past = state.n_past
    drafted = draft_mtp(model, mtp_state, id_last, pending_h, n_draft_max, draft) if n_draft_max > 0 else []
    mtp_state.rollback(n_past)
    batch = [id_last] + drafted
    logits, hidden = model.forward(batch, state, keep_steps=len(batch))
    mtp_catch_up(model, batch, hidden, pending_h, mtp_state)  # with the true hidden states
    n_accepted, done = 0, False
    for row in range(len(batch)):  # row j holds the target's choice after d_1..d_j
        token = sampler.sample(logits[row])
        sampler.accept(token)
        matched = row < len(drafted) and token == drafted[row]
        n_accepted += matched
        done = emit(token)
        id_last = token
        if done or not matched:
            break
    # keep id_last, d_1 .. d_row: the prefix before the newest token, as plain decoding would have it
    state.rollback(n_past + row + 1)
    mtp_state.rollback(n_past + row + 1)
    return SpecStep(len(drafted), n_accepted, id_last, done, hidden[row], logits[row])


def generate_mtp(
    model: ReferenceModel,
    prompt: Sequence[int],
    max_tokens: int,
    params: SamplingParams | None = None,
    stop_tokens: Iterable[int] = (),
    draft: MtpDraftParams | None = None,
    kv_dtype: np.dtype | None = None,
) -> GenerationResult:
    """Speculative decoding with the model's own MTP head (llama.cpp `--spec-type draft-mtp`); arguments as
    `generate`, plus the draft settings. The result carries the acceptance statistics."""
    if not model.has_mtp:
        raise ValueError(f"{model.cfg.source}: no MTP block, cannot use MTP speculative decoding")
    params = params or SamplingParams.greedy_params()
    draft = draft or MtpDraftParams()
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
        step = speculative_step(
            model,
            state,
            mtp_state,
            sampler,
            id_last,
            pending_h,
            min(draft.n_max, out.remaining - 1),
            draft,
            out.emit,
        )
        if step.n_drafted:   # a step without drafts is a plain decode for llama-server's counters
            stats.record(step.n_drafted, step.n_accepted)
        id_last, pending_h = step.id_last, step.pending_h
        if step.done:
            return GenerationResult(out.tokens, out.stop_reason, stats, state, mtp_state)
