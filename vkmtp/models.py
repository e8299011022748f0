"""The embedded default model: `vkmtp generate` / `vkmtp serve` without -m use it (models/ in the repository)."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def default_model_path() -> str:
    """VKMTP_MODEL if set, else the demo GGUF shipped in models/."""
    env = os.environ.get("VKMTP_MODEL")
    if env:
        return env
    found = sorted(MODELS_DIR.glob("vkmtp-demo-*.gguf"))
    if not found:
        raise FileNotFoundError(f"no default model: {MODELS_DIR} has no vkmtp-demo-*.gguf; pass -m MODEL.gguf")
    return str(found[-1])
