"""The NumPy reference model behind the engine contract: what `--backend reference` and the server tests run.

Each slot owns a trunk state and (with MTP) an MTP state. `step()` advances every active slot once: one
prefill chunk of at most `ubatch` prompt tokens, or one decode step — a plain single-token forward, or one
draft/verify step of the reference MTP loop (vkmtp/ref/generate.py). Slots run one after another (the reference has no
batched kernels); the results are what a batched engine must reproduce.

Prompt cache: a GDN state cannot be cut back to an earlier position, so a slot remembers whole states: the
state at the end of its last prompt and the state at the end of its last sequence. A new prompt reuses the
longest of them whose tokens are a prefix of it; the remaining prompt tokens are evaluated on top.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from vkmtp.engine.api import (
    Engine,
    EngineConfig,
    Event,
    NoFreeSlotError,
    PromptTooLongError,
    Request,
    Sequence,
)
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import MtpDraftParams, mtp_catch_up, speculative_step
from vkmtp.ref.state import KVCache, ModelState, MtpState, StateSnapshot
from vkmtp.sampling import Sampler

KV_DTYPES = {"f16": np.float16, "f32": np.float32}  # -ctk names; f16 rounds like llama.cpp's default cache


@dataclass
class _CachedPrefix:
    """Memory after `tokens`: trunk (+ MTP) state, the last token's logits and post-norm hidden."""

    tokens: tuple[int, ...]
    state: StateSnapshot
    mtp: KVCache | None
    logits: np.ndarray  # [n_vocab] predicts the token after `tokens`
    hidden: np.ndarray  # [n_embd]  h of the last token (the MTP head's pending_h)

    @property
    def nbytes(self) -> int:
        arrays = [
            self.logits,
            self.hidden,
            *(c.k for c in self.state.kv.values()),
            *(c.v for c in self.state.kv.values()),
            *(s.conv for s in self.state.recurrent.values()),
            *(s.ssm for s in self.state.recurrent.values()),
        ]
        if self.mtp is not None:
            arrays += [self.mtp.k, self.mtp.v]
        return sum(a.nbytes for a in arrays)


@dataclass
class _Run:
    """The working state of one sequence in its slot."""

    seq: Sequence
    prompt: list[int]
    state: ModelState
    mtp: MtpState | None
    sampler: Sampler
    n_prompt_done: int  # prompt tokens in `state`
    logits: np.ndarray | None = None  # [n_vocab] after the last evaluated token
    hidden: np.ndarray | None = None  # [n_embd]
    id_last: int | None = None  # sampled, not yet evaluated
    stop_reason: str | None = None  # set when the sequence must end after this step
    t_prompt: float = 0.0  # perf_counter() when prompt processing began
    t_gen: float = 0.0  # ... when the prompt was done


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.run: _Run | None = None
        self.cache: list[_CachedPrefix] = []
        self.last_used = 0.0

    def best_prefix(self, prompt: list[int]) -> _CachedPrefix | None:
        """The longest cached prefix of `prompt` (it may be the whole prompt)."""
        best = None
        for entry in self.cache:
            n = len(entry.tokens)
            if (
                n <= len(prompt)
                and tuple(prompt[:n]) == entry.tokens
                and (best is None or n > len(best.tokens))
            ):
                best = entry
        return best


