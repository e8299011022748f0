"""Chat prompts: render a GGUF's `tokenizer.chat_template` (Jinja) the way `llama-server --jinja` does.

What llama-server does, and so do we:
- messages are checked first (object with a string `role`; `content` a string, a list of `{"type": "text"}`
  parts joined with "\\n", or null when the assistant message carries `tool_calls`);
- the template sees `messages`, `bos_token`, `eos_token`, `enable_thinking` (default true), `tools` (only when
  non-empty), `add_generation_prompt`, plus every `chat_template_kwargs` entry (which may override the rest);
  it may call `raise_exception(msg)` and `strftime_now(fmt)`;
- rendering uses trim_blocks and lstrip_blocks, as Hugging Face and llama.cpp do;
- templates that read tool-call arguments as a mapping (Qwen3.5's `arguments|items`) get the OpenAI JSON
  argument strings parsed into objects; which kind a template wants is found by rendering a probe call;
- a leading BOS text is removed when the tokenizer adds BOS itself (and a trailing EOS likewise);
- a GGUF without a template gets ChatML.

Jinja runs sandboxed (`ImmutableSandboxedEnvironment`), since templates come with downloaded model files.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vkmtp.text.tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{%- for message in messages %}\n"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

ROLES = ("system", "user", "assistant", "tool")

_PROBE_ARGUMENTS = {"probe_key": "probe_value"}


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Hugging Face's `tojson`: plain json.dumps (Jinja's own one HTML-escapes <, >, & and ')."""
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _text_of_parts(parts: list, where: str) -> str:
    texts = []
    for n, part in enumerate(parts):
        if not isinstance(part, Mapping) or "type" not in part:
            raise ValueError(f"{where}: content part {n} must be an object with a 'type'")
        if part["type"] != "text":
            raise ValueError(f"{where}: content part type {part['type']!r} is not supported (only 'text')")
        if not isinstance(part.get("text"), str):
            raise ValueError(f"{where}: content part {n} of type 'text' needs a string 'text'")
        texts.append(part["text"])
    return "\n".join(texts)


def _check_tool_calls(tool_calls: Any, where: str) -> None:
    if not isinstance(tool_calls, list):
        raise ValueError(f"{where}: 'tool_calls' must be a list")
    for n, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}: tool_calls[{n}] needs a 'function' object with a string 'name'")
        if not isinstance(function.get("arguments", ""), (str, Mapping)):
            raise ValueError(f"{where}: tool_calls[{n}].function.arguments must be a JSON string or object")


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check OpenAI-style chat messages and return copies ready for a template (content always a string)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{i}] must be an object, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"messages[{i}] has no string 'role'")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role {role[:40]!r} is not one of {', '.join(ROLES)}")
        where = f"messages[{i}] (role {role!r})"
        out = copy.deepcopy(dict(message))
        if "tool_calls" in out and out["tool_calls"] is not None:
            _check_tool_calls(out["tool_calls"], where)
        content = out.get("content")
        if isinstance(content, list):
            out["content"] = _text_of_parts(content, where)
        elif content is None:
            if not out.get("tool_calls"):
                raise ValueError(f"{where} has no 'content' (null content needs 'tool_calls')")
            out["content"] = ""
        elif not isinstance(content, str):
            raise ValueError(f"{where}: 'content' must be a string or a list of parts, "
                             f"got {type(content).__name__}")
        reasoning = out.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise ValueError(f"{where}: 'reasoning_content' must be a string")
        result.append(out)
    return result


def normalize_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Check OpenAI-style tool definitions; None or [] mean no tools."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    for n, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise ValueError(f"tools[{n}] must be an object with type 'function'")
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"tools[{n}] needs a 'function' object with a string 'name'")
    return copy.deepcopy(tools) or None


def _arguments_as_objects(messages: list[dict[str, Any]]) -> None:
    """Parse JSON-string tool-call arguments in place (for templates that iterate over them)."""
    for i, message in enumerate(messages):
        for n, call in enumerate(message.get("tool_calls") or []):
            function = call["function"]
            arguments = function.get("arguments", "{}")
            if isinstance(arguments, str):
                try:
                    function["arguments"] = json.loads(arguments) if arguments.strip() else {}
                except json.JSONDecodeError as exc:
                    raise ValueError(f"messages[{i}].tool_calls[{n}].function.arguments is not valid JSON: "
                                     f"{exc}") from None


