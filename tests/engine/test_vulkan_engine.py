"""The Vulkan engine against the NumPy reference: greedy tokens, MTP equivalence and statistics, one submission
per step, host traffic per step, several sequences at once, clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vkmtp.device import Device
from vkmtp.device.info import MemoryHeap
from vkmtp.engine.api import EngineConfig, PromptTooLongError, Request
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.memory_plan import DeviceMemoryError
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

GREEDY = SamplingParams.greedy_params()
PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31, 37]  # 20 tokens


def run(engine: VulkanEngine, prompt: list[int], n: int, params: SamplingParams = GREEDY):
    out, seq = [], None
    for ev in engine.generate(Request(prompt, params, max_tokens=n)):
        out += ev.new_ids
        seq = ev.seq
    return out, seq


@pytest.fixture(scope="module")
def engines(device):
    """Engines are cached per (model, config) for the module and closed at its end."""
    made = {}

    def get(path: str, mtp: bool, **kw) -> VulkanEngine:
        kw.setdefault("adaptive", False)   # fixed depth unless a test asks for the adaptive policy
        spec = SpecConfig(enabled=mtp, **{k: kw.pop(k) for k in list(kw) if k in ("n_max", "p_min", "n_min", "adaptive", "draft_vocab",
                                                                         "synthetic_accept")})
        key = (path, mtp, spec, tuple(sorted(kw.items())))
        if key not in made:
            cfg = EngineConfig(n_ctx=kw.pop("n_ctx", 256), n_slots=kw.pop("n_slots", 1), ubatch=kw.pop("ubatch", 8),
                               spec=spec, **kw)
            made[key] = VulkanEngine(path, cfg, device=device)
        return made[key]

    yield get
    for eng in made.values():
        eng.close()


@pytest.mark.parametrize("variant,file_type", [("dense", "f32"), ("moe", "f32")])
def test_greedy_matches_reference_over_prefill_chunks(fixture_models, engines, variant, file_type):
    """64 tokens after a 20-token prompt prefilled in chunks of 8 (the last one padded to the sink slot)."""
    path = fixture_models(variant, file_type)
    want = generate(ReferenceModel.from_gguf(path), PROMPT, 64, GREEDY).tokens
    got, seq = run(engines(path, mtp=False), PROMPT, 64)
    assert got == list(want)
    assert seq.timings.prompt_n == len(PROMPT) and seq.timings.predicted_n == 64


@pytest.mark.parametrize("variant,file_type", [("dense", "q4_k"), ("dense", "q6_k"), ("dense", "q8_0"),
                                               ("dense", "f16"), ("moe", "q4_k")])
def test_greedy_matches_reference_on_quantized_models(k256_models, engines, variant, file_type):
    path = k256_models(variant, file_type)
    want = generate(ReferenceModel.from_gguf(path), PROMPT[:13], 64, GREEDY).tokens
    got, _ = run(engines(path, mtp=False, ubatch=32), PROMPT[:13], 64)
    assert got == list(want)


def test_logits_agree_with_reference(fixture_models, device):
    """First-token logits of the F32 model (read through the host sampling path) within 1e-4 of the logit
    scale."""
    path = fixture_models("dense", "f32")
    ref = ReferenceModel.from_gguf(path)
    logits_ref, _ = ref.forward(PROMPT, ref.new_state())
    eng = VulkanEngine(path, EngineConfig(n_ctx=64, ubatch=32, spec=SpecConfig(enabled=False)), device=device)
    eng.gpu_sampling = False   # the logits come to the host
    seq = eng.submit(Request(PROMPT, SamplingParams(temperature=1.0, seed=0), max_tokens=1))
    while not seq.done:   # the last prompt token is a chunk of its own (a prompt-cache checkpoint before it)
        eng.step()
    got = eng._logits(0)
    scale = np.abs(logits_ref[-1]).max()
    assert np.abs(got - logits_ref[-1]).max() <= 1e-4 * scale
    assert seq.done
    eng.close()


@pytest.mark.parametrize("variant,file_type", [("aligned", "f32"), ("aligned", "q4_0")])
def test_greedy_mtp_equals_plain_decoding_and_the_reference_loop(fixture_models, engines, variant, file_type):
    """Token-identical to decoding without MTP and to the reference draft-mtp loop, with the same counts."""
    path = fixture_models(variant, file_type)
    n = 128
    ref = generate_mtp(ReferenceModel.from_gguf(path), PROMPT, n, GREEDY, spec=SpecConfig(n_max=3))
    plain, _ = run(engines(path, mtp=False), PROMPT, n)
    spec, seq = run(engines(path, mtp=True, n_max=3), PROMPT, n)
    assert spec == plain == list(ref.tokens)
    stats = seq.spec
    assert (stats.draft_n, stats.draft_n_accepted, stats.steps) == \
        (ref.stats.draft_n, ref.stats.draft_n_accepted, ref.stats.steps)
    assert stats.drafted_per_pos == list(ref.stats.drafted_per_pos)
    assert stats.accepted_per_pos == list(ref.stats.accepted_per_pos)
    # rollback was exercised after the first, a middle and the last draft was rejected, and on full acceptance
    assert all(stats.accept_hist[m] > 0 for m in range(4)), stats.accept_hist
    assert seq.timings.draft_n == stats.draft_n and seq.timings.draft_n_accepted == stats.draft_n_accepted
    print(f"\n{variant}-{file_type}: acceptance {stats.acceptance:.3f} ({stats.draft_n_accepted}/{stats.draft_n}), "
          f"mean accepted length {stats.mean_accepted_length:.2f}")


def test_mtp_on_a_quantized_k_model_matches_plain_decoding(k256_models, engines):
    path = k256_models("aligned", "q4_k")
    plain, _ = run(engines(path, mtp=False, ubatch=32), PROMPT, 48)
    spec, seq = run(engines(path, mtp=True, n_max=3, ubatch=32), PROMPT, 48)
    assert spec == plain
    assert seq.spec.draft_n_accepted > 0


@pytest.mark.parametrize("mtp", [False, True])
def test_one_queue_submission_per_step_and_only_ids_cross(fixture_models, engines, device, mtp):
    eng = engines(fixture_models("aligned", "f32"), mtp=mtp, n_max=3)
    seq = eng.submit(Request(PROMPT[:6], GREEDY, max_tokens=40))
    while not seq.generated:   # prefill (two chunks: the last prompt token is its own) + first token
        eng.step()
    steps = 0
    while not seq.done:
        before = device.submits
        written, read = eng.host_bytes_written, eng.host_bytes_read
        eng.step()
        assert device.submits - before == 1
        if mtp:   # records of 4 verify + 3 draft rows, 3 row-copy pairs; accept count, n_valid and ids back
            assert eng.host_bytes_written - written <= 16 * 7 + 3 * 16
        assert eng.host_bytes_read - read <= 64           # token ids, never logits
        steps += 1
    assert steps > 0


@pytest.mark.parametrize("mtp", [False, True])
def test_sampled_steps_are_one_submission_and_read_only_ids(fixture_models, engines, device, mtp):
    """Temperature 0.8 with penalties: every decode / speculative step is one queue submission (sampling,
    acceptance and rollback on the GPU) and reads back token ids and counts, never logits."""
    eng = engines(fixture_models("aligned", "f32"), mtp=mtp, n_max=3)
    params = SamplingParams(temperature=0.8, repeat_penalty=1.1, seed=4)
    seq = eng.submit(Request(PROMPT[:6], params, max_tokens=40))
    while not seq.generated:
        eng.step()
    steps = 0
    while not seq.done:
        before = device.submits
        read = eng.host_bytes_read
        eng.step()
        assert device.submits - before == 1
        assert eng.host_bytes_read - read <= 64
        steps += 1
    assert steps > 0
    if mtp:
        assert seq.spec.draft_n > 0


def test_two_concurrent_sequences_match_each_alone(fixture_models, engines):
    path = fixture_models("aligned", "f32")
    p1, p2 = PROMPT[:7], PROMPT[5:17]
    alone1, s1 = run(engines(path, mtp=True, n_max=3), p1, 40)
    alone2, s2 = run(engines(path, mtp=True, n_max=3), p2, 40)
    eng = engines(path, mtp=True, n_max=3, n_slots=2)
    a, b = eng.submit(Request(p1, GREEDY, max_tokens=40)), eng.submit(Request(p2, GREEDY, max_tokens=40))
    out = {a.id: [], b.id: []}
    while eng.has_work():
        for ev in eng.step():
            out[ev.seq.id] += ev.new_ids
    assert out[a.id] == alone1 and out[b.id] == alone2
    assert (a.spec.draft_n, a.spec.draft_n_accepted) == (s1.spec.draft_n, s1.spec.draft_n_accepted)
    assert (b.spec.draft_n, b.spec.draft_n_accepted) == (s2.spec.draft_n, s2.spec.draft_n_accepted)


def test_prompt_cache_reuses_the_slot_prefix(fixture_models, engines):
    eng = engines(fixture_models("dense", "f32"), mtp=False)
    first, seq = run(eng, PROMPT[:10], 8)
    follow = PROMPT[:10] + first[:-1] + [77, 78]          # the next turn extends what the slot holds
    fresh = generate(ReferenceModel.from_gguf(fixture_models("dense", "f32")), follow, 8, GREEDY).tokens
    second, seq2 = run(eng, follow, 8)
    assert seq2.timings.cache_n == len(PROMPT[:10]) + len(first) - 1
    assert second == list(fresh)


@pytest.mark.parametrize("mtp", [False, True])
def test_checkpoints_reuse_a_changed_history_like_the_reference(fixture_models, engines, mtp):
    """A turn whose history differs from what the slot holds (a template that drops earlier thinking) restores
    the latest checkpoint before the difference; an identical prompt evaluates one token. Tokens and cache_n
    equal the reference engine's, which follows the same checkpoint policy, and cold runs."""
    path = fixture_models("aligned", "f32")
    eng = engines(path, mtp=mtp, n_max=3, n_ctx=192)   # an engine of its own: no other test's memory
    ref = ReferenceEngine(path, EngineConfig(n_ctx=192, ubatch=8, spec=SpecConfig(enabled=mtp, n_max=3)))
    prompt = PROMPT[:14]
    first, seq1 = run(eng, prompt, 6)
    assert seq1.timings.cache_n == 0
    turn = prompt + [90, 91] + PROMPT[14:19]     # not the answer: the slot's live memory is no prefix of it
    second, seq2 = run(eng, turn, 6)
    assert seq2.timings.cache_n == len(prompt) and seq2.timings.prompt_n == len(turn) - len(prompt)
    again, seq3 = run(eng, turn, 6)
    assert (seq3.timings.cache_n, seq3.timings.prompt_n) == (len(turn) - 1, 1)
    cold = generate(ReferenceModel.from_gguf(path), turn, 6, GREEDY).tokens
    assert second == again == list(cold)
    for prompt_ids, tokens, seq in ((prompt, first, seq1), (turn, second, seq2), (turn, again, seq3)):
        r = ref.generate(Request(prompt_ids, GREEDY, max_tokens=6))
        out, last = [], None
        for ev in r:
            out += ev.new_ids
            last = ev.seq
        assert out == tokens and last.timings.cache_n == seq.timings.cache_n
    ref.close()


