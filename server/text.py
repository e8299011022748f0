"""Text in and out of the engine: prompts to token ids, and generated ids to text cut at stop strings.

`TextStream` turns ids into text deltas that never end inside a UTF-8 character and never show a piece of a
stop string: text that could be the start of one is held back until it is clear (llama-server does the same
with its partial-stop search), and generation ends at the first full match, which is not part of the output.
"""

from __future__ import annotations

from typing import Any

from vkmtp.text.chat_template import ChatTemplate, normalize_messages
from vkmtp.text.tokenizer import StreamDecoder, Tokenizer

_RESERVED_TEMPLATE_ARGS = ("messages", "add_generation_prompt", "tools")


MAX_PROMPTS = 64  # prompts in one /completion request


def is_prefill(messages: Any) -> bool:
    """A final assistant message (without tool calls) is a prefill: the reply continues it."""
    return (isinstance(messages, list) and len(messages) > 1 and isinstance(messages[-1], dict)
            and messages[-1].get("role") == "assistant" and not messages[-1].get("tool_calls"))


def render_chat(template: ChatTemplate, messages: Any, tools: Any, template_kwargs: dict[str, Any]) -> str:
    """The prompt text of a chat request (generation prompt added; a final assistant message is continued,
    not closed, as llama-server does); ValueError names what is wrong."""
    for key in _RESERVED_TEMPLATE_ARGS:
        if key in template_kwargs:
            raise ValueError(f"chat_template_kwargs.{key} cannot be set (it comes from the request itself)")
    if is_prefill(messages):
        prefill = normalize_messages(messages)[-1]["content"]
        prompt = template.render(messages[:-1], add_generation_prompt=True, tools=tools, **template_kwargs)
        return prompt + prefill
    return template.render(messages, add_generation_prompt=True, tools=tools, **template_kwargs)


def completion_prompts(prompt: Any, tokenizer: Tokenizer) -> list[list[int]]:
    """/completion's `prompt` as one or more prompts, as llama-server reads it: a string, a list of ids, or a
    list mixing strings and ids is one prompt; a list of strings or of id lists (or mixed lists) is one prompt
    each. Raises ValueError naming the problem."""
    if isinstance(prompt, list) and len(prompt) > 1 and not any(
        isinstance(p, int) and not isinstance(p, bool) for p in prompt
    ):
        if len(prompt) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request, got {len(prompt)}")
        result = []
        for i, part in enumerate(prompt):
            try:
                result.append(prompt_ids(part, tokenizer, allow_mixed=True))
            except ValueError as exc:
                raise ValueError(f"[{i}]: {exc}") from None
        return result
    return [prompt_ids(prompt, tokenizer, allow_mixed=True)]


def prompt_ids(prompt: Any, tokenizer: Tokenizer, *, allow_mixed: bool) -> list[int]:
    """A request's `prompt` as token ids.

    Accepted: a string; a list of token ids; a one-element list holding either (OpenAI's batch form); and,
    with allow_mixed (llama-server's /completion), a list mixing strings and ids. Strings are tokenized as
    llama-server does (add_special=True, parse_special=True). Raises ValueError naming the problem.
    """
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_special=True, parse_special=True)
    if not isinstance(prompt, list) or not prompt:
        raise ValueError("prompt must be a string or a non-empty list of token ids")
    ids: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise ValueError(
                f"prompt[{i}] must be a token id (integer) or a string, got {type(part).__name__}"
            )
        if isinstance(part, str):
            if not allow_mixed:
                raise ValueError("only one prompt per request is supported (got a list of strings)")
            ids.extend(tokenizer.encode(part, add_special=not ids, parse_special=True))
        elif not 0 <= part < tokenizer.n_vocab:
            raise ValueError(f"prompt[{i}] = {part} is not a token id in [0, {tokenizer.n_vocab})")
        else:
            ids.append(part)
    return ids


class TextStream:
    """Generated ids -> text deltas, ended by the first stop string (which is not emitted)."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str]):
        self._decoder = StreamDecoder(tokenizer)
        self.stops = [s for s in stops if s]
        self.text = ""  # everything decoded so far, cut at a stop string once one matched
        self.n_sent = 0  # characters of `text` handed out by `take`
        self.n_tokens = 0  # ids pushed until (and including) the one that completed a stop string
        self.stop_word: str | None = None

    def push(self, token_id: int) -> bool:
        """Add one generated id; True when a stop string is now complete (push nothing after that)."""
        self.n_tokens += 1
        self.text += self._decoder.push(token_id)
        return self._cut_at_stop()

    def finish(self) -> None:
        """End of generation: emit bytes held back by the UTF-8 decoder (they may complete a stop string)."""
        if self.stop_word is None:
            self.text += self._decoder.flush()
            self._cut_at_stop()

    def _cut_at_stop(self) -> bool:
        hits = [(pos, word) for word in self.stops if (pos := self.text.find(word, self.n_sent)) >= 0]
        if not hits:
            return False
        pos, word = min(hits)
        self.text = self.text[:pos]
        self.stop_word = word
        return True

    def take(self, final: bool = False) -> str:
        """Text that is safe to send now: all of it when final, else all but a possible stop-string start."""
        end = len(self.text)
        if not final and self.stop_word is None:
            end -= self._held_back()
        delta = self.text[self.n_sent : end]
        self.n_sent = max(self.n_sent, end)
        return delta

    def _held_back(self) -> int:
        """Length of the longest tail of the unsent text that is a proper prefix of a stop string."""
        tail = self.text[self.n_sent :]
        best = 0
        for word in self.stops:
            for n in range(min(len(word) - 1, len(tail)), best, -1):
                if tail.endswith(word[:n]):
                    best = n
                    break
        return best
