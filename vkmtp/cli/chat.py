"""`vkmtp chat`: an interactive conversation in the terminal, streamed token by token.

Each turn renders the whole conversation with the model's chat template and submits it with cache_prompt, so
the engine reuses the previous turn's memory (the new prompt extends the old one) and only evaluates the new
text. Commands: /reset forgets the conversation, /exit (or end of input) leaves. Ctrl-C during a reply stops
the reply (what was said so far stays in the conversation); Ctrl-C at the prompt leaves.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, TextIO

from vkmtp.text.chat_template import ChatTemplate
from vkmtp.engine.api import Engine, Request, Sequence
from vkmtp.sampling import SamplingParams
from vkmtp.text.tokenizer import StreamDecoder, Tokenizer


def turn_stats(seq: Sequence) -> str:
    """One line of what the turn cost: tokens, decode speed, draft acceptance."""
    t = seq.timings
    line = (
        f"[{t.predicted_n} tokens, {t.to_json()['predicted_per_second']:.1f} tok/s, "
        f"prompt {t.prompt_n} new + {t.cache_n} cached"
    )
    if t.draft_n:
        line += f", drafts accepted {t.draft_n_accepted}/{t.draft_n}"
    return line + f", stop: {seq.stop_reason}]"


def reply(
    engine: Engine,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    messages: list[dict],
    params: SamplingParams,
    max_tokens: int,
    out: TextIO,
    template_kwargs: dict | None = None,
    ignore_eos: bool = False,
) -> Sequence:
    """Generate the assistant's next message for `messages`, writing text to `out` as it arrives."""
    prompt = template.render(messages, add_generation_prompt=True, **(template_kwargs or {}))
    ids = tokenizer.encode(prompt, add_special=True, parse_special=True)
    request = Request(ids, params, max_tokens=max_tokens, stop_ids=frozenset() if ignore_eos else tokenizer.eog_ids,
                      cache_prompt=True)
    decoder = StreamDecoder(tokenizer)
    seq = engine.submit(request)
    progress = _prompt_progress(seq, engine.config.ubatch)
    with _Interrupt() as interrupt:
        while not seq.done:
            if interrupt.requested:  # between two steps, so the engine's state stays whole
                engine.cancel(seq)
                break
            for event in engine.step():
                if event.seq is seq:
                    for token in event.new_ids:
                        out.write(decoder.push(token))
                    out.flush()
            if progress is not None:
                if seq.generated or seq.done:
                    progress.close()
                    progress = None
                else:  # each step evaluates one prompt chunk of at most ubatch tokens
                    progress.update(min(engine.config.ubatch, progress.total - progress.n))
    if progress is not None:
        progress.close()
    out.write(decoder.flush())
    if seq.stop_reason == "cancelled":
        out.write(" [stopped]")
    return seq


def _prompt_progress(seq: Sequence, ubatch: int):
    """A progress bar (stderr) for a prompt that takes more than one chunk; None for a short one."""
    if seq.timings.prompt_n <= ubatch:
        return None
    from tqdm import tqdm

    return tqdm(total=seq.timings.prompt_n, unit="tok", desc="prompt", leave=False, file=sys.stderr)


class _Interrupt:
    """While a reply streams, Ctrl-C (SIGINT) only asks the reply to stop; outside it, Ctrl-C is as usual."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def chat_loop(
    engine: Engine,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    params: SamplingParams,
    max_tokens: int,
    system: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
    template_kwargs: dict | None = None,
    ignore_eos: bool = False,
) -> int:
    """Read user lines until /exit or end of input; returns the number of assistant replies."""
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    n_replies = 0
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):  # end of input, or Ctrl-C at the prompt: leave
            out.write("\n")
            return n_replies
        text = line.strip()
        if text in ("/exit", "/quit"):
            return n_replies
        if text == "/reset":
            messages = list(base)
            out.write("(conversation cleared)\n")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": line})
        seq = reply(engine, tokenizer, template, messages, params, max_tokens, out, template_kwargs, ignore_eos)
        content = tokenizer.decode(seq.generated, render_special=False)
        messages.append({"role": "assistant", "content": content})
        out.write("\n" + turn_stats(seq) + "\n")
        n_replies += 1
