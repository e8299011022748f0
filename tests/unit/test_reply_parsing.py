"""vkmtp.text.reasoning / tool_calls / reply: Qwen replies (both tool-call syntaxes) split into reasoning, content
and tool calls; fed whole and one character at a time, the parts are the same."""

import json

import pytest

from vkmtp.text.reasoning import ReasoningSplitter, thinking_open_at_end
from vkmtp.text.reply import ReplyFormat, ReplyParser, parse_reply
from vkmtp.text.tool_calls import JSON, XML, CallArguments, CallStart, convert_value, tool_call_syntax

TOOLS = (
    {"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"}, "mode": {"type": "integer"},
        "options": {"type": "object"}, "tags": {"type": "array"}, "force": {"type": "boolean"},
        "ratio": {"type": ["number", "null"]}, "code": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}}}}},
)

# replies as Qwen3.5/3.6 write them (XML calls after a think block)
XML_TWO_CALLS = (
    "<think>\nThe user wants two things.\nI'll call both tools.\n</think>\n\n"
    "Let me do that.\n\n"
    "<tool_call>\n<function=write_file>\n<parameter=path>\nsrc/a.py\n</parameter>\n"
    "<parameter=content>\nif a < b and c > d:\n    print(\"x\")\n</parameter>\n"
    "<parameter=mode>\n644\n</parameter>\n<parameter=options>\n{\"nested\": {\"deep\": [1, 2, {\"k\": \"<v>\"}]}}\n"
    "</parameter>\n<parameter=force>\ntrue\n</parameter>\n<parameter=ratio>\nnull\n</parameter>\n"
    "</function>\n</tool_call>\n"
    "<tool_call>\n<function=get_weather>\n<parameter=city>\n12\n</parameter>\n<parameter=days>\n3\n"
    "</parameter>\n</function>\n</tool_call>"
)
# Qwen3's JSON form
JSON_TWO_CALLS = (
    "<think>\nok\n</think>\n\n"
    "<tool_call>\n{\"name\": \"write_file\", \"arguments\": {\"path\": \"a \\\"quoted\\\" <name>.txt\", "
    "\"options\": {\"a\": {\"b\": [1, {\"c\": null}]}}}}\n</tool_call>\n"
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
)


def streamed(text: str, fmt: ReplyFormat, step: int = 1):
    """The parts of `text` fed `step` characters at a time, gathered as a client would."""
    parser = ReplyParser(fmt)
    reasoning, content, calls = "", "", {}
    pieces = []
    for i in range(0, len(text), step):
        pieces += parser.push(text[i:i + step])
    pieces += parser.finish()
    for piece in pieces:
        if isinstance(piece, CallStart):
            calls[piece.index] = {"id": piece.id, "name": piece.name, "arguments": ""}
        elif isinstance(piece, CallArguments):
            calls[piece.index]["arguments"] += piece.arguments
        elif piece[0] == "reasoning":
            reasoning += piece[1]
        else:
            content += piece[1]
    return reasoning, content, [calls[i] for i in sorted(calls)]


def whole(text: str, fmt: ReplyFormat):
    reply = parse_reply(text, fmt)
    return reply.reasoning, reply.content, [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]


def same_parts(text: str, fmt: ReplyFormat):
    expected = whole(text, fmt)
    for step in (1, 2, 3, 7, len(text) or 1):
        got = streamed(text, fmt, step)
        assert (got[0], got[1]) == expected[:2], step
        assert [(c["name"], c["arguments"]) for c in got[2]] == [(c["name"], c["arguments"]) for c in expected[2]]
    return expected


def test_syntax_is_chosen_from_the_template():
    assert tool_call_syntax("{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}") == XML
    assert tool_call_syntax('{{- \'<tool_call>\\n{"name": "\' }}') == JSON


def test_xml_calls_with_reasoning_text_and_schema_types():
    fmt = ReplyFormat(tool_syntax=XML, tools=TOOLS)
    reasoning, content, calls = same_parts(XML_TWO_CALLS, fmt)
    assert reasoning == "The user wants two things.\nI'll call both tools."
    assert content == "Let me do that."
    assert [c["name"] for c in calls] == ["write_file", "get_weather"]
    first = json.loads(calls[0]["arguments"])
    assert first == {"path": "src/a.py", "content": "if a < b and c > d:\n    print(\"x\")", "mode": 644,
                     "options": {"nested": {"deep": [1, 2, {"k": "<v>"}]}}, "force": True, "ratio": None}
    # a string parameter stays text even when it looks like a number
    assert json.loads(calls[1]["arguments"]) == {"city": "12", "days": 3}
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]


