"""NumPy reference of vkmtp.ops.token_probs.TokenProbs (shaders/topk.comp + shaders/logsumexp.comp)."""

from __future__ import annotations

import numpy as np

from vkmtp.ref.ops.topk import topk


def logsumexp(x: np.ndarray) -> np.ndarray:
    """log sum exp of each row of x [n_rows, n] in float64 (NaN as -inf; -inf for a row of only -inf)."""
    x = np.where(np.isnan(x), -np.inf, np.asarray(x, np.float64))
    m = x.max(axis=-1)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(m), safe + np.log(np.exp(x - safe[:, None]).sum(axis=-1)), m)


def token_probs(x: np.ndarray, k: int, chosen: np.ndarray | None = None):
    """(top values [n_rows, k] f32, top ids [n_rows, k] uint32, lse [n_rows], chosen logit [n_rows]):
    log p of id i in row r is x[r, i] - lse[r]."""
    x = np.asarray(x, np.float32)
    vals, ids = topk(x, k) if k > 0 else (np.zeros((x.shape[0], 0), np.float32), np.zeros((x.shape[0], 0), np.uint32))
    lse = logsumexp(x)
    picked = np.zeros(x.shape[0], np.float32) if chosen is None else \
        np.where(np.isnan(x[np.arange(x.shape[0]), chosen]), -np.inf, x[np.arange(x.shape[0]), chosen])
    return vals, ids, lse, picked
