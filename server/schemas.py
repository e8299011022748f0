"""Request bodies of the HTTP API (pydantic), checked strictly so that a wrong type is a 400 naming the field.

No request field is silently ignored. Each endpoint's model lists every field it takes, in three kinds
(docs/SERVER.md has the table):
- fields that work;
- fields accepted without effect, each with its reason (`user`, `metadata`: bookkeeping that does not change
  generation; sampler parameters of samplers that are off);
- fields not supported: accepted only at the value that means "off" (`typical_p: 1.0`, `mirostat: 0`);
  any other value is a 400 that names the field and says why.
Token probabilities: `n_probs` (0..MAX_TOP) and `post_sampling_probs` on /completion, `logprobs` (an int
0..MAX_TOP) on /v1/completions, `logprobs` (bool) + `top_logprobs` (0..MAX_TOP, OpenAI's bound) on chat;
`probs_request()` gives the engine's ProbsRequest.
The constraint fields (`grammar`, `json_schema`, `response_format`, `tool_choice`, `logit_bias`) are typed
loosely here and checked by vkmtp.server.constraints, which compiles them.
Any other field is a 400 "unknown field". The speculative settings `speculative.n_max` / `n_min` / `p_min`
(llama-server's /completion names) override the server's for one request (SpeculativeFields).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vkmtp.engine.token_probs import ProbsRequest
from vkmtp.ops.token_probs import MAX_TOP
from vkmtp.sampling import SamplingParams
from vkmtp.text.reasoning import REASONING_FORMATS

INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1

Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(strict=True, ge=-1, le=INT32_MAX)]  # -1 = until the context is full
ShortStr = Annotated[str, Field(strict=True, max_length=4096)]

# llama.cpp's default sampler chain (common.h), by name and as the one-letter string its web page sends
DEFAULT_SAMPLERS = ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature")
_SAMPLER_ALIASES = {"typical_p": "typ_p", "typical": "typ_p", "top-k": "top_k", "top-p": "top_p",
                    "nucleus": "top_p", "min-p": "min_p", "temp": "temperature", "top-n-sigma": "top_n_sigma"}
_SAMPLER_LETTERS = {"e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typ_p", "p": "top_p",
                    "m": "min_p", "x": "xtc", "t": "temperature"}

OFF_ONLY_REASON = "is not supported by this server"


def _as_stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > 16:
            raise ValueError("at most 16 stop strings are supported")
        return [s for s in value if s]
    raise ValueError("must be a string or a list of strings")


def _is_default_sampler_order(value: Any) -> bool:
    if isinstance(value, str):
        if len(value) > 64 or any(ch not in _SAMPLER_LETTERS for ch in value):
            return False
        names = [_SAMPLER_LETTERS[ch] for ch in value]
    elif isinstance(value, list) and len(value) <= 64 and all(isinstance(v, str) for v in value):
        names = [_SAMPLER_ALIASES.get(v, v) for v in value]
    else:
        return False
    # the samplers vkmtp does not have (dry, top_n_sigma, xtc) are off, so leaving them out changes nothing
    optional = {"dry", "top_n_sigma", "xtc"}
    return [n for n in names if n not in optional] == [n for n in DEFAULT_SAMPLERS if n not in optional]


class Strict(BaseModel):
    """Unknown fields are a 400; `OFF_ONLY` fields are accepted at their "off" values only."""

    model_config = ConfigDict(extra="forbid")

    # field -> (values that mean "off", why any other value is refused)
    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _check_off_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, (off, why) in cls.OFF_ONLY.items():
                if name in data and not any(_same(data[name], v) for v in off):
                    raise ValueError(f"{name}: {why}")
        return data


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


class StreamOptions(Strict):
    include_usage: Bool = False
    include_obfuscation: Bool | None = None  # no effect: chunks are never padded


TopCount = Annotated[int, Field(strict=True, ge=0, le=MAX_TOP)]   # alternatives per token

GENERATION_OFF_ONLY: dict[str, tuple[tuple, str]] = {
    "typical_p": ((1.0, None), "locally typical sampling " + OFF_ONLY_REASON + " (only 1.0, off)"),
    "mirostat": ((0, None), "mirostat " + OFF_ONLY_REASON + " (only 0, off)"),
    "xtc_probability": ((0.0, None), "XTC sampling " + OFF_ONLY_REASON + " (only 0, off)"),
    "dry_multiplier": ((0.0, None), "DRY sampling " + OFF_ONLY_REASON + " (only 0, off)"),
    "dynatemp_range": ((0.0, None), "dynamic temperature " + OFF_ONLY_REASON + " (only 0, off)"),
    "top_n_sigma": ((-1.0, 0.0, None), "top-n-sigma sampling " + OFF_ONLY_REASON + " (only -1, off)"),
    "min_keep": ((0, 1, None), "min_keep other than 0 " + OFF_ONLY_REASON),
    "timings_per_token": ((False, None), "per-token timings " + OFF_ONLY_REASON),
    "return_progress": ((False, None), "prompt progress events " + OFF_ONLY_REASON),
    "lora": ((None, []), "LoRA adapters " + OFF_ONLY_REASON),
    "n_indent": ((0, None), "n_indent " + OFF_ONLY_REASON),
    "n_cmpl": ((1, None), "several completions per prompt " + OFF_ONLY_REASON + " (only 1)"),
    "image_data": ((None, []), "images " + OFF_ONLY_REASON),
    "multimodal_data": ((None, []), "images and audio " + OFF_ONLY_REASON),
}

Number = Annotated[float, Field(strict=False, allow_inf_nan=False)] | None


class GenerationFields(Strict):
    """Sampling and stopping fields shared by every generating endpoint (llama.cpp names and defaults)."""

    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = GENERATION_OFF_ONLY

    temperature: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0)] | None = None
    top_k: Annotated[int, Field(strict=True, ge=-1, le=INT32_MAX)] | None = None
    top_p: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0)] | None = None
    min_p: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0.0)] | None = None
    repeat_last_n: Annotated[int, Field(strict=True, ge=-1, le=INT32_MAX)] | None = None
    presence_penalty: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-2.0, le=2.0)] | None = (
        None
    )
    seed: Annotated[int, Field(strict=True, ge=-1, le=UINT64_MAX)] | None = None
    stop: Any = Field(default=None, validate_default=True)
    stream: Bool = False
    cache_prompt: Bool | None = None  # None: the server's default (--no-cache-prompt)
    ignore_eos: Bool = False
    id_slot: Annotated[int, Field(strict=True, ge=-1, le=INT32_MAX)] = -1  # -1: any free slot
    n_keep: Int | None = None  # no context shift: only 0 / -1
    t_max_predict_ms: Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)] = 0  # 0: no time limit
    samplers: Any = None

    # constraints (vkmtp.server.constraints checks and compiles them)
    grammar: Any = None
    json_schema: Any = None
    logit_bias: Any = None

    # token probabilities (/completion's names; the OpenAI endpoints take logprobs / top_logprobs instead)
    n_probs: TopCount = 0
    post_sampling_probs: Bool = False

    # off-only fields (GENERATION_OFF_ONLY checks their values)
    typical_p: Any = None
    mirostat: Any = None
    xtc_probability: Any = None
    dry_multiplier: Any = None
    dynatemp_range: Any = None
    top_n_sigma: Any = None
    min_keep: Any = None
    timings_per_token: Any = None
    return_progress: Any = None
    lora: Any = None
    n_indent: Any = None
    n_cmpl: Any = None
    image_data: Any = None
    multimodal_data: Any = None

    # accepted without effect: settings of samplers that are off (see OFF_ONLY), and a removed llama.cpp option
    mirostat_tau: Number = None
    mirostat_eta: Number = None
    xtc_threshold: Number = None
    dynatemp_exponent: Number = None
    dry_base: Number = None
    dry_allowed_length: Annotated[int, Field(strict=True)] | None = None
    dry_penalty_last_n: Annotated[int, Field(strict=True)] | None = None
    dry_sequence_breakers: Annotated[list[ShortStr], Field(max_length=64)] | None = None
    penalize_nl: Bool | None = None

    # ---- speculative settings of this request (block owned by the MTP work: vkmtp/spec/config.py) ----------
    spec_n_max: Annotated[int, Field(strict=True, ge=1, le=7)] | None = Field(None, alias="speculative.n_max")
    spec_n_min: Annotated[int, Field(strict=True, ge=0, le=7)] | None = Field(None, alias="speculative.n_min")
    spec_p_min: Annotated[float, Field(strict=False, allow_inf_nan=False, ge=0.0, le=1.0)] | None = Field(
        None, alias="speculative.p_min")

    def spec_override(self):
        """The request's speculative settings (None: the server's); the engine checks them against its own."""
        from vkmtp.spec import SpecOverride

        if self.spec_n_max is None and self.spec_n_min is None and self.spec_p_min is None:
            return None
        return SpecOverride(self.spec_n_max, self.spec_n_min, self.spec_p_min)
    # ---- end of the speculative block ----------------------------------------------------------------------

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Any) -> list[str]:
        return _as_stop_list(value)

    @field_validator("n_keep")
    @classmethod
    def _check_n_keep(cls, value: int | None) -> int | None:
        if value not in (None, 0, -1):
            raise ValueError("context shift is not implemented, so only 0 and -1 are accepted (the prompt and "
                             "the reply must fit the context)")
        return value

    @field_validator("samplers")
    @classmethod
    def _check_samplers(cls, value: Any) -> Any:
        if value is not None and not _is_default_sampler_order(value):
            raise ValueError(
                "only llama.cpp's default sampler order is supported (" + ", ".join(DEFAULT_SAMPLERS) + ")"
            )
        return value

    def probs_request(self) -> ProbsRequest | None:
        """llama-server's n_probs: the top n_probs per token (0: no probabilities; post_sampling_probs
        changes what they are)."""
        return ProbsRequest(self.n_probs, self.post_sampling_probs) if self.n_probs > 0 else None

    def sampling_params(self, defaults: SamplingParams) -> SamplingParams:
        """The request's sampler settings on top of the server's defaults (seed -1 = a fresh random seed)."""
        seed = defaults.seed if self.seed is None else (None if self.seed == -1 else self.seed)
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return SamplingParams(
            temperature=pick(self.temperature, defaults.temperature),
            top_k=pick(self.top_k, defaults.top_k),
            top_p=pick(self.top_p, defaults.top_p),
            min_p=pick(self.min_p, defaults.min_p),
            repeat_penalty=pick(self.repeat_penalty, defaults.repeat_penalty),
            repeat_last_n=pick(self.repeat_last_n, defaults.repeat_last_n),
            presence_penalty=pick(self.presence_penalty, defaults.presence_penalty),
            frequency_penalty=pick(self.frequency_penalty, defaults.frequency_penalty),
            seed=seed,
        )


_OPENAI_PROBS = "is /completion's field (the OpenAI endpoints take logprobs / top_logprobs)"

OPENAI_OFF_ONLY = {
    **GENERATION_OFF_ONLY,
    "n_probs": ((0,), _OPENAI_PROBS),
    "post_sampling_probs": ((False,), _OPENAI_PROBS),
    "n": ((1, None), "several choices per request (n > 1) " + OFF_ONLY_REASON),
}


class OpenAIFields(GenerationFields):
    """OpenAI request fields common to chat and text completions."""

    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = OPENAI_OFF_ONLY

    model: Str | None = None  # echoed back: one model per server
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    n_predict: TokenCount | None = None
    n: Any = None
    stream_options: StreamOptions | None = None
    user: ShortStr | None = None  # no effect: an end-user id for the client's own records

    @property
    def token_budget(self) -> int | None:
        for value in (self.max_completion_tokens, self.max_tokens, self.n_predict):
            if value is not None:
                return value
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


_ROLES_NOTE = "see docs/SERVER.md"

CHAT_OFF_ONLY = {
    **OPENAI_OFF_ONLY,
    "modalities": ((None, ["text"]), "only text output is supported"),
    "audio": ((None,), "audio output " + OFF_ONLY_REASON),
    "prediction": ((None,), "predicted outputs " + OFF_ONLY_REASON),
    "reasoning_effort": ((None,), "reasoning_effort " + OFF_ONLY_REASON
                         + " (use chat_template_kwargs {\"enable_thinking\": false} to turn thinking off)"),
    "web_search_options": ((None,), "web search " + OFF_ONLY_REASON),
    "verbosity": ((None,), "verbosity " + OFF_ONLY_REASON),
    "functions": ((None,), "the deprecated 'functions' field " + OFF_ONLY_REASON + " (use 'tools')"),
    "function_call": ((None,), "the deprecated 'function_call' field " + OFF_ONLY_REASON + " (use 'tool_choice')"),
}


class ChatRequest(OpenAIFields):
    """POST /v1/chat/completions (messages are checked by vkmtp.text.chat_template when the template renders them)."""

    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = CHAT_OFF_ONLY

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: Bool = True
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    reasoning_format: Str | None = None  # None: the server's --reasoning-format
    logprobs: Bool | None = None         # the chosen token's log-probability for each output token
    top_logprobs: TopCount | None = None  # and the most likely alternatives (needs logprobs: true)
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None
    verbosity: Any = None
    functions: Any = None
    function_call: Any = None
    # accepted without effect: bookkeeping for OpenAI's own platform
    metadata: dict[str, Any] | None = None
    store: Bool | None = None
    service_tier: ShortStr | None = None
    prompt_cache_key: ShortStr | None = None
    safety_identifier: ShortStr | None = None

    @field_validator("tool_choice")
    @classmethod
    def _check_tool_choice(cls, value: Any) -> Any:
        if value is None or value in ("auto", "none", "required"):
            return value
        if isinstance(value, dict):   # {"type": "function", "function": {"name": ...}}: checked with the tools
            return value
        raise ValueError("must be 'auto', 'none', 'required' or a named function")

    @field_validator("reasoning_format")
    @classmethod
    def _check_reasoning_format(cls, value: str | None) -> str | None:
        if value is not None and value not in REASONING_FORMATS:
            raise ValueError(f"must be one of {', '.join(REASONING_FORMATS)}")
        return value

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> "ChatRequest":
        if self.top_logprobs not in (None, 0) and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs: true (as OpenAI)")
        return self

    def probs_request(self) -> ProbsRequest | None:
        return ProbsRequest(self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _tools_offered(self) -> "ChatRequest":
        if self.tool_choice == "none":  # the template is not shown the tools, and no calls are parsed
            self.tools = None
        return self


COMPLETION_OFF_ONLY = {
    **OPENAI_OFF_ONLY,
    "echo": ((False, None), "echo " + OFF_ONLY_REASON),
    "suffix": ((None, ""), "suffix (fill-in-the-middle) " + OFF_ONLY_REASON),
    "best_of": ((1, None), "best_of > 1 " + OFF_ONLY_REASON),
}


class CompletionRequest(OpenAIFields):
    """POST /v1/completions: one prompt (text or token ids)."""

    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = COMPLETION_OFF_ONLY

    prompt: Any
    logprobs: TopCount | None = None   # the legacy form: log-probabilities and the top `logprobs` alternatives
    echo: Any = None
    suffix: Any = None
    best_of: Any = None

    def probs_request(self) -> ProbsRequest | None:
        return ProbsRequest(self.logprobs) if self.logprobs is not None else None


class LlamaCompletionRequest(GenerationFields):
    """POST /completion, llama-server's native endpoint."""

    OFF_ONLY: ClassVar[dict[str, tuple[tuple, str]]] = {
        **GENERATION_OFF_ONLY,
        "response_fields": ((None, []), "response_fields " + OFF_ONLY_REASON),
    }

    prompt: Any
    n_predict: TokenCount = -1
    return_tokens: Bool = False
    response_fields: Any = None
    model: Str | None = None  # no effect: one model per server


class TokenizeRequest(Strict):
    content: Str
    add_special: Bool = False
    parse_special: Bool = True
    with_pieces: Bool = False


class DetokenizeRequest(Strict):
    tokens: list[Annotated[int, Field(strict=True)]]


class ApplyTemplateRequest(Strict):
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
