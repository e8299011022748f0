"""`vkmtp serve -dev 0,0`: the server's engine split by layers over lavapipe opened twice answers as one device does.

Real uvicorn (tests/server/live_server.py), the engine settings from the `serve` command line (vkmtp.cli.main), the
server's own EngineFactory; two requests at once on two slots, so the speculative steps batch both sequences
across the stages."""

from __future__ import annotations

import shlex
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor

from tests.server.live_server import LiveServer, server_config
from vkmtp.cli.llama_flags import check_llama_flags
from vkmtp.cli.main import _engine_config, build_parser
from vkmtp.engine.factory import EngineFactory

PROMPTS = ["def add(a, b):", "The quick brown fox"]


def _engine(line: str, model: str):
    args = build_parser().parse_args(["serve", "-m", model, *shlex.split(line)])
    check_llama_flags(args)
    return _engine_config(args, model)


def _answers(server: LiveServer, parallel: bool) -> list[tuple[str, dict]]:
    def ask(prompt: str):
        r = server.http.post("/completion", json={"prompt": prompt, "n_predict": 12, "temperature": 0,
                                                   "cache_prompt": False})
        assert r.status_code == 200, r.text
        body = r.json()
        return body["content"], body["timings"]

    if not parallel:
        return [ask(p) for p in PROMPTS]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(ask, PROMPTS))


def _serve(model: str, line: str, parallel: bool) -> list[tuple[str, dict]]:
    engine = _engine(line, model)
    factory = EngineFactory(model, engine)
    srv = LiveServer(replace(server_config(n_slots=2), engine=engine), model, factory).start()
    try:
        return _answers(srv, parallel)
    finally:
        srv.stop()
        factory.close()


def test_serve_split_over_two_devices_answers_as_one_device(tiny_model):
    flags = "-c 256 -np 2 -ub 32 --spec-draft-n-max 3 --no-spec-adaptive"
    split = _engine(f"-dev 0,0 -ts 1,1 {flags}", tiny_model)
    assert split.split_devices == (0, 0) and split.tensor_split == (1.0, 1.0)
    want = _serve(tiny_model, flags, parallel=False)
    got = _serve(tiny_model, f"-dev 0,0 -ts 1,1 {flags}", parallel=True)
    assert [text for text, _ in got] == [text for text, _ in want]
    assert all(text for text, _ in got)
    # the aligned fixture's MTP head drafts tokens the split's verify accepts
    assert sum(t.get("draft_n_accepted", 0) for _, t in got) > 0
