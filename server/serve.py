"""Run the server with uvicorn (what `vkmtp serve` calls)."""

from __future__ import annotations

import gc

import uvicorn

from vkmtp.server import logs
from vkmtp.server.app import create_app
from vkmtp.server.config import ServerConfig
from vkmtp.server.model_info import ModelInfo
from vkmtp.engine.factory import EngineFactory


def serve(
    config: ServerConfig,
    model_path: str,
    backend: str,
    alias: str | None = None,
    log_level: str = "info",
    chat_template: str | None = None,
    log_format: str = "text",
) -> None:
    """Check the model file and the backend first (errors surface before the port opens), then serve until
    interrupted. The engine loads in the scheduler thread while /health answers 503; if that load fails the
    server stops and this raises, so `vkmtp serve` exits with the reason."""
    logs.configure(log_level, log_format)
    info = ModelInfo.load(model_path, alias, chat_template)
    if backend == "vulkan":  # fail now, with the reason, rather than in the scheduler thread
        try:
            import vkmtp.engine.vulkan  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"the Vulkan engine is not available in this build ({exc}); use --backend reference"
            ) from None
    load_errors: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_error(message: str) -> None:
        load_errors.append(message)
        server.should_exit = True

    app = create_app(config, info, EngineFactory(model_path, config.engine, backend), on_load_error)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=5,
            log_config=None,  # uvicorn's records go through the handler configured above
        )
    )
    logs.log_start(info, config, backend)
    gc.freeze()  # start-up objects live forever: the collection at each sleep then only walks engine garbage
    server.run()
    if load_errors:
        raise RuntimeError(f"loading the model failed: {load_errors[0]}")
