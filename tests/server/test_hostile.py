"""Malformed and hostile requests: each gets a clear 4xx in OpenAI's error shape; the server keeps serving."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.engine.reference import ReferenceEngine

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]

# (name, path, body: dict -> JSON | bytes -> raw, expected status, words the message must contain)
CASES = [
    ("bad JSON", CHAT, b'{"messages": [', 400, "invalid JSON"),
    ("JSON array body", CHAT, b"[1, 2, 3]", 400, "must be a JSON object"),
    ("empty body", CHAT, b"", 400, "empty"),
    ("invalid UTF-8", CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
    (
        "NaN temperature",
        CHAT,
        b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        400,
        "NaN",
    ),
    ("deeply nested JSON", CHAT, b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("messages missing", CHAT, {"max_tokens": 3}, 400, "messages: field required"),
    ("messages not a list", CHAT, {"messages": "hello"}, 400, "messages"),
    ("message without role", CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0]"),
    (
        "image content part",
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "image_url",
    ),
    ("max_tokens as string", CHAT, {"messages": OK_MESSAGES, "max_tokens": "10"}, 400, "max_tokens"),
    ("max_tokens huge", CHAT, {"messages": OK_MESSAGES, "max_tokens": 10**12}, 400, "max_tokens"),
    ("max_tokens negative", CHAT, {"messages": OK_MESSAGES, "max_tokens": -5}, 400, "max_tokens"),
    ("temperature negative", CHAT, {"messages": OK_MESSAGES, "temperature": -1}, 400, "temperature"),
    ("top_p above 1", CHAT, {"messages": OK_MESSAGES, "top_p": 1.5}, 400, "top_p"),
    ("seed below -1", CHAT, {"messages": OK_MESSAGES, "seed": -2}, 400, "seed"),
    ("stream not a bool", CHAT, {"messages": OK_MESSAGES, "stream": "yes"}, 400, "stream"),
    ("stop not strings", CHAT, {"messages": OK_MESSAGES, "stop": 5}, 400, "stop"),
    ("n above 1", CHAT, {"messages": OK_MESSAGES, "n": 2}, 400, "n:"),
    ("logprobs a string", CHAT, {"messages": OK_MESSAGES, "logprobs": "yes"}, 400, "logprobs"),
    ("logprobs a number", CHAT, {"messages": OK_MESSAGES, "logprobs": 5}, 400, "logprobs"),
    ("top_logprobs without logprobs", CHAT, {"messages": OK_MESSAGES, "top_logprobs": 3}, 400, "top_logprobs"),
    ("top_logprobs 21", CHAT, {"messages": OK_MESSAGES, "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs"),
    ("top_logprobs negative", CHAT, {"messages": OK_MESSAGES, "logprobs": True, "top_logprobs": -1}, 400,
     "top_logprobs"),
    ("top_logprobs a string", CHAT, {"messages": OK_MESSAGES, "logprobs": True, "top_logprobs": "5"}, 400,
     "top_logprobs"),
    ("top_logprobs a float", CHAT, {"messages": OK_MESSAGES, "logprobs": True, "top_logprobs": 2.5}, 400,
     "top_logprobs"),
    ("n_probs on chat", CHAT, {"messages": OK_MESSAGES, "n_probs": 5}, 400, "n_probs"),
    ("post_sampling_probs on chat", CHAT, {"messages": OK_MESSAGES, "post_sampling_probs": True}, 400,
     "post_sampling_probs"),
    ("completions logprobs a bool", "/v1/completions", {"prompt": "a", "logprobs": True}, 400, "logprobs"),
    ("completions logprobs 10^6", "/v1/completions", {"prompt": "a", "logprobs": 10**6}, 400, "logprobs"),
    ("completions logprobs negative", "/v1/completions", {"prompt": "a", "logprobs": -1}, 400, "logprobs"),
    ("completions logprobs a string", "/v1/completions", {"prompt": "a", "logprobs": "yes"}, 400, "logprobs"),
    ("response_format unknown type", CHAT, {"messages": OK_MESSAGES, "response_format": {"type": "xml"}}, 400,
     "response_format"),
    ("response_format a string", CHAT, {"messages": OK_MESSAGES, "response_format": "json"}, 400,
     "response_format"),
    ("response_format without schema", CHAT, {"messages": OK_MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x"}}}, 400, "response_format"),
    (
        "reserved template kwarg",
        CHAT,
        {"messages": OK_MESSAGES, "chat_template_kwargs": {"messages": []}},
        400,
        "chat_template_kwargs.messages",
    ),
    ("lone surrogate", CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "tokenize"),
    ("prompt too long", "/v1/completions", {"prompt": "word " * 2000, "max_tokens": 2}, 400, "context size"),
    ("several prompts", "/v1/completions", {"prompt": ["a", "b"]}, 400, "one prompt"),
    ("echo", "/v1/completions", {"prompt": "a", "echo": True}, 400, "echo"),
    ("token id out of range", "/completion", {"prompt": [1, 99999]}, 400, "prompt[1]"),
    ("prompt as object", "/completion", {"prompt": {"text": "x"}}, 400, "prompt"),
    ("empty token prompt", "/completion", {"prompt": []}, 400, "prompt"),
    ("n_predict float", "/completion", {"prompt": "a", "n_predict": 1.5}, 400, "n_predict"),
    ("n_probs negative", "/completion", {"prompt": "a", "n_probs": -1}, 400, "n_probs"),
    ("n_probs a string", "/completion", {"prompt": "a", "n_probs": "x"}, 400, "n_probs"),
    ("n_probs 10^6", "/completion", {"prompt": "a", "n_probs": 10**6}, 400, "n_probs"),
    ("n_probs a float", "/completion", {"prompt": "a", "n_probs": 1.5}, 400, "n_probs"),
    ("n_probs a list", "/completion", {"prompt": "a", "n_probs": [5]}, 400, "n_probs"),
    ("detokenize negative id", "/detokenize", {"tokens": [3, -1]}, 400, "tokens[1]"),
    ("detokenize strings", "/detokenize", {"tokens": ["a"]}, 400, "tokens.0"),
    ("tokenize a number", "/tokenize", {"content": 5}, 400, "content"),
    ("unknown field", CHAT, {"messages": OK_MESSAGES, "frobnicate": 1}, 400, "frobnicate: unknown field"),
    ("top_logprobs huge", CHAT, {"messages": OK_MESSAGES, "top_logprobs": 10**6}, 400, "top_logprobs"),
    ("logit_bias map bad key", CHAT, {"messages": OK_MESSAGES, "logit_bias": {"five": 10}}, 400, "logit_bias"),
    ("logit_bias a string", CHAT, {"messages": OK_MESSAGES, "logit_bias": "5:10"}, 400, "logit_bias"),
    ("logit_bias id out of range", "/completion", {"prompt": "a", "logit_bias": [[10**7, 1]]}, 400, "logit_bias"),
    ("logit_bias bias a string", "/completion", {"prompt": "a", "logit_bias": [[5, "high"]]}, 400, "logit_bias"),
    ("logit_bias a triple", "/completion", {"prompt": "a", "logit_bias": [[5, 1, 2]]}, 400, "logit_bias"),
    ("logit_bias 5000 entries", "/completion", {"prompt": "a", "logit_bias": [[5, 1]] * 5000}, 400,
     "logit_bias"),
    ("json_schema not an object", "/completion", {"prompt": "a", "json_schema": [1]}, 400, "json_schema"),
    ("json_schema bad type", "/completion", {"prompt": "a", "json_schema": {"type": "frob"}}, 400, "json_schema"),
    ("json_schema 10^4 levels", "/completion",
     b'{"prompt": "a", "json_schema": ' + b'{"items": ' * 10_000 + b"{}" + b"}" * 10_001, 400, "nested"),
    ("json_schema 500 levels", "/completion", {"prompt": "a", "json_schema": json.loads(
        '{"items": ' * 500 + "{}" + "}" * 500)}, 400, "nested deeper"),
    ("grammar and json_schema", "/completion", {"prompt": "a", "grammar": 'root ::= "a"', "json_schema": {
        "type": "object"}}, 400, "only one of"),
    ("grammar a list", "/completion", {"prompt": "a", "grammar": ["root ::= x"]}, 400, "grammar"),
    ("grammar undefined rule", "/completion", {"prompt": "a", "grammar": "root ::= nothing"}, 400, "grammar"),
    ("grammar 1 MB", "/completion", {"prompt": "a", "grammar": "root ::= " + '"x" ' * 250_000}, 413, "limit"),
    ("post_sampling_probs a string", "/completion", {"prompt": "a", "n_probs": 2, "post_sampling_probs": "yes"},
     400, "post_sampling_probs"),
    ("post_sampling_probs a number", "/completion", {"prompt": "a", "post_sampling_probs": 1}, 400,
     "post_sampling_probs"),
    ("grammar 200 KB", "/completion", {"prompt": "a", "grammar": "root ::= " + "x" * 200_000}, 400, "grammar"),
    ("deep schema", CHAT, {"messages": OK_MESSAGES, "response_format": {"type": "json_schema", "json_schema": (
        json.loads("[" * 400 + "]" * 400))}}, 400, "response_format"),
    ("tool_choice required", CHAT, {"messages": OK_MESSAGES, "tool_choice": "required"}, 400, "tool_choice"),
    ("tool_choice a number", CHAT, {"messages": OK_MESSAGES, "tool_choice": 3}, 400, "tool_choice"),
    ("tool_choice unknown function", CHAT, {"messages": OK_MESSAGES, "tools": [{"type": "function", "function": {
        "name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    ("tool_choice malformed", CHAT, {"messages": OK_MESSAGES, "tools": [{"type": "function", "function": {
        "name": "f"}}], "tool_choice": {"function": "f"}}, 400, "tool_choice"),
    ("tool parameters not a schema", CHAT, {"messages": OK_MESSAGES, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": [1]}}], "tool_choice": "required"}, 400, "parameters"),
    ("parallel_tool_calls string", CHAT, {"messages": OK_MESSAGES, "parallel_tool_calls": "no"}, 400,
     "parallel_tool_calls"),
    ("reasoning_format unknown", CHAT, {"messages": OK_MESSAGES, "reasoning_format": "r1"}, 400,
     "reasoning_format"),
    ("id_slot out of range", "/completion", {"prompt": "a", "id_slot": 2**31 - 1}, 400, "id_slot"),
    ("id_slot a string", "/completion", {"prompt": "a", "id_slot": "0"}, 400, "id_slot"),
    ("n_keep positive", "/completion", {"prompt": "a", "n_keep": 10}, 400, "n_keep"),
    ("t_max_predict_ms negative", "/completion", {"prompt": "a", "t_max_predict_ms": -1}, 400, "t_max_predict"),
    ("samplers reordered", "/completion", {"prompt": "a", "samplers": ["top_p", "top_k"]}, 400, "samplers"),
    ("samplers huge string", "/completion", {"prompt": "a", "samplers": "k" * 100_000}, 400, "samplers"),
    ("too many prompts", "/completion", {"prompt": ["a"] * 65}, 400, "at most 64 prompts"),
    ("bad second prompt", "/completion", {"prompt": ["a", {"x": 1}]}, 400, "prompt[1]"),
    ("unknown role", CHAT, {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ("typical_p on", CHAT, {"messages": OK_MESSAGES, "typical_p": 0.9}, 400, "typical_p"),
    ("user not a string", CHAT, {"messages": OK_MESSAGES, "user": 5}, 400, "user"),
    ("metadata not an object", CHAT, {"messages": OK_MESSAGES, "metadata": [1]}, 400, "metadata"),
    ("stream_options unknown key", CHAT, {"messages": OK_MESSAGES, "stream_options": {"x": 1}}, 400,
     "stream_options.x"),
    ("body over the limit", CHAT, b'{"messages": "' + b"x" * 300_000 + b'"}', 413, "limit"),
]


def check_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and isinstance(error["type"], str)
    assert words in error["message"], error["message"]
    assert "Traceback" not in r.text


# the constraint and probability fields: each answer must come within a second (a bound on failure: a grammar
# or schema the server started compiling or walking without limits would hang here, not merely be slow)
CONSTRAINT_FIELDS = ("grammar", "json_schema", "response_format", "logit_bias", "tool_choice", "top_logprobs",
                     "logprobs", "n_probs", "post_sampling_probs")


@pytest.mark.parametrize("name,path,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_gets_a_clear_4xx(plain_server, name, path, body, status, words):
    url = path
    bounded = any(f.encode() in body if isinstance(body, bytes) else f in body for f in CONSTRAINT_FIELDS)
    timeout = 1.0 if bounded else 60.0
    if isinstance(body, bytes):
        r = plain_server.http.post(url, content=body, headers={"Content-Type": "application/json"},
                                   timeout=timeout)
    else:
        r = plain_server.http.post(url, json=body, timeout=timeout)
    check_error(r, status, words)


# the sizes where the body limit lets them through to the constraint compiler (16 MiB, the default)
LARGE_CASES = [
    ("grammar 1 MB", "/completion", {"prompt": "a", "grammar": "root ::= " + '"x" ' * 250_000}, 400, "grammar"),
    ("grammar 1 MB of open parentheses", "/completion", {"prompt": "a", "grammar": "root ::= " + "(" * 1_000_000},
     400, "grammar"),
    ("json_schema 10^4 levels", "/completion",
     b'{"prompt": "a", "json_schema": ' + b'{"items": ' * 10_000 + b"{}" + b"}" * 10_001, 400, "nested"),
    ("response_format schema 10^4 levels", CHAT,
     b'{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", '
     b'"json_schema": {"name": "x", "schema": ' + b'{"items": ' * 10_000 + b"{}" + b"}" * 10_000 + b"}}}",
     400, "nested"),
    ("top_logprobs 10^6", CHAT, {"messages": OK_MESSAGES, "logprobs": True, "top_logprobs": 10**6}, 400,
     "top_logprobs"),
    ("n_probs 10^6", "/completion", {"prompt": "a", "n_probs": 10**6}, 400, "n_probs"),
]


@pytest.mark.parametrize("name,path,body,status,words", LARGE_CASES, ids=[c[0] for c in LARGE_CASES])
def test_huge_constraints_get_a_4xx_within_a_second(mtp_server, name, path, body, status, words):
    """A failure bound, not a speed claim: a server that started compiling or walking these without limits
    would not answer within the second (llama-server b11434 crashes on the grammar and the schema)."""
    if isinstance(body, bytes):
        r = mtp_server.http.post(path, content=body, headers={"Content-Type": "application/json"}, timeout=1.0)
    else:
        r = mtp_server.http.post(path, json=body, timeout=1.0)
    check_error(r, status, words)
    ok = mtp_server.http.post("/completion", json={"prompt": "a", "n_predict": 2, "n_probs": 2})
    assert ok.status_code == 200 and len(ok.json()["completion_probabilities"]) == 2


def test_prompt_too_long_has_llama_server_fields(plain_server):
    r = plain_server.http.post("/completion", json={"prompt": "word " * 2000})
    error = r.json()["error"]
    assert error["type"] == "exceed_context_size_error" and error["n_ctx"] == 256
    assert error["n_prompt_tokens"] > 256


def test_unknown_route_and_wrong_method(plain_server):
    check_error(plain_server.http.get("/v2/nothing"), 404, "File Not Found")
    assert plain_server.http.get("/v2/nothing").json()["error"]["type"] == "not_found_error"
    check_error(plain_server.http.get(CHAT), 405, "not allowed")


def test_unknown_model_name_is_accepted_like_llama_server(plain_server):
    """One model per server, as llama-server without a router: the `model` field is echoed, not checked."""
    r = plain_server.http.post(CHAT, json={"model": "gpt-4o", "messages": OK_MESSAGES, "max_tokens": 2,
                                           "user": "u1", "metadata": {"k": "v"}, "store": False})
    assert r.status_code == 200 and r.json()["model"] == "gpt-4o"


def test_server_still_serves_after_the_abuse(plain_server):
    for _, path, body, _, _ in CASES:  # all of them again, back to back
        if isinstance(body, bytes):
            plain_server.http.post(path, content=body)
        else:
            plain_server.http.post(path, json=body)
    r = plain_server.http.post(CHAT, json={"messages": OK_MESSAGES, "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert plain_server.http.get("/health").json() == {"status": "ok"}
    assert plain_server.ctx.scheduler._thread.is_alive()


def test_api_key(tiny_model):
    srv = LiveServer(server_config(api_key="s3cret"), tiny_model).start()
    try:
        body = {"messages": OK_MESSAGES, "max_tokens": 2}
        check_error(srv.http.post(CHAT, json=body), 401, "Invalid API Key")
        check_error(
            srv.http.post(CHAT, json=body, headers={"Authorization": "Bearer wrong"}), 401, "Invalid API Key"
        )
        check_error(srv.http.post(CHAT, json=body, headers={"Authorization": "s3cret"}), 401, "API Key")
        assert srv.http.post(CHAT, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert srv.http.post(CHAT, json=body, headers={"X-Api-Key": "s3cret"}).status_code == 200
        check_error(srv.http.get("/metrics"), 401, "API Key")
        check_error(srv.http.get("/props"), 401, "API Key")
        assert srv.http.get("/health").status_code == 200  # public, as in llama-server
        assert srv.http.get("/v1/models").status_code == 200
        assert srv.http.post("/tokenize", json={"content": "a"}).status_code == 401
    finally:
        srv.stop()


class _BrokenStepEngine(ReferenceEngine):
    """Raises inside step() whenever a sequence's prompt contains token 7: a bug in the engine."""

    def step(self):
        if any(s.run is not None and 7 in s.run.prompt for s in self.slots):
            raise RuntimeError("injected engine failure")
        return super().step()


def test_engine_failure_is_a_500_without_traceback_and_the_worker_goes_on(tiny_model):
    config = server_config()
    srv = LiveServer(config, tiny_model, factory=lambda: _BrokenStepEngine(tiny_model, config.engine)).start()
    try:
        r = srv.http.post("/completion", json={"prompt": [1, 7, 3], "n_predict": 3})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "injected engine failure" in r.json()["error"]["message"] and "Traceback" not in r.text
        ok = srv.http.post("/completion", json={"prompt": [1, 2, 3], "n_predict": 3})
        assert ok.status_code == 200 and ok.json()["tokens_predicted"] == 3
        assert all(not s["is_processing"] for s in srv.http.get("/slots").json())
    finally:
        srv.stop()


def test_failed_load_is_reported_by_health(tiny_model):
    def factory():
        raise ValueError("no such device")

    srv = LiveServer(server_config(), tiny_model, factory=factory).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 10
        while srv.ctx.scheduler.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        check_error(srv.http.get("/health"), 503, "the model failed to load: ValueError: no such device")
        check_error(srv.http.post("/completion", json={"prompt": "a"}), 503, "no such device")
    finally:
        srv.stop()