def test_sampling_is_seeded_and_valid(fixture_models, engines):
    path = fixture_models("aligned", "f32")
    params = SamplingParams(temperature=0.8, top_k=40, seed=7)
    for mtp in (False, True):
        a, _ = run(engines(path, mtp=mtp), PROMPT[:8], 24, params)
        b, _ = run(engines(path, mtp=mtp), PROMPT[:8], 24, params)
        assert a == b and len(a) == 24 and all(0 <= t < 512 for t in a)


def test_prompt_longer_than_the_context_is_refused(fixture_models, engines):
    eng = engines(fixture_models("dense", "f32"), mtp=False, n_ctx=16)
    with pytest.raises(PromptTooLongError, match="context holds 16"):
        eng.submit(Request(list(range(16)), GREEDY))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.submit(Request([1, 2, 100000], GREEDY))
    assert not eng.has_work()


def test_out_of_memory_is_a_clear_error_before_any_allocation(fixture_models):
    dev = Device()
    small = dataclasses.replace(dev.info, heaps=(MemoryHeap(2 << 20, True, 0, 0),), memory_budget=False,
                                kind="integrated")
    dev.info = small
    with pytest.raises(DeviceMemoryError) as err:
        VulkanEngine(fixture_models("dense", "f32"), EngineConfig(n_ctx=4096), device=dev)
    msg = str(err.value)
    assert "needs" in msg and "GiB" in msg and "--ctx-size" in msg and "KV cache" in msg
    assert dev.allocated_bytes == 0
    dev.destroy()


