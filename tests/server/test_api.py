"""The HTTP API on real uvicorn servers: OpenAI client and raw HTTP, llama-server's fields and metrics."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.engine.factory import load_engine
from vkmtp.engine.reference import ReferenceEngine

MESSAGES = [{"role": "user", "content": "Tell me about the quick brown fox."}]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def sse_events(response: httpx.Response) -> list:
    """The JSON objects of an SSE stream, plus the literal "[DONE]" if it came."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def metrics(server) -> dict[str, float]:
    out = {}
    for line in server.http.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_health_is_503_while_the_model_loads(tiny_model):
    release = threading.Event()
    config = server_config()

    def slow_factory():
        release.wait(30)
        return ReferenceEngine(tiny_model, config.engine)

    srv = LiveServer(config, tiny_model, factory=slow_factory).start(wait_ready=False)
    try:
        r = srv.http.get("/health")
        assert r.status_code == 503
        assert r.json() == {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        r = srv.http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["message"] == "Loading model"
        release.set()
        srv.wait_ready()
        r = srv.http.get("/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    finally:
        release.set()
        srv.stop()


def test_chat_non_streaming_with_the_openai_client(mtp_server):
    resp = client(mtp_server).chat.completions.create(model="any-name", messages=MESSAGES, max_tokens=10)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.choices[0].message.role == "assistant"
    assert resp.usage.completion_tokens == 10 and resp.choices[0].finish_reason == "length"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 10
    timings = resp.model_extra["timings"]
    assert timings["predicted_n"] == 10 and timings["predicted_per_second"] > 0
    assert timings["draft_n"] > 0 and 0 <= timings["draft_n_accepted"] <= timings["draft_n"]
    # the same text as /v1/completions on the rendered prompt
    prompt = mtp_server.http.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
    text = mtp_server.http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 10}).json()
    assert text["choices"][0]["text"] == resp.choices[0].message.content
    assert text["object"] == "text_completion" and text["usage"]["completion_tokens"] == 10


def test_chat_streaming_with_the_openai_client(mtp_server):
    whole = client(mtp_server).chat.completions.create(model="x", messages=MESSAGES, max_tokens=12)
    stream = client(mtp_server).chat.completions.create(
        model="x", messages=MESSAGES, max_tokens=12, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].model_extra["timings"]["predicted_n"] == 12


def test_stream_ends_with_done_and_carries_timings(mtp_server):
    body = {"messages": MESSAGES, "max_tokens": 6, "stream": True}
    with mtp_server.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert last["object"] == "chat.completion.chunk" and last["choices"][0]["finish_reason"] == "length"
    assert last["timings"]["predicted_n"] == 6 and "draft_n" in last["timings"]
    assert "usage" not in last  # only with stream_options.include_usage


def test_llama_completion_fields(mtp_server):
    body = {"prompt": "The quick brown fox", "n_predict": 9, "return_tokens": True, "cache_prompt": False}
    r = mtp_server.http.post("/completion", json=body).json()
    assert r["stop"] is True and r["stop_type"] == "limit" and r["stopping_word"] == ""
    assert r["tokens_predicted"] == 9 == len(r["tokens"]) and r["timings"]["predicted_n"] == 9
    n_prompt = len(
        mtp_server.http.post("/tokenize", json={"content": "The quick brown fox"}).json()["tokens"]
    )
    assert r["tokens_evaluated"] == n_prompt == r["timings"]["prompt_n"] and r["timings"]["cache_n"] == 0
    assert r["generation_settings"]["n_predict"] == 9
    assert r["generation_settings"]["speculative.types"] == "none,draft-mtp"
    assert r["prompt"] == "The quick brown fox" and r["model"] == "tiny"
    detok = mtp_server.http.post("/detokenize", json={"tokens": r["tokens"]}).json()["content"]
    assert detok == r["content"]
    # streamed: the same tokens and text; the last event has stop=true and the timings; no [DONE]
    with mtp_server.http.stream("POST", "/completion", json={**body, "stream": True}) as s:
        events = sse_events(s)
    assert "[DONE]" not in events and events[-1]["stop"] is True and "timings" in events[-1]
    assert "".join(e["content"] for e in events) == r["content"]
    assert [t for e in events for t in e["tokens"]] == r["tokens"]
    # token-id prompts and mixed prompts give the same answer
    ids = mtp_server.http.post("/tokenize", json={"content": "The quick brown fox"}).json()["tokens"]
    by_ids = mtp_server.http.post("/completion", json={**body, "prompt": ids}).json()
    assert by_ids["tokens"] == r["tokens"]
    mixed = mtp_server.http.post("/completion", json={**body, "prompt": ["The quick", *ids[-2:]]})
    assert mixed.status_code == 200 and mixed.json()["tokens_evaluated"] > 2


