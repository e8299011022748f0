"""NumPy references of shaders/elementwise.comp (vkmtp.ops.elementwise): add, SwiGLU, sigmoid-gated add."""

from __future__ import annotations

import numpy as np


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n_tok, n] f32 + [n_tok, n] f32 (exact in f32)."""
    return np.asarray(a, np.float32) + np.asarray(b, np.float32)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up, [n_tok, n], computed in float64."""
    g = np.asarray(gate, np.float64)
    return (g * np.exp(-np.logaddexp(0.0, -g)) * np.asarray(up, np.float64)).astype(np.float32)


def sigmoid_scale_add(x: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y + sigmoid(s_t) * x_t for x, y [n_tok, n] and s [n_tok]; returns the new y."""
    gate = np.exp(-np.logaddexp(0.0, -np.asarray(s, np.float64)))[:, None]
    return (np.asarray(y, np.float64) + gate * np.asarray(x, np.float64)).astype(np.float32)
