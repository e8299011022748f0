"""ReferenceEngine: the engine contract over the NumPy reference (slots, prefill, MTP, prompt cache)."""

import numpy as np
import pytest

from vkmtp.engine.api import EngineConfig, NoFreeSlotError, PromptTooLongError, Request
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

GREEDY = SamplingParams.greedy_params()
F16 = np.float16  # the engine's default KV cache type (-ctk f16), as in llama.cpp
PROMPT = [int(t) for t in np.random.default_rng(5).integers(0, 500, 23)]
OTHER = [int(t) for t in np.random.default_rng(6).integers(0, 500, 17)]


@pytest.fixture(scope="module")
def aligned_model(tiny_gguf) -> ReferenceModel:
    """Dense tiny model whose MTP drafts are often accepted."""
    return ReferenceModel.from_gguf(tiny_gguf("aligned"))


def engine(model, mtp=True, n_slots=2, n_ctx=128, ubatch=8):
    return ReferenceEngine(
        model,
        EngineConfig(n_ctx=n_ctx, n_slots=n_slots, ubatch=ubatch, spec=SpecConfig(enabled=mtp, n_max=3)),
    )


def run(eng, *requests):
    seqs = [eng.submit(r) for r in requests]
    while eng.has_work():
        eng.step()
    return seqs


@pytest.mark.parametrize("mtp", [False, True])
def test_greedy_output_is_the_reference_loops_output(aligned_model, mtp):
    (seq,) = run(engine(aligned_model, mtp), Request(PROMPT, GREEDY, max_tokens=12))
    ref = (generate_mtp if mtp else generate)(aligned_model, PROMPT, 12, kv_dtype=F16)
    assert seq.generated == ref.tokens
    assert seq.stop_reason == "limit" and seq.done
    timings = seq.timings.to_json()
    assert timings["predicted_n"] == 12 and timings["prompt_n"] == len(PROMPT) and timings["cache_n"] == 0
    assert timings["prompt_ms"] > 0 and timings["predicted_ms"] > 0
    if mtp:  # llama-server's draft fields, only when drafting happened
        assert timings["draft_n"] == ref.stats.draft_n > 0
        assert timings["draft_n_accepted"] == ref.stats.draft_n_accepted
        assert seq.spec.steps == ref.stats.steps
    else:
        assert "draft_n" not in timings and "draft_n_accepted" not in timings


def test_seeded_sampling_repeats_and_mtp_keeps_the_distribution_path(aligned_model):
    params = SamplingParams(temperature=0.9, seed=11)
    plain = run(engine(aligned_model, mtp=False), Request(PROMPT, params, max_tokens=10))[0]
    again = run(engine(aligned_model, mtp=False), Request(PROMPT, params, max_tokens=10))[0]
    spec = run(engine(aligned_model, mtp=True), Request(PROMPT, params, max_tokens=10))[0]
    assert plain.generated == again.generated == spec.generated


def test_two_slots_step_together_and_match_each_alone(aligned_model):
    eng = engine(aligned_model, n_slots=2)
    a, b = run(eng, Request(PROMPT, GREEDY, max_tokens=9), Request(OTHER, GREEDY, max_tokens=14))
    assert {a.slot, b.slot} == {0, 1}
    assert a.generated == generate(aligned_model, PROMPT, 9, kv_dtype=F16).tokens
    assert b.generated == generate(aligned_model, OTHER, 14, kv_dtype=F16).tokens


def test_step_events_carry_every_new_token_once(aligned_model):
    eng = engine(aligned_model)
    seq = eng.submit(Request(PROMPT, GREEDY, max_tokens=11))
    seen, n_steps = [], 0
    while eng.has_work():
        n_steps += 1
        for ev in eng.step():
            assert ev.seq is seq
            seen += ev.new_ids
            assert ev.done == seq.done
    assert seen == seq.generated
    assert n_steps < 3 + 11  # 3 prefill chunks of 8, then fewer steps than tokens (drafts)


def test_prompt_cache_reuses_a_prefix_and_changes_nothing(aligned_model):
    eng = engine(aligned_model, n_slots=1)
    first = run(eng, Request(PROMPT, GREEDY, max_tokens=8))[0]
    # the next turn extends prompt + answer: the end-of-sequence state covers all but the newest token
    turn = PROMPT + first.generated + OTHER[:5]
    second = run(eng, Request(turn, GREEDY, max_tokens=6))[0]
    assert second.timings.cache_n == len(PROMPT) + len(first.generated) - 1
    assert second.timings.prompt_n == len(turn) - second.timings.cache_n
    assert second.generated == generate(aligned_model, turn, 6, kv_dtype=F16).tokens
    # the same prompt again: the checkpoint one token before its end leaves one token to evaluate, same answer
    third = run(eng, Request(turn, GREEDY, max_tokens=6))[0]
    assert third.timings.cache_n == len(turn) - 1 and third.timings.prompt_n == 1
    assert third.generated == second.generated
    # cache_prompt=False evaluates everything
    fourth = run(eng, Request(turn, GREEDY, max_tokens=6, cache_prompt=False))[0]
    assert fourth.timings.cache_n == 0 and fourth.generated == second.generated