def test_timings_have_draft_fields_only_with_mtp(mtp_server, plain_server):
    body = {"messages": MESSAGES, "max_tokens": 8}
    with_mtp = mtp_server.http.post("/v1/chat/completions", json=body).json()
    without = plain_server.http.post("/v1/chat/completions", json=body).json()
    assert with_mtp["timings"]["draft_n"] > 0 and "draft_n_accepted" in with_mtp["timings"]
    assert "draft_n" not in without["timings"] and "draft_n_accepted" not in without["timings"]
    # greedy MTP output is the plain output
    assert with_mtp["choices"][0]["message"]["content"] == without["choices"][0]["message"]["content"]
    slots = plain_server.http.get("/slots").json()
    assert slots[0]["speculative"] is False and slots[0]["params"]["speculative.types"] == "none"


def test_metrics_count_what_the_responses_report(mtp_server):
    before = metrics(mtp_server)
    responses = [
        mtp_server.http.post(
            "/completion", json={"prompt": f"Count {i}: one two three", "n_predict": 7, "cache_prompt": False}
        ).json()
        for i in range(2)
    ]
    after = metrics(mtp_server)
    delta = lambda name: after[name] - before.get(name, 0.0)  # noqa: E731
    assert delta("llamacpp:prompt_tokens_total") == sum(r["timings"]["prompt_n"] for r in responses)
    assert delta("llamacpp:tokens_predicted_total") == 14
    assert delta("llamacpp:spec_decode_num_draft_tokens_total") == sum(
        r["timings"]["draft_n"] for r in responses
    )
    accepted = sum(r["timings"]["draft_n_accepted"] for r in responses)
    assert delta("llamacpp:spec_decode_num_accepted_tokens_total") == accepted
    per_pos = sum(
        delta(f'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{{position="{i}"}}') for i in range(3)
    )
    assert per_pos == accepted
    # each verify step yields one token of its own besides the accepted drafts (first token: from the prompt)
    assert delta("llamacpp:spec_decode_num_drafts_total") <= 14 - 2 - accepted
    assert delta("llamacpp:spec_decode_num_drafts_total") > 0
    # vkmtp's counters over all generation steps: 2 x 6 tokens after the prefill's first ones
    assert delta("vkmtp:spec_generation_tokens_total") == 14 - 2
    assert delta("vkmtp:spec_generation_steps_total") >= delta("llamacpp:spec_decode_num_drafts_total")
    assert delta("vkmtp:spec_draft_verify_seconds_total") > 0
    assert delta("llamacpp:prompt_seconds_total") > 0 and delta("llamacpp:tokens_predicted_seconds_total") > 0
    assert 0 < delta("llamacpp:n_decode_total") < 14 + 2
    assert after["llamacpp:requests_processing"] == 0 and after["llamacpp:requests_deferred"] == 0
    assert after["vkmtp:engine_peak_bytes"] >= after["vkmtp:engine_allocated_bytes"] > 0
    assert after["vkmtp:process_peak_rss_bytes"] >= after["vkmtp:process_rss_bytes"] > 0


def test_stop_strings_cut_the_text_streamed_or_not(mtp_server):
    base = {"prompt": "Hello, world! How are you today?", "n_predict": 16, "cache_prompt": False}
    full = mtp_server.http.post("/completion", json=base).json()["content"]
    stop = full[6:9]
    expected = full[: full.find(stop)]
    r = mtp_server.http.post("/completion", json={**base, "stop": [stop, "never-there"]}).json()
    assert r["content"] == expected and r["stop_type"] == "word" and r["stopping_word"] == stop
    assert r["tokens_predicted"] < 16
    with mtp_server.http.stream(
        "POST", "/v1/completions", json={**base, "max_tokens": 16, "stop": stop, "stream": True}
    ) as s:
        events = [e for e in sse_events(s) if e != "[DONE]"]
    assert "".join(e["choices"][0]["text"] for e in events) == expected
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_tokenize_detokenize_round_trip(mtp_server):
    text = "Hello, world! Numbers 3, 14 and <|im_start|> special, héllo ünïcode."
    tokens = mtp_server.http.post("/tokenize", json={"content": text}).json()["tokens"]
    assert all(isinstance(t, int) for t in tokens)
    assert mtp_server.http.post("/detokenize", json={"tokens": tokens}).json()["content"] == text
    pieces = mtp_server.http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    joined = b"".join(
        p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces
    )
    assert joined.decode() == text
    plain = mtp_server.http.post("/tokenize", json={"content": text, "parse_special": False}).json()
    assert len(plain["tokens"]) > len(tokens)  # <|im_start|> spelled out as text


