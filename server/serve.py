"""Run the server with uvicorn (what `vkmtp serve` calls)."""

from __future__ import annotations

import gc
import logging

import uvicorn

from server.app import create_app
from server.config import ServerConfig
from server.model_info import ModelInfo
from vkmtp.engine.factory import load_engine


def serve(
    config: ServerConfig, model_path: str, backend: str, alias: str | None = None, log_level: str = "info"
) -> None:
    """Check the model file and the backend first (errors surface before the port opens), then serve until
    interrupted. The engine itself loads in the scheduler thread while /health answers 503."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    info = ModelInfo.load(model_path, alias)
    if backend == "vulkan":  # fail now, with the reason, rather than in the scheduler thread
        try:
            import vkmtp.engine.vulkan  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"the Vulkan engine is not available in this build ({exc}); " f"use --backend reference"
            ) from None
    app = create_app(config, info, lambda: load_engine(model_path, config.engine, backend))
    gc.freeze()  # start-up objects live forever: the collection at each sleep then only walks engine garbage
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=5)
