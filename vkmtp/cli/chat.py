"""`vkmtp chat`: an interactive conversation in the terminal, streamed token by token.

Each turn renders the whole conversation with the model's chat template and submits it with cache_prompt, so
the engine reuses the previous turn's memory (the new prompt extends the old one) and only evaluates the new
text. Commands: /reset forgets the conversation, /exit (or end of input) leaves.
"""

from __future__ import annotations

import sys
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
) -> Sequence:
    """Generate the assistant's next message for `messages`, writing text to `out` as it arrives."""
    prompt = template.render(messages, add_generation_prompt=True, **(template_kwargs or {}))
    ids = tokenizer.encode(prompt, add_special=True, parse_special=True)
    request = Request(ids, params, max_tokens=max_tokens, stop_ids=tokenizer.eog_ids, cache_prompt=True)
    decoder = StreamDecoder(tokenizer)
    seq = None
    for event in engine.generate(request):
        seq = event.seq
        for token in event.new_ids:
            out.write(decoder.push(token))
        out.flush()
    out.write(decoder.flush())
    return seq


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
) -> int:
    """Read user lines until /exit or end of input; returns the number of assistant replies."""
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    n_replies = 0
    while True:
        try:
            line = read("> ")
        except EOFError:
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
        seq = reply(engine, tokenizer, template, messages, params, max_tokens, out, template_kwargs)
        content = tokenizer.decode(seq.generated, render_special=False)
        messages.append({"role": "assistant", "content": content})
        out.write("\n" + turn_stats(seq) + "\n")
        n_replies += 1
