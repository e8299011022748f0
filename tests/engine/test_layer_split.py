"""A model split by layers over two devices (`-dev 0,0`: lavapipe opened twice, two kp managers) gives the tokens of
one device -- dense and MoE, `-ts 1,1` (blocks 0-2 | block 3 + heads) and `-ts 3,1` (blocks 0-3 | heads only), MTP
on and off -- each stage allocates exactly its plan, and each stage records and replays its own graphs."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.split import SplitEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.memory_plan import DeviceMemoryError
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 10]
N_TOKENS = 10


def _config(mtp: bool, **changes) -> EngineConfig:
    # a fixed depth: every step with MTP on is a speculative step (drafts, verify across stages, rollback)
    return EngineConfig(n_ctx=256, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False), **changes)


def _split(mtp: bool, ts: tuple[float, ...], **changes) -> EngineConfig:
    return _config(mtp, split_devices=(0, 0), tensor_split=ts, **changes)


def _generate(eng, params: SamplingParams | None = None, prompt=PROMPT) -> list[int]:
    out = []
    for ev in eng.generate(Request(list(prompt), params or SamplingParams.greedy_params(), max_tokens=N_TOKENS)):
        out += ev.new_ids
    return out


@pytest.fixture(scope="module")
def one_device(device, fixture_models):
    """Greedy tokens of the single-device engine, per (variant, MTP on)."""
    cache = {}

    def tokens(variant: str, mtp: bool) -> list[int]:
        if (variant, mtp) not in cache:
            eng = VulkanEngine(fixture_models(variant, "f32"), _config(mtp), device=device)
            try:
                cache[variant, mtp] = _generate(eng)
            finally:
                eng.close()
        return cache[variant, mtp]

    return tokens


CASES = list(itertools.product(["dense", "moe"], [(1.0, 1.0), (3.0, 1.0)], [True, False]))


@pytest.mark.parametrize("variant,ts,mtp", CASES,
                         ids=[f"{v}-ts{int(t[0])}{int(t[1])}-{'mtp' if m else 'nomtp'}" for v, t, m in CASES])
def test_split_tokens_equal_one_device(fixture_models, one_device, variant, ts, mtp):
    eng = SplitEngine(fixture_models(variant, "f32"), _split(mtp, ts))
    try:
        assert [st.layers.blocks for st in eng.stages] == ([range(0, 3), range(3, 4)] if ts == (1.0, 1.0)
                                                           else [range(0, 4), range(4, 4)])
        got = _generate(eng)
        report = eng.graph_report()
        names = [st.name for st in eng.stages]
        # each stage's plan is what it allocated, to the byte (each stage is its own kp manager)
        for st in eng.stages:
            assert sorted((b.name, b.nbytes) for b in st.device.live_buffers()) == \
                sorted((b.name, b.nbytes) for b in st.plan.buffers)
        first, last = eng.stages
        assert first.device is not last.device
        # the attention layer (block 3) has its KV cache where it runs; the heads' buffers are on the last
        assert (first.plan.kv > 0, last.plan.kv > 0) == ((True, False) if ts == (3.0, 1.0) else (False, True))
        assert first.plan.part("hidden") == 0 and first.plan.mtp_kv == 0 and last.plan.part("hidden") > 0
        assert (last.plan.mtp_kv > 0) == mtp and first.plan.recurrent > 0 and last.plan.recurrent == 0
        assert eng.boundary_bytes > 0
    finally:
        eng.close()
    assert got == one_device(variant, mtp)
    assert got == one_device(variant, not mtp)   # MTP on == off, over the split too
    # one recorded graph per stage per step: prefill and decode one submission on each device; a speculative step
    # drafts and verifies (last), verifies and rolls back (first: it holds the GDN layers 0-2)
    assert report["prefill"]["submissions"] == 2
    assert [report["prefill"]["stages"][n]["submissions"] for n in names] == [1, 1]
    if mtp:
        spec = report["speculative"]["stages"]
        assert [spec[n]["submissions"] for n in names] == [2, 2] and report["speculative"]["submissions"] == 4
    # plain steps (MTP off; with MTP the last token, which has no draft budget left)
    assert [report["decode"]["stages"][n]["submissions"] for n in names] == [1, 1]
    assert report["decode"]["dispatches"] == sum(report["decode"]["stages"][n]["dispatches"] for n in names)


def test_split_sampled_tokens_equal_one_device(device, fixture_models):
    """Temperature > 0 with MTP: the GPU sampler (one verify across the stages, accept on the last, rollback on
    both) and the host's verifier (logits to the host, then a commit on every stage) give one device's tokens."""
    path = fixture_models("moe", "f32")
    params = SamplingParams(temperature=0.9, seed=7)
    for gpu_sampling in (True, False):
        single = VulkanEngine(path, _config(True), device=device)
        try:
            single.gpu_sampling = gpu_sampling
            want = _generate(single, params)
        finally:
            single.close()
        eng = SplitEngine(path, _split(True, (1.0, 1.0)))
        try:
            eng.gpu_sampling = gpu_sampling
            assert _generate(eng, params) == want
            report = eng.graph_report()
            if not gpu_sampling:   # the host decided: the commit ran on both stages
                assert [report["commit"]["stages"][st.name]["submissions"] for st in eng.stages] == [1, 1]
        finally:
            eng.close()


def test_logical_devices_on_one_physical_device_share_its_budget(fixture_models, monkeypatch):
    """Each stage's plan fits the budget alone, but the two stages opened on the same lavapipe do not together:
    refused before anything is allocated, naming both; --fit (no -c) picks one context both fit."""
    import vkmtp.engine.split as split_mod

    path = fixture_models("dense", "f32")
    eng = SplitEngine(path, _split(True, (1.0, 1.0)))
    sizes = [st.plan.device_total for st in eng.stages]
    eng.close()
    monkeypatch.setattr(split_mod, "fit_budget", lambda info, margin=None: max(sizes) + 4096)
    with pytest.raises(DeviceMemoryError, match="the stages on Vulkan0 .* need") as err:
        SplitEngine(path, _split(True, (1.0, 1.0)))
    assert "Vulkan0.1" in str(err.value) and "reduce with" in str(err.value)
    # --fit: the largest context (of a 1M-token target) whose two plans fit the budget together
    monkeypatch.setattr(split_mod, "fit_budget", lambda info, margin=None: sum(sizes) + (8 << 20))
    eng = SplitEngine(path, dataclasses.replace(_split(True, (1.0, 1.0)), n_ctx=1 << 20, ctx_fixed=False))
    try:
        assert 256 <= eng.n_ctx < 1 << 20 and "context" in eng.fit_message
        assert sum(st.plan.device_total for st in eng.stages) <= sum(sizes) + (8 << 20)
        assert len({st.plan.n_ctx for st in eng.stages}) == 1
        assert len(_generate(eng)) == N_TOKENS
    finally:
        eng.close()


def _conversation(eng) -> list[list[int]]:
    """Prompt-cache traffic: a prompt, its continuation (live memory reused), a prompt that leaves it before its
    end (a checkpoint restored on every stage), a slot image saved, erased and restored (every stage's states)."""
    a = _generate(eng)
    b = _generate(eng, prompt=PROMPT + a + [31, 32])
    c = _generate(eng, prompt=PROMPT + a[:3] + [77])   # leaves the live memory after PROMPT + 3 tokens
    assert any(key[0] == "checkpoint" for key in eng._graphs)
    image = eng.save_slot(0)
    eng.erase_slot(0)
    assert eng.restore_slot(0, image) == image.n_tokens
    d = _generate(eng, prompt=PROMPT + a[:3] + [77] + c + [5])
    return [a, b, c, d]


def test_split_prompt_cache_and_bounded_submissions_equal_one_device(device, fixture_models):
    """Reused prefixes, checkpoints and slot images over the split, with --max-submit-ms so small that every prompt
    chunk runs one block per submission on each stage: the tokens of one device doing the same."""
    path = fixture_models("dense", "f32")
    single = VulkanEngine(path, _config(True, max_submit_ms=1e-6), device=device)
    try:
        want = _conversation(single)
    finally:
        single.close()
    eng = SplitEngine(path, _split(True, (1.0, 1.0), max_submit_ms=1e-6))
    try:
        got = _conversation(eng)
        assert max(eng.prefill_submissions) > 2   # chunks split by blocks on the stages
        assert eng.host_cache.enabled
    finally:
        eng.close()
    assert got == want


def test_split_grammar_step_equals_one_device(device):
    """A JSON schema with MTP, seeded: the speculative step's drafts are cut at the grammar between the last
    stage's draft and verify submissions, as on one device; the same tokens, and valid JSON."""
    import json

    from vkmtp.constrain import grammar as G
    from vkmtp.constrain.sampler import LogitShape
    from vkmtp.constrain.vocab import ll_tokenizer
    from vkmtp.demo_model import default_model_path
    from vkmtp.gguf import open_gguf
    from vkmtp.text.tokenizer import Tokenizer

    path = default_model_path()
    tok = Tokenizer.from_gguf(open_gguf(path))
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"}},
              "required": ["name", "ok"], "additionalProperties": False}
    prompt = tok.encode("<|im_start|>user\nA person as JSON.<|im_end|>\n<|im_start|>assistant\n", parse_special=True)

    def run(eng) -> list[int]:
        shape = LogitShape(G.from_json_schema(schema, "json_schema"), ll_tokenizer(tok, len(tok.tokens), tok.eog_ids))
        req = Request(prompt, SamplingParams(temperature=0.9, seed=7), max_tokens=40, stop_ids=tok.eog_ids,
                      shape=shape)
        return [t for ev in eng.generate(req) for t in ev.new_ids]

    single = VulkanEngine(path, _config(True), device=device)
    try:
        want = run(single)
    finally:
        single.close()
    eng = SplitEngine(path, _split(True, (1.0, 1.0)))
    try:
        got = run(eng)
    finally:
        eng.close()
    assert got == want
    json.loads(tok.decode(got))


