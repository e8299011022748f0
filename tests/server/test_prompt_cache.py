"""The prompt cache behind the real server on the embedded demo model: a multi-turn chat whose history is not
what the slot generated re-uses the checkpoint at the end of the previous prompt, an identical prompt evaluates one
token, and every answer equals a cold run (cache_prompt false). Reported as timings.cache_n, usage
prompt_tokens_details.cached_tokens and the /metrics counter vkmtp:prompt_tokens_cached_total."""

from __future__ import annotations

import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.demo_model import default_model_path
from vkmtp.engine.factory import load_engine

QUESTIONS = ["What is a river?", "And a lake?", "Which one is larger, usually?", "Say it in one word."]


def _servers():
    return [("reference", False), ("reference", True), ("vulkan", True)]


@pytest.fixture(params=_servers(), ids=lambda p: f"{p[0]}-{'mtp' if p[1] else 'nomtp'}")
def server(request):
    backend, mtp = request.param
    if backend == "vulkan":
        from vkmtp.device import list_devices

        if not list_devices():
            pytest.skip("no Vulkan device")
    path = default_model_path()
    config = server_config(n_slots=1, mtp=mtp)
    srv = LiveServer(config, path, factory=lambda: load_engine(path, config.engine, backend)).start()
    yield srv
    srv.stop()


def _chat(srv, messages, cache_prompt=True):
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "cache_prompt": cache_prompt}
    r = srv.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _cached_metric(srv) -> float:
    for line in srv.http.get("/metrics").text.splitlines():
        if line.startswith("vkmtp:prompt_tokens_cached_total "):
            return float(line.split()[1])
    raise AssertionError("no vkmtp:prompt_tokens_cached_total in /metrics")


def test_turns_reuse_the_previous_prompt_and_answer_as_cold_runs(server):
    ubatch = server.config.engine.ubatch
    messages, n_prev, reused = [], 0, 0
    for turn, question in enumerate(QUESTIONS):
        messages.append({"role": "user", "content": question})
        out = _chat(server, messages)
        t, usage = out["timings"], out["usage"]
        n_prompt = usage["prompt_tokens"]
        assert t["cache_n"] + t["prompt_n"] == n_prompt
        assert usage["prompt_tokens_details"]["cached_tokens"] == t["cache_n"]
        if turn:   # the history the client sends back is not the slot's tokens; the checkpoint covers the rest
            assert t["prompt_n"] <= (n_prompt - n_prev) + ubatch
            assert t["cache_n"] > 0
        reused += t["cache_n"]
        n_prev = n_prompt
        messages.append({"role": "assistant", "content": "<think>\nthinking\n</think>\n\n"
                                                          + out["choices"][0]["message"]["content"]})
    final = out["choices"][0]["message"]["content"]
    again = _chat(server, messages[:-1])   # the identical last prompt: one token evaluated
    assert (again["timings"]["prompt_n"], again["timings"]["cache_n"]) == (1, n_prev - 1)
    assert again["choices"][0]["message"]["content"] == final
    cold = _chat(server, messages[:-1], cache_prompt=False)
    assert cold["timings"]["cache_n"] == 0 and cold["choices"][0]["message"]["content"] == final
    assert _cached_metric(server) == reused + n_prev - 1