def test_adaptive_depth_keeps_greedy_output(fixture_models, engines):
    path = fixture_models("aligned", "f32")
    plain, _ = run(engines(path, mtp=False), PROMPT, 48)
    eng = engines(path, mtp=True, n_max=3, adaptive=True)
    got, seq = run(eng, PROMPT, 48)
    assert got == plain
    assert (1, 0) in eng.adaptive.cost and (1, 1) in eng.adaptive.cost   # plain and depth-1 steps measured
    stats = seq.spec   # tokens per step over ALL generation steps (the first token came from the prefill)
    assert stats.gen_tokens == 47 and stats.gen_steps >= stats.steps
    assert stats.tokens_per_step == 47 / stats.gen_steps and stats.drafts_per_step == stats.draft_n / stats.gen_steps
    assert stats.depths[0] == [0, 0] and any(d == 1 for _, d in stats.depths)


def _scripted_run(path, device, schedule, n, ring=None):
    """Greedy run of the adaptive engine with its depth choices scripted; the catch-ups' row counts."""
    eng = VulkanEngine(path, EngineConfig(n_ctx=256, ubatch=8, spec=SpecConfig(n_max=3)), device=device)
    try:
        assert eng.adaptive is not None and eng.state.lag_rows == 64
        if ring:
            eng.state.lag_rows = ring
        steps = iter(schedule)
        eng.adaptive.choose = lambda acceptances: next(steps)
        catch_ups = []
        real = eng._catch_up_mtp
        eng._catch_up_mtp = lambda slot: (catch_ups.append(slot.mtp_lag), real(slot))
        got, seq = run(eng, PROMPT, n)
        return got, (seq.spec.draft_n, seq.spec.draft_n_accepted), [k for k in catch_ups if k]
    finally:
        eng.close()