def test_cache_prefers_the_slot_holding_the_prefix(aligned_model):
    eng = engine(aligned_model, n_slots=2)
    run(eng, Request(PROMPT, GREEDY, max_tokens=3), Request(OTHER, GREEDY, max_tokens=3))
    seq = run(eng, Request(OTHER + [7, 8], GREEDY, max_tokens=3))[0]
    assert seq.timings.cache_n >= len(OTHER)


def test_cancel_frees_the_slot_at_once(aligned_model):
    eng = engine(aligned_model, n_slots=1)
    seq = eng.submit(Request(PROMPT, GREEDY, max_tokens=50))
    eng.step()
    with pytest.raises(NoFreeSlotError):
        eng.submit(Request(OTHER, GREEDY, max_tokens=2))
    eng.cancel(seq)
    assert seq.done and seq.stop_reason == "cancelled" and not eng.has_work()
    other = run(eng, Request(OTHER, GREEDY, max_tokens=4))[0]
    assert other.generated == generate(aligned_model, OTHER, 4, kv_dtype=F16).tokens


def test_stop_reasons(aligned_model):
    eng = engine(aligned_model)
    first = generate(aligned_model, PROMPT, 3, kv_dtype=F16).tokens
    eos = run(eng, Request(PROMPT, GREEDY, max_tokens=10, stop_ids=frozenset({first[2]})))[0]
    assert eos.stop_reason == "eos" and eos.generated == first[:2]
    zero = run(eng, Request(PROMPT, GREEDY, max_tokens=0))[0]
    assert zero.stop_reason == "limit" and zero.generated == []
    small = engine(aligned_model, n_ctx=len(PROMPT) + 5)
    ctx = run(small, Request(PROMPT, GREEDY, max_tokens=-1))[0]
    assert ctx.stop_reason == "context" and len(PROMPT) + len(ctx.generated) == len(PROMPT) + 5


def test_bad_requests_are_refused(aligned_model):
    eng = engine(aligned_model, n_ctx=20)
    with pytest.raises(PromptTooLongError):
        eng.submit(Request(list(range(20)), GREEDY))
    with pytest.raises(ValueError, match="empty"):
        eng.submit(Request([], GREEDY))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.submit(Request([1, 2, 10**6], GREEDY))
    assert not eng.has_work()


def test_close_releases_everything(aligned_model):
    eng = engine(aligned_model)
    run(eng, Request(PROMPT, GREEDY, max_tokens=4))
    assert eng.allocated_bytes > 0
    eng.close()
    assert eng.allocated_bytes == 0
    with pytest.raises(RuntimeError, match="closed"):
        eng.submit(Request(PROMPT, GREEDY))


def test_kv_cache_type(aligned_model):
    f32 = ReferenceEngine(
        aligned_model, EngineConfig(n_ctx=64, kv_type="f32", spec=SpecConfig(enabled=False))
    )
    assert (
        run(f32, Request(PROMPT, GREEDY, max_tokens=6))[0].generated
        == generate(aligned_model, PROMPT, 6).tokens
    )
    with pytest.raises(ValueError, match="--cache-type-k 'q4_0'"):
        ReferenceEngine(aligned_model, EngineConfig(kv_type="q4_0"))


@pytest.mark.parametrize("mtp", [False, True])
def test_q8_0_kv_cache_rounds_rows_like_the_gpu_stores_them(aligned_model, mtp):
    """Every KV type of the table runs: q8_0 rows go through the set_rows oracle's quantize/dequantize."""
    eng = ReferenceEngine(aligned_model, EngineConfig(n_ctx=128, kv_type="q8_0", spec=SpecConfig(enabled=mtp)))
    seq = eng.submit(Request(PROMPT, GREEDY, max_tokens=24))
    state = eng.slots[seq.slot].run.state
    while eng.has_work():
        eng.step()
    want = generate(aligned_model, PROMPT, 24, kv_dtype="q8_0")
    assert seq.generated == want.tokens
    k = next(iter(state.kv.values())).k
    assert k.dtype == np.float32 and k.shape[0] > len(PROMPT)
    blocks = k.reshape(k.shape[0], -1, 32)       # each 32-value block is d * int8 (d = amax / 127)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127
    np.testing.assert_allclose(blocks / np.where(scale > 0, scale, 1), np.round(blocks / np.where(scale > 0, scale, 1)),
                               atol=2e-2)
    f16 = generate(aligned_model, PROMPT, 24, kv_dtype=F16).tokens
    assert sum(a == b for a, b in zip(seq.generated, f16)) >= 12   # close to the F16 cache's output
