"""The HTTP server: a flat route table (llama-server's paths and aliases), API-key check, JSON errors.

`create_app(config, info, engine_factory)` builds the FastAPI app; its lifespan starts the scheduler thread,
which builds the engine (GET /health answers 503 "Loading model" until then) and owns it from then on.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from vkmtp.server import generation, info_routes, slot_routes
from vkmtp.server.config import ServerConfig
from vkmtp.server.context import ServerContext, api_handler
from vkmtp.server.errors import AUTHENTICATION, NOT_FOUND, NOT_SUPPORTED, SERVER, ApiError, bad_request
from vkmtp.server.metrics import Metrics, StatsBook
from vkmtp.server.model_info import ModelInfo
from vkmtp.server.scheduler import Scheduler
from vkmtp.engine.api import Engine

ROUTES = [
    # method, path, handler
    ("GET", "/health", info_routes.health),
    ("GET", "/v1/health", info_routes.health),
    ("GET", "/models", info_routes.models),
    ("GET", "/v1/models", info_routes.models),
    ("GET", "/props", info_routes.props),
    ("GET", "/slots", info_routes.slots),
    ("POST", "/slots/{id_slot}", slot_routes.slot_action),
    ("GET", "/metrics", info_routes.metrics),
    ("POST", "/completion", generation.llama_completion),
    ("POST", "/completions", generation.completions),
    ("POST", "/v1/completions", generation.completions),
    ("POST", "/chat/completions", generation.chat_completions),
    ("POST", "/v1/chat/completions", generation.chat_completions),
    ("POST", "/tokenize", info_routes.tokenize),
    ("POST", "/detokenize", info_routes.detokenize),
    ("POST", "/apply-template", info_routes.apply_template),
]

# llama-server endpoints vkmtp does not serve: 501 in llama-server's error shape, saying so
NOT_SERVED = {
    "/v1/embeddings": "embeddings", "/embeddings": "embeddings", "/embedding": "embeddings",
    "/infill": "fill-in-the-middle (/infill)", "/reranking": "reranking", "/rerank": "reranking",
    "/v1/rerank": "reranking", "/v1/responses": "the OpenAI Responses API",
    "/v1/messages": "the Anthropic Messages API",
}


def _not_served(what: str) -> Callable:
    async def handler() -> Response:
        return ApiError(501, f"vkmtp does not serve {what}: it is a chat and text completion server for "
                             f"Qwen3.5/3.6 (see docs/SERVER.md)", NOT_SUPPORTED).response()

    return handler


# llama-server lets these through without the API key (monitoring and model discovery)
PUBLIC_PATHS = frozenset({"/health", "/v1/health", "/models", "/v1/models"})

# The chat page (server/webui/, package data): `/` is index.html, the rest is under /webui/. Like llama-server's
# page it loads without the API key (it asks for the key and sends it with its API requests).
WEBUI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page needs nothing but its own files and this server's API; model text never runs as markup.
WEBUI_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _static(data: bytes, media_type: str) -> Callable:
    async def handler() -> Response:
        return Response(data, media_type=media_type, headers=WEBUI_HEADERS)

    return handler


def webui_routes() -> dict[str, Callable]:
    """URL path -> handler for each file of the chat page, read once from the package."""
    folder = resources.files("vkmtp.server") / "webui"
    return {
        "/" if name == "index.html" else f"/webui/{name}": _static((folder / name).read_bytes(), media_type)
        for name, media_type in WEBUI_FILES.items()
    }


class ApiKeyMiddleware:
    """`Authorization: Bearer <key>` (or `X-Api-Key: <key>`) on every path but the public ones."""

    def __init__(self, app: ASGIApp, api_key: str | None, public: frozenset[str] = PUBLIC_PATHS):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.api_key is None or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"")
        token = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"").strip()
        if token and hmac.compare_digest(token, self.api_key):
            await self.app(scope, receive, send)
            return
        await ApiError(401, "Invalid API Key", AUTHENTICATION).response()(scope, receive, send)


def _http_error(request, exc: StarletteHTTPException):
    if exc.status_code == 404:
        return ApiError(404, "File Not Found", NOT_FOUND).response()
    if exc.status_code == 405:
        return ApiError(405, f"method {request.method} is not allowed on {request.url.path}").response()
    return ApiError(exc.status_code, str(exc.detail)).response()


def _validation_error(request, exc: RequestValidationError):
    return bad_request(f"invalid request: {exc.errors()[:1]}").response()


def _internal_error(request, exc: Exception):
    return ApiError(500, f"internal error: {type(exc).__name__}", SERVER).response()


def create_app(
    config: ServerConfig,
    info: ModelInfo,
    engine_factory: Callable[[], Engine],
    on_load_error: Callable[[str], None] | None = None,
) -> FastAPI:
    """The server app for one model; `engine_factory` builds the engine (again after each sleep);
    `on_load_error` see Scheduler."""
    stats = StatsBook()
    scheduler = Scheduler(
        engine_factory,
        config.engine.n_slots,
        stats,
        max_queue=config.max_queue,
        sleep_idle_seconds=config.sleep_idle_seconds,
        on_load_error=on_load_error,
    )
    ctx = ServerContext(config, info, scheduler, stats, Metrics(stats), int(time.time()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        try:
            yield
        finally:
            await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="vkmtp", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    for method, path, handler in ROUTES:
        app.add_api_route(path, api_handler(handler), methods=[method], include_in_schema=False)
    for path, what in NOT_SERVED.items():
        app.add_api_route(path, _not_served(what), methods=["GET", "POST"], include_in_schema=False)
    page = {} if config.no_webui else webui_routes()
    for path, handler in page.items():
        app.add_api_route(path, handler, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, public=PUBLIC_PATHS | frozenset(page))
    return app