def test_plain_steps_defer_the_mtp_head_and_its_catch_up_gives_the_same_drafts(fixture_models, engines, device):
    """Depth 0 -> drafting -> depth 0 -> drafting, scripted: plain steps keep only the MTP head's input and the
    head catches up in one pass before it drafts. Tokens are plain decoding's, and the drafts and their
    acceptance are those of catching up after every plain step (a ring of one row): a catch-up of up to 8 rows
    writes the per-step bits."""
    path = fixture_models("aligned", "f32")
    plain, _ = run(engines(path, mtp=False), PROMPT, 60)
    schedule = [0] * 5 + [3] * 4 + [0] * 6 + [3] * 60
    lagged, stats, lags = _scripted_run(path, device, schedule, 60)
    eager, eager_stats, _ = _scripted_run(path, device, schedule, 60, ring=1)
    assert lagged == eager == plain
    assert stats == eager_stats and stats[0] > 0
    assert lags == [5, 6]


def test_a_long_stretch_of_plain_steps_catches_up_as_a_prompt_chunk(fixture_models, engines, device):
    """More plain steps than the lag ring holds (64): the MTP head catches up over the full ring as a prompt
    chunk, then over the rest before drafting; tokens stay plain decoding's and drafting goes on."""
    path = fixture_models("aligned", "f32")
    plain, _ = run(engines(path, mtp=False), PROMPT, 120)
    got, stats, lags = _scripted_run(path, device, [0] * 70 + [3] * 60, 120)
    assert got == plain
    assert lags == [64, 6] and stats[0] > 0


