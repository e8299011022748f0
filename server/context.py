"""What every handler needs: the server's shared objects, the size-limited JSON body, and strict parsing."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from vkmtp.engine.api import EngineConfig
from vkmtp.server.config import ServerConfig
from vkmtp.server.errors import SERVER, ApiError, bad_request, describe_validation_error
from vkmtp.server.metrics import Metrics, StatsBook
from vkmtp.server.model_info import ModelInfo
from vkmtp.server.scheduler import Scheduler
from vkmtp.server.text import render_chat

log = logging.getLogger("vkmtp.server")
M = TypeVar("M", bound=BaseModel)


@dataclass
class ServerContext:
    config: ServerConfig
    info: ModelInfo
    scheduler: Scheduler
    stats: StatsBook
    metrics: Metrics
    started: int  # unix time the server started

    @property
    def engine_config(self) -> EngineConfig:
        """The engine settings in force: what the loaded engine resolved (tuning profile, fitted context),
        or the configured ones before the first load."""
        return self.scheduler.engine_config or self.config.engine

    @property
    def speculative(self) -> bool:
        """MTP drafting is on: enabled and the model has an MTP head."""
        return self.config.engine.spec.enabled and self.info.has_mtp

    def chat_prompt(self, body: Any) -> str:
        """The prompt text of a chat body (messages, tools, chat_template_kwargs over the server's
        --chat-template-kwargs); a 400 naming what is wrong."""
        kwargs = {**self.config.chat_template_kwargs, **body.chat_template_kwargs}
        try:
            return render_chat(self.info.template, body.messages, body.tools, kwargs)
        except ValueError as exc:
            raise bad_request(str(exc)) from None


def context_of(request: Request) -> ServerContext:
    return request.app.state.ctx


def api_handler(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn ApiError into its JSON error response and anything unexpected into a 500 without a traceback."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", SERVER).response()

    return wrapped


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object: at most `limit` bytes (413), UTF-8, valid JSON, an object (400)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request(f"invalid Content-Length header {declared[:40]!r}")
        if int(declared) > limit:
            raise ApiError(413, f"the request body has {int(declared)} bytes; the limit is {limit} bytes")
    parts, total = [], 0
    async for part in request.stream():
        total += len(part)
        if total > limit:
            raise ApiError(413, f"the request body exceeds the limit of {limit} bytes")
        parts.append(part)
    raw = b"".join(parts)
    if not raw.strip():
        raise bad_request("the request body is empty (expected a JSON object)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the request body is not valid UTF-8 (bad byte at offset {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"invalid JSON in the request body: {exc.msg} at line {exc.lineno} " f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise bad_request("invalid JSON in the request body: nested too deeply") from None
    except ValueError as exc:
        raise bad_request(f"invalid JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a body against a schema; a failure is a 400 naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request(describe_validation_error(exc)) from None


async def read_request(request: Request, model: type[M]) -> M:
    return parse(model, await read_json(request, context_of(request).config.max_body_bytes))
