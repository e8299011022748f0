"""A tiny MTP model and real uvicorn servers on free 127.0.0.1 ports, shared by the server tests."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import replace

import httpx
import pytest
import tokenizers
import uvicorn

from server.app import create_app
from server.config import ServerConfig
from server.model_info import ModelInfo
from vkmtp.convert.fixtures import FIXTURE_DIR, variant_state
from vkmtp.convert.vocab import CHATML_TEMPLATE
from vkmtp.convert.writer import write_gguf
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.tokenizer_export import metadata_from_tokenizers

N_CTX = 256
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The committed tiny dense Qwen3.5 with an MTP head aligned to the trunk (drafts are often accepted),
    a 512-token byte-level BPE and a ChatML template, written as an F32 GGUF."""
    hf_config, state = variant_state(FIXTURE_DIR, "aligned")
    with open(os.path.join(FIXTURE_DIR, "tokenizer.json"), encoding="utf-8") as fh:
        hf_tokenizer = tokenizers.Tokenizer.from_str(fh.read())
    meta = metadata_from_tokenizers(hf_tokenizer, eos_token="<|im_end|>", chat_template=CHATML_TEMPLATE)
    path = str(tmp_path_factory.mktemp("server_model") / "tiny-aligned-f32.gguf")
    write_gguf(state, hf_config, path, file_type="f32", tokenizer_meta=meta, name="tiny-server")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """create_app(...) under a real uvicorn in a background thread."""

    def __init__(self, config: ServerConfig, model_path: str, factory=None):
        self.config = replace(config, port=free_port())
        self.info = ModelInfo.load(model_path, alias="tiny")
        self.app = create_app(self.config, self.info,
                              factory or (lambda: ReferenceEngine(model_path, self.config.engine)))
        self.url = f"http://127.0.0.1:{self.config.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.config.port,
                                                     log_level="warning", lifespan="on"))
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
        while httpx.get(self.url + "/health").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the server never became ready")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)


def server_config(n_slots: int = 1, mtp: bool = True, **changes) -> ServerConfig:
    engine = EngineConfig(n_ctx=N_CTX, n_slots=n_slots, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=3))
    return ServerConfig(engine=engine, sampling=changes.pop("sampling", GREEDY), **changes)


@pytest.fixture(scope="session")
def mtp_server(tiny_model):
    """Two slots, MTP on, greedy by default."""
    srv = LiveServer(server_config(n_slots=2, mtp=True), tiny_model).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def plain_server(tiny_model):
    """One slot, MTP off (--no-mtp)."""
    srv = LiveServer(server_config(n_slots=1, mtp=False), tiny_model).start()
    yield srv
    srv.stop()
