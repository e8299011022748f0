"""Server settings (llama-server's flag names in the comments); the engine's own live in EngineConfig."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vkmtp.engine.api import EngineConfig
from vkmtp.sampling import SamplingParams

MiB = 2**20


@dataclass(frozen=True)
class ServerConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = "127.0.0.1"  # --host (loopback unless asked otherwise)
    port: int = 8080  # --port
    api_key: str | None = None  # --api-key: Bearer token for everything but /health and /models
    max_body_bytes: int = 16 * MiB  # --max-body-bytes: larger request bodies get a 413
    max_queue: int = 64  # --max-queue: requests waiting for a slot before 503s
    n_predict: int = -1  # -n / --n-predict: cap on tokens per request (-1: the context)
    cache_prompt: bool = True  # --no-cache-prompt: a request's cache_prompt when it does not say
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # --chat-template-kwargs (requests add)
    reasoning_format: str = "auto"  # --reasoning-format: none | deepseek | auto (requests may say)
    sleep_idle_seconds: float | None = None  # --sleep-idle-seconds
    no_webui: bool = False  # --no-webui: no chat page at /
    slot_save_path: str | None = None  # --slot-save-path: directory of slot files (/slots/{id}?action=save|restore)
    sampling: SamplingParams = field(default_factory=SamplingParams)  # --temp, --top-k, ... defaults

    def __post_init__(self):
        checks = [
            ("max_body_bytes", self.max_body_bytes >= 1024, "must be at least 1024"),
            ("max_queue", self.max_queue >= 0, "must be >= 0"),
            ("n_predict", self.n_predict >= -1, "must be >= -1"),
            ("port", 0 <= self.port <= 65535, "must be a TCP port"),
            (
                "sleep_idle_seconds",
                self.sleep_idle_seconds is None or self.sleep_idle_seconds > 0,
                "must be > 0",
            ),
        ]
        if self.slot_save_path is not None and not os.path.isdir(self.slot_save_path):
            raise ValueError(f"--slot-save-path {self.slot_save_path}: not a directory")
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"server setting {name}={getattr(self, name)!r} {rule}")

    def token_budget(self, requested: int | None) -> int:
        """max_tokens / n_predict of a request after the server cap (-1 = until the context is full)."""
        budget = -1 if requested is None else requested
        if self.n_predict >= 0 and (budget < 0 or budget > self.n_predict):
            return self.n_predict
        return budget
