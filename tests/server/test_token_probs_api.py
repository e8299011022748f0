"""Token probabilities through a real server and the real `openai` client, on the embedded demo model: chat
`logprobs` / `top_logprobs` (whole and streamed), /v1/completions `logprobs`, /completion `n_probs` and
`post_sampling_probs`. The Vulkan engine's answers equal the reference engine's within 1e-3, greedy and seeded
sampled, MTP on and off."""

from __future__ import annotations

from dataclasses import replace

import openai
import pytest

from tests.server.live_server import LiveServer, server_config
from vkmtp.demo_model import default_model_path
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.sampling import SamplingParams

TOL = 1e-3
MESSAGES = [{"role": "user", "content": "Write one short sentence about the sea."}]
SAMPLED = {"temperature": 0.9, "seed": 11}


def _server(kind: str, mtp: bool) -> LiveServer:
    config = server_config(n_slots=1, mtp=mtp, sampling=SamplingParams.greedy_params())
    config = replace(config, engine=replace(config.engine, n_ctx=512))
    path = default_model_path()
    factory = (lambda: VulkanEngine(path, config.engine)) if kind == "vulkan" else None
    srv = LiveServer(config, path, factory).start(wait_ready=False)
    srv.wait_ready(timeout=300)
    srv.client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    return srv


@pytest.fixture(scope="module")
def servers():
    made = {(kind, mtp): _server(kind, mtp) for kind in ("vulkan", "reference") for mtp in (False, True)}
    yield made
    for srv in made.values():
        srv.stop()


def _close(got: list[tuple], want: list[tuple]) -> None:
    """Lists of (token, logprob, {alternative: logprob}); a near-tie at the last place may swap an id."""
    assert [g[0] for g in got] == [w[0] for w in want]
    for (tok, lp, top), (_, wlp, wtop) in zip(got, want):
        assert abs(lp - wlp) < TOL, (tok, lp, wlp)
        assert len(top) == len(wtop)
        edge = min(wtop.values()) if wtop else 0.0
        for key in top.keys() | wtop.keys():
            if key in top and key in wtop:
                assert abs(top[key] - wtop[key]) < TOL, (key, top, wtop)
            else:
                assert abs(top.get(key, wtop.get(key)) - edge) < TOL, (key, top, wtop)


def _chat_entries(content) -> list[tuple]:
    return [(c.token, c.logprob, {t.token: t.logprob for t in c.top_logprobs}) for c in content]


def _chat(srv, stream: bool = False, **extra):
    ask = dict(model="demo", messages=MESSAGES, max_tokens=10, logprobs=True, top_logprobs=5, **extra)
    if not stream:
        choice = srv.client.chat.completions.create(**ask).choices[0]
        assert "".join(bytes(c.bytes).decode("utf-8", "replace") for c in choice.logprobs.content) \
            .startswith(choice.message.content or "")
        return _chat_entries(choice.logprobs.content)
    entries = []
    for chunk in srv.client.chat.completions.create(**ask, stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            entries += _chat_entries(chunk.choices[0].logprobs.content)
    return entries


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_chat_logprobs_match_the_reference_with_mtp_on_and_off(servers, sampling):
    got = {key: _chat(srv, **sampling) for key, srv in servers.items()}
    want = got["reference", False]
    assert len(want) == 10 and all(len(top) == 5 for _, _, top in want)
    for key, entries in got.items():
        _close(entries, want)
    _close(_chat(servers["vulkan", True], stream=True, **sampling), want)


def test_completions_logprobs_legacy_form(servers):
    results = {}
    for key, srv in servers.items():
        out = srv.client.completions.create(model="demo", prompt="The sea is", max_tokens=8, logprobs=3,
                                            temperature=0)
        lp = out.choices[0].logprobs
        assert "".join(lp.tokens) == out.choices[0].text
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
        assert all(len(top) <= 3 for top in lp.top_logprobs)
        results[key] = [(t, v, top) for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)]
    for entries in results.values():
        assert [e[0] for e in entries] == [e[0] for e in results["reference", False]]
        for (_, v, _), (_, w, _) in zip(entries, results["reference", False]):
            assert abs(v - w) < TOL


def _llama(srv, **extra):
    r = srv.http.post("/completion", json={"prompt": "The sea is", "n_predict": 8, "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_completion_n_probs(servers, sampling):
    bodies = {key: _llama(srv, n_probs=4, **sampling) for key, srv in servers.items()}
    want = bodies["reference", False]["completion_probabilities"]
    assert len(want) == 8
    for key, body in bodies.items():
        probs = body["completion_probabilities"]
        for entry in probs:
            assert set(entry) == {"id", "token", "bytes", "logprob", "top_logprobs"}
            assert len(entry["top_logprobs"]) == 4
            assert set(entry["top_logprobs"][0]) == {"id", "token", "bytes", "logprob"}
        _close([(e["id"], e["logprob"], {t["id"]: t["logprob"] for t in e["top_logprobs"]}) for e in probs],
               [(e["id"], e["logprob"], {t["id"]: t["logprob"] for t in e["top_logprobs"]}) for e in want])
    # streamed: each event carries its own tokens' probabilities
    srv = servers["vulkan", True]
    with srv.http.stream("POST", "/completion", json={"prompt": "The sea is", "n_predict": 8, "temperature": 0,
                                                       "n_probs": 4, "stream": True, **sampling}) as r:
        events = [__import__("json").loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    streamed = [e for ev in events for e in ev["completion_probabilities"]]
    assert [e["id"] for e in streamed] == [e["id"] for e in bodies["vulkan", True]["completion_probabilities"]]
    for a, b in zip(streamed, bodies["vulkan", True]["completion_probabilities"]):
        assert abs(a["logprob"] - b["logprob"]) < 1e-6


def test_completion_post_sampling_probs(servers):
    for key, srv in servers.items():
        greedy = _llama(srv, n_probs=3, post_sampling_probs=True)["completion_probabilities"]
        assert all(e["prob"] == 1.0 and [t["id"] for t in e["top_probs"]] == [e["id"]] for e in greedy)
        sampled = _llama(srv, n_probs=3, post_sampling_probs=True, **SAMPLED)["completion_probabilities"]
        for entry in sampled:
            assert set(entry) == {"id", "token", "bytes", "prob", "top_probs"}
            assert 0.0 < entry["prob"] <= 1.0 and sum(t["prob"] for t in entry["top_probs"]) <= 1.0 + 1e-6
        if key != ("reference", False):
            want = _llama(servers["reference", False], n_probs=3, post_sampling_probs=True,
                          **SAMPLED)["completion_probabilities"]
            assert [e["id"] for e in sampled] == [e["id"] for e in want]
            assert all(abs(a["prob"] - b["prob"]) < TOL for a, b in zip(sampled, want))
