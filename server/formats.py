"""JSON shapes of the responses: OpenAI chat / text completions (whole and streamed) and llama-server's
/completion. Each final response carries llama-server's `timings` (draft fields only when drafting happened).

A `Formatter` turns a job's Chunks and Outcome into the objects to send; streaming sends them as SSE events.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any, Iterator

from vkmtp.server.probs_json import ProbsWriter
from vkmtp.server.scheduler import Chunk, Outcome
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig
from vkmtp.text.reasoning import REASONING
from vkmtp.text.reply import CallArguments, CallStart, ReplyFormat, ReplyParser, parse_reply

SYSTEM_FINGERPRINT = "vkmtp-0.1.0"


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def generation_settings(
    params: SamplingParams, n_predict: int, stop: list[str], spec: SpecConfig, speculative: bool, n_ctx: int
) -> dict[str, Any]:
    """llama-server's `generation_settings` / slot `params` block."""
    return {
        "n_predict": n_predict,
        "seed": -1 if params.seed is None else params.seed,
        "temperature": params.temperature,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "repeat_last_n": params.repeat_last_n,
        "repeat_penalty": params.repeat_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "stop": list(stop),
        "n_ctx": n_ctx,
        "speculative.n_max": spec.n_max,
        "speculative.n_min": spec.n_min,
        "speculative.p_min": spec.p_min,
        "speculative.types": "none,draft-mtp" if speculative else "none",
    }


def usage(outcome: Outcome) -> dict[str, Any]:
    n_completion = len(outcome.tokens)
    return {
        "completion_tokens": n_completion,
        "prompt_tokens": outcome.n_prompt,
        "total_tokens": outcome.n_prompt + n_completion,
        "prompt_tokens_details": {"cached_tokens": outcome.n_cached},
    }


class Formatter(ABC):
    """Base: ids and the envelope shared by all chunks of one response."""

    stream_done = SSE_DONE

    def __init__(self, model: str, prefix: str, probs: ProbsWriter | None = None):
        self.model = model
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.probs = probs   # the request asked for token probabilities: how to write them

    def start(self) -> Iterator[dict]:
        return iter(())

    @abstractmethod
    def chunk(self, chunk: Chunk) -> Iterator[dict]:
        """Stream objects for a piece of text."""

    @abstractmethod
    def final_chunks(self, outcome: Outcome) -> Iterator[dict]:
        """Stream objects that end the response (finish reason, timings, usage)."""

    @abstractmethod
    def response(self, outcome: Outcome) -> dict:
        """The whole non-streamed response."""


class OpenAIFormatter(Formatter):
    """OpenAI's envelope (id, created, model, object) around choices; `stream_options.include_usage` adds a
    last chunk with usage and no choices."""

    object_name = ""  # "object" of the streamed chunks

    def __init__(self, model: str, prefix: str, include_usage: bool, probs: ProbsWriter | None = None):
        super().__init__(model, prefix, probs)
        self.include_usage = include_usage

    def _envelope(self, choices: list, object_name: str | None = None, **extra: Any) -> dict:
        return {
            "choices": choices,
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "object": object_name or self.object_name,
            **extra,
        }

    def _usage_chunk(self, outcome: Outcome, timings: dict) -> Iterator[dict]:
        if self.include_usage:
            yield self._envelope([], usage=usage(outcome), timings=timings)


