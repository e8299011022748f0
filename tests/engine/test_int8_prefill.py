"""Prompt chunks through the int8 mat-mat (Q8_1-quantized activations, integer dot products), as a tuning profile
with `matmul.int8` selects it: the first-token logits' change vs the float64 reference is measured and bounded,
greedy tokens match the reference where that change leaves them, and MTP on = off (decode and verification stay
on the f32 mat-vec, so only the prompt's numbers move).

The int8 path is off by default (vkmtp.device.capabilities.MATMUL_INT8_DEFAULT) because on the random MoE Q4_K
fixture it changes the first greedy token (a different expert wins the routing); see docs/PERFORMANCE.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tuning.profile import TuningProfile

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2]   # 13 tokens: a 12-token chunk, then the last token
GREEDY = SamplingParams.greedy_params()
INT8 = TuningProfile(matmul_int8=True)
F32 = TuningProfile(matmul_int8=False)

# max |int8 logits - reference| / max |reference logits| at the first generated token, measured on these random
# k256 fixtures (lavapipe, both dot variants give the same bits): dense Q4_K 2.0e-2, Q6_K 2.0e-2, Q8_0 1.9e-2,
# MoE Q4_K 3.0e-1 (its routing flips). The bounds are about 2x the measurement; the f32 path gives 3-4e-5.
LOGIT_BOUND = {("dense", "q4_k"): 0.05, ("dense", "q6_k"): 0.05, ("dense", "q8_0"): 0.05, ("moe", "q4_k"): 0.6}


@pytest.fixture(autouse=True)
def needs_int_dot(device):
    if not device.caps.int_dot:
        pytest.skip("the device enabled no integer dot product (VKMTP_FEATURES): the int8 path is off")


def engine(device, path: str, tuning: TuningProfile, mtp: bool = False) -> VulkanEngine:
    cfg = EngineConfig(n_ctx=128, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=2, adaptive=False))
    return VulkanEngine(path, cfg, device=device, tuning=tuning)


def first_logits(eng: VulkanEngine) -> np.ndarray:
    eng.gpu_sampling = False   # the logits come to the host (the host sampling path)
    seq = eng.submit(Request(PROMPT, SamplingParams(temperature=1.0, seed=0), max_tokens=1))
    while not seq.done:
        eng.step()
    return eng._logits(0)


def greedy(eng: VulkanEngine, n: int) -> list[int]:
    out = []
    for ev in eng.generate(Request(PROMPT, GREEDY, max_tokens=n)):
        out += ev.new_ids
    return out


@pytest.mark.parametrize("variant,file_type", sorted(LOGIT_BOUND))
def test_int8_prefill_logit_change_is_bounded(k256_models, device, variant, file_type):
    path = k256_models(variant, file_type)
    ref = ReferenceModel.from_gguf(path)
    want = ref.forward(PROMPT, ref.new_state())[0][-1]
    scale = np.abs(want).max()
    rel = {}
    for name, tuning in (("f32", F32), ("int8", INT8)):
        eng = engine(device, path, tuning)
        try:
            assert eng.ops.matmul.int8 == (name == "int8")
            rel[name] = float(np.abs(first_logits(eng) - want).max() / scale)
        finally:
            eng.close()
    print(f"{variant} {file_type}: max |dlogit| / logit scale: f32 {rel['f32']:.1e}, int8 {rel['int8']:.1e}")
    assert rel["f32"] < 2e-4
    assert rel["int8"] < LOGIT_BOUND[(variant, file_type)]
    assert rel["int8"] > rel["f32"]   # the activations were quantized (the int8 kernel ran)


@pytest.mark.parametrize("file_type", ["q4_k", "q6_k", "q8_0"])
def test_int8_prefill_keeps_greedy_tokens_of_dense_models(k256_models, device, file_type):
    path = k256_models("dense", file_type)
    want = generate(ReferenceModel.from_gguf(path), PROMPT, 32, GREEDY).tokens
    eng = engine(device, path, INT8)
    try:
        assert greedy(eng, 32) == list(want)
    finally:
        eng.close()


def test_int8_prefill_mtp_equals_plain_decoding(k256_models, device):
    path = k256_models("dense", "q4_k")
    outs = {}
    for mtp in (False, True):
        eng = engine(device, path, INT8, mtp=mtp)
        try:
            assert eng.use_mtp == mtp
            outs[mtp] = greedy(eng, 32)
        finally:
            eng.close()
    assert outs[True] == outs[False]
