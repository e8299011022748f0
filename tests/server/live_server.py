"""Real uvicorn servers for the tests: create_app(...) in a background thread on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from typing import Callable

import httpx
import uvicorn

from vkmtp.server.app import create_app
from vkmtp.server.config import ServerConfig
from vkmtp.server.model_info import ModelInfo
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

N_CTX = 256
GREEDY = SamplingParams(temperature=0.0)


def wait_until_serving(port: int, proc=None, output: Callable[[], str] = lambda: "", timeout: float = 120) -> None:
    """Polls http://127.0.0.1:PORT/health until it answers 200. Fails with the server's `output()` if `proc` exits
    first or the timeout (a failure bound, never a speed assumption) passes."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc is None or proc.poll() is None, f"the server exited with {proc.returncode}:\n{output()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the server never answered /health with 200:\n{output()}"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """create_app(...) under a real uvicorn in a background thread."""

    def __init__(self, config: ServerConfig, model_path: str, factory=None):
        self.config = replace(config, port=free_port())
        self.info = ModelInfo.load(model_path, alias="tiny")
        self.app = create_app(
            self.config, self.info, factory or (lambda: ReferenceEngine(model_path, self.config.engine))
        )
        self.url = f"http://127.0.0.1:{self.config.port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)  # one client: its set-up costs ~0.2 s
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.config.port, log_level="warning", lifespan="on"
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def ctx(self):
        return self.app.state.ctx

    def start(self, wait_ready: bool = True) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get("/health").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the server never became ready")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self.http.close()


def server_config(n_slots: int = 1, mtp: bool = True, **changes) -> ServerConfig:
    engine = EngineConfig(n_ctx=N_CTX, n_slots=n_slots, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False))
    return ServerConfig(engine=engine, sampling=changes.pop("sampling", GREEDY), **changes)