@pytest.mark.parametrize("p_min,n_min", [(0.3, 0), (0.0, 2)])
def test_draft_cuts_match_the_reference_loop(fixture_models, engines, p_min, n_min):
    """--spec-draft-p-min (top-1 probability over the draft's top-10) and --spec-draft-n-min, as llama.cpp."""
    path = fixture_models("aligned", "f32")
    ref = generate_mtp(ReferenceModel.from_gguf(path), PROMPT, 48, GREEDY,
                       spec=SpecConfig(n_max=3, p_min=p_min, n_min=n_min))
    got, seq = run(engines(path, mtp=True, n_max=3, p_min=p_min, n_min=n_min), PROMPT, 48)
    assert got == list(ref.tokens)
    assert (seq.spec.draft_n, seq.spec.draft_n_accepted) == (ref.stats.draft_n, ref.stats.draft_n_accepted)


@pytest.mark.parametrize("draft_vocab", [64, 200])
def test_reduced_vocabulary_draft_head_keeps_greedy_output(fixture_models, engines, draft_vocab):
    """--spec-draft-vocab N: the draft's LM head covers token ids < N; verification the whole vocabulary, so
    the tokens are plain decoding's, and the drafts and their acceptance are the reference loop's."""
    path = fixture_models("aligned", "f32")
    model = ReferenceModel.from_gguf(path)
    assert draft_vocab < model.cfg.n_vocab
    ref = generate_mtp(model, PROMPT, 48, GREEDY, spec=SpecConfig(n_max=3, draft_vocab=draft_vocab))
    plain, _ = run(engines(path, mtp=False), PROMPT, 48)
    got, seq = run(engines(path, mtp=True, n_max=3, draft_vocab=draft_vocab), PROMPT, 48)
    assert got == plain == list(ref.tokens)
    assert (seq.spec.draft_n, seq.spec.draft_n_accepted) == (ref.stats.draft_n, ref.stats.draft_n_accepted)
    assert seq.spec.draft_n_accepted > 0


def test_q8_0_kv_cache_keeps_mtp_equal_to_plain(fixture_models, engines):
    path = fixture_models("aligned", "f32")
    plain, _ = run(engines(path, mtp=False, kv_type="q8_0"), PROMPT, 40)
    spec, seq = run(engines(path, mtp=True, n_max=3, kv_type="q8_0"), PROMPT, 40)
    f16, _ = run(engines(path, mtp=False), PROMPT, 40)
    assert spec == plain
    assert sum(a == b for a, b in zip(plain, f16)) >= 30   # Q8_0 keys/values: close to the F16 cache's output
    assert seq.spec.draft_n_accepted > 0


def test_synthetic_acceptance_is_a_benchmark_mode(fixture_models, engines):
    """Accept each draft with a fixed probability regardless of the model (llama.cpp's --spec-synth-*)."""
    eng = engines(fixture_models("dense", "f32"), mtp=True, n_max=3, synthetic_accept=0.8)
    _, seq = run(eng, PROMPT, 64)
    rate = seq.spec.accepted_per_pos[0] / seq.spec.drafted_per_pos[0]
    assert 0.55 <= rate <= 0.98   # the random model itself accepts ~0 % of its drafts


def test_greedy_with_repeat_penalty_matches_the_reference_sampler(fixture_models, engines):
    """Penalties change the logits before the argmax, so the engine must not take the GPU's plain argmax."""
    path = fixture_models("aligned", "f32")
    params = SamplingParams(temperature=0.0, repeat_penalty=1.5, repeat_last_n=64)
    want = generate(ReferenceModel.from_gguf(path), PROMPT, 32, params).tokens
    for mtp in (False, True):
        got, _ = run(engines(path, mtp=mtp), PROMPT, 32, params)
        assert got == list(want)


