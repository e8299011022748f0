"""The shared engine base (vkmtp/engine/base.py) on a toy engine, and the same contract on both real engines:
admission checks, slot choice, stop rules inside multi-token steps, timings, cancel."""

from __future__ import annotations

import pytest

from vkmtp.engine.api import EngineConfig, NoFreeSlotError, PromptTooLongError, Request
from vkmtp.engine.base import Run, Slot, SlotEngine
from vkmtp.engine.host_cache import HostPromptCache, SlotImage, cache_ram_bytes
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.ref import ReferenceModel
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.spec.step import count_drafts, draft_budget, keep_drafts, n_taken

GREEDY = SamplingParams.greedy_params()


class CountingEngine(SlotEngine):
    """Token t is followed by t + 1; a generation step yields `per_step` tokens (like accepted drafts); the
    slot's memory is the token list it evaluated."""

    def __init__(self, n_slots=2, n_ctx=32, ubatch=4, per_step=3):
        self.config = EngineConfig(n_ctx=n_ctx, n_slots=n_slots, ubatch=ubatch)
        self.slots = [Slot(i) for i in range(n_slots)]
        self.memory = {i: [] for i in range(n_slots)}
        self.per_step = per_step
        self.released = []
        self.host_cache = HostPromptCache(cache_ram_bytes(0))   # --cache-ram 0: the slots' own memory only

    @property
    def n_vocab(self) -> int:
        return 100

    def _reusable(self, slot, prompt):
        held = self.memory[slot.index]
        return len(held) if held and prompt[: len(held)] == held else 0

    def _open(self, slot, seq, prompt, sampler, cached):
        self.memory[slot.index] = self.memory[slot.index][:cached]
        return Run(seq, prompt, sampler)

    def _prefill(self, slot):
        run, held = slot.run, self.memory[slot.index]
        held += run.prompt[len(held): len(held) + self.config.ubatch]
        return held[-1] + 1 if len(held) == len(run.prompt) else None

    def _generate(self, slots):
        outs = []
        for slot in slots:
            self.memory[slot.index].append(slot.run.id_last)
            outs.append([(slot.run.id_last + i) % 100 for i in range(1, self.per_step + 1)])
        return outs

    def _release(self, slot, run, reason):
        self.released.append((slot.index, reason))

    # the host-RAM prompt cache's hooks: the toy's memory is its token list
    def _held(self, slot):
        return len(self.memory[slot.index])

    def _take_image(self, slot):
        return SlotImage(list(self.memory[slot.index]), [], [])

    def _load_image(self, slot, image):
        self.memory[slot.index] = list(image.tokens)

    def _erase(self, slot):
        self.memory[slot.index] = []


def drive(eng, *requests):
    seqs = [eng.submit(r) for r in requests]
    events = []
    while eng.has_work():
        events += eng.step()
    return seqs, events


def test_tokens_flow_through_prefill_chunks_and_multi_token_steps():
    eng = CountingEngine()
    (seq,), events = drive(eng, Request([1, 2, 3, 4, 5, 6], GREEDY, max_tokens=8))
    assert seq.generated == list(range(7, 15)) and seq.stop_reason == "limit"
    assert [len(e.new_ids) for e in events] == [1, 3, 3, 1]   # prefill: 2 chunks, the 2nd gives the first token
    assert [t for e in events for t in e.new_ids] == seq.generated and events[-1].done
    t = seq.timings
    assert (t.prompt_n, t.cache_n, t.predicted_n) == (6, 0, 8) and t.prompt_ms > 0 and t.predicted_ms > 0
    assert eng.released == [(0, "limit")]


def test_a_stop_id_inside_a_step_ends_there_unkept():
    eng = CountingEngine()
    (seq,), _ = drive(eng, Request([1, 2], GREEDY, max_tokens=20, stop_ids=frozenset({6})))
    assert seq.generated == [3, 4, 5] and seq.stop_reason == "eos"


def test_max_tokens_zero_and_a_full_context():
    eng = CountingEngine(n_ctx=10)
    (zero,), _ = drive(eng, Request([1, 2], GREEDY, max_tokens=0))
    assert zero.generated == [] and zero.stop_reason == "limit"
    (full,), _ = drive(eng, Request([1, 2, 3], GREEDY, max_tokens=-1))
    assert full.stop_reason == "context" and len(full.generated) == 10 - 3


def test_admission_checks():
    eng = CountingEngine(n_slots=1, n_ctx=8)
    with pytest.raises(ValueError, match="empty"):
        eng.submit(Request([], GREEDY))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.submit(Request([1, 100], GREEDY))
    with pytest.raises(PromptTooLongError, match="context holds 8"):
        eng.submit(Request(list(range(8)), GREEDY))
    seq = eng.submit(Request([1], GREEDY, max_tokens=5))
    with pytest.raises(NoFreeSlotError):
        eng.submit(Request([2], GREEDY))
    eng.cancel(seq)
    assert seq.done and seq.stop_reason == "cancelled" and not eng.has_work()
    assert eng.released == [(0, "cancelled")]


