"""Constrained decoding on the demo model: JSON that validates, the same tokens with MTP on and off, greedy and
seeded, on the reference and the Vulkan engine; logit bias bans and forces tokens; drafts stop at the grammar."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from vkmtp.constrain import grammar as G
from vkmtp.constrain.sampler import LogitShape
from vkmtp.constrain.vocab import ll_tokenizer
from vkmtp.demo_model import default_model_path
from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.gguf import open_gguf
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.text.tokenizer import Tokenizer

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer"}, "ok": {"type": "boolean"}},
          "required": ["name", "age", "ok"], "additionalProperties": False}
GREEDY = SamplingParams.greedy_params()
SEEDED = SamplingParams(temperature=0.9, seed=7)


@pytest.fixture(scope="module")
def demo():
    path = default_model_path()
    tok = Tokenizer.from_gguf(open_gguf(path))
    return path, tok


def _request(tok, grammar, params, bias=None, n=60):
    prompt = tok.encode("<|im_start|>user\nGive me a person as JSON.<|im_end|>\n<|im_start|>assistant\n",
                        parse_special=True)
    shape = LogitShape(grammar, ll_tokenizer(tok, len(tok.tokens), tok.eog_ids) if grammar else None, bias)
    return Request(prompt, params, max_tokens=n, stop_ids=tok.eog_ids, shape=shape)


def _run(engine, request):
    out = []
    for ev in engine.generate(request):
        out.extend(ev.new_ids)
    return out


@pytest.fixture(scope="module")
def engines(demo, device):
    path, _ = demo
    made = {}

    def get(kind: str, mtp: bool):
        if (kind, mtp) not in made:
            cfg = EngineConfig(n_ctx=256, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False))
            made[kind, mtp] = VulkanEngine(path, cfg, device=device) if kind == "vulkan" \
                else ReferenceEngine(path, cfg)
        return made[kind, mtp]

    yield get
    for e in made.values():
        e.close()


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_json_schema_output_validates_and_mtp_keeps_the_tokens(demo, engines, params):
    _, tok = demo
    grammar = G.from_json_schema(SCHEMA, "json_schema")
    runs = {(kind, mtp): _run(engines(kind, mtp), _request(tok, grammar, params))
            for kind in ("reference", "vulkan") for mtp in (False, True)}
    first = runs["reference", False]
    assert all(r == first for r in runs.values()), runs
    jsonschema.validate(json.loads(tok.decode(first)), SCHEMA)


@pytest.mark.parametrize("mtp", [False, True])
def test_constrained_steps_read_no_logits(demo, engines, device, mtp):
    """The grammar's mask is a step input of the GPU sampler: a decode step is one submission, a speculative
    step two (drafts; the host cuts them and writes the rows' masks; verify, sample, accept, roll back), and
    only token ids, counts and draft ids come back, never a row of logits."""
    _, tok = demo
    eng = engines("vulkan", mtp)
    seq = eng.submit(_request(tok, G.from_json_schema(SCHEMA, "json_schema"), SEEDED))
    while not seq.generated:
        eng.step()
    steps = 0
    while not seq.done:
        before, read = device.submits, eng.host_bytes_read
        eng.step()
        assert device.submits - before <= (2 if mtp else 1)
        assert eng.host_bytes_read - read <= 128
        steps += 1
    assert steps > 0


def test_gbnf_grammar_and_logit_bias(demo, engines):
    _, tok = demo
    grammar = G.from_gbnf('root ::= "answer: " ("yes" | "no") "."')
    for mtp in (False, True):
        text = tok.decode(_run(engines("vulkan", mtp), _request(tok, grammar, GREEDY)))
        assert text in ("answer: yes.", "answer: no."), text
    plain = _run(engines("vulkan", False), _request(tok, None, GREEDY, n=8))
    banned = {t: float("-inf") for t in set(plain)}
    shaped = _run(engines("vulkan", True), _request(tok, None, GREEDY, banned, n=8))
    assert not set(shaped) & set(plain)
    assert shaped == _run(engines("reference", False), _request(tok, None, GREEDY, banned, n=8))
    forced = _run(engines("reference", True), _request(tok, None, GREEDY, {42: 1e4}, n=5))
    assert forced == [42] * 5


def test_a_forbidden_draft_ends_the_draft(demo):
    _, tok = demo
    grammar = G.from_gbnf('root ::= "ab"')
    shape = LogitShape(grammar, ll_tokenizer(tok, len(tok.tokens), tok.eog_ids))
    from vkmtp.sampling import Sampler

    sampler = shape.sampler(Sampler(GREEDY), len(tok.tokens))
    a, b = tok.encode("a", add_special=False), tok.encode("b", add_special=False)
    assert sampler.allowed_drafts(a + b + a) == a + b
    assert sampler.allowed_drafts(b + a) == []
    allowed = sampler.allowed(a)
    assert allowed[b[0]] and not allowed[a[0]]


TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}}}]


@pytest.mark.parametrize("syntax,thinking,text,ok", [
    ("xml", False, "<tool_call>\n<function=add>\n<parameter=a>\n12\n</parameter>\n</function>\n</tool_call>", True),
    ("xml", False, "<tool_call>\n<function=add>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\nhi there\n"
                   "</parameter>\n</function>\n</tool_call>", True),
    ("xml", True, "I should add.\n</think>\n\n<tool_call>\n<function=add>\n<parameter=a>\n3\n</parameter>\n"
                  "</function>\n</tool_call>", True),
    ("xml", False, "<tool_call>\n<function=add>\n<parameter=a>\nx\n</parameter>\n</function>\n</tool_call>", False),
    ("xml", False, "Sure! <tool_call>", False),
    ("json", False, '<tool_call>\n{"name":"add","arguments":{"a":5,"b":"x"}}\n</tool_call>', True),
    ("json", False, '<tool_call>\n{"name":"sub","arguments":{"a":5}}\n</tool_call>', False),
    ("json", False, '<tool_call>\n{"name":"add","arguments":{"b":"x"}}\n</tool_call>', False),
])
def test_tool_call_grammar_accepts_valid_calls_only(demo, syntax, thinking, text, ok):
    _, tok = demo
    grammar = G.tool_calls(TOOLS, "required", syntax, parallel=False, thinking=thinking)
    from vkmtp.sampling import Sampler

    sampler = LogitShape(grammar, ll_tokenizer(tok, len(tok.tokens), tok.eog_ids)).sampler(Sampler(GREEDY),
                                                                                            len(tok.tokens))
    ids = tok.encode(text, add_special=False)
    n = len(sampler.allowed_drafts(ids))
    if ok:
        assert n == len(ids)
        for t in ids:
            sampler.accept(t)
        allowed = sampler.allowed()
        assert set(np.nonzero(allowed)[0]) <= set(tok.eog_ids) and allowed.any()   # complete: only the end
    else:
        assert n < len(ids)