class ChatFormatter(OpenAIFormatter):
    """/v1/chat/completions: the reply split into reasoning_content, content and tool_calls (ReplyFormat);
    streamed as OpenAI does (`delta.tool_calls` with index, id and name first, then argument text)."""

    object_name = "chat.completion.chunk"

    def __init__(self, model: str, include_usage: bool, reply_format: ReplyFormat | None = None,
                 probs: ProbsWriter | None = None):
        super().__init__(model, "chatcmpl", include_usage, probs)
        self.reply_format = reply_format or ReplyFormat(reasoning=False)
        self.parser = ReplyParser(self.reply_format)

    def start(self) -> Iterator[dict]:
        yield self._envelope(
            [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}]
        )

    def _deltas(self, pieces: list) -> Iterator[dict]:
        for piece in pieces:
            if isinstance(piece, CallStart):
                delta = {"tool_calls": [{"index": piece.index, "id": piece.id, "type": "function",
                                         "function": {"name": piece.name, "arguments": ""}}]}
            elif isinstance(piece, CallArguments):
                delta = {"tool_calls": [{"index": piece.index, "function": {"arguments": piece.arguments}}]}
            else:
                kind, text = piece
                delta = {"reasoning_content" if kind == REASONING else "content": text}
            yield self._envelope([{"finish_reason": None, "index": 0, "delta": delta}])

    def _finish_reason(self, outcome: Outcome, has_calls: bool) -> str:
        return "tool_calls" if has_calls and outcome.stop_type != "limit" else outcome.finish_reason

    def chunk(self, chunk: Chunk) -> Iterator[dict]:
        objs = list(self._deltas(self.parser.push(chunk.text))) if chunk.text else []
        yield from self._with_logprobs(objs, chunk.probs)

    def _with_logprobs(self, objs: list[dict], probs) -> list[dict]:
        """The chunk's token log-probabilities ride on its first delta (or on an empty delta of their own when
        the text is held back, e.g. while a stop string or a tool call may be forming)."""
        if self.probs is not None and probs:
            if not objs:
                objs = [self._envelope([{"finish_reason": None, "index": 0, "delta": {}}])]
            objs[0]["choices"][0]["logprobs"] = self.probs.chat(probs)
        return objs

    def final_chunks(self, outcome: Outcome) -> Iterator[dict]:
        yield from self._with_logprobs(list(self._deltas(self.parser.push(outcome.text) + self.parser.finish())),
                                       outcome.last_probs)
        timings = outcome.timings.to_json()
        finish_reason = self._finish_reason(outcome, bool(self.parser.calls))
        yield self._envelope([{"finish_reason": finish_reason, "index": 0, "delta": {}}], timings=timings)
        yield from self._usage_chunk(outcome, timings)

    def response(self, outcome: Outcome) -> dict:
        reply = parse_reply(outcome.content, self.reply_format)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["content"] = reply.content or None
            message["tool_calls"] = [call.to_json() for call in reply.tool_calls]
        choice = {"finish_reason": self._finish_reason(outcome, bool(reply.tool_calls)), "index": 0,
                  "message": message}
        if self.probs is not None:
            choice["logprobs"] = self.probs.chat(outcome.probs or [])
        return self._envelope(
            [choice],
            "chat.completion",
            usage=usage(outcome),
            timings=outcome.timings.to_json(),
        )


class CompletionFormatter(OpenAIFormatter):
    """/v1/completions."""

    object_name = "text_completion"

    def __init__(self, model: str, include_usage: bool, probs: ProbsWriter | None = None):
        super().__init__(model, "cmpl", include_usage, probs)

    def _choice(self, text: str, finish_reason: str | None, probs=None) -> dict:
        logprobs = self.probs.completion(probs or []) if self.probs is not None else None
        return {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}

    def chunk(self, chunk: Chunk) -> Iterator[dict]:
        if chunk.text or (self.probs is not None and chunk.probs):
            yield self._envelope([self._choice(chunk.text, None, chunk.probs)])

    def final_chunks(self, outcome: Outcome) -> Iterator[dict]:
        timings = outcome.timings.to_json()
        yield self._envelope([self._choice(outcome.text, outcome.finish_reason, outcome.last_probs)],
                             timings=timings)
        yield from self._usage_chunk(outcome, timings)

    def response(self, outcome: Outcome) -> dict:
        return self._envelope(
            [self._choice(outcome.content, outcome.finish_reason, outcome.probs)],
            usage=usage(outcome),
            timings=outcome.timings.to_json(),
        )


class LlamaFormatter(Formatter):
    """llama-server's native /completion (streaming sends no [DONE])."""

    stream_done = ""

    def __init__(self, model: str, prompt_text: str, settings: dict, return_tokens: bool, index: int = 0,
                 probs: ProbsWriter | None = None):
        super().__init__(model, "cmpl", probs)
        self.index = index
        self.prompt_text = prompt_text
        self.settings = settings
        self.return_tokens = return_tokens
        self.n_sent = 0

    def chunk(self, chunk: Chunk) -> Iterator[dict]:
        self.n_sent += len(chunk.ids)
        body = {
            "index": self.index,
            "content": chunk.text,
            "tokens": chunk.ids,
            "stop": False,
            "id_slot": -1,
            "tokens_predicted": self.n_sent,
        }
        if self.probs is not None:
            body["completion_probabilities"] = self.probs.llama(chunk.probs or [])
        yield body

    def final_chunks(self, outcome: Outcome) -> Iterator[dict]:
        body = self.response(outcome)
        body["content"] = outcome.text
        body["tokens"] = outcome.ids
        if self.probs is not None:
            body["completion_probabilities"] = self.probs.llama(outcome.last_probs or [])
        yield body

    def response(self, outcome: Outcome) -> dict:
        n_predicted = len(outcome.tokens)
        body = {
            "index": self.index,
            "content": outcome.content,
            "tokens": outcome.tokens if self.return_tokens else [],
            "id_slot": outcome.id_slot,
            "stop": True,
            "model": self.model,
            "tokens_predicted": n_predicted,
            "tokens_evaluated": outcome.n_prompt,
            "generation_settings": self.settings,
            "prompt": self.prompt_text,
            "has_new_line": "\n" in outcome.content,
            "truncated": False,
            "stop_type": outcome.stop_type,
            "stopping_word": outcome.stopping_word,
            "tokens_cached": outcome.n_prompt + max(n_predicted - 1, 0),
            "timings": outcome.timings.to_json(),
        }
        if self.probs is not None:
            body["completion_probabilities"] = self.probs.llama(outcome.probs or [])
        return body
