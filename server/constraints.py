"""A request's output constraint and logit bias, from its fields to the engine's `LogitShape`

A wrong field is a 400 that names it.

Fields: `grammar` (GBNF) and `json_schema` (every generating endpoint, as llama-server takes them),
`response_format` (chat: `text`, `json_object` with an optional `schema`, `json_schema` with
`json_schema.schema`), `tool_choice` `required` / `{"type": "function", "function": {"name": ...}}` (a grammar
of tool calls in the template's syntax), and `logit_bias` in llama-server's forms `[[id, bias]]`,
`[[id, false]]` (banned), `[["text", bias]]` (every token of the text) and OpenAI's `{"id": bias}` map. At most
one of the grammar-making fields may be given. `tool_choice: "none"` bans the `<tool_call>` token where the
vocabulary has one, besides leaving the tools out of the prompt.
"""

from __future__ import annotations

import math
from typing import Any

from vkmtp.constrain import grammar as G
from vkmtp.constrain.sampler import LogitShape
from vkmtp.constrain.vocab import ll_tokenizer
from vkmtp.server.errors import bad_request
from vkmtp.server.model_info import ModelInfo
from vkmtp.text.reasoning import thinking_open_at_end
from vkmtp.text.tool_calls import CALL_OPEN, tool_call_syntax

MAX_BIAS_ENTRIES = 4096


def logit_bias(value: Any, info: ModelInfo) -> dict[int, float]:
    """token id -> bias (-inf: banned) from any of the three forms."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for entry in value:
            if not isinstance(entry, list) or len(entry) != 2:
                raise bad_request("logit_bias: each entry must be a pair [token id or text, bias or false]")
            pairs.append((entry[0], entry[1]))
    else:
        raise bad_request("logit_bias: must be a list of [token, bias] pairs or an object {\"token id\": bias}")
    if len(pairs) > MAX_BIAS_ENTRIES:
        raise bad_request(f"logit_bias: {len(pairs)} entries (at most {MAX_BIAS_ENTRIES})")
    out: dict[int, float] = {}
    for key, bias in pairs:
        if bias is False:
            bias = -math.inf
        elif isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
            raise bad_request(f"logit_bias: the bias of {key!r:.40} must be a finite number or false")
        for token in _bias_ids(key, isinstance(value, dict), info):
            out[token] = float(bias)
    return out


def _bias_ids(key: Any, from_map: bool, info: ModelInfo) -> list[int]:
    if from_map:   # OpenAI: the keys are token ids written as strings
        if not isinstance(key, str) or not key.lstrip("-").isdigit() or len(key) > 12:
            raise bad_request(f"logit_bias: key {key!r:.40} is not a token id")
        key = int(key)
    if isinstance(key, str):
        if len(key) > 1024:
            raise bad_request("logit_bias: a text entry is longer than 1024 characters")
        try:
            return info.tokenizer.encode(key, add_special=False)
        except ValueError as exc:
            raise bad_request(f"logit_bias: {exc}") from None
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < info.n_vocab:
        raise bad_request(f"logit_bias: token {key!r:.40} is outside the vocabulary (0..{info.n_vocab - 1})")
    return [key]


def _response_format(value: Any) -> G.Grammar | None:
    field = "response_format"
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise bad_request(f"{field}: must be an object with a 'type' (text, json_object, json_schema)")
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        schema = value.get("schema")
        return G.json_object(field) if schema is None else G.from_json_schema(schema, f"{field}.schema")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise bad_request(f"{field}: json_schema needs {{\"json_schema\": {{\"schema\": {{...}}}}}}")
        return G.from_json_schema(spec["schema"], f"{field}.json_schema.schema")
    raise bad_request(f"{field}: type {kind!r:.40} is not one of text, json_object, json_schema")


def _tool_grammar(body: Any, info: ModelInfo, prompt: str | None) -> G.Grammar | None:
    choice = getattr(body, "tool_choice", None)
    if choice is None or choice in ("auto", "none"):
        return None
    syntax = tool_call_syntax(info.template.source)
    return G.tool_calls(body.tools, choice, syntax, body.parallel_tool_calls,
                        thinking=prompt is not None and thinking_open_at_end(prompt))


def logit_shape(body: Any, info: ModelInfo, prompt: str | None = None) -> LogitShape | None:
    """The request's LogitShape (None: nothing shapes its logits). `prompt`: the chat prompt text."""
    try:
        made = {
            "grammar": G.from_gbnf(body.grammar) if body.grammar not in (None, "") else None,
            "json_schema": G.from_json_schema(body.json_schema, "json_schema")
            if body.json_schema not in (None, {}) else None,
            "response_format": _response_format(getattr(body, "response_format", None)),
            "tool_choice": _tool_grammar(body, info, prompt),
        }
    except G.GrammarError as exc:
        raise bad_request(str(exc)) from None
    given = [name for name, g in made.items() if g is not None]
    if len(given) > 1:
        raise bad_request(f"{given[1]}: only one of grammar, json_schema, response_format and tool_choice "
                          f"required / named may constrain a request (this one also has {given[0]})")
    bias = logit_bias(body.logit_bias, info)
    if getattr(body, "tool_choice", None) == "none":
        call = info.tokenizer.token_to_id(CALL_OPEN)
        if call is not None:
            bias[call] = -math.inf
    grammar = made[given[0]] if given else None
    if grammar is None and not bias:
        return None
    vocab = ll_tokenizer(info.tokenizer, info.n_vocab, info.tokenizer.eog_ids) if grammar else None
    return LogitShape(grammar, vocab, bias or None)
