"""Concurrency: many streaming clients on few slots, clients that vanish, a full queue."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.server.live_server import LiveServer, server_config

N_TOKENS = 20


async def stream_completion(
    client: httpx.AsyncClient, prompt: str, n_predict: int, leave_after: int | None = None
) -> dict | None:
    """Stream /completion; None if we hang up after `leave_after` events (closing the connection)."""
    body = {"prompt": prompt, "n_predict": n_predict, "stream": True}
    async with client.stream("POST", "/completion", json=body) as r:
        assert r.status_code == 200
        events = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if leave_after is not None and len(events) >= leave_after:
                    return None
    assert events[-1]["stop"] is True
    return {
        "content": "".join(e["content"] for e in events),
        "tokens": [t for e in events for t in e["tokens"]],
    }


async def stream_chat(client: httpx.AsyncClient, text: str) -> str:
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": N_TOKENS, "stream": True}
    parts = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def counter(server, name: str) -> float:
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_until_idle(server, timeout: float = 5.0) -> float:
    """Seconds until no slot is processing."""
    t0 = time.monotonic()
    while any(s["is_processing"] for s in server.http.get("/slots").json()):
        assert time.monotonic() - t0 < timeout, "a slot stayed busy"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_concurrent_streams_match_solo_runs_and_leavers_are_cancelled(mtp_server):
    prompts = [f"Client {i} asks: where does the lazy dog sleep?" for i in range(7)]
    leavers = [f"Leaver {i} says hello and goes away" for i in range(3)]
    before = counter(mtp_server, "llamacpp:tokens_predicted_total")

    async def load():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=mtp_server.url, timeout=120, limits=limits) as client:
            jobs = [stream_completion(client, p, N_TOKENS) for p in prompts]
            jobs += [stream_completion(client, p, 200, leave_after=2) for p in leavers]
            jobs += [stream_chat(client, "Tell me about the quick brown fox.")]
            return await asyncio.gather(*jobs)

    results = asyncio.run(load())
    wait_until_idle(mtp_server)
    assert all(r is None for r in results[7:10])
    for prompt, got in zip(prompts, results[:7]):
        alone = mtp_server.http.post(
            "/completion",
            json={"prompt": prompt, "n_predict": N_TOKENS, "cache_prompt": False, "return_tokens": True},
        ).json()
        assert got["tokens"] == alone["tokens"] and got["content"] == alone["content"]
    chat_alone = mtp_server.http.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Tell me about the quick brown fox."}],
            "max_tokens": N_TOKENS,
        },
    ).json()
    assert results[10] == chat_alone["choices"][0]["message"]["content"]
    # the leavers asked for 200 tokens each; they were stopped long before
    predicted = counter(mtp_server, "llamacpp:tokens_predicted_total") - before
    assert predicted < 8 * N_TOKENS + 3 * 100
    assert counter(mtp_server, "llamacpp:requests_processing") == 0
    assert counter(mtp_server, "llamacpp:requests_deferred") == 0
    assert mtp_server.ctx.scheduler.active_jobs() == {}


def test_non_streaming_client_that_leaves_frees_its_slot_at_once(mtp_server):
    before = counter(mtp_server, "llamacpp:tokens_predicted_total")
    with httpx.Client(base_url=mtp_server.url, timeout=0.4) as impatient:
        try:
            impatient.post("/completion", json={"prompt": "Go on forever:", "n_predict": -1})
        except httpx.ReadTimeout:
            pass
    assert wait_until_idle(mtp_server) < 1.0
    time.sleep(0.05)
    predicted = counter(mtp_server, "llamacpp:tokens_predicted_total") - before
    assert predicted < 200  # the context (256) would have allowed ~250 tokens


def test_full_queue_answers_503_and_recovers(tiny_model):
    srv = LiveServer(server_config(n_slots=1, max_queue=1), tiny_model).start()

    async def scenario():
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
            async with client.stream(
                "POST", "/completion", json={"prompt": "Long story:", "n_predict": -1, "stream": True}
            ) as long_run:
                lines = long_run.aiter_lines()
                while not (await lines.__anext__()).startswith("data: "):
                    pass  # the slot is taken
                queued = asyncio.ensure_future(
                    client.post("/completion", json={"prompt": "Hi", "n_predict": 3})
                )
                while counter(srv, "llamacpp:requests_deferred") < 1:
                    await asyncio.sleep(0.01)
                refused = await client.post("/completion", json={"prompt": "Hi", "n_predict": 3})
            # leaving the stream frees the slot for the queued request
            return refused, await queued

    try:
        refused, queued = asyncio.run(scenario())
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert (
            refused.json()["error"]["type"] == "unavailable_error"
            and "busy" in refused.json()["error"]["message"]
        )
        assert queued.status_code == 200 and queued.json()["tokens_predicted"] == 3
    finally:
        srv.stop()
