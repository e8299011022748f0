"""Layout of one layer's K (or V) cache: rows of all KV heads of one position, f16 or Q8_0.

Row `seq * n_ctx + pos` holds position `pos` of sequence slot `seq`: n_head_kv heads of head_dim values,
stored as f16 pairs (one word per two values) or as Q8_0 blocks of 32 values (34 bytes: f16 scale, 32 int8)
along the row, blocks never straddling heads (llama.cpp's layout, vulkan-kernels.md §3.6). Shaders address
whole 32-bit words, so a Q8_0 head must be an even number of blocks (head_dim % 64 == 0): it then starts on
a word boundary and spans head_dim / 64 * 17 words.
"""

from __future__ import annotations

from dataclasses import dataclass

KV_TYPES = ("f16", "q8_0")


@dataclass(frozen=True)
class KvLayout:
    kv_type: str     # "f16" | "q8_0"
    n_head_kv: int
    head_dim: int
    n_ctx: int       # rows (positions) per sequence slot
    n_slots: int = 1

    def __post_init__(self):
        if self.kv_type not in KV_TYPES:
            raise ValueError(f"KV cache type {self.kv_type!r} is not one of {KV_TYPES}")
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even")
        if self.kv_type == "q8_0" and self.head_dim % 64:
            raise ValueError(f"a q8_0 KV cache needs head_dim % 64 == 0 (whole words per head), got {self.head_dim}")
        if min(self.n_head_kv, self.n_ctx, self.n_slots) < 1:
            raise ValueError(f"empty KV layout {self}")

    @property
    def head_words(self) -> int:
        return self.head_dim // 2 if self.kv_type == "f16" else self.head_dim // 64 * 17

    @property
    def row_words(self) -> int:
        return self.n_head_kv * self.head_words

    @property
    def row_bytes(self) -> int:
        return self.row_words * 4

    @property
    def n_rows(self) -> int:
        return self.n_slots * self.n_ctx

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes

    @property
    def store_define(self) -> str:
        """The head_store.glsl define writing this type."""
        return "OUT_F16" if self.kv_type == "f16" else "OUT_Q8_0"

    @property
    def load_suffix(self) -> str:
        return "F16" if self.kv_type == "f16" else "Q8_0"