def test_slot_choice_prefers_the_cached_prefix_else_the_least_recently_used():
    eng = CountingEngine(n_slots=2)
    (a, b), _ = drive(eng, Request([1, 2, 3], GREEDY, max_tokens=2), Request([50, 51], GREEDY, max_tokens=2))
    assert (a.slot, b.slot) == (0, 1)
    (c,), _ = drive(eng, Request([50, 51, 52, 53, 9], GREEDY, max_tokens=1))
    assert c.slot == 1 and (c.timings.cache_n, c.timings.prompt_n) == (3, 2)   # slot 1 held [50, 51, 52]
    (d,), _ = drive(eng, Request([7, 7], GREEDY, max_tokens=1))
    assert d.slot == 0                                   # no prefix anywhere: the slot used longest ago
    (e,), _ = drive(eng, Request([50, 51, 52, 53, 9, 10], GREEDY, max_tokens=1, cache_prompt=False))
    assert e.timings.cache_n == 0


@pytest.mark.parametrize("similarity,slot", [(0.6, 1), (0.7, 0), (0.0, 0)])
def test_slot_prompt_similarity_is_the_reused_fraction_that_picks_a_slot(similarity, slot):
    import dataclasses

    eng = CountingEngine(n_slots=2)
    eng.config = dataclasses.replace(eng.config, slot_prompt_similarity=similarity)
    drive(eng, Request([1, 2, 3], GREEDY, max_tokens=2), Request([50, 51], GREEDY, max_tokens=2))
    # slot 1 holds [50, 51, 52] (3 of the 5 tokens: 0.6); slot 0 was used longest ago
    (c,), _ = drive(eng, Request([50, 51, 52, 53, 9], GREEDY, max_tokens=1))
    assert c.slot == slot and c.timings.cache_n == (3 if slot == 1 else 0)


def test_step_rules():
    assert n_taken([5, 6, 7], {6}, None) == 2 and n_taken([5, 6, 7], set(), 2) == 2
    assert n_taken([5, 6, 7], set(), 0) == 0 and n_taken([5, 6, 7], set(), None) == 3
    assert draft_budget(3, n_past=10, n_ctx=14, remaining=None) == 2    # 10 + m + 2 <= 14
    assert draft_budget(3, n_past=0, n_ctx=None, remaining=2) == 1      # llama.cpp: n_remaining - 1
    assert draft_budget(3, n_past=0, n_ctx=None, remaining=0) == 0
    spec = SpecConfig(n_max=3, n_min=2)
    assert keep_drafts([1], spec, 3) == [] and keep_drafts([1, 2, 3], spec, 1) == [1]   # n_min, then budget
    assert count_drafts(3, 3, 1) == (1, 1) and count_drafts(2, 0, 3) == (2, 0)


@pytest.fixture(scope="module")
def both(fixture_models, device):
    """The two real engines on the aligned F32 fixture, same config."""
    path = fixture_models("aligned", "f32")
    cfg = EngineConfig(n_ctx=48, n_slots=2, ubatch=8, spec=SpecConfig(n_max=3))
    engines = {"reference": ReferenceEngine(ReferenceModel.from_gguf(path), cfg),
               "vulkan": VulkanEngine(path, cfg, device=device)}
    yield engines
    for eng in engines.values():
        eng.close()


PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33]


def test_both_engines_share_admission_and_stop_rules(both):
    results = {}
    for name, eng in both.items():
        errors = []
        for bad in ([], [1, 2, 10**6], list(range(48))):
            with pytest.raises((ValueError, PromptTooLongError)) as err:
                eng.submit(Request(bad, GREEDY))
            errors.append((type(err.value), str(err.value)))
        free, _ = drive(eng, Request(PROMPT, GREEDY, max_tokens=10))
        stop = free[0].generated[4]
        eos, _ = drive(eng, Request(PROMPT, GREEDY, max_tokens=10, stop_ids=frozenset({stop}), cache_prompt=False))
        ctx, _ = drive(eng, Request(PROMPT, GREEDY, max_tokens=-1, cache_prompt=False))
        zero, _ = drive(eng, Request(PROMPT, GREEDY, max_tokens=0))
        results[name] = (errors, free[0].generated, eos[0].generated, eos[0].stop_reason, ctx[0].generated,
                         ctx[0].stop_reason, zero[0].generated, zero[0].stop_reason)
        assert ctx[0].stop_reason == "context" and len(PROMPT) + len(ctx[0].generated) == 48
        assert eos[0].stop_reason == "eos" and eos[0].generated == free[0].generated[: free[0].generated.index(stop)]
    assert results["reference"] == results["vulkan"]
