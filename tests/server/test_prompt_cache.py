"""The prompt cache behind the real server on the embedded demo model: a multi-turn chat whose history is not
what the slot generated re-uses the checkpoint at the end of the previous prompt, an identical prompt evaluates one
token, and every answer equals a cold run (cache_prompt false). Reported as timings.cache_n, usage
prompt_tokens_details.cached_tokens and the /metrics counter vkmtp:prompt_tokens_cached_total. Two conversations
taking turns on one slot come back from the host-RAM prompt cache (--cache-ram)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.demo_model import default_model_path
from vkmtp.engine.factory import load_engine

QUESTIONS = ["What is a river?", "And a lake?", "Which one is larger, usually?", "Say it in one word."]


def _servers():
    return [("reference", False), ("reference", True), ("vulkan", True)]


def _one_slot_server(backend: str, mtp: bool) -> LiveServer:
    """A started 1-slot server on the demo model with the server's defaults (--cache-ram 8192 among them)."""
    if backend == "vulkan":
        from vkmtp.device import list_devices

        if not list_devices():
            pytest.skip("no Vulkan device")
    path = default_model_path()
    config = server_config(n_slots=1, mtp=mtp)
    return LiveServer(config, path, factory=lambda: load_engine(path, config.engine, backend)).start()


@pytest.fixture(params=_servers(), ids=lambda p: f"{p[0]}-{'mtp' if p[1] else 'nomtp'}")
def server(request):
    srv = _one_slot_server(*request.param)
    yield srv
    srv.stop()


def _chat(srv, messages, cache_prompt=True):
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "cache_prompt": cache_prompt}
    r = srv.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _metric(srv, name: str) -> float:
    for line in srv.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


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
    assert _metric(server, "vkmtp:prompt_tokens_cached_total") == reused + n_prev - 1


@pytest.fixture(params=[("reference", False), ("reference", True), ("vulkan", False), ("vulkan", True)],
                ids=lambda p: f"{p[0]}-{'mtp' if p[1] else 'nomtp'}")
def one_slot_server(request):
    srv = _one_slot_server(*request.param)
    try:
        assert srv.config.engine.cache_ram_mib == 8192   # llama.cpp's default --cache-ram
        yield srv
    finally:
        srv.stop()


def test_two_conversations_alternate_through_host_ram(one_slot_server):
    """One slot, two conversations taking turns: each turn finds the slot holding the other conversation, so its
    prefix comes back from the host-RAM prompt cache (--cache-ram); the answers equal cold runs."""
    srv = one_slot_server
    ubatch = srv.config.engine.ubatch
    talks = {"a": [{"role": "user", "content": "What is a river?"}],
             "b": [{"role": "user", "content": "Name three colours of the sea at night, please."}]}
    n_prev, answers = {}, {}
    for turn in range(2):
        for name, messages in talks.items():
            out = _chat(srv, messages)
            t, usage = out["timings"], out["usage"]
            n_prompt = usage["prompt_tokens"]
            assert usage["prompt_tokens_details"]["cached_tokens"] == t["cache_n"]
            assert t["cache_n"] + t["prompt_n"] == n_prompt
            if turn:   # the slot held the other conversation: this prefix came from host RAM
                assert t["cache_n"] > 0
                assert t["prompt_n"] <= (n_prompt - n_prev[name]) + ubatch
                answers[name] = (list(messages), out["choices"][0]["message"]["content"])
            n_prev[name] = n_prompt
            messages += [{"role": "assistant", "content": out["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "Say more."}]
    assert _metric(srv, "vkmtp:prompt_cache_ram_restores_total") >= 2
    assert _metric(srv, "vkmtp:prompt_cache_ram_images") >= 1
    for messages, answer in answers.values():
        cold = _chat(srv, messages, cache_prompt=False)
        assert cold["timings"]["cache_n"] == 0 and cold["choices"][0]["message"]["content"] == answer


def test_without_host_ram_the_other_conversation_is_recomputed():
    path = default_model_path()
    config = server_config(n_slots=1, mtp=False)
    config = replace(config, engine=replace(config.engine, cache_ram_mib=0))   # --cache-ram 0
    srv = LiveServer(config, path).start()
    try:
        a = [{"role": "user", "content": "What is a river?"}]
        first = _chat(srv, a)
        _chat(srv, [{"role": "user", "content": "Name three colours of the sea at night, please."}])
        a += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
              {"role": "user", "content": "Say more."}]
        assert _chat(srv, a)["timings"]["cache_n"] == 0
        assert _metric(srv, "vkmtp:prompt_cache_ram_images") == 0
    finally:
        srv.stop()
