"""Seeded sampling on the demo model: the Vulkan engine samples on the GPU (shaders/sample.comp) and gives, token
for token, what it gives without MTP and what the reference engine's host sampler gives, with and without MTP,
for each part of the chain (top-k 1 / 40 / off, top-p, min-p, repeat / presence / frequency penalties)."""

from __future__ import annotations

import pytest

from vkmtp.demo_model import default_model_path
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.gguf import open_gguf
from vkmtp.ref import ReferenceModel
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.text.tokenizer import Tokenizer

SETTINGS = {
    "top-k-1": SamplingParams(temperature=0.8, top_k=1, seed=1),
    "top-k-40": SamplingParams(temperature=0.8, top_k=40, top_p=1.0, min_p=0.0, seed=2),
    "whole-vocab": SamplingParams(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0, seed=3),
    "top-p-0.9": SamplingParams(temperature=0.8, top_k=0, top_p=0.9, min_p=0.0, seed=4),
    "min-p-0.05": SamplingParams(temperature=0.8, top_k=0, top_p=1.0, min_p=0.05, seed=5),
    "penalties": SamplingParams(temperature=0.8, repeat_penalty=1.15, presence_penalty=0.4,
                                frequency_penalty=0.2, repeat_last_n=32, seed=6),
}
N = 32


@pytest.fixture(scope="module")
def demo(device):
    path = default_model_path()
    tok = Tokenizer.from_gguf(open_gguf(path))
    prompt = tok.encode("<|im_start|>user\nTell me a short story.<|im_end|>\n<|im_start|>assistant\n",
                        parse_special=True)
    model = ReferenceModel.from_gguf(path)
    made = {}

    def engine(kind: str, mtp: bool):
        if (kind, mtp) not in made:
            cfg = EngineConfig(n_ctx=256, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False))
            made[kind, mtp] = VulkanEngine(path, cfg, device=device) if kind == "vulkan" \
                else ReferenceEngine(model, cfg)
        return made[kind, mtp]

    yield prompt, engine
    for eng in made.values():
        eng.close()


def _tokens(engine, prompt, params):
    seq, out = None, []
    for ev in engine.generate(Request(prompt, params, max_tokens=N)):
        out += ev.new_ids
        seq = ev.seq
    return out, seq


@pytest.mark.parametrize("name", list(SETTINGS))
def test_seeded_sampling_is_the_same_with_mtp_on_and_off_on_both_engines(demo, name):
    prompt, engine = demo
    params = SETTINGS[name]
    got = {}
    for kind in ("vulkan", "reference"):
        for mtp in (False, True):
            got[kind, mtp], seq = _tokens(engine(kind, mtp), prompt, params)
            if mtp:
                assert seq.spec.draft_n > 0
    want = got["reference", False]
    assert len(want) == N
    assert got["vulkan", True] == got["vulkan", False] == want == got["reference", True]