def test_json_calls_with_quotes_and_nesting():
    reasoning, content, calls = same_parts(JSON_TWO_CALLS, ReplyFormat(tool_syntax=JSON, tools=TOOLS))
    assert reasoning == "ok" and content == ""
    assert json.loads(calls[0]["arguments"]) == {"path": "a \"quoted\" <name>.txt",
                                                 "options": {"a": {"b": [1, {"c": None}]}}}
    assert calls[1] == {**calls[1], "name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize("syntax, text", [(XML, XML_TWO_CALLS), (JSON, JSON_TWO_CALLS)])
def test_a_call_cut_off_by_max_tokens_stays_text(syntax, text):
    cut = text[: text.rindex("<tool_call>") + 30]
    reasoning, content, calls = same_parts(cut, ReplyFormat(tool_syntax=syntax, tools=TOOLS))
    assert len(calls) == 1
    assert content.endswith(cut[cut.rindex("<tool_call>"):])


def test_parallel_tool_calls_false_keeps_the_first_call():
    fmt = ReplyFormat(tool_syntax=XML, tools=TOOLS, parallel_tool_calls=False)
    _, content, calls = same_parts(XML_TWO_CALLS, fmt)
    assert [c["name"] for c in calls] == ["write_file"] and content == "Let me do that."


def test_no_tool_parsing_and_no_reasoning_split():
    text = "<think>x</think>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"
    assert whole(text, ReplyFormat(reasoning=False)) == ("", text, [])
    assert whole(text, ReplyFormat(reasoning=True)) == ("x", text[text.index("<tool_call>"):], [])


def test_bad_call_stays_content():
    text = "Here: <tool_call>\n{not json}\n</tool_call> done"
    _, content, calls = same_parts(text, ReplyFormat(tool_syntax=JSON, tools=TOOLS))
    assert calls == [] and content == text


@pytest.mark.parametrize("text, start_open, reasoning, content", [
    ("<think>\nabc\n</think>\n\nHello", False, "abc", "Hello"),
    ("abc\n</think>\n\nHello", True, "abc", "Hello"),            # the template opened the block
    ("  \n<think>a</think>b", False, "a", "b"),
    ("no thinking here <think>x</think>", False, "", "no thinking here <think>x</think>"),
    ("<think>\nstill thinking when cut", False, "still thinking when cut", ""),
    ("<thin", False, "", "<thin"),
    ("<think></think>", False, "", ""),
    ("a < b </think> c", True, "a < b", "c"),
])
def test_reasoning_split_streaming_safe(text, start_open, reasoning, content):
    fmt = ReplyFormat(thinking_open=start_open)
    assert same_parts(text, fmt)[:2] == (reasoning, content)


def test_reasoning_tag_split_across_tokens_never_leaks():
    splitter = ReasoningSplitter(start_open=True)
    pieces = []
    for part in ["abc </", "thi", "nk>", "\n\nanswer"]:
        pieces += splitter.push(part)
    pieces += splitter.finish()
    assert pieces == [("reasoning", "abc"), ("content", "answer")]


def test_thinking_open_at_end():
    assert thinking_open_at_end("<|im_start|>assistant\n<think>\n")
    assert not thinking_open_at_end("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not thinking_open_at_end("<|im_start|>assistant\n")


@pytest.mark.parametrize("raw, schema, value", [
    ("3", {"type": "integer"}, 3), ("3", {"type": "string"}, "3"), ("x y", {"type": "integer"}, "x y"),
    ("[1, 2]", {"type": "array"}, [1, 2]), ("2.5", {"type": ["number", "string"]}, 2.5),
    ("true", {"type": ["string", "null"]}, "true"), ("7", None, 7), ("Paris", None, "Paris"),
    ("null", {"anyOf": [{"type": "integer"}, {"type": "null"}]}, None),
])
def test_convert_value(raw, schema, value):
    assert convert_value(raw, schema) == value
