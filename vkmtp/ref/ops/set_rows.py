"""NumPy reference of shaders/set_rows.comp (vkmtp.ops.set_rows.SetRows): KV-cache rows as f16 or Q8_0.

Q8_0 is gguf-py's quantizer, which reproduces ggml's quantize_row_q8_0_ref bit for bit (d = amax / 127 in
f32, q = roundf(x / d) via x * (1/d), ties away from zero, d stored as f16).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants


def encode_rows(x: np.ndarray, kv_type: str) -> np.ndarray:
    """f32 rows [n_rows, n] -> cache bytes [n_rows, row_bytes] uint8 (f16 values or Q8_0 blocks)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if kv_type == "f16":
        return x.astype(np.float16).view(np.uint8)
    if kv_type == "q8_0":
        with np.errstate(invalid="ignore", over="ignore"):
            return gguf_quants.quantize(x, GGMLQuantizationType.Q8_0)
    raise ValueError(f"unknown KV cache type {kv_type!r}")


def decode_rows(raw: np.ndarray, kv_type: str, n: int) -> np.ndarray:
    """Cache bytes [n_rows, row_bytes] uint8 -> f32 values [n_rows, n]."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if kv_type == "f16":
        return raw.view(np.float16).astype(np.float32).reshape(raw.shape[0], n)
    if kv_type == "q8_0":
        return np.asarray(gguf_quants.dequantize(raw, GGMLQuantizationType.Q8_0), np.float32).reshape(-1, n)
    raise ValueError(f"unknown KV cache type {kv_type!r}")


def set_rows(records: np.ndarray, x: np.ndarray, cache: np.ndarray, n_ctx: int, kv_type: str) -> np.ndarray:
    """Write token t's row into cache row seq_t * n_ctx + pos_t.

    Args:
        records: [n_tok, 4] uint32 {token_id, pos, seq, flags}.
        x: [n_tok, n_head_kv * head_dim] f32.
        cache: [n_slots * n_ctx, row_bytes] uint8, left unchanged (a copy is returned).
    Returns:
        the updated copy of cache.
    """
    out = np.array(cache, dtype=np.uint8, copy=True)
    rows = records[:, 2].astype(np.int64) * n_ctx + records[:, 1].astype(np.int64)
    out[rows] = encode_rows(np.asarray(x, np.float32).reshape(len(rows), -1), kv_type)
    return out
