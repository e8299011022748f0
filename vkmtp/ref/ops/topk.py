"""NumPy reference of shaders/topk.comp (vkmtp.ops.topk.TopK)."""

from __future__ import annotations

import numpy as np


def topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k greatest values of each row of x [n_rows, n], descending, ties to the lower index, NaN as -inf.

    Returns (values [n_rows, k] f32, ids [n_rows, k] uint32).
    """
    x = np.where(np.isnan(x), -np.inf, np.asarray(x, np.float32))
    order = np.argsort(-x, axis=-1, kind="stable")[:, :k]   # stable: equal values keep index order
    return np.take_along_axis(x, order, axis=-1), order.astype(np.uint32)
