"""vkmtp.text.chat_template: ChatML fallback, Qwen3-style and Qwen3.5-style templates (tests/data/tok), message checks."""

import datetime
import json
from pathlib import Path

import pytest
from gguf import TokenType

from vkmtp.text.chat_template import CHATML_TEMPLATE, ChatTemplate, normalize_messages
from vkmtp.text.tokenizer import BYTE_TO_CHAR, Tokenizer
from vkmtp.text.gguf_metadata import tokenizer_metadata

DATA = Path(__file__).resolve().parent.parent / "data" / "tok"

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather <in °C>",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

TOOL_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "reasoning_content": "Need the tool.",
     "tool_calls": [{"id": "c1", "type": "function", "function": {
         "name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "18 °C"},
    {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
]


def tiny_metadata(chat_template: str | None = None, add_bos: bool = False) -> dict:
    """256 byte tokens plus ChatML specials; enough to build a Tokenizer for template tests."""
    tokens = list(BYTE_TO_CHAR) + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [int(TokenType.NORMAL)] * 256 + [int(TokenType.CONTROL)] * 3
    return tokenizer_metadata(tokens, types, [], pre="qwen35", bos_id=256, eos_id=258, add_bos=add_bos,
                              chat_template=chat_template)


@pytest.fixture(scope="module")
def qwen3() -> ChatTemplate:
    return ChatTemplate((DATA / "qwen3_style.jinja").read_text())


@pytest.fixture(scope="module")
def qwen35() -> ChatTemplate:
    return ChatTemplate((DATA / "qwen35_style.jinja").read_text())


def test_chatml_fallback_when_gguf_has_no_template():
    metadata = tiny_metadata()
    template = ChatTemplate.from_metadata(metadata, Tokenizer.from_metadata(metadata))
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    prompt = template.render([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    assert prompt == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n")
    no_prompt = template.render([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert no_prompt == "<|im_start|>user\nHi<|im_end|>\n"


def test_bos_and_eos_variables_and_bos_stripping():
    source = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"
    metadata = tiny_metadata(source, add_bos=True)
    template = ChatTemplate.from_metadata(metadata, Tokenizer.from_metadata(metadata))
    assert template.bos_token == "<|endoftext|>" and template.eos_token == "<|im_end|>"
    # the tokenizer adds BOS itself, so the template's leading BOS text is dropped (as llama-server does)
    assert template.render([{"role": "user", "content": "x"}]) == "x<|im_end|>"
    without_add_bos = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert without_add_bos.render([{"role": "user", "content": "x"}]) == "<s>x</s>"


def test_content_parts_are_joined_with_newlines():
    template = ChatTemplate(None)
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert "first\nsecond<|im_end|>" in template.render([{"role": "user", "content": parts}])


def test_qwen3_style_tools_reasoning_and_tool_responses(qwen3):
    prompt = qwen3.render(TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    # HF-style tojson: ", "/": " separators, no HTML escaping, no \\u escapes
    assert "\n" + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n</tools>" in prompt
    assert "<in °C>" in prompt
    # string arguments are rendered verbatim by this template, reasoning after the last user turn is kept
    assert ("<|im_start|>assistant\n<think>\nNeed the tool.\n</think>\n\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
            "</tool_call><|im_end|>\n") in prompt
    assert ("<|im_start|>user\n<tool_response>\n18 °C\n</tool_response>\n<tool_response>\nsunny\n"
            "</tool_response><|im_end|>\n") in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert not qwen3.wants_object_arguments()


def test_enable_thinking_kwarg(qwen3):
    messages = [{"role": "user", "content": "Hi"}]
    assert qwen3.render(messages).endswith("<|im_start|>assistant\n")
    no_thinking = qwen3.render(messages, enable_thinking=False)
    assert no_thinking.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "# Tools" not in qwen3.render(messages, tools=[])


def test_qwen35_style_gets_arguments_as_objects(qwen35):
    assert qwen35.wants_object_arguments()
    prompt = qwen35.render(TOOL_CONVERSATION, tools=[WEATHER_TOOL], enable_thinking=False)
    assert ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
            "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call><|im_end|>") in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen35.render([{"role": "user", "content": "Hi"}]).endswith("<|im_start|>assistant\n<think>\n")


def test_invalid_json_arguments_are_reported(qwen35):
    bad = [{"role": "user", "content": "x"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]
    with pytest.raises(ValueError, match=r"messages\[1\]\.tool_calls\[0\]\.function\.arguments is not valid"):
        qwen35.render(bad)


def test_messages_are_not_modified(qwen35):
    messages = json.loads(json.dumps(TOOL_CONVERSATION))
    qwen35.render(messages, tools=[WEATHER_TOOL])
    assert messages == TOOL_CONVERSATION


@pytest.mark.parametrize("messages, message", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ([["user", "hi"]], r"messages\[0\] must be an object"),
    ([{"content": "hi"}], r"messages\[0\] has no string 'role'"),
    ([{"role": "user", "content": 5}], "'content' must be a string or a list of parts, got int"),
    ([{"role": "user"}], "has no 'content'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "'image_url' is not supported"),
    ([{"role": "user", "content": [{"text": "x"}]}], "content part 0 must be an object with a 'type'"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "needs a string 'text'"),
    ([{"role": "assistant", "content": None, "tool_calls": {"a": 1}}], "'tool_calls' must be a list"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}], r"tool_calls\[0\] needs"),
    ([{"role": "assistant", "content": "x", "reasoning_content": 1}], "'reasoning_content' must be a string"),
])
def test_malformed_messages_raise_value_error(messages, message):
    with pytest.raises(ValueError, match=message):
        ChatTemplate(None).render(messages)


@pytest.mark.parametrize("tools, message", [
    ({"type": "function"}, "'tools' must be a list"),
    ([{"type": "retrieval"}], r"tools\[0\] must be an object with type 'function'"),
    ([{"type": "function", "function": {"description": "x"}}], "string 'name'"),
])
def test_malformed_tools_raise_value_error(tools, message):
    with pytest.raises(ValueError, match=message):
        ChatTemplate(None).render([{"role": "user", "content": "x"}], tools=tools)


def test_raise_exception_in_template_becomes_value_error():
    template = ChatTemplate("{{ raise_exception('Unknown role: ' + messages[0].role) }}")
    with pytest.raises(ValueError, match="chat template error: Unknown role: user"):
        template.render([{"role": "user", "content": "x"}])


def test_unknown_role_is_refused_before_rendering(qwen3):
    with pytest.raises(ValueError, match=r"messages\[1\]\.role 'critic' is not one of system, user"):
        qwen3.render([{"role": "user", "content": "x"}, {"role": "critic", "content": "y"}])


def test_template_errors_are_value_errors():
    with pytest.raises(ValueError, match="syntax error at line 1"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(ValueError, match="chat template failed: TypeError"):
        ChatTemplate("{{ messages[0].content + 1 }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="chat template error"):
        ChatTemplate("{{ messages[0].nothing.deeper }}").render([{"role": "user", "content": "x"}])


def test_sandbox_blocks_mutation_and_internals():
    with pytest.raises(ValueError, match="chat template error"):
        ChatTemplate("{{ messages.append(1) }}").render([{"role": "user", "content": "x"}])
    escape = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ValueError, match="chat template error"):
        escape.render([{"role": "user", "content": "x"}])


def test_strftime_now_and_extra_kwargs():
    template = ChatTemplate("{{ strftime_now('%Y') }}|{{ custom_flag }}|{{ add_generation_prompt }}")
    year = str(datetime.datetime.now().year)
    assert template.render([{"role": "user", "content": "x"}], custom_flag="on") == f"{year}|on|True"


def test_normalize_messages_keeps_extra_fields():
    [message] = normalize_messages([{"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"}])
    assert message == {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"}
