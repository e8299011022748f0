"""The agent-facing chat API on a real server with the real `openai` client: tool calls (whole and streamed,
the same calls), reasoning_content, tool_choice, follow-up turns, assistant prefill; and llama-server's request
semantics (list prompts, id_slot, n_predict 0, t_max_predict_ms, samplers, n_keep, unknown roles, 501s).

The tool-call tests need the model to write a given reply: `ScriptedEngine` runs the real reference engine
(prompt, slots, stop rules) but replaces each sampled token by the next one of a script, then ends with EOS.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import openai
import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.text.chat_template import ChatTemplate

CHAT = "/v1/chat/completions"
QWEN35_TEMPLATE = (Path(__file__).resolve().parent.parent / "data" / "tok" / "qwen35_style.jinja").read_text()

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "read_file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
]
REPLY = (
    "The user asks for weather and a file.\n</think>\n\n"
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n"
    "<tool_call>\n<function=read_file>\n<parameter=path>\na<b>\"c\".txt\n</parameter>\n</function>\n"
    "</tool_call>"
)
EXPECTED_CALLS = [("get_weather", {"city": "Paris", "days": 3}), ("read_file", {"path": "a<b>\"c\".txt"})]


class ScriptedEngine(ReferenceEngine):
    """The reference engine whose tokens are a script (then EOS); MTP off, so one token per step."""

    script: list[int] = []
    eos: int = 0

    def _scripted(self, run) -> int:
        n = len(run.seq.generated)
        return self.script[n] if n < len(self.script) else self.eos

    def _prefill(self, slot):
        first = super()._prefill(slot)
        return None if first is None else self._scripted(slot.run)

    def _generate(self, slots):
        super()._generate(slots)
        return [[self._scripted(slot.run)] for slot in slots]


@pytest.fixture(scope="module")
def agent_server(tiny_model):
    config = server_config(n_slots=1, mtp=False)
    config = replace(config, engine=replace(config.engine, n_ctx=2048))  # tool definitions are long in bytes
    holder = {}
    srv = LiveServer(config, tiny_model, factory=lambda: holder["make"]())
    srv.info.template = ChatTemplate(QWEN35_TEMPLATE, eos_token="<|im_end|>")
    tokenizer = srv.info.tokenizer
    ScriptedEngine.eos = tokenizer.eos_id
    holder["make"] = lambda: ScriptedEngine(tiny_model, srv.config.engine)
    srv.start()
    srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    srv.script = lambda text: setattr(ScriptedEngine, "script",
                                      tokenizer.encode(text, add_special=False, parse_special=False))
    yield srv
    srv.stop()


def ask(srv, **extra):
    return srv.client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Weather in Paris, and read a<b>\"c\".txt"}],
        max_tokens=200, **extra)


def calls_of(tool_calls):
    return [(c.function.name, json.loads(c.function.arguments)) for c in tool_calls]


def test_tool_calls_whole_and_streamed_are_the_same(agent_server):
    agent_server.script(REPLY)
    resp = ask(agent_server, tools=TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert calls_of(choice.message.tool_calls) == EXPECTED_CALLS
    assert all(c.id.startswith("call_") and c.type == "function" for c in choice.message.tool_calls)
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == "The user asks for weather and a file."

    calls: dict[int, dict] = {}
    reasoning, content, finish = "", "", None
    for chunk in ask(agent_server, tools=TOOLS, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        content += delta.content or ""
        for call in delta.tool_calls or []:
            slot = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
            slot["name"] += call.function.name or ""
            slot["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert reasoning == "The user asks for weather and a file."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == EXPECTED_CALLS
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_follow_up_turn_with_tool_results(agent_server):
    agent_server.script(REPLY)
    first = ask(agent_server, tools=TOOLS).choices[0].message
    agent_server.script("It is sunny.")
    messages = [{"role": "user", "content": "Weather in Paris?"},
                first.model_dump(exclude_none=True),
                *({"role": "tool", "tool_call_id": c.id, "content": "sunny, 21 C"} for c in first.tool_calls)]
    resp = agent_server.client.chat.completions.create(
        model="tiny", messages=messages, tools=TOOLS, max_tokens=50,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.content == "It is sunny."
    prompt = agent_server.http.post("/apply-template", json={"messages": messages, "tools": TOOLS}).json()["prompt"]
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in prompt
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt


def test_parallel_tool_calls_false_and_tool_choice_none(agent_server):
    agent_server.script(REPLY)
    one = ask(agent_server, tools=TOOLS, parallel_tool_calls=False).choices[0]
    assert calls_of(one.message.tool_calls) == EXPECTED_CALLS[:1]
    none = ask(agent_server, tools=TOOLS, tool_choice="none").choices[0]
    assert none.message.tool_calls is None and none.finish_reason == "stop"
    assert "<tool_call>" in none.message.content


def test_reasoning_format_and_enable_thinking(agent_server):
    agent_server.script("Hmm.\n</think>\n\nHello!")
    split = ask(agent_server).choices[0].message
    assert (split.content, split.model_extra["reasoning_content"]) == ("Hello!", "Hmm.")
    raw = ask(agent_server, extra_body={"reasoning_format": "none"}).choices[0].message
    assert raw.content == "Hmm.\n</think>\n\nHello!" and "reasoning_content" not in raw.model_extra
    agent_server.script("Hello!")
    off = ask(agent_server, extra_body={"chat_template_kwargs": {"enable_thinking": False}}).choices[0].message
    assert off.content == "Hello!" and "reasoning_content" not in off.model_extra
    with pytest.raises(openai.BadRequestError, match="reasoning_format"):
        ask(agent_server, extra_body={"reasoning_format": "deepseek-r2"})


def test_assistant_prefill_is_continued(agent_server):
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi th"}]
    prompt = agent_server.http.post("/apply-template", json={"messages": messages}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHi th") or prompt.endswith(
        "<|im_start|>assistant\n<think>\nHi th")
    agent_server.script("ere")
    resp = agent_server.client.chat.completions.create(model="tiny", messages=messages, max_tokens=10,
                                                       extra_body={"reasoning_format": "none"})
    assert resp.choices[0].message.content == "ere"


# ---- llama-server's request semantics, on the tiny model ------------------------------------------------------

def test_list_prompts_give_one_result_each(mtp_server):
    body = {"prompt": ["The cat", [1, 2, 3], "A dog"], "n_predict": 4, "temperature": 0}
    results = mtp_server.http.post("/completion", json=body).json()
    assert [r["index"] for r in results] == [0, 1, 2]
    single = [mtp_server.http.post("/completion", json={**body, "prompt": p}).json()["content"]
              for p in body["prompt"]]
    assert [r["content"] for r in results] == single
    with mtp_server.http.stream("POST", "/completion", json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    finals = {e["index"]: e for e in events if e["stop"]}
    assert sorted(finals) == [0, 1, 2]
    for i, text in enumerate(single):
        assert "".join(e["content"] for e in events if e["index"] == i) == text


def test_id_slot(mtp_server):
    r = mtp_server.http.post("/completion", json={"prompt": "x", "n_predict": 1, "id_slot": 5})
    assert r.status_code == 400 and "id_slot" in r.json()["error"]["message"]
    for slot in (1, 0, 1):
        r = mtp_server.http.post("/completion", json={"prompt": "hello", "n_predict": 2, "id_slot": slot})
        assert r.json()["id_slot"] == slot


def test_zero_tokens(mtp_server):
    r = mtp_server.http.post("/completion", json={"prompt": "hello there", "n_predict": 0}).json()
    assert (r["content"], r["tokens_predicted"], r["stop_type"]) == ("", 0, "limit")
    chat = mtp_server.http.post(CHAT, json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})
    assert chat.json()["usage"]["completion_tokens"] == 0


class SlowEngine(ReferenceEngine):
    """Every step after the first takes at least 20 ms: a time limit of 1 ms is past after the second token."""

    def step(self):
        if any(s.run is not None and s.run.seq.generated for s in self.slots):
            time.sleep(0.02)
        return super().step()


def test_t_max_predict_ms(tiny_model):
    config = server_config(mtp=False)
    srv = LiveServer(config, tiny_model, factory=lambda: SlowEngine(tiny_model, srv.config.engine))
    srv.start()
    try:
        body = {"prompt": "hello", "n_predict": 40, "ignore_eos": True}
        r = srv.http.post("/completion", json={**body, "t_max_predict_ms": 1}).json()
        assert (r["tokens_predicted"], r["stop_type"]) == (2, "limit")
        assert srv.http.post("/completion", json={**body, "n_predict": 4}).json()["tokens_predicted"] == 4
    finally:
        srv.stop()


@pytest.mark.parametrize("body, status, words", [
    ({"n_keep": 0}, 200, ""), ({"n_keep": -1}, 200, ""), ({"n_keep": 8}, 400, "n_keep: context shift"),
    ({"samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"]},
     200, ""),
    ({"samplers": "edkypmxt"}, 200, ""),
    ({"samplers": ["temperature", "top_k"]}, 400, "samplers: only llama.cpp's default sampler order"),
    ({"typical_p": 1.0, "mirostat": 0, "dry_multiplier": 0.0, "mirostat_tau": 5}, 200, ""),
    ({"typical_p": 0.5}, 400, "typical_p"),
    ({"grammar": "root ::= \"a\""}, 200, ""),
    ({"logit_bias": [[1, -100]]}, 200, ""),
    ({"n_probs": 3, "post_sampling_probs": True}, 200, ""),
    ({"n_probs": 21}, 400, "n_probs"),
    ({"surprise_field": 1}, 400, "surprise_field: unknown field"),
])
def test_field_policy(mtp_server, body, status, words):
    r = mtp_server.http.post("/completion", json={"prompt": "x", "n_predict": 1, **body})
    assert r.status_code == status, r.text
    if status != 200:
        assert words in r.json()["error"]["message"]


def test_unknown_role_is_refused_at_once(mtp_server):
    r = mtp_server.http.post(CHAT, json={"messages": [{"role": "critic", "content": "x"}], "max_tokens": 2})
    assert r.status_code == 400 and "messages[0].role 'critic'" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings", "/embedding", "/infill", "/reranking",
                                  "/rerank", "/v1/rerank", "/v1/responses", "/v1/messages"])
def test_endpoints_not_served_answer_501(mtp_server, path):
    r = mtp_server.http.post(path, json={"input": "x"})
    assert r.status_code == 501
    error = r.json()["error"]
    assert error["code"] == 501 and error["type"] == "not_supported_error"
    assert "vkmtp does not serve" in error["message"]
