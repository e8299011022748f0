"""Errors in OpenAI's shape `{"error": {"code", "message", "type"}}`, as llama-server sends them.

Every failure a client can cause becomes an `ApiError` with a 4xx status and a message naming the field
and the problem; anything else becomes a 500 with a one-line message (the traceback goes to the server log).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

# llama-server's error types (server-common.h `error_type`)
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER = "server_error"
PERMISSION = "permission_error"
UNAVAILABLE = "unavailable_error"
NOT_SUPPORTED = "not_supported_error"
EXCEED_CONTEXT = "exceed_context_size_error"


class ApiError(Exception):
    """An error response: HTTP status, llama-server error type, message and optional extra fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = INVALID_REQUEST,
        headers: dict | None = None,
        **extra: Any,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.headers = headers
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"code": self.status, "message": self.message, "type": self.type, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def loading() -> ApiError:
    return ApiError(503, "Loading model", UNAVAILABLE)


def prompt_too_long(n_prompt: int, n_ctx: int) -> ApiError:
    """llama-server's answer to a prompt that does not fit the slot's context."""
    return ApiError(
        400,
        f"the request exceeds the available context size ({n_prompt} prompt tokens, the "
        f"context holds {n_ctx} per slot including at least one generated token), "
        f"try increasing it",
        EXCEED_CONTEXT,
        n_prompt_tokens=n_prompt,
        n_ctx=n_ctx,
    )


def describe_validation_error(exc: ValidationError) -> str:
    """'field.path: problem' for each pydantic error, e.g. `max_tokens: Input should be a valid integer`."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = err.get("msg", "invalid value").removeprefix("Value error, ")
        if err.get("type") == "missing":
            message = "field required"
        elif err.get("type") == "extra_forbidden":
            message = "unknown field (not a field this endpoint takes; docs/SERVER.md lists them)"
        parts.append(f"{where}: {message}" if where else message)
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
