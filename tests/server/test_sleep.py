"""--sleep-idle-seconds: the engine is closed when idle and rebuilt on demand, without leaking memory.

Runs `vkmtp serve` as a real subprocess, so its resident memory can be read from /proc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.server.live_server import free_port
from vkmtp.engine.probes import process_rss_bytes

CYCLES = 50
MiB = 2**20


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ~75 s with the Vulkan engine on lavapipe (each wake uploads the weights; pipelines compile at the first load only)
@pytest.mark.parametrize("backend", ["reference", pytest.param("vulkan", marks=pytest.mark.slow)])
def test_fifty_sleep_wake_cycles_keep_memory_flat(tiny_model, tmp_path, backend):
    """`vkmtp serve --sleep-idle-seconds`: 50 request + sleep cycles. Asleep the engine holds nothing, monitoring
    does not wake it, every wake gives the same tokens, and the server's RSS asleep after cycle 50 is within
    1 MiB of after cycle 5 (Vulkan: the kept device's compiled pipelines are reused, vkmtp/engine/factory.py)."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vkmtp.cli.main",
            "serve",
            "-m",
            tiny_model,
            "--backend",
            backend,
            "--port",
            str(port),
            "-c",
            "128",
            "--sleep-idle-seconds",
            "0.1",
            "--temp",
            "0",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return http.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, "the server")
        body = {"prompt": "The quick brown fox", "n_predict": 4, "cache_prompt": False, "return_tokens": True}
        first = http.post("/completion", json=body).json()["tokens"]
        rss, peak_bytes = [], []
        for cycle in range(CYCLES):
            wait_for(lambda: http.get("/props").json()["is_sleeping"], what="sleep")
            assert metric(http, "vkmtp:engine_allocated_bytes") == 0
            # measured asleep: the scheduler has closed the engine and released the freed heap by now
            rss.append(process_rss_bytes(proc.pid))
            if cycle < 3:  # monitoring does not wake the engine
                for path in ("/health", "/props", "/v1/models", "/models", "/metrics", "/slots"):
                    assert http.get(path).status_code == 200
                assert http.post("/tokenize", json={"content": "abc"}).status_code == 200
                time.sleep(0.15)
                assert http.get("/props").json()["is_sleeping"] is True
            r = http.post("/completion", json=body)
            assert r.status_code == 200 and r.json()["tokens"] == first
            peak_bytes.append(metric(http, "vkmtp:engine_peak_bytes"))
        print(f"RSS asleep at cycle 5 / {CYCLES}: {rss[4] / MiB:.2f} / {rss[-1] / MiB:.2f} MiB")
        assert abs(rss[-1] - rss[4]) < MiB, [round(x / MiB, 2) for x in rss]
        # each rebuilt engine held the same at its peak (a gauge kept while sleeping, so reading it does not
        # race the engine falling asleep again)
        assert peak_bytes[0] > 0 and set(peak_bytes) == {peak_bytes[0]}, peak_bytes
    finally:
        http.close()
        proc.terminate()
        proc.wait(20)
        log.close()


ENGINE_CYCLES = 50


def _heap_usage(device) -> int | None:
    """The device's own count of its heaps' usage (VK_EXT_memory_budget), None where the driver has no budget."""
    import kp

    if not device.info.memory_budget:
        return None
    return sum(h["usage"] for h in kp.device_infos(device.manager)[device.info.index]["memory_heaps"])


@pytest.mark.slow   # ~20 s on lavapipe: 50 engine builds (weights uploaded, graphs recorded; pipelines compiled once)
def test_vulkan_engine_sleep_wake_cycles_keep_memory_flat(tiny_model):
    """The server's sleep and wake on the Vulkan engine (lavapipe), driven directly: the server's EngineFactory
    builds the engine, a request runs, the engine is closed and the process's free heap released (what
    Scheduler._sleep does), 50 times. Asleep, the kept device holds no buffer; after cycle 50 the RSS, the C
    heap's live bytes, Python objects and (where the driver reports a memory budget) the device's heap usage
    are within 1 MiB (100 objects) of after cycle 5, and no pipeline was compiled after the first wake."""
    import gc

    from vkmtp.engine.api import EngineConfig, Request
    from vkmtp.engine.factory import EngineFactory
    from vkmtp.engine.probes import heap_in_use_bytes, release_free_heap
    from vkmtp.sampling import SamplingParams
    from vkmtp.spec import SpecConfig

    if heap_in_use_bytes() is None:
        pytest.skip("the C allocator does not report its live bytes (glibc >= 2.33 does)")
    factory = EngineFactory(tiny_model, EngineConfig(n_ctx=128, n_slots=1, spec=SpecConfig(enabled=True)))
    first, live, objects, rss, usage, compiled = None, [], [], [], [], []
    try:
        for _ in range(ENGINE_CYCLES):
            engine = factory()
            tokens = [t for ev in engine.generate(Request([5, 17, 99, 3, 250], SamplingParams.greedy_params(),
                                                          max_tokens=4)) for t in ev.new_ids]
            first = first or tokens
            assert tokens == first and engine.device.allocated_bytes > 0
            engine.close()
            del engine
            gc.collect()
            release_free_heap()
            device = factory.device
            assert device.allocated_bytes == 0 and device.live_buffers() == [] and device.n_bindings == 0
            compiled.append(device.n_pipelines)
            live.append(heap_in_use_bytes())
            objects.append(len(gc.get_objects()))
            rss.append(process_rss_bytes())
            usage.append(_heap_usage(device))
    finally:
        factory.close()
    print(f"after cycle 5 / {ENGINE_CYCLES}: RSS {rss[4] / MiB:.2f} / {rss[-1] / MiB:.2f} MiB, C heap live "
          f"{live[4] / MiB:.2f} / {live[-1] / MiB:.2f} MiB, Python objects {objects[4]} / {objects[-1]}, "
          f"pipelines {compiled[0]} / {compiled[-1]}, device heap usage {usage[4]} / {usage[-1]}")
    assert compiled[0] > 0 and set(compiled) == {compiled[0]}, compiled
    assert abs(rss[-1] - rss[4]) < MiB, [round(x / MiB, 2) for x in rss]
    assert abs(live[-1] - live[4]) < MiB, [round(x / MiB, 2) for x in live]
    assert abs(objects[-1] - objects[4]) < 100, objects
    if usage[0] is not None:
        assert abs(usage[-1] - usage[4]) < MiB, usage
