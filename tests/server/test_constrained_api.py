"""Constrained output on a real server with the real `openai` client and the embedded demo model: the agent loop
(tool_choice "required" forces a valid call, the tool result goes back, the next turn completes; streamed and
whole replies give the same calls), response_format json_schema (valid JSON, the same tokens with MTP on and
off), /completion grammar and json_schema, and logit_bias in its three forms."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import openai
import pytest

from pathlib import Path

from tests.server.live_server import LiveServer, server_config
from vkmtp.text.chat_template import ChatTemplate
from vkmtp.demo_model import default_model_path
from vkmtp.sampling import SamplingParams

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city", "days"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 999},
                                         "b": {"type": "integer", "minimum": 0, "maximum": 999}},
        "required": ["a", "b"], "additionalProperties": False}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def _server(mtp: bool) -> LiveServer:
    config = server_config(n_slots=1, mtp=mtp, sampling=SamplingParams.greedy_params())
    config = replace(config, engine=replace(config.engine, n_ctx=1024))
    srv = LiveServer(config, default_model_path()).start()
    srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    return srv


@pytest.fixture(scope="module")
def servers():
    made = {mtp: _server(mtp) for mtp in (False, True)}
    yield made
    for srv in made.values():
        srv.stop()


def _calls_of_stream(stream) -> list[tuple[str, str]]:
    calls: dict[int, list[str]] = {}
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta_call.index, ["", ""])
            entry[0] += delta_call.function.name or ""
            entry[1] += delta_call.function.arguments or ""
    return [tuple(calls[i]) for i in sorted(calls)]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}],
                         ids=["required", "named"])
def test_agent_loop_with_a_forced_tool_call(servers, choice):
    srv = servers[True]
    messages = [{"role": "user", "content": "What is the weather in Paris for 3 days? Then add 2 and 3."}]
    ask = dict(model="demo", messages=messages, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
               max_tokens=200, temperature=0)
    whole = srv.client.chat.completions.create(**ask)
    choice0 = whole.choices[0]
    assert choice0.finish_reason == "tool_calls", choice0
    calls = [(c.function.name, c.function.arguments) for c in choice0.message.tool_calls]
    assert len(calls) == 1
    name, arguments = calls[0]
    if isinstance(choice, dict):
        assert name == "add"
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])
    assert _calls_of_stream(srv.client.chat.completions.create(**ask, stream=True)) == calls

    call = choice0.message.tool_calls[0]
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": call.id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C" if name == "get_weather"
                  else "5"}]
    follow = srv.client.chat.completions.create(model="demo", messages=messages, tools=TOOLS, max_tokens=12,
                                                temperature=0)
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert follow.usage.completion_tokens > 0


QWEN35_TEMPLATE = (Path(__file__).resolve().parent.parent / "data" / "tok" / "qwen35_style.jinja").read_text()


def test_forced_calls_in_the_xml_syntax():
    """A Qwen3.5-style template: the grammar writes <function=NAME><parameter=KEY> blocks; the parser reads them
    back into arguments valid for the schema. (With thinking on, the grammar first lets the reasoning end, which
    the demo model never does by itself: tests/constrain covers that grammar.)"""
    thinking = False
    srv = _server(mtp=True)
    srv.info.template = ChatTemplate(QWEN35_TEMPLATE, eos_token="<|im_end|>")
    try:
        reply = srv.client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS,
            tool_choice="required", parallel_tool_calls=False, max_tokens=300, temperature=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": thinking}})
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        (call,) = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    finally:
        srv.stop()


def test_tool_choice_none_and_auto_are_accepted(servers):
    srv = servers[False]
    for choice in ("none", "auto"):
        reply = srv.client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice=choice,
            max_tokens=6, temperature=0)
        assert reply.choices[0].message.tool_calls is None or choice == "auto"


@pytest.mark.parametrize("temperature,seed", [(0, None), (0.8, 11)], ids=["greedy", "seeded"])
def test_response_format_json_schema_validates_and_mtp_keeps_the_tokens(servers, temperature, seed):
    texts = []
    for mtp in (False, True):
        reply = servers[mtp].client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "A person as JSON."}], max_tokens=120,
            temperature=temperature, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
        assert reply.choices[0].finish_reason == "stop"
        texts.append(reply.choices[0].message.content)
    assert texts[0] == texts[1]
    jsonschema.validate(json.loads(texts[0]), PERSON)
    ask = dict(model="demo", messages=[{"role": "user", "content": "JSON please"}], max_tokens=40, temperature=0)
    with_schema = servers[False].client.chat.completions.create(
        **ask, response_format={"type": "json_object", "schema": PERSON})   # llama-server's form
    jsonschema.validate(json.loads(with_schema.choices[0].message.content), PERSON)
    # any object: the demo model may not close it within max_tokens, but it is one from the first token
    any_object = servers[False].client.chat.completions.create(**ask, response_format={"type": "json_object"})
    assert any_object.choices[0].message.content.startswith("{")


def test_completion_grammar_json_schema_and_logit_bias(servers):
    srv = servers[True]
    body = {"prompt": "The answer is", "n_predict": 20, "temperature": 0}
    r = srv.http.post("/completion", json={**body, "grammar": 'root ::= " " ("yes" | "no") "."'})
    assert r.status_code == 200, r.text
    assert r.json()["content"] in (" yes.", " no.")
    r = srv.http.post("/completion", json={**body, "n_predict": 80, "json_schema": PERSON})
    jsonschema.validate(json.loads(r.json()["content"]), PERSON)

    plain = srv.http.post("/completion", json={**body, "n_predict": 4, "return_tokens": True}).json()["tokens"]
    for bias in ([[t, False] for t in plain], {str(t): -100 for t in plain}):
        shaped = srv.http.post("/completion", json={**body, "n_predict": 4, "return_tokens": True,
                                                    "logit_bias": bias}).json()["tokens"]
        assert not set(shaped) & set(plain)
    forced = srv.http.post("/completion", json={**body, "n_predict": 3, "return_tokens": True,
                                                "logit_bias": [[42, 1000]]}).json()["tokens"]
    assert forced == [42, 42, 42]
    text = srv.client.completions.create(model="demo", prompt="x", max_tokens=3, temperature=0,
                                         logit_bias={"42": 100})
    assert text.choices[0].text == srv.info.tokenizer.decode([42, 42, 42])


def test_bad_constraints_are_400s_naming_the_field(servers):
    srv = servers[False]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    cases = [
        ("/completion", {"prompt": "a", "grammar": "root ::= undefined_rule"}, "grammar"),
        ("/completion", {"prompt": "a", "grammar": 5}, "grammar"),
        ("/completion", {"prompt": "a", "json_schema": "x"}, "json_schema"),
        ("/completion", {"prompt": "a", "grammar": 'root ::= "a"', "json_schema": PERSON}, "json_schema"),
        ("/completion", {"prompt": "a", "logit_bias": [[10**9, 1]]}, "logit_bias"),
        ("/completion", {"prompt": "a", "logit_bias": [[1, "x"]]}, "logit_bias"),
        ("/v1/chat/completions", {**chat, "response_format": {"type": "xml"}}, "response_format"),
        ("/v1/chat/completions", {**chat, "tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {**chat, "tools": TOOLS, "tool_choice": {"type": "function",
                                                                            "function": {"name": "nope"}}},
         "tool_choice"),
    ]
    # sizes past the server's own limits (this server has the default 16 MiB body limit): a 1 MB grammar and a
    # schema nested 10^4 levels; one second bounds the failure of a server that tried to compile them
    cases += [("/completion", {"prompt": "a", "grammar": "root ::= " + '"x" ' * 250_000}, "grammar")]
    for path, body, field in cases:
        r = srv.http.post(path, json=body, timeout=1.0)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"]["message"], (body, r.text)
    deep = b'{"prompt": "a", "json_schema": ' + b'{"items": ' * 10_000 + b"{}" + b"}" * 10_001
    r = srv.http.post("/completion", content=deep, headers={"Content-Type": "application/json"}, timeout=1.0)
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"], r.text
    assert srv.http.post("/completion", json={"prompt": "a", "n_predict": 2}).status_code == 200
