"""Request bodies of the HTTP API (pydantic), checked strictly so that a wrong type is a 400 naming the field.

Unknown fields are accepted and ignored, as llama-server does (clients send many OpenAI extras). Fields
we know but cannot honour (n > 1, logprobs, json response formats, echo, suffix) are rejected with a clear
message instead of being silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vkmtp.sampling import SamplingParams

INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1

Int = Annotated[int, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(strict=True, ge=-1, le=INT32_MAX)]  # -1 = until the context is full


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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: Bool = False


class GenerationFields(BaseModel):
    """Sampling and stopping fields shared by every generating endpoint (llama.cpp names and defaults)."""

    model_config = ConfigDict(extra="allow")

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
    n_probs: Annotated[int, Field(strict=True, ge=0)] = 0

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: Any) -> list[str]:
        return _as_stop_list(value)

    @field_validator("n_probs")
    @classmethod
    def _check_n_probs(cls, value: int) -> int:
        if value:
            raise ValueError("token probabilities (n_probs / logprobs) are not supported by this server")
        return value

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


class OpenAIFields(GenerationFields):
    """OpenAI request fields common to chat and text completions."""

    model: Str | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    n_predict: TokenCount | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=1)] = 1
    logprobs: Any = None
    stream_options: StreamOptions | None = None

    @field_validator("logprobs")
    @classmethod
    def _check_logprobs(cls, value: Any) -> Any:
        if value not in (None, False, 0):
            raise ValueError("logprobs are not supported by this server")
        return value

    @property
    def token_budget(self) -> int | None:
        for value in (self.max_completion_tokens, self.max_tokens, self.n_predict):
            if value is not None:
                return value
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(OpenAIFields):
    """POST /v1/chat/completions (messages are checked by vkmtp.text.chat_template when the template renders them)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _check_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError(f"response_format type {value.get('type')!r} is not supported (only 'text')")
        return value


class CompletionRequest(OpenAIFields):
    """POST /v1/completions: one prompt (text or token ids)."""

    prompt: Any
    echo: Bool = False
    suffix: Str | None = None

    @field_validator("echo")
    @classmethod
    def _check_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported by this server")
        return value

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (fill-in-the-middle) is not supported by this server")
        return value


class LlamaCompletionRequest(GenerationFields):
    """POST /completion, llama-server's native endpoint."""

    prompt: Any
    n_predict: TokenCount = -1
    return_tokens: Bool = False


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    content: Str
    add_special: Bool = False
    parse_special: Bool = True
    with_pieces: Bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tokens: list[Annotated[int, Field(strict=True)]]


class ApplyTemplateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
