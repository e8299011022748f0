"""`vkmtp serve` says what it does: a start block, the loaded engine, one timing line per request; json logs;
a failed load is one message and exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.server.live_server import free_port, wait_until_serving


def _serve(tmp_path, *flags: str) -> tuple[subprocess.Popen, int, object]:
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "vkmtp.cli", "serve", "--port", str(port), *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, port, log


def _served_log(tmp_path, *flags: str) -> str:
    proc, port, log = _serve(tmp_path, *flags)
    try:
        wait_until_serving(port, proc, (tmp_path / "serve.log").read_text)
        r = httpx.post(f"http://127.0.0.1:{port}/completion",
                       json={"prompt": "def f(x):", "n_predict": 6, "ignore_eos": True}, timeout=120)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    return (tmp_path / "serve.log").read_text()


def test_start_block_engine_and_one_line_per_request(tmp_path):
    out = _served_log(tmp_path, "-np", "2", "-c", "1024")
    for expected in ("model: ", "qwen35", "quant mix: Q8_0", "context 1024 per slot, 2 slot(s)", "KV cache f16",
                     "MTP: on, draft n-max", "engine loaded in", "memory plan:",
                     "host-RAM prompt cache: up to 8192 MiB (--cache-ram)", "KV cache (f16, 2 x 1024 tokens)"):
        assert expected in out, (expected, out)
    lines = [line for line in out.splitlines() if "task 0 slot" in line]
    assert len(lines) == 1, out
    assert "prompt " in lines[0] and "generated 6 in" in lines[0] and "tok/s" in lines[0] and "stop: limit" in lines[0]
    assert "drafts " in lines[0] and "accepted" in lines[0]


def test_json_log_format(tmp_path):
    out = _served_log(tmp_path, "--log-format", "json", "--backend", "reference")
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    messages = [r["message"] for r in records]
    assert any(m.startswith("engine loaded in") and "NumPy reference" in m for m in messages)
    assert sum("task 0 slot 0" in m for m in messages) == 1


def test_a_failed_load_is_one_message_and_exit_code_1(tmp_path):
    proc, port, log = _serve(tmp_path, "--device", "Vulkan9")
    try:
        assert proc.wait(120) == 1
    finally:
        log.close()
    out = (tmp_path / "serve.log").read_text()
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("vkmtp: error:") and "Traceback" not in out, out
    assert "device 9" in errors[0]


def test_start_line_names_a_layer_splits_devices():
    from server.logs import _devices
    from vkmtp.engine.api import EngineConfig
    assert _devices(EngineConfig(split_devices=(0, 0), tensor_split=(3.0, 1.0))) == "layer split over 0,0 (-ts 3,1)"
    assert _devices(EngineConfig(split_devices=(0, 1))) == "layer split over 0,1 (by free memory)"
    assert _devices(EngineConfig(device=1)) == "1" and _devices(EngineConfig()) == "auto"
