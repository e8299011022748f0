"""The embedded default model: `vkmtp generate` / `vkmtp serve` without -m use it (package data `vkmtp.models`,
the repository's models/ folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vkmtp import env


def models_dir() -> Path:
    """Where the demo GGUF lies: site-packages/vkmtp/models in a wheel, models/ in a developer checkout."""
    return Path(str(resources.files("vkmtp.models")))


def default_model_path() -> str:
    """VKMTP_MODEL if set, else the demo GGUF shipped with the package."""
    override = env.model_override()
    if override:
        return override
    found = sorted(models_dir().glob("vkmtp-demo-*.gguf"))
    if not found:
        raise FileNotFoundError(f"no default model: {models_dir()} has no vkmtp-demo-*.gguf; pass -m MODEL.gguf")
    return str(found[-1])
