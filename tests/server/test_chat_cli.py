"""`vkmtp chat`: the interactive loop streams replies and reuses the conversation's memory."""

from __future__ import annotations

import io
import re

from vkmtp.text.chat_template import ChatTemplate
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.reference import ReferenceEngine
from vkmtp.gguf import open_gguf
from vkmtp.cli.chat import chat_loop
from vkmtp.sampling import SamplingParams
from vkmtp.text.tokenizer import Tokenizer


def test_chat_loop_streams_and_reuses_the_previous_turn(tiny_model):
    gguf = open_gguf(tiny_model)
    tokenizer = Tokenizer.from_gguf(gguf)
    template = ChatTemplate.from_metadata(gguf.metadata, tokenizer)
    engine = ReferenceEngine(tiny_model, EngineConfig(n_ctx=256))
    lines = iter(["Hello there", "And then?", "/reset", "Hi again", "/exit", "never read"])
    out = io.StringIO()
    n = chat_loop(
        engine,
        tokenizer,
        template,
        SamplingParams(temperature=0.0),
        6,
        system="Be brief.",
        read=lambda prompt: next(lines),
        out=out,
    )
    assert n == 3
    stats = re.findall(
        r"\[(\d+) tokens, [\d.]+ tok/s, prompt (\d+) new \+ (\d+) cached, drafts accepted "
        r"(\d+)/(\d+), stop: (\w+)\]",
        out.getvalue(),
    )
    assert len(stats) == 3 and all(s[0] == "6" and s[5] == "limit" for s in stats)
    assert int(stats[1][2]) >= int(stats[0][1]) > 0  # turn 2 reuses at least turn 1's prompt
    assert "(conversation cleared)" in out.getvalue()
    engine.close()
