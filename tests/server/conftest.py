"""A tiny MTP model and real uvicorn servers on free 127.0.0.1 ports, shared by the server tests."""

from __future__ import annotations

import os

import pytest
import tokenizers

from tests.server.live_server import LiveServer, server_config
from tests.fixtures import FIXTURE_DIR, variant_state
from vkmtp.text.chat_template import CHATML_TEMPLATE
from vkmtp.convert.writer import write_gguf
from vkmtp.text.gguf_metadata import metadata_from_tokenizers


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


@pytest.fixture(scope="session")
def mtp_server(tiny_model):
    """Two slots, MTP on, greedy by default."""
    srv = LiveServer(server_config(n_slots=2, mtp=True), tiny_model).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def plain_server(tiny_model):
    """One slot, MTP off (--no-mtp), 256 KiB body limit."""
    srv = LiveServer(server_config(n_slots=1, mtp=False, max_body_bytes=256 * 1024), tiny_model).start()
    yield srv
    srv.stop()
