"""NumPy reference of shaders/argmax.comp (vkmtp.ops.argmax.Argmax)."""

from __future__ import annotations

import numpy as np


def argmax(x: np.ndarray) -> np.ndarray:
    """Index of the greatest value of each row of x [n_rows, n]; NaN counts as -inf, ties -> lowest index.

    Returns [n_rows] uint32.
    """
    x = np.where(np.isnan(x), -np.inf, np.asarray(x, np.float32))
    return np.argmax(x, axis=-1).astype(np.uint32)  # np.argmax returns the first maximum
