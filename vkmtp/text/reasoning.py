"""Thinking text: split a reply's leading `<think>…</think>` into reasoning and content, streaming-safe.

As llama-server's `reasoning_format` `deepseek` (and `auto`, its default) does for Qwen3/3.5: the reasoning is
the text between the opening tag (or the start of the reply when the prompt already opened it, as Qwen's
templates do with `enable_thinking`) and `</think>`; only a block at the start of the reply counts. Both parts
lose their surrounding whitespace. Text that could be the start of a tag is held back until it is clear, so a
tag split across tokens never leaks into either part, and the pieces streamed add up to the whole split.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

REASONING, CONTENT = "reasoning", "content"

REASONING_FORMATS = ("none", "deepseek", "auto")


def partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of one of `tags` (0: none)."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


def _trailing_space(text: str) -> int:
    return len(text) - len(text.rstrip())


def thinking_open_at_end(prompt: str) -> bool:
    """Whether a rendered prompt leaves a `<think>` block open (the reply starts inside the reasoning)."""
    return prompt.rfind(OPEN_TAG) > prompt.rfind(CLOSE_TAG)


class ReasoningSplitter:
    """Text deltas in, `(kind, text)` pieces out, kind REASONING or CONTENT."""

    def __init__(self, start_open: bool = False):
        self._state = "reasoning" if start_open else "start"
        self._buf = ""
        self._lstrip = True  # drop leading whitespace of the part now being read

    def push(self, text: str) -> list[tuple[str, str]]:
        self._buf += text
        out: list[tuple[str, str]] = []
        while True:
            if self._state == "start":
                head = self._buf.lstrip()
                if head.startswith(OPEN_TAG):
                    self._buf, self._state, self._lstrip = head[len(OPEN_TAG):], "reasoning", True
                    continue
                if OPEN_TAG.startswith(head):  # the tag may still be coming
                    return out
                self._state, self._lstrip = "content", False
                continue
            if self._state == "reasoning":
                if self._lstrip:
                    self._buf = self._buf.lstrip()
                    if not self._buf:
                        return out
                    self._lstrip = False
                end = self._buf.find(CLOSE_TAG)
                if end >= 0:
                    self._emit(out, REASONING, self._buf[:end].rstrip())
                    self._buf, self._state, self._lstrip = self._buf[end + len(CLOSE_TAG):], "content", True
                    continue
                keep = partial_tag_length(self._buf, (CLOSE_TAG,))
                ready = self._buf[: len(self._buf) - keep]
                keep += _trailing_space(ready)  # trailing whitespace is dropped if the block ends here
                self._emit(out, REASONING, self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep:]
                return out
            # content
            if self._lstrip:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    return out
                self._lstrip = False
            self._emit(out, CONTENT, self._buf)
            self._buf = ""
            return out

    def finish(self) -> list[tuple[str, str]]:
        """The end of the reply: what was held back (an unclosed block is all reasoning)."""
        out: list[tuple[str, str]] = []
        rest, self._buf = self._buf, ""
        if self._state == "reasoning":
            self._emit(out, REASONING, rest.rstrip())
        elif self._state == "start":
            self._emit(out, CONTENT, rest)
        else:
            self._emit(out, CONTENT, rest.lstrip() if self._lstrip else rest)
        return out

    @staticmethod
    def _emit(out: list[tuple[str, str]], kind: str, text: str) -> None:
        if text:
            out.append((kind, text))


class PassThrough:
    """reasoning_format none: everything is content."""

    def push(self, text: str) -> list[tuple[str, str]]:
        return [(CONTENT, text)] if text else []

    def finish(self) -> list[tuple[str, str]]:
        return []
