"""What both engines do the same way: admission, the step skeleton, stop rules, timings, prompt-cache choice.

A `SlotEngine` owns `n_slots` slots. `submit` checks the request (empty prompt, token ids, prompt too long),
picks a free slot (the one whose cached memory is the longest reusable prefix of the prompt when it covers at
least --slot-prompt-similarity of it, else the least recently used one), swaps the slot's memory with the host-RAM
prompt cache where that serves the prompt better (vkmtp.engine.host_cache) and opens a `Run` in it. `step` advances
every sequence once: slots whose prompt is not done get one prefill chunk (`_prefill`, which returns the first token when the prompt is done); the slots
that were already generating take one generation step together (`_generate`). Every new token goes through
`_emit` (stop ids, max_tokens, context full) and the timings; a finished or cancelled sequence frees its slot
at once. Subclasses say how memory is kept: `_reusable`, `_open`, `_prefill`, `_generate`, `_release`, and how a
slot's prompt cache becomes host arrays and back: `_held`, `_take_image`, `_load_image`, `_erase` (also what the
server's slot save/restore/erase use).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from vkmtp.engine.api import Engine, EngineConfig, Event, NoFreeSlotError, PromptTooLongError, Request, Sequence
from vkmtp.engine.host_cache import KEEP_FRACTION, HostPromptCache, SlotImage
from vkmtp.engine.token_probs import TokenProbs, from_logits, post_sampling
from vkmtp.sampling import Sampler
from vkmtp.spec.config import SpecConfig
from vkmtp.spec.step import count_drafts, draft_budget, n_taken


@dataclass(eq=False)
class Run:
    """One sequence in its slot."""

    seq: Sequence
    prompt: list[int]
    sampler: Sampler
    id_last: int = -1        # sampled, not yet evaluated; -1 while the prompt is not done
    spec: SpecConfig | None = None   # the engine's draft settings with the request's overrides
    step_probs: list[TokenProbs] | None = None   # the token probabilities of the tokens the step returns


@dataclass(eq=False)
class Slot:
    index: int
    run: Run | None = None
    last_used: float = 0.0


class SlotEngine(Engine):
    """The engine contract over slots; subclasses implement the memory and the forward passes."""

    config: EngineConfig
    slots: list[Slot]
    host_cache: HostPromptCache   # --cache-ram (vkmtp.engine.host_cache)
    backend: str                  # "vulkan" | "reference" (--backend)
    use_mtp: bool
    closed: bool = False
    _depths: list[int]   # set by _generate: the draft depth each sequence of the step ran at (0: plain)

    # ---- admission -----------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Sequence:
        if self.closed:
            raise RuntimeError("the engine is closed")
        prompt = [int(t) for t in request.prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty")
        bad = [t for t in prompt if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the vocabulary (0..{self.n_vocab - 1})")
        spec = request.spec.apply(self.config.spec) if request.spec is not None else self.config.spec
        n_ctx = self.config.n_ctx
        if len(prompt) >= n_ctx:
            raise PromptTooLongError(f"the prompt has {len(prompt)} tokens; the context holds {n_ctx} per slot "
                                     f"(prompt + at least one generated token)")
        free = [s for s in self.slots if s.run is None]
        if request.slot >= 0:
            if request.slot >= len(self.slots):
                raise ValueError(f"slot {request.slot} does not exist (the engine has {len(self.slots)})")
            free = [s for s in free if s.index == request.slot]
            if not free:
                raise NoFreeSlotError(f"slot {request.slot} is busy")
        if not free:
            raise NoFreeSlotError(f"all {len(self.slots)} slots are busy")
        slot = min(free, key=lambda s: s.last_used)
        similarity = self.config.slot_prompt_similarity
        if request.cache_prompt and similarity > 0:
            # llama-server's --slot-prompt-similarity: the free slot that reuses the most of the prompt, when
            # it reuses at least that fraction of it; else the least recently used one
            best = max(free, key=lambda s: self._reusable(s, prompt))
            if self._reusable(best, prompt) >= similarity * len(prompt) and self._reusable(best, prompt) > 0:
                slot = best
        t0 = time.perf_counter()
        self._swap_host_cache(slot, prompt, request.cache_prompt)
        cached = self._reusable(slot, prompt) if request.cache_prompt else 0
        seq = Sequence(request, slot.index)
        seq.timings.cache_n = cached
        seq.timings.prompt_n = len(prompt) - cached
        seq.timings.prompt_ms += 1e3 * (time.perf_counter() - t0)   # host-cache copies are prompt work
        sampler = Sampler(request.params)
        for token in prompt:
            sampler.accept(token)
        if request.shape is not None:   # the grammar follows the generated tokens only
            sampler = request.shape.sampler(sampler, self.n_vocab)
        slot.run = self._open(slot, seq, prompt, sampler, cached)
        slot.run.spec = spec
        slot.last_used = time.monotonic()
        return seq

    def _swap_host_cache(self, slot: Slot, prompt: list[int], cache_prompt: bool) -> None:
        """The host-RAM prompt cache (vkmtp.engine.host_cache): a prompt that keeps less than half of the slot's
        memory moves that memory to host RAM; one that a cached image serves better than the slot gets it back."""
        cache = self.host_cache
        if not cache.enabled:
            return
        own = self._reusable(slot, prompt) if cache_prompt else 0
        image, n = cache.best(prompt) if cache_prompt else (None, 0)
        held = self._held(slot)
        if image is None or n <= own:
            image = None
            if own >= KEEP_FRACTION * held:
                return
        else:
            cache.take(image)
        if held:
            cache.put(self._take_image(slot))
        if image is not None:
            self._load_image(slot, image)

    def save_slot(self, index: int) -> SlotImage:
        """The image of an idle slot's prompt cache (POST /slots/{id}?action=save)."""
        slot = self._idle_slot(index)
        image = self._take_image(slot)
        if image.n_tokens == 0:
            raise ValueError(f"slot {index} holds no prompt cache to save")
        return image

    def restore_slot(self, index: int, image: SlotImage) -> int:
        """Replace an idle slot's prompt cache by an image (action=restore); the tokens it holds."""
        slot = self._idle_slot(index)
        if any(not 0 < p <= len(image.history) for p in image.checkpoints) or \
                image.checkpoints != sorted(set(image.checkpoints)):
            raise ValueError(f"the slot image's checkpoints {image.checkpoints[:8]} are not increasing positions in "
                             f"its {len(image.history)}-token history")
        if image.n_tokens >= self.config.n_ctx:
            raise ValueError(f"the slot image holds {image.n_tokens} tokens; the context holds {self.config.n_ctx} "
                             f"per slot")
        self._load_image(slot, image)
        return image.n_tokens

    def erase_slot(self, index: int) -> int:
        """Forget an idle slot's prompt cache (action=erase); the tokens it held."""
        slot = self._idle_slot(index)
        n = self._held(slot)
        self._erase(slot)
        return n

    def image_settings(self) -> dict:
        """What a slot image depends on besides the model: the engine (its arrays' layout), the KV cache types and
        whether the MTP head's state is in it (a slot file records it; vkmtp.engine.slot_file)."""
        t = self.config.cache_types
        return {"engine": self.backend, "cache_types": [t.k, t.v, t.mtp_k, t.mtp_v], "mtp": bool(self.use_mtp)}

    def _idle_slot(self, index: int) -> Slot:
        if not 0 <= index < len(self.slots):
            raise ValueError(f"slot {index} does not exist (the engine has {len(self.slots)})")
        if self.slots[index].run is not None:
            raise NoFreeSlotError(f"slot {index} is busy")
        return self.slots[index]

    # ---- stepping ------------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return any(s.run is not None for s in self.slots)

    def step(self) -> list[Event]:
        generating = [s for s in self.slots if s.run is not None and s.run.id_last >= 0]
        events = []
        for slot in self.slots:
            if slot.run is None or slot.run.id_last >= 0:
                continue
            t0 = time.perf_counter()
            first = self._prefill(slot)
            slot.run.seq.timings.prompt_ms += 1e3 * (time.perf_counter() - t0)
            if first is not None:
                events.append(self._emit(slot, [first]))
        if generating:
            t0 = time.perf_counter()
            self._depths = [0] * len(generating)
            outs = self._generate(generating)
            dt = 1e3 * (time.perf_counter() - t0)
            for slot, out, depth in zip(generating, outs, self._depths):
                seq = slot.run.seq
                seq.timings.predicted_ms += dt
                n_before = len(seq.generated)
                event = self._emit(slot, out)
                # tokens the step gave this sequence (a stop id ends it unkept but was generated)
                seq.spec.record_step(depth, len(seq.generated) - n_before + (seq.stop_reason == "eos"), dt)
                events.append(event)
        return events

    def _emit(self, slot: Slot, tokens: list[int]) -> Event:
        """Take a step's new tokens into the sequence up to the first stop: a stop id (not kept), max_tokens,
        or a full context (prompt + generated == n_ctx)."""
        run = slot.run
        seq, request = run.seq, run.seq.request
        new: list[int] = []
        for token in tokens[: self._n_taken(run, tokens)]:
            if token in request.stop_ids:
                seq.stop_reason = "eos"
                break
            new.append(token)
        seq.generated.extend(new)
        probs, run.step_probs = run.step_probs, None
        if probs is not None:
            probs = probs[: len(new)]
            seq.probs.extend(probs)
        for token in new:
            run.sampler.accept(token)
        if new:
            run.id_last = new[-1]
        if seq.stop_reason is None:
            seq.stop_reason = self._limit_reason(run)
        t = seq.timings
        t.predicted_n = len(seq.generated)
        t.draft_n, t.draft_n_accepted = seq.spec.draft_n, seq.spec.draft_n_accepted
        if seq.stop_reason is not None:
            self._finish(slot, seq.stop_reason)
        return Event(seq, new, seq.done, probs)

    def _n_taken(self, run: Run, tokens: list[int]) -> int:
        """How many of `tokens` the sequence looks at before it stops (the stopping token included)."""
        left = self.config.n_ctx - len(run.prompt) - len(run.seq.generated)
        remaining = self._remaining(run)
        return n_taken(tokens, run.seq.request.stop_ids, left if remaining is None else min(left, remaining))

    def _limit_reason(self, run: Run) -> str | None:
        n = len(run.seq.generated)
        if 0 <= run.seq.request.max_tokens <= n:
            return "limit"
        if len(run.prompt) + n >= self.config.n_ctx:
            return "context"
        return None

    def _remaining(self, run: Run) -> int | None:
        """Tokens the request may still generate (None: until the context is full)."""
        max_tokens = run.seq.request.max_tokens
        return max_tokens - len(run.seq.generated) if max_tokens >= 0 else None

    def _draft_budget(self, run: Run, n_past: int) -> int:
        """Drafts worth checking for this sequence with n_past tokens in memory (vkmtp.spec.step)."""
        return draft_budget(run.spec.n_max, n_past, self.config.n_ctx, self._remaining(run))

    @staticmethod
    def _count_drafts(run: Run, n_valid: int, n_accepted: int, budget: int) -> None:
        """llama-server's statistics of a step that checked n_valid drafts and accepted n_accepted."""
        n_drafted, n_accepted = count_drafts(n_valid, n_accepted, budget)
        if n_drafted:   # a step whose drafts all fall past the budget is a plain decode for llama-server
            run.seq.spec.record(n_drafted, n_accepted)

    @staticmethod
    def _host_probs(run: Run, tokens: list[int], rows) -> list[TokenProbs] | None:
        """The probabilities of `tokens` from logits rows on the host (row j chose tokens[j], after tokens[:j]
        were accepted), as the request asked; None when it asked for none. Before the sampler accepts them."""
        want = run.seq.request.probs
        if want is None:
            return None
        if want.post_sampling:
            dists = run.sampler.distributions(np.stack(rows), tokens[: len(rows) - 1])
            return [post_sampling(t, ids, p, want.n_top) for t, (ids, p) in zip(tokens, dists)]
        return [from_logits(t, row, want.n_top) for t, row in zip(tokens, rows)]

    # ---- ending --------------------------------------------------------------------------------------------
    def cancel(self, seq: Sequence) -> None:
        slot = self.slots[seq.slot]
        if not seq.done and slot.run is not None and slot.run.seq is seq:
            self._finish(slot, "cancelled")

    def _finish(self, slot: Slot, reason: str) -> None:
        run = slot.run
        run.seq.done = True
        run.seq.stop_reason = run.seq.stop_reason or reason
        self._release(slot, run, reason)
        slot.run = None
        slot.last_used = time.monotonic()

    def _cancel_all(self) -> None:
        for slot in self.slots:
            if slot.run is not None:
                self._finish(slot, "cancelled")
        self.closed = True

    # ---- what each engine provides -------------------------------------------------------------------------
    @abstractmethod
    def _reusable(self, slot: Slot, prompt: list[int]) -> int:
        """Prompt tokens the slot's cached memory covers (0: none)."""

    @abstractmethod
    def _open(self, slot: Slot, seq: Sequence, prompt: list[int], sampler: Sampler, cached: int) -> Run:
        """Prepare the slot's memory for `prompt`, reusing its first `cached` tokens; return the run."""

    @abstractmethod
    def _prefill(self, slot: Slot) -> int | None:
        """Evaluate the next prompt chunk; when the prompt is done, sample and return the first token."""

    @abstractmethod
    def _generate(self, slots: list[Slot]) -> list[list[int]]:
        """One decode or speculative step of these sequences: each one's new tokens (stops applied after)."""

    def _release(self, slot: Slot, run: Run, reason: str) -> None:
        """The sequence ended (reason: eos | limit | context | cancelled): keep what the prompt cache keeps."""

    @abstractmethod
    def _held(self, slot: Slot) -> int:
        """Tokens the slot's prompt cache holds (its live memory or its latest checkpoint; 0: nothing)."""

    @abstractmethod
    def _take_image(self, slot: Slot) -> SlotImage:
        """The slot's prompt cache copied to host arrays (the slot keeps it)."""

    @abstractmethod
    def _load_image(self, slot: Slot, image: SlotImage) -> None:
        """Make the slot's prompt cache exactly `image` (what it held before is gone)."""

    @abstractmethod
    def _erase(self, slot: Slot) -> None:
        """Forget the slot's prompt cache."""
