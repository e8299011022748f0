"""Reference of vkmtp.ops.matvec_id: MoE expert mat-vecs, the expert grouping, and the weighted slot sum."""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import row_bytes
from vkmtp.ref.ops.matvec import dequant_f64


def matvec_id(experts: np.ndarray, ggml_type: int, n_expert: int, n_rows: int, n_k: int, x: np.ndarray,
              ids: np.ndarray, x_per_slot: bool = False) -> np.ndarray:
    """Args:
        experts: [n_expert, n_rows, row_bytes] u8 raw GGUF expert stack (or its flat bytes)
        x: [n_tok, n_k] f32, or [n_tok * n_used, n_k] with x_per_slot
        ids: [n_tok, n_used] expert ids (ids >= n_expert give NaN rows, as the GPU op writes)
    Returns:
        [n_tok * n_used, n_rows] f64: row t * n_used + j = W_{ids[t, j]} @ x[t] (or x[t * n_used + j])
    """
    stack = np.asarray(experts).reshape(n_expert, n_rows * row_bytes(ggml_type, n_k))
    ids = np.asarray(ids, np.int64)
    n_tok, n_used = ids.shape
    x = np.asarray(x, np.float64).reshape(-1, n_k)
    out = np.full((n_tok * n_used, n_rows), np.nan)
    for e in np.unique(ids[ids < n_expert]):
        w = dequant_f64(stack[e], ggml_type, n_rows, n_k)
        for t, j in zip(*np.nonzero(ids == e)):
            out[t * n_used + j] = w @ x[t * n_used + j if x_per_slot else t]
    return out


def expert_groups(ids: np.ndarray, cap: int) -> list[tuple[int, list[int]]]:
    """(expert, entry indices) groups as matvec_id_routes.comp builds them: entries i = t * n_used + j with
    the same expert, in increasing order, cut into groups of at most `cap`; groups in order of first entry."""
    flat = np.asarray(ids).reshape(-1)
    seen: dict[int, int] = {}
    openers: list[tuple[int, int, list[int]]] = []
    current: dict[int, list[int]] = {}
    for i, e in enumerate(flat.tolist()):
        rank = seen.get(e, 0)
        seen[e] = rank + 1
        if rank % cap == 0:
            current[e] = [i]
            openers.append((i, e, current[e]))
        else:
            current[e].append(i)
    return [(e, entries) for _, e, entries in openers]


def weighted_sum(slots: np.ndarray, weights: np.ndarray, n_rows: int,
                 y: np.ndarray | None = None) -> np.ndarray:
    """Args:
        slots: [n_tok * n_used, n_rows] expert outputs; weights: [n_tok, n_used] routing weights
        y: [n_tok, n_rows] to accumulate into, or None
    Returns:
        [n_tok, n_rows] f64: sum_j weights[t, j] * slots[t * n_used + j] (+ y)
    """
    w = np.asarray(weights, np.float64)
    n_tok, n_used = w.shape
    s = np.asarray(slots, np.float64).reshape(n_tok, n_used, n_rows)
    out = np.einsum("tj,tjr->tr", w, s)
    return out if y is None else out + np.asarray(y, np.float64)
