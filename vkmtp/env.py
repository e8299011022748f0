"""The environment variables vkmtp reads, all read here (docs/ENVIRONMENT.md is the table of them).

Each function reads its variable when called, never at import, so tests and callers may set one at any time.
The only other reader is tools/build_kp.py (XDG_CACHE_HOME for the kp wheel cache): it runs before vkmtp is
installed and cannot import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

OFF_VALUES = ("off", "0", "no", "false")


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))


def device_index() -> str | None:
    """VKMTP_DEVICE: the Vulkan device index to use when no --device is given (None or '': the best one)."""
    return os.environ.get("VKMTP_DEVICE")


def device_features() -> list[str] | None:
    """VKMTP_FEATURES: the optional device features vkmtp may enable. Unset, '' or 'all': every one the device
    supports (None); 'none': none (the 32-bit-word-only path); else a comma-separated list of names
    (vkmtp.device.info.FEATURE_NAMES)."""
    value = os.environ.get("VKMTP_FEATURES", "").strip().lower()
    if value in ("", "all"):
        return None
    if value == "none":
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def spirv_cache_dir() -> Path:
    """Compiled shaders: $VKMTP_CACHE_DIR/spirv, else $XDG_CACHE_HOME/vkmtp/spirv (~/.cache without it)."""
    base = os.environ.get("VKMTP_CACHE_DIR")
    if base:
        return Path(base) / "spirv"
    return _cache_home() / "vkmtp" / "spirv"


def tuning_dir() -> Path:
    """Tuning profiles: $XDG_CONFIG_HOME/vkmtp/tuning (~/.config without XDG_CONFIG_HOME)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "vkmtp" / "tuning"


def tuning_disabled() -> bool:
    """VKMTP_TUNING=off (or 0, no, false): ignore any saved tuning profile, use the built-in defaults."""
    return os.environ.get("VKMTP_TUNING", "").lower() in OFF_VALUES


def model_override() -> str | None:
    """VKMTP_MODEL: the GGUF `vkmtp generate/chat/serve` use without -m (None or '': the embedded demo model)."""
    return os.environ.get("VKMTP_MODEL") or None


def debug() -> bool:
    """VKMTP_DEBUG set to anything non-empty: the CLI shows a traceback instead of one error line."""
    return bool(os.environ.get("VKMTP_DEBUG"))


def llama_arg_variables() -> dict[str, str]:
    """LLAMA_ARG_*: llama-server's environment spelling of its flags (vkmtp.cli.llama_flags maps them)."""
    return {k: v for k, v in os.environ.items() if k.startswith("LLAMA_ARG_")}


def child_environment() -> dict[str, str]:
    """A copy of this process's environment, for a subprocess that needs additions (glslangValidator)."""
    return dict(os.environ)
