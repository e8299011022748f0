"""A chat reply split into reasoning, content and tool calls: `<think>` first, then `<tool_call>` blocks in the
content. Streaming and whole replies go through the same parser, so both give the same parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from vkmtp.text.reasoning import CONTENT, REASONING, PassThrough, ReasoningSplitter
from vkmtp.text.tool_calls import CallArguments, CallStart, TextPiece, ToolCall, ToolCallParser


@dataclass(frozen=True)
class ReplyFormat:
    """How to read a reply: split the reasoning (and whether the prompt opened it), parse tool calls (syntax
    'xml' | 'json', or None for no tool parsing) against these tools."""

    reasoning: bool = True
    thinking_open: bool = False
    tool_syntax: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    parallel_tool_calls: bool = True


@dataclass
class Reply:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ReplyParser:
    """Text deltas in; ("reasoning", text), ("content", text), CallStart and CallArguments pieces out."""

    def __init__(self, fmt: ReplyFormat):
        self.splitter = ReasoningSplitter(fmt.thinking_open) if fmt.reasoning else PassThrough()
        self.tools = (ToolCallParser(fmt.tool_syntax, list(fmt.tools), fmt.parallel_tool_calls)
                      if fmt.tool_syntax else None)

    @property
    def calls(self) -> list[ToolCall]:
        return self.tools.calls if self.tools is not None else []

    def push(self, text: str) -> list[Any]:
        return self._route(self.splitter.push(text), final=False)

    def finish(self) -> list[Any]:
        return self._route(self.splitter.finish(), final=True)

    def _route(self, pieces: list[tuple[str, str]], final: bool) -> list[Any]:
        out: list[Any] = []
        for kind, text in pieces:
            if kind == REASONING:
                out.append((REASONING, text))
            elif self.tools is None:
                out.append((CONTENT, text))
            else:
                out.extend(self._content(self.tools.push(text)))
        if final and self.tools is not None:
            out.extend(self._content(self.tools.finish()))
        return out

    @staticmethod
    def _content(pieces: list[Any]) -> list[Any]:
        return [(CONTENT, p.text) if isinstance(p, TextPiece) else p for p in pieces]


def parse_reply(text: str, fmt: ReplyFormat) -> Reply:
    """The whole reply at once."""
    parser = ReplyParser(fmt)
    reply = Reply()
    for piece in parser.push(text) + parser.finish():
        if isinstance(piece, tuple):
            kind, part = piece
            if kind == REASONING:
                reply.reasoning += part
            else:
                reply.content += part
    reply.tool_calls = list(parser.calls)
    return reply


__all__ = ["CallArguments", "CallStart", "Reply", "ReplyFormat", "ReplyParser", "parse_reply"]
