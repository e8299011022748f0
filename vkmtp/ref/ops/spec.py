"""NumPy reference of shaders/spec.comp (same argument order as vkmtp.ops.spec.SpecOps)."""

from __future__ import annotations

import numpy as np


def draft_token(ids: np.ndarray, valid: np.ndarray, verify_tokens: np.ndarray, next_draft_tokens: np.ndarray,
                K: int, i: int, top_values: np.ndarray | None = None, p_min: float = 0.0) -> None:
    """In place. ids [S]; valid [S, K] uint; verify_tokens [S, K+1]; next_draft_tokens [S]."""
    for s in range(len(ids)):
        ok = 1 if i == 0 else int(valid[s, i - 1])
        if p_min > 0 and top_values is not None:
            tv = np.asarray(top_values[s], dtype=np.float32)
            p_top1 = 1.0 / np.sum(np.exp(tv - tv[0]))
            if p_top1 < p_min:
                ok = 0
        valid[s, i] = ok
        verify_tokens[s, i + 1] = ids[s]
        if i + 1 < K:
            next_draft_tokens[s] = ids[s]


def accept(verify_ids: np.ndarray, valid: np.ndarray, verify_tokens: np.ndarray,
           uniforms: np.ndarray | None = None, rate: float = 0.0,
           n_min: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verify_ids [S, V]; valid [S, K]; verify_tokens [S, V] (row 0 = last token, rows 1.. = drafts).
    Returns out_ids [S, V] (only the first m+1 meaningful), accept [S], n_valid [S]."""
    S, V = verify_ids.shape
    out = np.zeros((S, V), dtype=np.uint32)
    acc = np.zeros(S, dtype=np.uint32)
    n_valid = valid.astype(bool).sum(axis=1).astype(np.uint32)
    n_valid[n_valid < n_min] = 0
    for s in range(S):
        m = 0
        while m < n_valid[s] and (uniforms[s, m] < rate if rate > 0 else
                                         verify_ids[s, m] == verify_tokens[s, m + 1]):
            out[s, m] = verify_tokens[s, m + 1]
            m += 1
        out[s, m] = verify_ids[s, m]
        acc[s] = m
    return out, acc, n_valid


def copy_rows(pairs: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """In place: dst[pairs[r, 1]] = src[pairs[r, 0]]. pairs [n, 2] uint; src [rows, width]; dst [rows, width]."""
    for s_row, d_row in pairs:
        dst[int(d_row)] = src[int(s_row)]


def shift_rows(pairs: np.ndarray, ring_pairs: np.ndarray, src: np.ndarray, cur: np.ndarray, ring: np.ndarray) -> None:
    """In place, for each r: ring[ring_pairs[r, 1]] = cur[pairs[r, 1]], then cur[pairs[r, 1]] = src[pairs[r, 0]].
    pairs [n, 2] {src row, slot} (distinct slots); ring_pairs [n, 2] {slot, ring row}; rows of equal width."""
    slots = [int(slot) for _, slot in pairs]
    if len(set(slots)) != len(slots):
        raise ValueError("shift_rows: a slot appears twice")
    for (s_row, slot), (_, ring_row) in zip(pairs, ring_pairs):
        ring[int(ring_row)] = cur[int(slot)]
        cur[int(slot)] = src[int(s_row)]