class ReferenceEngine(Engine):
    """The engine contract over `vkmtp.ref.ReferenceModel` (slow, exact: the oracle for the Vulkan engine)."""

    def __init__(self, model: str | os.PathLike | ReferenceModel, config: EngineConfig = EngineConfig()):
        """model: a GGUF path or an already opened ReferenceModel."""
        if config.n_slots < 1 or config.n_ctx < 2 or config.ubatch < 1:
            raise ValueError(
                f"invalid engine config: n_slots={config.n_slots}, n_ctx={config.n_ctx}, "
                f"ubatch={config.ubatch}"
            )
        if config.kv_type not in KV_DTYPES:
            raise ValueError(
                f"the reference engine keeps the KV cache as {' or '.join(KV_DTYPES)}, "
                f"not {config.kv_type!r}"
            )
        self.kv_dtype = KV_DTYPES[config.kv_type]
        self.model = model if isinstance(model, ReferenceModel) else ReferenceModel.from_gguf(model)
        self.config = config
        self.use_mtp = config.spec.enabled and self.model.has_mtp
        self.draft = MtpDraftParams(n_max=config.spec.n_max, n_min=config.spec.n_min, p_min=config.spec.p_min)
        self.slots = [_Slot(i) for i in range(config.n_slots)]
        self.closed = False

    @property
    def n_vocab(self) -> int:
        return self.model.cfg.n_vocab

    # ---- admission -----------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Sequence:
        if self.closed:
            raise RuntimeError("the engine is closed")
        prompt = [int(t) for t in request.prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty")
        self.model.check_tokens(prompt)
        if len(prompt) >= self.config.n_ctx:
            raise PromptTooLongError(
                f"the prompt has {len(prompt)} tokens; the context holds {self.config.n_ctx} "
                f"per slot (prompt + at least one generated token)"
            )
        slot, prefix = self._choose_slot(prompt, request.cache_prompt)
        seq = Sequence(request, slot.index)
        run = _Run(
            seq,
            prompt,
            self.model.new_state(self.kv_dtype),
            self.model.new_mtp_state(self.kv_dtype) if self.use_mtp else None,
            Sampler(request.params),
            0,
        )
        for token in prompt:
            run.sampler.accept(token)
        if prefix is not None:
            run.state.restore(prefix.state)
            if run.mtp is not None:
                run.mtp.restore(prefix.mtp)
            run.n_prompt_done = len(prefix.tokens)
            run.logits, run.hidden = prefix.logits, prefix.hidden
        seq.timings.cache_n = run.n_prompt_done
        seq.timings.prompt_n = len(prompt) - run.n_prompt_done
        slot.run = run
        slot.last_used = time.monotonic()
        return seq

    def _choose_slot(self, prompt: list[int], use_cache: bool) -> tuple[_Slot, _CachedPrefix | None]:
        """A free slot: the one with the longest reusable prefix, else the least recently used."""
        free = [s for s in self.slots if s.run is None]
        if not free:
            raise NoFreeSlotError(f"all {len(self.slots)} slots are busy")
        if use_cache:
            scored = [(s.best_prefix(prompt), s) for s in free]
            scored = [(p, s) for p, s in scored if p is not None]
            if scored:
                prefix, slot = max(scored, key=lambda ps: len(ps[0].tokens))
                return slot, prefix
        return min(free, key=lambda s: s.last_used), None

    # ---- stepping ------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return any(s.run is not None for s in self.slots)

    def step(self) -> list[Event]:
        events = []
        for slot in self.slots:
            run = slot.run
            if run is None:
                continue
            before = len(run.seq.generated)
            if run.n_prompt_done < len(run.prompt):
                self._prefill_chunk(slot, run)
            elif run.id_last is None:
                self._start_generation(slot, run)
            elif self.use_mtp:
                self._speculative_step(slot, run)
            else:
                self._decode_step(slot, run)
            new_ids = run.seq.generated[before:]
            if new_ids or run.seq.done:
                events.append(Event(run.seq, list(new_ids), run.seq.done))
        return events

    def _prefill_chunk(self, slot: _Slot, run: _Run) -> None:
        if run.n_prompt_done == run.seq.timings.cache_n and not run.t_prompt:
            run.t_prompt = time.perf_counter()
        chunk = run.prompt[run.n_prompt_done : run.n_prompt_done + self.config.ubatch]
        logits, hidden = self.model.forward(chunk, run.state)
        if run.mtp is not None:  # MTP entry p is built from (x_p, h_{p-1}); h_{-1} = 0
            prev = run.hidden if run.hidden is not None else np.zeros(hidden.shape[1], hidden.dtype)
            mtp_catch_up(self.model, chunk, hidden, prev, run.mtp)
        run.n_prompt_done += len(chunk)
        run.logits, run.hidden = logits[-1], hidden[-1]
        if run.n_prompt_done == len(run.prompt):
            if run.seq.request.cache_prompt:
                self._remember(slot, run, end_of_prompt=True)
            self._start_generation(slot, run)

    def _start_generation(self, slot: _Slot, run: _Run) -> None:
        """The prompt is in memory: stop the prompt clock and sample the first token."""
        now = time.perf_counter()
        run.seq.timings.prompt_ms = 1e3 * (now - run.t_prompt) if run.t_prompt else 0.0
        run.t_gen = now
        if run.seq.request.max_tokens == 0:
            run.stop_reason = "limit"
        else:
            self._sample_and_take(run)
        self._after_step(slot, run)

    def _decode_step(self, slot: _Slot, run: _Run) -> None:
        logits, hidden = self.model.forward([run.id_last], run.state)
        run.logits, run.hidden = logits[-1], hidden[-1]
        self._sample_and_take(run)
        self._after_step(slot, run)

    def _speculative_step(self, slot: _Slot, run: _Run) -> None:
        """One draft/verify step of the reference MTP loop (vkmtp.ref.generate.speculative_step)."""
        request = run.seq.request
        n_draft_max = min(self.draft.n_max, self.config.n_ctx - run.state.n_past - 2)
        if request.max_tokens >= 0:
            n_draft_max = min(n_draft_max, request.max_tokens - len(run.seq.generated) - 1)
        step = speculative_step(
            self.model,
            run.state,
            run.mtp,
            run.sampler,
            run.id_last,
            run.hidden,
            n_draft_max,
            self.draft,
            lambda token: self._take(run, token),
        )
        if step.n_drafted:
            run.seq.spec.record(step.n_drafted, step.n_accepted)
        run.logits, run.hidden = step.logits, step.pending_h
        self._after_step(slot, run)

    def _sample_and_take(self, run: _Run) -> None:
        token = run.sampler.sample(run.logits)
        run.sampler.accept(token)
        self._take(run, token)

    def _take(self, run: _Run, token: int) -> bool:
        """Add a sampled token; True (run.stop_reason set) when the sequence ends: EOS, budget, context."""
        seq, request = run.seq, run.seq.request
        if token in request.stop_ids:
            run.stop_reason = "eos"
            return True
        seq.generated.append(token)
        run.id_last = token
        if request.max_tokens >= 0 and len(seq.generated) >= request.max_tokens:
            run.stop_reason = "limit"
        elif len(run.prompt) + len(seq.generated) >= self.config.n_ctx:
            run.stop_reason = "context"
        return run.stop_reason is not None

    def _after_step(self, slot: _Slot, run: _Run) -> None:
        if run.stop_reason is not None:
            self._finish(slot, run, run.stop_reason)
        else:
            self._update_predicted(run)

    def _update_predicted(self, run: _Run) -> None:
        t = run.seq.timings
        t.predicted_n = len(run.seq.generated)
        t.predicted_ms = 1e3 * (time.perf_counter() - run.t_gen) if run.t_gen else 0.0
        t.draft_n, t.draft_n_accepted = run.seq.spec.draft_n, run.seq.spec.draft_n_accepted

    # ---- ending --------------------------------------------------------------------------------------------
    def _finish(self, slot: _Slot, run: _Run, reason: str) -> None:
        self._update_predicted(run)
        run.seq.done = True
        run.seq.stop_reason = reason
        if run.seq.request.cache_prompt and run.state.n_past > 0:
            self._remember(slot, run, end_of_prompt=False)
        slot.run = None
        slot.last_used = time.monotonic()

    def _remember(self, slot: _Slot, run: _Run, end_of_prompt: bool) -> None:
        """Keep the slot's memory for later prompts that extend these tokens (at most two entries)."""
        tokens = tuple(run.prompt[: run.n_prompt_done] + run.seq.generated)[: run.state.n_past]
        if end_of_prompt:
            slot.cache = []
        elif slot.cache and slot.cache[-1].tokens == tokens:
            return
        entry = _CachedPrefix(
            tokens,
            run.state.snapshot(),
            run.mtp.snapshot() if run.mtp is not None else None,
            run.logits.copy(),
            run.hidden.copy(),
        )
        slot.cache = (slot.cache + [entry])[-2:]

    def cancel(self, seq: Sequence) -> None:
        slot = self.slots[seq.slot]
        if seq.done or slot.run is None or slot.run.seq is not seq:
            return
        run = slot.run
        self._update_predicted(run)
        seq.done = True
        seq.stop_reason = "cancelled"
        if seq.request.cache_prompt and run.logits is not None and run.state.n_past > 0:
            self._remember(slot, run, end_of_prompt=False)
        slot.run = None
        slot.last_used = time.monotonic()

    def close(self) -> None:
        for slot in self.slots:
            if slot.run is not None:
                slot.run.seq.done = True
                slot.run.seq.stop_reason = "cancelled"
            slot.run, slot.cache = None, []
        self.model = None
        self.closed = True

    # ---- accounting ----------------------------------------------------------------------------------------
    @property
    def allocated_bytes(self) -> int:
        """Bytes of weights (dequantized so far), live states and cached prefixes this engine holds."""
        if self.model is None:
            return 0
        total = sum(a.nbytes for a in getattr(self.model.weights, "_cache", {}).values())
        for slot in self.slots:
            total += sum(entry.nbytes for entry in slot.cache)
            if slot.run is not None:
                total += _state_bytes(slot.run.state, slot.run.mtp)
        return total


def _state_bytes(state: ModelState, mtp: MtpState | None) -> int:
    arrays = [
        *(c.k for c in state.kv.values()),
        *(c.v for c in state.kv.values()),
        *(s.conv for s in state.recurrent.values()),
        *(s.ssm for s in state.recurrent.values()),
    ]
    if mtp is not None:
        arrays += [mtp.kv.k, mtp.kv.v]
    return sum(a.nbytes for a in arrays)
