"""Tool calls in a reply: Qwen's `<tool_call>` blocks into OpenAI `tool_calls`, streaming-safe.

Two syntaxes, chosen from the model's chat template (`tool_call_syntax`):
- XML (Qwen3.5/3.6, Qwen3-Coder): `<tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n
  </function>\\n</tool_call>`; each VALUE is converted to the JSON type the tool's schema gives the parameter
  (a string parameter stays the text as written; others are read as JSON, and kept as text if they are not);
- JSON (Qwen3, Hermes): `<tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>`.

`ToolCallParser` reads the content text as it streams: text outside the blocks is content (a possible start of
`<tool_call>` is held back until it is clear, whitespace around the calls is dropped); a block becomes a call
once it is closed, and an XML call announces its name as soon as `<function=NAME>` is complete. A block that
does not parse, or that the reply ends inside (max_tokens), stays in the content as the model wrote it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from vkmtp.text.reasoning import partial_tag_length

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
XML, JSON = "xml", "json"

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)</function>", re.DOTALL)
_FUNCTION_NAME = re.compile(r"^\s*<function=([^>\n]+)>")
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)


def tool_call_syntax(template_source: str) -> str:
    """XML when the template writes calls as `<function=NAME>` (Qwen3.5/3.6), else Qwen3's JSON form."""
    return XML if "<function=" in template_source else JSON


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object as text, as OpenAI sends it
    id: str = field(default_factory=new_call_id)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parameter_types(tools: list[Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """function name -> {parameter: its JSON schema} from OpenAI tool definitions."""
    types: dict[str, dict[str, Any]] = {}
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        types[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return types


def _schema_types(schema: Any) -> set[str]:
    if not isinstance(schema, Mapping):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    found: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            found |= _schema_types(option)
    if "enum" in schema and not found:
        found = {"string"} if all(isinstance(v, str) for v in schema["enum"]) else set()
    return found


def convert_value(raw: str, schema: Any) -> Any:
    """An XML parameter's text as the JSON value its schema asks for."""
    kinds = _schema_types(schema)
    if kinds == {"string"}:
        return raw
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return raw
    if kinds and "string" in kinds and isinstance(value, (str, int, float)) and not (
        ("integer" in kinds and isinstance(value, int)) or ("number" in kinds and isinstance(value, (int, float)))
        or ("boolean" in kinds and isinstance(value, bool))
    ):
        return raw
    return value


def _strip_one_newline(text: str) -> str:
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    return text


def parse_xml_call(body: str, types: Mapping[str, Mapping[str, Any]]) -> ToolCall | None:
    match = _FUNCTION.search(body)
    if match is None or body[: match.start()].strip() or body[match.end():].strip():
        return None
    name = match.group(1).strip()
    schemas = types.get(name, {})
    arguments = {key.strip(): convert_value(_strip_one_newline(value), schemas.get(key.strip()))
                 for key, value in _PARAMETER.findall(match.group(2))}
    return ToolCall(name, json.dumps(arguments, ensure_ascii=False))


def parse_json_call(body: str) -> ToolCall | None:
    try:
        call = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(call["name"], json.dumps(arguments, ensure_ascii=False))


# pieces a ToolCallParser hands out
@dataclass
class TextPiece:
    text: str


@dataclass
class CallStart:
    """A call's index, id and name, known before its arguments."""

    index: int
    id: str
    name: str


@dataclass
class CallArguments:
    index: int
    arguments: str


class ToolCallParser:
    """Content text in; TextPiece, CallStart and CallArguments out (see the module docstring)."""

    def __init__(self, syntax: str, tools: list[Mapping[str, Any]] | None, parallel: bool = True):
        self.syntax = syntax
        self.types = parameter_types(tools)
        self.parallel = parallel
        self.calls: list[ToolCall] = []
        self._buf = ""
        self._in_call = False
        self._announced: CallStart | None = None  # the open XML call's start, once sent
        self._space = ""  # whitespace held back: dropped if a call follows, sent before more text
        self._after_call = False
        self._pre_space = ""  # the whitespace dropped before the open call (back if it is no call)

    def push(self, text: str) -> list[Any]:
        self._buf += text
        out: list[Any] = []
        while True:
            if self._in_call:
                end = self._buf.find(CALL_CLOSE)
                if end < 0:
                    self._announce(out)
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(CALL_CLOSE):]
                self._in_call = False
                self._close_call(body, out)
                continue
            start = self._buf.find(CALL_OPEN)
            if start >= 0:
                self._text(self._buf[:start], out)
                self._pre_space, self._space = self._space, ""  # whitespace before a call is not content
                self._buf, self._in_call = self._buf[start + len(CALL_OPEN):], True
                continue
            keep = partial_tag_length(self._buf, (CALL_OPEN,))
            self._text(self._buf[: len(self._buf) - keep], out)
            self._buf = self._buf[len(self._buf) - keep:]
            return out

    def finish(self) -> list[Any]:
        """The end of the reply: an unclosed block goes back to the content as written."""
        out: list[Any] = []
        if self._in_call:
            raw, self._buf, self._in_call = CALL_OPEN + self._buf, "", False
            self._space = self._pre_space
            self._text(raw, out)
        else:
            rest, self._buf = self._buf, ""
            self._text(rest, out)
        if not self.calls and self._space:
            out.append(TextPiece(self._space))
        self._space = ""
        return out

    def _text(self, text: str, out: list[Any]) -> None:
        """Content text; whitespace right after a call is dropped, trailing whitespace is held back (a call may
        follow, and then it is dropped too)."""
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
            self._after_call = False
        body = text.rstrip()
        if body:
            out.append(TextPiece(self._space + body))
            self._space = ""
        self._space += text[len(body):]

    def _announce(self, out: list[Any]) -> None:
        if self.syntax != XML or self._announced is not None or not self._accepting():
            return
        match = _FUNCTION_NAME.match(self._buf)
        if match is not None:
            self._announced = CallStart(len(self.calls), new_call_id(), match.group(1).strip())
            out.append(self._announced)

    def _accepting(self) -> bool:
        return self.parallel or not self.calls

    def _close_call(self, body: str, out: list[Any]) -> None:
        call = parse_xml_call(body, self.types) if self.syntax == XML else parse_json_call(body)
        announced, self._announced = self._announced, None
        if call is None or (announced is not None and announced.name != call.name):
            self._space = self._pre_space
            self._text(CALL_OPEN + body + CALL_CLOSE, out)  # not a call after all: as written
            return
        self._after_call = True
        if not self._accepting():  # parallel_tool_calls false: only the first call counts
            return
        if announced is None:
            announced = CallStart(len(self.calls), call.id, call.name)
            out.append(announced)
        call.id = announced.id
        self.calls.append(call)
        out.append(CallArguments(announced.index, call.arguments))
