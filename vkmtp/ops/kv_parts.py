"""KV caches larger than one storage buffer: a layer's cache cut by rows into several buffers ("parts").

Vulkan binds at most maxStorageBufferRange bytes per storage buffer (128 MiB on some drivers, 1-4 GiB on
others), while one layer's KV cache at 262144 positions is hundreds of MiB. A cache is therefore passed to the
KV kernels (rope's K store, set_rows, flash attention) either as one View or as a list of at most MAX_KV_PARTS
Views: part j holds rows [j * rows_per_part, (j + 1) * rows_per_part), each at the start of its own buffer. The
kernels keep addressing one virtual array of words (row * row_words + ...) and pick the part from it
(shaders/common/kv_parts.glsl), so a head row never straddles two parts and the arithmetic, hence every bit of
the result, is the same as with one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vkmtp.device import View
from vkmtp.ops.kv_layout import KvLayout

MAX_KV_PARTS = 8   # bindings the kernels declare per cache (shaders/common/kv_parts.glsl)


def rows_per_part(row_bytes: int, max_range: int) -> int:
    """Rows of one part: as many whole rows as one buffer binds."""
    rows = max_range // row_bytes
    if rows < 1:
        raise ValueError(f"one KV row of {row_bytes} B exceeds the device's storage-buffer range ({max_range} B)")
    return rows


@dataclass(frozen=True)
class KvOperand:
    """A cache as a kernel binds it: its views (1..MAX_KV_PARTS), and rows per part (all but the last part)."""

    views: tuple[View, ...]
    rows_per_part: int

    @property
    def n_parts(self) -> int:
        return len(self.views)

    @property
    def word_offset(self) -> int:
        return self.views[0].word_offset

    @property
    def buffers(self) -> list:
        return [v.buffer for v in self.views]

    @property
    def defines(self) -> dict[str, int]:
        return {"KV_PARTS": self.n_parts} if self.n_parts > 1 else {}

    @staticmethod
    def of(cache: View | Sequence[View], layout: KvLayout, name: str) -> "KvOperand":
        """Check `cache` against its layout (raises ValueError naming `name`)."""
        views = (cache,) if isinstance(cache, View) else tuple(cache)
        if not 1 <= len(views) <= MAX_KV_PARTS:
            raise ValueError(f"{name}: {len(views)} parts, 1..{MAX_KV_PARTS} supported")
        if len(views) == 1:
            if views[0].nbytes < layout.nbytes:
                raise ValueError(f"{name}: view of {views[0].nbytes} B is smaller than its layout "
                                 f"({layout.nbytes} B)")
            return KvOperand(views, layout.n_rows)
        rows = views[0].nbytes // layout.row_bytes
        for j, v in enumerate(views):
            if v.word_offset != 0:
                raise ValueError(f"{name}: part {j} starts at word {v.word_offset}; parts start their buffers")
            if j < len(views) - 1 and v.nbytes != rows * layout.row_bytes:
                raise ValueError(f"{name}: part {j} of {v.nbytes} B is not {rows} whole rows like part 0")
        have = rows * (len(views) - 1) + views[-1].nbytes // layout.row_bytes
        if rows < 1 or have < layout.n_rows or rows * (len(views) - 1) >= layout.n_rows:
            raise ValueError(f"{name}: {len(views)} parts of {rows} rows do not tile the layout's "
                             f"{layout.n_rows} rows")
        return KvOperand(views, rows)
