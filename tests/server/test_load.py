"""Concurrency: many streaming clients on few slots, clients that vanish, a full queue."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx

from tests.server.held_engine import HeldEngine, wait_for
from tests.server.live_server import N_CTX, LiveServer, server_config

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


def wait_until_idle(server, timeout: float = 120.0) -> float:
    """Seconds until no slot is processing (the timeout bounds a failure; it assumes no speed)."""
    t0 = time.monotonic()
    while any(s["is_processing"] for s in server.http.get("/slots").json()):
        assert time.monotonic() - t0 < timeout, "a slot stayed busy"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_concurrent_streams_match_solo_runs_and_leavers_are_cancelled(tiny_model):
    """Leavers hang up after two token events; the engine is held there until the server has cancelled them,
    so each leaver gets at most one more step, whatever the machine's speed."""
    prompts = [f"Client {i} asks: where does the lazy dog sleep?" for i in range(7)]
    leavers = [f"Leaver {i} says hello and goes away" for i in range(3)]
    config = server_config(n_slots=2, mtp=True)
    srv = None

    def leaver_not_yet_cancelled(engine: HeldEngine) -> bool:
        jobs = {job.seq.id: job for job in srv.ctx.scheduler.active_jobs().values()}
        return any(
            seq.id in jobs and not jobs[seq.id].cancelled and engine.token_events.get(seq.id, 0) >= 2
            for seq in engine.sequences
            if seq.request.prompt_ids in leaver_ids
        )

    srv = LiveServer(
        config, tiny_model, factory=lambda: HeldEngine(tiny_model, config.engine, hold=leaver_not_yet_cancelled)
    )
    leaver_ids = [srv.info.tokenizer.encode(p, add_special=True, parse_special=True) for p in leavers]
    srv.start()
    try:
        before = counter(srv, "llamacpp:tokens_predicted_total")

        async def load():
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=srv.url, timeout=120, limits=limits) as client:
                jobs = [stream_completion(client, p, N_TOKENS) for p in prompts]
                jobs += [stream_completion(client, p, -1, leave_after=2) for p in leavers]
                jobs += [stream_chat(client, "Tell me about the quick brown fox.")]
                return await asyncio.gather(*jobs)

        results = asyncio.run(load())
        wait_until_idle(srv)
        engine = srv.ctx.scheduler._engine
        assert not engine.held_too_long
        assert all(r is None for r in results[7:10])
        left = [seq for seq in engine.sequences if seq.request.prompt_ids in leaver_ids]
        assert len(left) == 3
        max_per_step = config.engine.spec.n_max + 1
        for seq in left:  # cancelled by the server, at most one step after the second event
            assert seq.stop_reason == "cancelled"
            assert engine.token_events[seq.id] <= 3 and len(seq.generated) <= 3 * max_per_step
        for prompt, got in zip(prompts, results[:7]):
            alone = srv.http.post(
                "/completion",
                json={"prompt": prompt, "n_predict": N_TOKENS, "cache_prompt": False, "return_tokens": True},
            ).json()
            assert got["tokens"] == alone["tokens"] and got["content"] == alone["content"]
        chat_alone = srv.http.post(
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Tell me about the quick brown fox."}],
                "max_tokens": N_TOKENS,
            },
        ).json()
        assert results[10] == chat_alone["choices"][0]["message"]["content"]
        predicted = counter(srv, "llamacpp:tokens_predicted_total") - before
        assert predicted <= 2 * (8 * N_TOKENS) + sum(len(seq.generated) for seq in left)
        assert counter(srv, "llamacpp:requests_processing") == 0
        assert counter(srv, "llamacpp:requests_deferred") == 0
        assert srv.ctx.scheduler.active_jobs() == {}
    finally:
        srv.stop()


def test_non_streaming_client_that_leaves_stops_its_job_before_the_next_step(tiny_model):
    """The engine is held after three steps; the client hangs up; once the server has cancelled the job the
    engine may go on, and it finishes only the step it was held in: the job gets no step after that."""
    config = server_config(n_slots=1, mtp=True)
    allowed = {"steps": 3}
    srv = LiveServer(
        config,
        tiny_model,
        factory=lambda: HeldEngine(
            tiny_model, config.engine, hold=lambda engine: engine.n_steps >= allowed["steps"]
        ),
    ).start()
    try:
        engine = srv.ctx.scheduler._engine
        body = json.dumps({"prompt": "Go on forever:", "n_predict": -1}).encode()
        client = socket.create_connection(("127.0.0.1", srv.config.port))
        client.sendall(
            b"POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lambda: engine.n_steps == 3 and engine.waiting.is_set(), "three steps, then the hold")
        (job,) = srv.ctx.scheduler.active_jobs().values()
        seq = job.seq
        assert not job.cancelled and not seq.done
        client.close()
        wait_for(lambda: job.cancelled, "the server to cancel the job of the client that left")
        allowed["steps"] = 10**9
        wait_until_idle(srv)
        assert engine.n_steps == 4 and not engine.held_too_long
        assert seq.stop_reason == "cancelled" and seq.done
        # the context had room for many more steps: only the cancel stopped the job
        assert len(seq.request.prompt_ids) + len(seq.generated) + 4 * (config.engine.spec.n_max + 1) < N_CTX
        assert counter(srv, "llamacpp:tokens_predicted_total") == len(seq.generated)
    finally:
        srv.stop()


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
