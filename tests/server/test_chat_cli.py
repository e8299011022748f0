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


def test_ctrl_c_stops_the_reply_and_keeps_the_program_at_the_prompt(tmp_path):
    """`vkmtp chat` in a real terminal (tmux): Ctrl-C mid-reply stops it, the next prompt appears, a second turn
    works, and Ctrl-C at the prompt leaves with exit code 0."""
    import shutil
    import subprocess
    import sys
    import time

    assert shutil.which("tmux"), "tmux is missing: run tools/setup.sh"
    session = f"vkmtp-chat-{tmp_path.name}"
    done = tmp_path / "exit_code"
    command = (f"{sys.executable} -m vkmtp.cli chat -c 16384 --ignore-eos --temp 0 --no-think; "
               f"echo $? > {done}")
    tmux = ["tmux", "-L", session]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", command], check=True)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-S", "-200", "-t", session],
                              capture_output=True, text=True).stdout

    def wait_for(predicate, what: str) -> None:
        deadline = time.monotonic() + 180  # a failure bound, not a speed assumption
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{screen()}"
            time.sleep(0.1)

    try:
        wait_for(lambda: screen().rstrip().endswith(">"), "the first prompt")
        subprocess.run([*tmux, "send-keys", "-t", session, "Tell me a very long story", "Enter"], check=True)
        # the reply runs until the context (16384 tokens) is full: long on any machine
        wait_for(lambda: len(screen().split("Tell me a very long story", 1)[-1].strip()) > 40, "reply text")
        subprocess.run([*tmux, "send-keys", "-t", session, "C-c"], check=True)
        wait_for(lambda: "[stopped]" in screen() and "stop: cancelled]" in screen(), "the stopped reply")
        wait_for(lambda: screen().rstrip().endswith(">"), "the next prompt")
        assert not done.exists()
        subprocess.run([*tmux, "send-keys", "-t", session, "C-c"], check=True)
        wait_for(done.exists, "the program to leave")
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_a_long_prompt_shows_its_progress(tiny_model, capsys):
    gguf = open_gguf(tiny_model)
    tokenizer = Tokenizer.from_gguf(gguf)
    template = ChatTemplate.from_metadata(gguf.metadata, tokenizer)
    engine = ReferenceEngine(tiny_model, EngineConfig(n_ctx=256, ubatch=8))
    lines = iter(["the quick brown fox jumps over the lazy dog " * 4, "/exit"])
    out = io.StringIO()
    assert chat_loop(engine, tokenizer, template, SamplingParams(temperature=0.0), 2, read=lambda p: next(lines),
                     out=out) == 1
    engine.close()
    err = capsys.readouterr().err
    assert "prompt:" in err and "tok" in err  # tqdm's bar, on stderr; the reply itself went to `out`
    assert "prompt" not in out.getvalue().split("[", 1)[0]