def test_split_mtp_catch_up_after_plain_steps_equals_one_device(device, fixture_models):
    """The adaptive policy's depth 0 (plain steps: the MTP head's inputs wait in the lag ring on the last stage),
    then depth 2 (the head catches up in one MtpLagGraph on the last stage, then drafts): one device's tokens."""
    path = fixture_models("moe", "f32")
    config = EngineConfig(n_ctx=256, ubatch=32, spec=SpecConfig(enabled=True, n_max=3, n_min=1))

    def run(eng) -> list[int]:
        depths = iter([0] * 5 + [2] * 100)
        eng.adaptive.choose = lambda acceptances: next(depths)
        out = _generate(eng)
        assert {"decode", "mtp_catch_up", "speculative"} <= set(eng.graph_report())
        return out

    single = VulkanEngine(path, config, device=device)
    try:
        want = run(single)
    finally:
        single.close()
    eng = SplitEngine(path, dataclasses.replace(config, split_devices=(0, 0), tensor_split=(1.0, 1.0)))
    try:
        got = run(eng)
        assert [eng.graph_report()["mtp_catch_up"]["stages"][st.name]["submissions"] for st in eng.stages] == [0, 1]
    finally:
        eng.close()
    assert got == want


def test_three_devices_equal_one_device(fixture_models, one_device):
    """-dev 0,0,0 -ts 1,1,1: a middle stage takes the residual stream in and passes it on (blocks 0-1 | 2-3 |
    heads); greedy with MTP, one device's tokens."""
    eng = SplitEngine(fixture_models("dense", "f32"), _config(True, split_devices=(0, 0, 0),
                                                                tensor_split=(1.0, 1.0, 1.0)))
    try:
        assert [st.layers.blocks for st in eng.stages] == [range(0, 2), range(2, 4), range(4, 4)]
        assert [st.boundary_in is not None for st in eng.stages] == [False, True, True]
        got = _generate(eng)
        spec = eng.graph_report()["speculative"]["stages"]
        assert [spec[st.name]["submissions"] for st in eng.stages] == [2, 2, 2]
    finally:
        eng.close()
    assert got == one_device("dense", True)
