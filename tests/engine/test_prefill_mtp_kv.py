"""A prompt chunk, and a speculative step's catch-up over its verified rows, write only the MTP head's KV rows:
the same bits as the whole MTP block, the same drafts and tokens after it."""

from __future__ import annotations

from functools import partial

import pytest

import vkmtp.engine.vulkan as vulkan_engine
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.steps import PrefillGraph, SpecGraph
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31]


def _mtp_kv(eng, device) -> bytes:
    return b"".join(device.download(b.view()) for b in eng.state.mtp_k.buffers + eng.state.mtp_v.buffers)


def _run(path: str, device) -> tuple[bytes, list[int], int, bytes]:
    """MTP KV bytes after the prompt, then greedy tokens and accepted drafts at fixed depth 2, and the MTP KV
    bytes after the last step."""
    config = EngineConfig(n_ctx=128, ubatch=8, spec=SpecConfig(n_max=2, n_min=2, adaptive=False))
    eng = VulkanEngine(path, config, device=device)
    try:
        seq = eng.submit(Request(PROMPT, SamplingParams.greedy_params(), max_tokens=12, cache_prompt=False))
        while not seq.generated:   # prompt chunks; the step that ends the prompt emits the first token
            eng.step()
        kv = _mtp_kv(eng, device)
        while not seq.done:
            eng.step()
        return kv, list(seq.generated), seq.spec.draft_n_accepted, _mtp_kv(eng, device)
    finally:
        eng.close()


@pytest.mark.parametrize("variant,file_type", [("dense", "q4_k"), ("moe", "q8_0"), ("aligned", "f32")])
def test_prefill_mtp_kv_rows_equal_the_whole_block(device, fixture_models, monkeypatch, variant, file_type):
    path = fixture_models(variant, file_type)
    kv_only = _run(path, device)
    monkeypatch.setattr(vulkan_engine, "PrefillGraph", partial(PrefillGraph, mtp_kv_only=False))
    whole = _run(path, device)
    assert kv_only[0] == whole[0] and any(kv_only[0])
    assert kv_only[1:] == whole[1:]


@pytest.mark.parametrize("variant,file_type", [("dense", "q4_k"), ("moe", "q8_0"), ("aligned", "f32")])
def test_speculative_catch_up_mtp_kv_rows_equal_the_whole_block(device, fixture_models, monkeypatch, variant,
                                                                file_type):
    """The depth-2 steps' catch-up (3 verified rows, the decode kernels) writes the KV rows only: after the last
    step the MTP KV equals what the whole block wrote, and the accepted drafts and the tokens too."""
    path = fixture_models(variant, file_type)
    kv_only = _run(path, device)
    monkeypatch.setattr(vulkan_engine, "SpecGraph", partial(SpecGraph, mtp_kv_only=False))
    whole = _run(path, device)
    assert kv_only[3] != kv_only[0]   # the speculative steps wrote MTP KV rows
    assert kv_only == whole
