"""Prompt chunks through the chunked GDN kernel (shaders/gdn_chunked.comp), as a tuning profile with `gdn.chunked`
selects it: the prefill graphs dispatch it (and decode / verify steps never do), greedy tokens equal the
reference engine's (the recurrent path's) on the dense and MoE fixtures, MTP on = off, and the prompt cache's
checkpoints -- taken after each prompt chunk, inside its submission -- restore states that continue exactly as a
cold run.

Its rounding differs from gdn.comp's (not bit-identical), so equality of tokens is the claim tested here on these
models, with 8- and 32-token prompt chunks (one GDN chunk, and several per prompt chunk).
"""

from __future__ import annotations

import dataclasses

import pytest

from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tuning.profile import TuningProfile

GREEDY = SamplingParams.greedy_params()
CHUNKED = TuningProfile(gdn_chunked=True)
PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31, 37]   # 20 tokens
LONG = PROMPT + [3 * t % 251 for t in range(1, 26)]                                        # 45 tokens


def engine(device, path: str, tuning: TuningProfile, mtp: bool = False, ubatch: int = 8,
           n_ctx: int = 160) -> VulkanEngine:
    cfg = EngineConfig(n_ctx=n_ctx, ubatch=ubatch, spec=SpecConfig(enabled=mtp, n_max=2, adaptive=False))
    return VulkanEngine(path, cfg, device=device, tuning=tuning)


def run(eng: VulkanEngine, prompt: list[int], n: int):
    out, seq = [], None
    for ev in eng.generate(Request(prompt, GREEDY, max_tokens=n)):
        out += ev.new_ids
        seq = ev.seq
    return out, seq


def dispatched(eng: VulkanEngine, kind: str) -> set[str]:
    """Labels of the dispatches in the engine's recorded graphs of one kind ('prefill', 'decode', ...)."""
    return {label for key, g in eng._graphs.items() if key[0] == kind
            for rec in getattr(g.rec, "recs", [g.rec]) for label in rec.labels}


@pytest.mark.parametrize("variant,ubatch,prompt", [("dense", 8, PROMPT), ("dense", 32, LONG), ("moe", 8, PROMPT),
                                                   ("moe", 32, LONG)])
def test_chunked_prefill_keeps_greedy_tokens(fixture_models, device, variant, ubatch, prompt):
    path = fixture_models(variant, "f32")
    want = generate(ReferenceModel.from_gguf(path), prompt, 24, GREEDY).tokens
    eng = engine(device, path, CHUNKED, ubatch=ubatch)
    try:
        assert eng.ops.gdn_prefill is not None
        got, seq = run(eng, prompt, 24)
        prefill = dispatched(eng, "prefill")
        assert any(label.startswith("gdn_chunked") for label in prefill)
        assert not any(label.startswith("gdn_chunked") for kind in ("decode", "spec")
                       for label in dispatched(eng, kind))
    finally:
        eng.close()
    assert got == list(want)
    assert seq.timings.prompt_n == len(prompt)


def test_default_profile_keeps_the_recurrent_prefill(fixture_models, device):
    """Without a profile choosing it the chunked kernel is neither built nor dispatched (sequential everywhere until
    a GPU measurement says otherwise: vkmtp.device.capabilities)."""
    eng = engine(device, fixture_models("dense", "f32"), TuningProfile())
    try:
        assert not eng.ops.device.caps.gdn_chunked and eng.ops.gdn_prefill is None
        run(eng, PROMPT, 2)
        assert not any(label.startswith("gdn_chunked") for label in dispatched(eng, "prefill"))
    finally:
        eng.close()


@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_chunked_prefill_mtp_equals_plain_decoding(fixture_models, device, variant):
    path = fixture_models(variant, "f32")
    outs = {}
    for mtp in (False, True):
        eng = engine(device, path, CHUNKED, mtp=mtp, ubatch=32)
        try:
            assert eng.use_mtp == mtp
            outs[mtp], _ = run(eng, LONG, 24)
        finally:
            eng.close()
    assert outs[True] == outs[False]


def test_chunked_prefill_prompt_cache_hits_and_continues_like_a_cold_run(fixture_models, device):
    """The slot prefix and a checkpoint (after a prompt chunk) are reused; the tokens equal a cold run's."""
    path = fixture_models("aligned", "f32")
    eng = engine(device, path, CHUNKED, mtp=True)
    try:
        prompt = PROMPT[:14]
        first, seq1 = run(eng, prompt, 6)
        assert seq1.timings.cache_n == 0
        assert sorted(eng.slots[seq1.slot].checkpoints.entries) == [8, 13, 14]
        turn = prompt + [90, 91] + PROMPT[14:19]     # differs from the slot's memory after the prompt
        second, seq2 = run(eng, turn, 6)
        assert seq2.timings.cache_n == len(prompt) and seq2.timings.prompt_n == len(turn) - len(prompt)
        again, seq3 = run(eng, turn, 6)
        assert (seq3.timings.cache_n, seq3.timings.prompt_n) == (len(turn) - 1, 1)
    finally:
        eng.close()
    cold = generate(ReferenceModel.from_gguf(path), turn, 6, GREEDY).tokens
    assert second == again == list(cold)
    assert first == list(generate(ReferenceModel.from_gguf(path), prompt, 6, GREEDY).tokens)


@pytest.mark.parametrize("tuning", [TuningProfile(), CHUNKED], ids=["recurrent", "chunked"])
def test_prompt_chunks_split_below_the_drivers_loop_limit(fixture_models, device, monkeypatch, tuning):
    """A driver that ends long loops (lavapipe: DeviceCaps.loop_iterations) gets each layer's GDN update of a
    prompt chunk in several dispatches, each continuing from the state the previous one stored; with a limit
    small enough to split the fixture's 32-token chunks, greedy tokens still equal the reference's."""
    # small enough to cut the fixture's GDN updates, large enough for its attention's 128-position chunks
    # (vkmtp.ops.flash_attn: both attention kernels refuse a budget below one chunk)
    limit = 2000
    monkeypatch.setattr(device, "caps", dataclasses.replace(device.caps, loop_iterations=limit))
    path = fixture_models("dense", "f32")
    want = generate(ReferenceModel.from_gguf(path), LONG, 12, GREEDY).tokens
    eng = engine(device, path, tuning, ubatch=32)
    try:
        op = eng.ops.gdn_prefill or eng.ops.gdn
        assert op.max_tokens_per_dispatch(limit) < 32
        got, _ = run(eng, LONG, 12)
        kernel = op.key.name if hasattr(op, "key") else "gdn_chunked"   # the recurrent variant's shader name
        per_graph = [sum(label.split("[")[0] == kernel for rec in getattr(g.rec, "recs", [g.rec])
                         for label in rec.labels)
                     for key, g in eng._graphs.items() if key[0] == "prefill" and key[1] == 32]
        assert per_graph and per_graph[0] > len(eng.cfg.recurrent_layers)
    finally:
        eng.close()
    assert got == list(want)