class ChatTemplate:
    """A compiled chat template plus the BOS/EOS texts it may refer to."""

    def __init__(self, source: str | None = None, *, bos_token: str = "", eos_token: str = "",
                 add_bos: bool = False, add_eos: bool = False):
        self.is_fallback = not source
        self.source = source or CHATML_TEMPLATE
        self.bos_token, self.eos_token = bos_token, eos_token
        self.add_bos, self.add_eos = add_bos, add_eos
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"chat template: syntax error at line {exc.lineno}: {exc.message}") from None
        self._wants_object_arguments: bool | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, source: str | None) -> ChatTemplate:
        """A template whose bos_token/eos_token are the tokenizer's, as llama-server sets them."""
        def text_of(token_id: int | None) -> str:
            return "" if token_id is None else tokenizer.token_to_piece(token_id, render_special=True)
        return cls(source, bos_token=text_of(tokenizer.bos_id), eos_token=text_of(tokenizer.eos_id),
                   add_bos=tokenizer.add_bos, add_eos=tokenizer.add_eos)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], tokenizer: Tokenizer) -> ChatTemplate:
        """The GGUF's `tokenizer.chat_template`, or ChatML when it has none."""
        source = metadata.get("tokenizer.chat_template")
        if source is not None and not isinstance(source, str):
            raise ValueError("tokenizer.chat_template is not a string")
        return cls.for_tokenizer(tokenizer, source)

    def _render_raw(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                    add_generation_prompt: bool, template_kwargs: Mapping[str, Any]) -> str:
        context: dict[str, Any] = {"messages": messages, "bos_token": self.bos_token,
                                   "eos_token": self.eos_token, "enable_thinking": True}
        if tools:
            context["tools"] = tools
        context.update(template_kwargs)
        if add_generation_prompt:
            context["add_generation_prompt"] = True
        return self._template.render(context)

    def wants_object_arguments(self) -> bool:
        """Whether the template renders tool-call arguments only when given as a mapping (probed once)."""
        if self._wants_object_arguments is None:
            def probe(arguments: Any) -> str:
                call = {"id": "call_0", "type": "function",
                        "function": {"name": "probe_tool", "arguments": arguments}}
                messages = [{"role": "user", "content": "probe"},
                            {"role": "assistant", "content": "", "tool_calls": [call]}]
                try:
                    return self._render_raw(messages, None, False, {})
                except Exception:  # a template may reject the probe; that just means "not this way"
                    return ""
            strings_work = json.dumps(_PROBE_ARGUMENTS) in probe(json.dumps(_PROBE_ARGUMENTS))
            objects_work = "probe_value" in probe(dict(_PROBE_ARGUMENTS))
            self._wants_object_arguments = objects_work and not strings_work
        return self._wants_object_arguments

    def render(self, messages: Any, *, add_generation_prompt: bool = True, tools: Any = None,
               **template_kwargs: Any) -> str:
        """Messages (+ tools, + chat_template_kwargs such as enable_thinking=False) -> prompt text.

        The prompt is meant to be tokenized with parse_special=True. Raises ValueError for malformed
        messages or tools and for errors raised inside the template (including its raise_exception).
        """
        messages = normalize_messages(messages)
        tools = normalize_tools(tools)
        if self.wants_object_arguments():
            _arguments_as_objects(messages)
        try:
            prompt = self._render_raw(messages, tools, add_generation_prompt, template_kwargs)
        except jinja2.TemplateError as exc:
            raise ValueError(f"chat template error: {exc.message or type(exc).__name__}") from None
        except Exception as exc:  # type errors etc. raised by template expressions on unexpected input
            raise ValueError(f"chat template failed: {type(exc).__name__}: {exc}") from None
        if self.add_bos and self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token):]
        if self.add_eos and self.eos_token and prompt.endswith(self.eos_token):
            prompt = prompt[:-len(self.eos_token)]
        return prompt
