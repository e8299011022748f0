"""Reference of vkmtp.ops.get_rows: dequantize the table rows of the given token ids."""

from __future__ import annotations

import numpy as np

from vkmtp.gguf import dequantize


def get_rows(table: np.ndarray, ggml_type: int, n_vocab: int, n_embd: int, ids: np.ndarray) -> np.ndarray:
    """Args:
        table: [n_vocab, row_bytes] u8 raw GGUF rows
        ids: [n_tok] token ids (ids >= n_vocab give NaN rows, as the GPU op writes)
    Returns:
        [n_tok, n_embd] f32
    """
    rows = np.asarray(table).reshape(n_vocab, -1)
    ids = np.asarray(ids, np.int64).reshape(-1)
    out = np.full((ids.size, n_embd), np.nan, np.float32)
    valid = ids < n_vocab
    if valid.any():
        picked = np.ascontiguousarray(rows[ids[valid]])
        out[valid] = dequantize(picked.reshape(-1), ggml_type, (int(valid.sum()), n_embd))
    return out
