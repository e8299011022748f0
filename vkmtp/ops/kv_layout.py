"""The KV cache types (one table for the CLI, the memory plan, the GPU and the reference) and the GPU layout.

Row `seq * n_ctx + pos` of one layer's K (or V) cache holds position `pos` of sequence slot `seq`. Slots
0..n_slots-1 have n_ctx rows each; after them come `sink_rows` rows of the engine's sink slot (seq = n_slots),
which only the padding tokens of a prompt chunk write, at positions below the chunk size. Each row holds n_head_kv
heads of head_dim values, stored as f16 pairs (one word per two values) or as Q8_0 blocks of 32 values
(34 bytes: f16 scale, 32 int8) along the row, blocks never straddling heads (llama.cpp's layout). Shaders
address whole 32-bit words, so a Q8_0 head must be an even number of blocks (head_dim % 64 == 0): it then
starts on a word boundary and spans head_dim / 64 * 17 words.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd


@dataclass(frozen=True)
class KvType:
    """One cache type: how a row of values is stored."""

    name: str            # the -ctk / -ctv name (the GGML type's)
    block: int           # values per block
    block_bytes: int     # bytes per block
    shader: str | None   # the head_store.glsl / flash-attention variant suffix; None: no GPU kernels

    def row_bytes(self, n_values: int) -> int:
        if n_values % self.block:
            raise ValueError(f"a {self.name} KV row of {n_values} values is not whole blocks of {self.block}")
        return n_values // self.block * self.block_bytes


KV_TYPES: dict[str, KvType] = {
    "f16": KvType("f16", 1, 2, "F16"),
    "q8_0": KvType("q8_0", 32, 34, "Q8_0"),
    "f32": KvType("f32", 1, 4, None),   # the reference engine's exact cache (tests)
}
# what every engine stores, so what the CLI offers (-ctk / -ctv)
ENGINE_KV_TYPES = tuple(name for name, t in KV_TYPES.items() if t.shader is not None)


def kv_type(name: str, flag: str = "--cache-type-k") -> KvType:
    """The table entry of `name`, or a ValueError naming the flag and the choices."""
    if name not in KV_TYPES:
        raise ValueError(f"{flag} {name!r}: choose one of {', '.join(KV_TYPES)}")
    return KV_TYPES[name]


@dataclass(frozen=True)
class KvLayout:
    kv_type: str     # "f16" | "q8_0"
    n_head_kv: int
    head_dim: int
    n_ctx: int       # rows (positions) per sequence slot
    n_slots: int = 1
    sink_rows: int = 0   # rows of the sink slot after the n_slots slots (0: no sink slot)

    def __post_init__(self):
        if self.kv_type not in ENGINE_KV_TYPES:
            raise ValueError(f"KV cache type {self.kv_type!r} is not one of {ENGINE_KV_TYPES}")
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even")
        t = KV_TYPES[self.kv_type]
        if self.head_dim % t.block or (self.head_dim // t.block * t.block_bytes) % 4:
            raise ValueError(f"a {self.kv_type} KV cache needs head_dim % {4 // gcd(t.block_bytes, 4) * t.block}"
                             f" == 0 (whole words per head), got {self.head_dim}")
        if min(self.n_head_kv, self.n_ctx, self.n_slots) < 1 or not 0 <= self.sink_rows <= self.n_ctx:
            raise ValueError(f"empty KV layout, or a sink slot larger than a slot: {self}")

    @property
    def head_words(self) -> int:
        return KV_TYPES[self.kv_type].row_bytes(self.head_dim) // 4

    @property
    def row_words(self) -> int:
        return self.n_head_kv * self.head_words

    @property
    def row_bytes(self) -> int:
        return self.row_words * 4

    @property
    def n_rows(self) -> int:
        return self.n_slots * self.n_ctx + self.sink_rows

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes

    @property
    def store_define(self) -> str:
        """The head_store.glsl define writing this type."""
        return "OUT_" + KV_TYPES[self.kv_type].shader

    @property
    def load_suffix(self) -> str:
        return KV_TYPES[self.kv_type].shader

