"""Prompt chunks through the float16-math prefill attention (flash_attn.comp's F16_MATH), as the GPU default and a
tuning profile's `flash_attn.f16` select it: greedy tokens stay those of the float64 reference on every committed
fixture model and quant type, MTP on = off (decode and verification attention stay f32), and the first-token
logits' change vs the reference is measured and bounded.

On lavapipe the CPU default is f32 math (f16 math is slower there), so the engine tests elsewhere run f32: these
force each path through a profile.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tuning.profile import TuningProfile

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 120, 33, 2, 64, 71, 200, 19, 23, 31, 37]  # 20 tokens
LONG = PROMPT * 3   # 60 tokens: chunks of 32 and 27 (the second attends to 59 positions), then the last token
GREEDY = SamplingParams.greedy_params()
F16 = TuningProfile(attn_f16_math=True)
F32 = TuningProfile(attn_f16_math=False)

# max |logits - reference| / max |reference logits| at the first token after LONG, measured on lavapipe (Mesa 22.3):
# f32 attention 2.2e-5 (fixture dense F32), 3.1e-5 (k256 dense Q4_K), 5.3e-5 (k256 MoE Q4_K); f16 attention 6.5e-5,
# 6.5e-5, 6.6e-5. The bounds are about 3x the f16 measurement.
LOGIT_BOUND = {("fixture", "dense", "f32"): 2e-4, ("k256", "dense", "q4_k"): 2e-4, ("k256", "moe", "q4_k"): 2e-4}


@pytest.fixture(autouse=True)
def needs_float16(device):
    if not device.caps.f16_math:
        pytest.skip("the device enabled no shaderFloat16 (VKMTP_FEATURES): the f16 attention path is off")


def model_path(fixture_models, k256_models, source: str, variant: str, file_type: str) -> str:
    return (fixture_models if source == "fixture" else k256_models)(variant, file_type)


def engine(device, path: str, tuning: TuningProfile, mtp: bool = False, ubatch: int = 32) -> VulkanEngine:
    cfg = EngineConfig(n_ctx=256, ubatch=ubatch, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False))
    eng = VulkanEngine(path, cfg, device=device, tuning=tuning)
    assert eng.ops.attn_prefill.f16_math == bool(tuning.attn_f16_math)
    assert not eng.ops.attn.f16_math                 # decode / verify attention: f32
    return eng


def greedy(eng: VulkanEngine, prompt: list[int], n: int) -> list[int]:
    out = []
    for ev in eng.generate(Request(prompt, GREEDY, max_tokens=n)):
        out += ev.new_ids
    return out


def first_logits(eng: VulkanEngine, prompt: list[int]) -> np.ndarray:
    eng.gpu_sampling = False   # the logits come to the host (the host sampling path)
    seq = eng.submit(Request(prompt, SamplingParams(temperature=1.0, seed=0), max_tokens=1))
    while not seq.done:
        eng.step()
    return eng._logits(0)


@pytest.mark.parametrize("source,variant,file_type", [
    ("fixture", "dense", "f32"), ("fixture", "moe", "f32"), ("fixture", "aligned", "q4_0"),
    ("k256", "dense", "q4_k"), ("k256", "dense", "q6_k"), ("k256", "dense", "q8_0"), ("k256", "dense", "f16"),
    ("k256", "moe", "q4_k")])
@pytest.mark.parametrize("prompt", [PROMPT[:13], LONG], ids=["13", "60"])
def test_greedy_tokens_with_f16_attention_match_the_reference(fixture_models, k256_models, device, source, variant,
                                                              file_type, prompt):
    path = model_path(fixture_models, k256_models, source, variant, file_type)
    want = generate(ReferenceModel.from_gguf(path), prompt, 48, GREEDY).tokens
    eng = engine(device, path, F16, ubatch=8 if source == "fixture" else 32)
    try:
        assert greedy(eng, prompt, 48) == list(want)
    finally:
        eng.close()


@pytest.mark.parametrize("source,variant,file_type", sorted(LOGIT_BOUND))
def test_f16_attention_logit_change_is_bounded(fixture_models, k256_models, device, source, variant, file_type):
    path = model_path(fixture_models, k256_models, source, variant, file_type)
    ref = ReferenceModel.from_gguf(path)
    want = ref.forward(LONG, ref.new_state())[0][-1]
    scale = np.abs(want).max()
    rel = {}
    for name, tuning in (("f32", F32), ("f16", F16)):
        eng = engine(device, path, tuning)
        try:
            rel[name] = float(np.abs(first_logits(eng, LONG) - want).max() / scale)
        finally:
            eng.close()
    print(f"{source} {variant} {file_type}: max |dlogit| / logit scale: f32 attention {rel['f32']:.1e}, "
          f"f16 attention {rel['f16']:.1e}")
    assert rel["f32"] < 2e-4
    assert rel["f16"] < LOGIT_BOUND[(source, variant, file_type)]
    assert rel["f16"] != rel["f32"]   # the f16 kernel ran: other roundings, other logits


def test_mtp_with_f16_prefill_attention_equals_plain_decoding(fixture_models, device):
    """Only the prompt chunks run f16 math; MTP's verify and plain decode share the f32 decode attention."""
    path = fixture_models("aligned", "f32")
    ref = generate_mtp(ReferenceModel.from_gguf(path), LONG, 64, GREEDY, spec=SpecConfig(n_max=3))
    outs = {}
    for mtp in (False, True):
        eng = engine(device, path, F16, mtp=mtp, ubatch=8)
        try:
            assert eng.use_mtp == mtp
            outs[mtp] = greedy(eng, LONG, 64)
        finally:
            eng.close()
    assert outs[True] == outs[False] == list(ref.tokens)