def test_models_props_slots(mtp_server):
    models = mtp_server.http.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    assert models["data"][0]["meta"]["n_vocab"] == 512 and models["data"][0]["meta"]["n_params"] > 0
    assert mtp_server.http.get("/models").json() == models
    props = mtp_server.http.get("/props").json()
    assert props["total_slots"] == 2 and props["is_sleeping"] is False
    assert "<|im_start|>" in props["chat_template"]
    params = props["default_generation_settings"]["params"]
    assert params["speculative.n_max"] == 3 and params["speculative.types"] == "none,draft-mtp"
    slots = mtp_server.http.get("/slots").json()
    assert [s["id"] for s in slots] == [0, 1]
    assert all(s["speculative"] and not s["is_processing"] and s["n_ctx"] == 256 for s in slots)
    assert mtp_server.http.get("/slots?fail_on_no_slot=1").status_code == 200


def test_sampling_fields_are_honoured(mtp_server):
    body = {
        "prompt": "The quick brown fox",
        "n_predict": 8,
        "temperature": 1.0,
        "top_k": 50,
        "seed": 7,
        "cache_prompt": False,
    }
    a = mtp_server.http.post("/completion", json=body).json()
    b = mtp_server.http.post("/completion", json=body).json()
    greedy = mtp_server.http.post("/completion", json={**body, "temperature": 0.0}).json()
    assert a["content"] == b["content"]  # seeded runs repeat
    assert a["generation_settings"]["seed"] == 7 and a["generation_settings"]["top_k"] == 50
    seeds = {
        mtp_server.http.post("/completion", json={**body, "seed": s}).json()["content"] for s in range(4)
    }
    assert len(seeds | {greedy["content"]}) > 1  # sampling is not greedy
    r = mtp_server.http.post(
        "/v1/chat/completions",
        json={
            "messages": MESSAGES,
            "max_tokens": 4,
            "chat_template_kwargs": {"enable_thinking": False},
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "min_p": 0.1,
            "top_p": 0.9,
        },
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_vulkan_backend_serves_what_the_reference_serves(tiny_model, mtp_server):
    """`--backend vulkan` behind the same server: greedy tokens and draft counting as the reference engine."""
    from vkmtp.device import list_devices

    if not list_devices():
        pytest.skip("no Vulkan device")
    config = server_config(n_slots=1, mtp=True)
    srv = LiveServer(
        config, tiny_model, factory=lambda: load_engine(tiny_model, config.engine, "vulkan")
    ).start()
    try:
        body = {"prompt": "The quick brown fox", "n_predict": 5, "cache_prompt": False, "return_tokens": True}
        got = srv.http.post("/completion", json=body).json()
        want = mtp_server.http.post("/completion", json=body).json()
        assert got["tokens"] == want["tokens"] and got["content"] == want["content"]
        assert got["timings"]["draft_n"] > 0
        assert metrics(srv)["vkmtp:engine_allocated_bytes"] > 0  # the device's own accounting
    finally:
        srv.stop()



def test_props_and_slots_report_the_settings_the_engine_resolved(tiny_model):
    """The engine may resolve settings the command line left open (the device's tuning profile sets the draft
    depth): /props and /slots show what is in force, not what was configured."""
    from dataclasses import replace

    config = server_config(n_slots=1, mtp=True)  # configured: n-max 3
    resolved = replace(config.engine, spec=replace(config.engine.spec, n_max=1, p_min=0.5))
    srv = LiveServer(config, tiny_model, factory=lambda: ReferenceEngine(tiny_model, resolved)).start()
    try:
        params = srv.http.get("/props").json()["default_generation_settings"]["params"]
        assert (params["speculative.n_max"], params["speculative.p_min"]) == (1, 0.5)
        assert srv.http.get("/slots").json()[0]["params"]["speculative.n_max"] == 1
        body = {"prompt": "The quick brown fox", "n_predict": 2}
        assert srv.http.post("/completion", json=body).json()["generation_settings"]["speculative.n_max"] == 1
    finally:
        srv.stop()
