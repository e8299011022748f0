"""Text generation with the NumPy reference: plain decoding and llama.cpp's `draft-mtp` speculative loop.

The MTP loop follows qwen35-mtp.md §5.3: draft up to n_max tokens greedily with the MTP head (stop when the
top-1 probability over the top-10 draft logits is below p_min), verify [last token + drafts] in one trunk
batch, accept to the first mismatch with the request's own sampler, roll the trunk back to the accepted
position, and catch the MTP KV cache up with the true hidden states so it mirrors the committed prefix.
Because the reference is batch invariant, speculative output equals plain output token for token (greedy,
and seeded sampling too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from vkmtp.ref.model import ReferenceModel
from vkmtp.ref.state import ModelState, MtpState
from vkmtp.sampling import Sampler, SamplingParams


@dataclass(frozen=True)
class MtpDraftParams:
    """llama.cpp's draft-mtp settings (defaults since #23269)."""

    n_max: int = 3          # --spec-draft-n-max
    n_min: int = 0          # --spec-draft-n-min: shorter drafts are discarded
    p_min: float = 0.0      # --spec-draft-p-min: stop drafting below this top-1 probability
    top_k: int = 10         # candidates the draft probability is computed over

    def __post_init__(self) -> None:
        if self.n_max < 1 or self.n_min < 0 or self.top_k < 1 or not 0.0 <= self.p_min <= 1.0:
            raise ValueError(f"invalid MTP draft parameters {self}")


@dataclass
class SpecStats:
    """Acceptance counters in llama-server's terms (draft_n, draft_n_accepted, per-position rates)."""

    n_steps: int = 0                  # verification steps that carried a draft
    n_drafted: int = 0                # draft_n
    n_accepted: int = 0               # draft_n_accepted
    drafted_per_pos: list[int] = field(default_factory=list)
    accepted_per_pos: list[int] = field(default_factory=list)

    def record(self, n_drafted: int, n_accepted: int) -> None:
        if n_drafted == 0:
            return
        self.n_steps += 1
        self.n_drafted += n_drafted
        self.n_accepted += n_accepted
        for counts, n in ((self.drafted_per_pos, n_drafted), (self.accepted_per_pos, n_accepted)):
            counts.extend([0] * (n_drafted - len(counts)))
            for i in range(n):
                counts[i] += 1

    @property
    def acceptance_rate(self) -> float:
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def mean_accept_len(self) -> float:
        """llama.cpp's `mean len = 1 + accepted / steps`."""
        return 1.0 + self.n_accepted / self.n_steps if self.n_steps else 1.0


@dataclass
class GenerationResult:
    tokens: list[int]                 # generated tokens, without the prompt and without the stop token
    stop_reason: str                  # "stop_token" or "max_tokens"
    stats: SpecStats | None = None    # only for speculative generation
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


def _start(model: ReferenceModel, prompt: Sequence[int], params: SamplingParams,
           max_tokens: int) -> tuple[Sampler, ModelState, np.ndarray, np.ndarray]:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    sampler = Sampler(params)
    for token in prompt:
        sampler.accept(token)
    state = model.new_state()
    logits, hidden = model.forward(prompt, state)
    return sampler, state, logits, hidden


def generate(model: ReferenceModel, prompt: Sequence[int], max_tokens: int,
             params: SamplingParams | None = None, stop_tokens: Iterable[int] = ()) -> GenerationResult:
    """Plain autoregressive decoding: one trunk forward per generated token."""
    params = params or SamplingParams.greedy_params()
    sampler, state, logits, _ = _start(model, prompt, params, max_tokens)
    out = _Output(max_tokens, stop_tokens)
    while True:
        token = sampler.sample(logits[-1])
        sampler.accept(token)
        if out.emit(token):
            return GenerationResult(out.tokens, out.stop_reason, None, state)
        logits, _ = model.forward([token], state)


def draft_mtp(model: ReferenceModel, mtp_state: MtpState, id_last: int, pending_h: np.ndarray,
              n_draft_max: int, draft: MtpDraftParams) -> list[int]:
    """Chain the MTP head from (id_last, pending_h) at position mtp_state.n_past; greedy, top-k probability
    check against p_min. Leaves the draft-time entries in mtp_state (the caller drops them)."""
    tokens: list[int] = []
    token, h = id_last, pending_h.reshape(1, -1)
    for _ in range(n_draft_max):
        logits, hm = model.mtp_forward([token], h, mtp_state)
        top = np.argsort(-logits[0], kind="stable")[: draft.top_k]
        top_logits = logits[0, top].astype(np.float64)
        probs = np.exp(top_logits - top_logits.max())
        probs /= probs.sum()
        if probs[0] < draft.p_min:
            break
        tokens.append(int(top[0]))
        token, h = int(top[0]), hm
    return tokens if len(tokens) >= draft.n_min else []


def generate_mtp(model: ReferenceModel, prompt: Sequence[int], max_tokens: int,
                 params: SamplingParams | None = None, stop_tokens: Iterable[int] = (),
                 draft: MtpDraftParams | None = None) -> GenerationResult:
    """Speculative decoding with the model's own MTP head (llama.cpp `--spec-type draft-mtp`)."""
    if not model.has_mtp:
        raise ValueError(f"{model.cfg.source}: no MTP block, cannot use MTP speculative decoding")
    params = params or SamplingParams.greedy_params()
    draft = draft or MtpDraftParams()
    sampler, state, logits, hidden = _start(model, prompt, params, max_tokens)
    mtp_state = model.new_mtp_state()
    # prompt catch-up: MTP entry p is (x_p, h_{p-1}), h_{-1} = 0
    h_prev = np.concatenate([np.zeros((1, hidden.shape[1]), hidden.dtype), hidden[:-1]])
    model.mtp_forward(prompt, h_prev, mtp_state)
    pending_h = hidden[-1]
    stats = SpecStats()
    out = _Output(max_tokens, stop_tokens)
    id_last = sampler.sample(logits[-1])
    sampler.accept(id_last)
    if out.emit(id_last):
        return GenerationResult(out.tokens, out.stop_reason, stats, state, mtp_state)
    while True:
        n_past = state.n_past
        drafted = draft_mtp(model, mtp_state, id_last, pending_h, min(draft.n_max, out.remaining - 1), draft)
        mtp_state.rollback(n_past)
        batch = [id_last] + drafted
        logits, hidden = model.forward(batch, state, keep_steps=len(batch))
        h_rows = np.concatenate([pending_h.reshape(1, -1), hidden[:-1]])
        model.mtp_forward(batch, h_rows, mtp_state)                     # catch-up with the true hiddens
        n_accepted, done = 0, False
        for row in range(len(batch)):             # row j holds the target's choice after d_1..d_j
            token = sampler.sample(logits[row])
            sampler.accept(token)
            matched = row < len(drafted) and token == drafted[row]
            n_accepted += matched
            done = out.emit(token)
            id_last = token
            if done or not matched:
                break
        stats.record(len(drafted), n_accepted)
        # keep id_last, d_1 .. d_row: the prefix before the newest token, as plain decoding would have it
        pending_h = hidden[row]
        state.rollback(n_past + row + 1)
        mtp_state.rollback(n_past + row + 1)
        if done:
            return GenerationResult(out.tokens, out.stop_reason, stats, state, mtp_state)