def reference_tokens(path: str, prompt: list[int], n: int, params: SamplingParams, **kw) -> list[int]:
    """The reference engine's tokens for one request (its EngineConfig mirrors `engines`' defaults)."""
    spec = SpecConfig(enabled=kw.pop("mtp"), n_max=kw.pop("n_max", 3))
    eng = ReferenceEngine(ReferenceModel.from_gguf(path), EngineConfig(n_ctx=256, ubatch=8, spec=spec, **kw))
    out = [t for ev in eng.generate(Request(prompt, params, max_tokens=n)) for t in ev.new_ids]
    eng.close()
    return out


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.9, seed=3),
                                    SamplingParams(temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=11),
                                    SamplingParams(temperature=0.7, repeat_penalty=1.3, seed=5),
                                    SamplingParams(temperature=0.8, top_k=1, seed=21),
                                    SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.0, seed=22),
                                    SamplingParams(temperature=0.8, top_k=0, top_p=1.0, min_p=0.05, seed=23),
                                    SamplingParams(temperature=0.8, repeat_penalty=1.2, presence_penalty=0.5,
                                                   frequency_penalty=0.3, repeat_last_n=16, seed=24)],
                         ids=["default-chain", "full-vocab", "penalties", "top-k-1", "top-p-0.9", "min-p-0.05",
                              "all-penalties"])
def test_sampled_mtp_gives_the_reference_engines_tokens(fixture_models, engines, params):
    """Temperature > 0 with MTP: the GPU engine samples and verifies on the GPU (shaders/sample.comp) in the
    host sampler's arithmetic, so the same seed gives the same tokens on both engines, and the same as sampling
    without MTP."""
    path = fixture_models("aligned", "f32")
    want = reference_tokens(path, PROMPT, 40, params, mtp=True)
    got, seq = run(engines(path, mtp=True, n_max=3), PROMPT, 40, params)
    plain, _ = run(engines(path, mtp=False), PROMPT, 40, params)
    assert got == want == plain
    assert seq.spec.draft_n_accepted > 0 and seq.spec.draft_n_accepted < seq.spec.draft_n


def test_q8_0_kv_cache_matches_the_reference_engine(fixture_models, engines):
    """-ctk q8_0 on both engines: the reference rounds rows through the same q8_0 quantization the GPU stores."""
    path = fixture_models("aligned", "f32")
    want = reference_tokens(path, PROMPT, 40, GREEDY, mtp=True, kv_type="q8_0")
    got, _ = run(engines(path, mtp=True, n_max=3, kv_type="q8_0"), PROMPT, 40)
    assert got == want


def test_request_speculative_settings_override_the_engines(fixture_models, engines):
    """speculative.n_max / n_min / p_min of one request: its drafts are those of the reference loop with the
    same settings, its tokens plain decoding's; an n_max above the engine's is refused."""
    from vkmtp.spec import SpecOverride

    path = fixture_models("aligned", "f32")
    eng = engines(path, mtp=True, n_max=3)
    plain, _ = run(engines(path, mtp=False), PROMPT, 40)
    for override in (SpecOverride(n_max=1), SpecOverride(n_max=2, p_min=0.3)):
        ref = generate_mtp(ReferenceModel.from_gguf(path), PROMPT, 40, GREEDY, spec=override.apply(SpecConfig(n_max=3)))
        out, seq = [], None
        for ev in eng.generate(Request(PROMPT, GREEDY, max_tokens=40, spec=override)):
            out += ev.new_ids
            seq = ev.seq
        assert out == plain == list(ref.tokens)
        assert len(seq.spec.drafted_per_pos) == override.n_max
        assert (seq.spec.draft_n, seq.spec.draft_n_accepted) == (ref.stats.draft_n, ref.stats.draft_n_accepted)
    with pytest.raises(ValueError, match="speculative.n_max"):
        eng.submit(Request(PROMPT, GREEDY, max_tokens=4, spec=SpecOverride(n_max=4)))
    # a fixed depth for one request on an engine with the adaptive policy
    adaptive = engines(path, mtp=True, n_max=3, adaptive=True)
    out, seq = [], None
    for ev in adaptive.generate(Request(PROMPT, GREEDY, max_tokens=24, spec=SpecOverride(n_max=2, n_min=2))):
        out += ev.new_ids
        seq = ev.seq
    assert out == plain[:24]
    assert {d for _, d in seq.spec.depths} <= {2, 0} and seq.spec.depths[0][1] == 2
