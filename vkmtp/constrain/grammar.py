"""What a request asks the output to match, compiled to one llguidance grammar: GBNF, JSON schema, tool calls.

Every form ends as llguidance's grammar text (Lark with embedded JSON schemas), so one matcher type serves all of
them: `/completion` `grammar` (GBNF, llama.cpp's syntax, converted to Lark), `json_schema`, OpenAI
`response_format` (`json_object`: any JSON object; `json_schema`: its `schema`), and `tool_choice`
`required` / a named function (one or more calls in the model template's tool-call syntax, the arguments
matching the tool's parameter schema). Sizes and nesting are bounded before anything is compiled, and the
grammar is compiled once here so that a bad one is a clear error (the server answers 400) before the request
reaches the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import llguidance

MAX_GRAMMAR_CHARS = 64 * 1024        # a GBNF grammar's text
MAX_SCHEMA_CHARS = 64 * 1024         # a JSON schema, serialized
MAX_SCHEMA_DEPTH = 32                # nested objects / arrays in a schema
LIMITS = dict(max_grammar_size=200_000, step_max_items=50_000, initial_lexer_fuel=1_000_000)


class GrammarError(ValueError):
    """The constraint cannot be used; the message names the request field."""


@dataclass(frozen=True)
class Grammar:
    """A compiled, checked llguidance grammar (`text`) and what it came from (`source`, for messages)."""

    text: str
    source: str


def limits() -> llguidance.LLParserLimits:
    return llguidance.LLParserLimits(**LIMITS, verbose_errors=False)


def _depth(value: Any, field: str) -> None:
    """Refuse schemas nested deeper than MAX_SCHEMA_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"{field}: the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _schema_text(schema: Any, field: str) -> str:
    if not isinstance(schema, dict):
        raise GrammarError(f"{field}: a JSON schema must be an object")
    _depth(schema, field)
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise GrammarError(f"{field}: the schema has {len(text)} characters (at most {MAX_SCHEMA_CHARS})")
    return text


def _checked(text: str, source: str, field: str) -> Grammar:
    error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(text, None, limits=limits())
    if error:
        raise GrammarError(f"{field}: {messages[0][:500]}")
    return Grammar(text, source)


def from_json_schema(schema: Any, field: str) -> Grammar:
    """Output that is one JSON value valid for `schema`."""
    text = _schema_text(schema, field)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, defaults={"whitespace_flexible": False})
    except (ValueError, RuntimeError) as exc:
        raise GrammarError(f"{field}: {str(exc)[:500]}") from None
    return _checked(grammar, "json_schema", field)


def json_object(field: str) -> Grammar:
    """Any JSON object (response_format json_object)."""
    return from_json_schema({"type": "object"}, field)


def from_gbnf(text: Any, field: str = "grammar") -> Grammar:
    """A GBNF grammar (llama.cpp's syntax; Lark is accepted too, as llguidance reads both)."""
    if not isinstance(text, str):
        raise GrammarError(f"{field}: must be a string (a GBNF grammar)")
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"{field}: the grammar has {len(text)} characters (at most {MAX_GRAMMAR_CHARS})")
    try:
        grammar = llguidance.grammar_from("gbnf", text)
    except (ValueError, RuntimeError) as exc:
        raise GrammarError(f"{field}: {str(exc)[:500]}") from None
    return _checked(grammar, "grammar", field)


def _lark_string(text: str) -> str:
    return json.dumps(text)


def _tool_parameters(tool: dict, field: str) -> tuple[str, dict]:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise GrammarError(f"{field}: every tool needs function.name")
    params = function.get("parameters", {"type": "object"})
    if not isinstance(params, dict):
        raise GrammarError(f"{field}: tool {function['name']!r}: parameters must be a JSON schema object")
    _schema_text(params, field)
    return function["name"], params


def _embedded(schema: dict) -> str:
    """A schema inside a Lark grammar, compact: without this the JSON may hold any amount of whitespace, which a
    small model fills forever."""
    return "%json " + json.dumps({**schema, "x-guidance": {"whitespace_flexible": False}})


def _json_call(name: str, params: dict) -> str:
    """Qwen3's form: {"name": NAME, "arguments": {...}} as one JSON schema."""
    schema = {"type": "object", "properties": {"name": {"const": name}, "arguments": params},
              "required": ["name", "arguments"], "additionalProperties": False}
    return _embedded(schema)


def _xml_call(name: str, params: dict) -> str:
    """Qwen3.5's form: <function=NAME> then one <parameter=KEY> block per argument, required ones in order and
    the optional ones after them, each value JSON of the parameter's schema (a string parameter: plain text
    without '<', as the template writes it)."""
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    required = [k for k in params.get("required", []) if k in props] if isinstance(params.get("required"), list) \
        else []
    parts = [_lark_string(f"<function={name}>\n")]
    for key in list(required) + [k for k in props if k not in required]:
        schema = props[key] if isinstance(props[key], dict) else {}
        close = _lark_string("\n</parameter>\n")
        # a string value and its closing tag are one lexeme: a separate greedy text lexeme would eat the newline
        value = r"/[^<]*\n<\/parameter>\n/" if schema.get("type") == "string" else f"{_embedded(schema)} {close}"
        block = f"({_lark_string(f'<parameter={key}>' + chr(10))} {value})"
        parts.append(block if key in required else block + "?")
    parts.append(_lark_string("</function>"))
    return " ".join(parts)


def tool_calls(tools: Any, choice: Any, syntax: str, parallel: bool, thinking: bool = False,
               field: str = "tool_choice") -> Grammar:
    """One tool call (several with parallel_tool_calls) of the offered tools, or of the named function, in the
    template's syntax ("xml" | "json"); nothing before the first call but, when the prompt left a `<think>`
    block open (`thinking`), the rest of the reasoning (text without '<') and `</think>`."""
    if not isinstance(tools, list) or not tools:
        raise GrammarError(f"{field}: {choice!r:.60} needs 'tools'")
    by_name = dict(_tool_parameters(t, "tools") for t in tools)
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise GrammarError(f"{field}: a named choice is "
                               f"{{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        if name not in by_name:
            raise GrammarError(f"{field}: no tool is named {name!r}")
        by_name = {name: by_name[name]}
    make = _xml_call if syntax == "xml" else _json_call
    calls = " | ".join(f"({make(n, p)})" for n, p in by_name.items())
    block = f'"<tool_call>\\n" call "\\n</tool_call>"'
    think = r'/[^<]*/ "</think>" /[ \t\n]*/ ' if thinking else ""
    lark = f"start: {think}{block}" + (f' ("\\n" {block})*' if parallel else "") + f"\ncall: {calls}\n"
    return _checked(llguidance.LLMatcher.grammar_from_lark(lark), "tool_choice", field)
