"""Prefill matrix-matrix product Y[n][m] (+)= sum_k W[m][k] X[n][k] with quantized weights (shaders/matmul.comp).

A shared-memory tiled kernel in the shape of llama.cpp's scalar `mul_mm` warptiles (vulkan-kernels.md §2.6):
a workgroup owns a BM x BN output tile, walks K in steps of BK through padded shared tiles and keeps a
TM x TN register tile per invocation. Cooperative-matrix and integer-dot paths need device features Kompute
does not enable, so there are none. Tile shapes are spec constants picked per device (shared memory, workgroup
size limit, subgroup size) and per shape (few rows or tokens -> smaller tiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vkmtp.device import WORD, Device, ShaderKey, View
from vkmtp.gguf import GGMLType, block_size, row_bytes

SHADER = "matmul.comp"
SUPPORTED_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)


@dataclass(frozen=True)
class MatMulTile:
    """One warptile: `block_size` invocations, each accumulating tm x tn outputs of a bm x bn tile."""

    name: str
    block_size: int
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    min_work: int = 0   # smallest M*N*K worth this tile (its compile time), 0 = any

    def __post_init__(self):
        if (self.bm // self.tm) * (self.bn // self.tn) != self.block_size or self.bm % self.tm \
                or self.bn % self.tn or self.bk % 4:
            raise ValueError(f"inconsistent matmul tile {self}")

    @property
    def spec(self) -> list[int]:
        return [self.block_size, self.bm, self.bn, self.bk, self.tm, self.tn]

    @property
    def shared_bytes(self) -> int:
        return (self.bm + self.bn) * (self.bk + 1) * WORD

    def __str__(self) -> str:
        return f"{self.name}[bs={self.block_size},{self.bm}x{self.bn}x{self.bk},t={self.tm}x{self.tn}]"


# Tile sets per device class, largest first; `MatMul.tile_for` takes the largest the output fills.
# GPUs: llama.cpp's scalar warptile sizes (vulkan-kernels.md §2.6). lavapipe (kind 'cpu') turns every
# shared-memory load into a per-lane scalar loop (gallivm's emit_load_mem), so loads per FMA decide its speed:
# 16 x 16 register tiles (256 accumulators; SoA vectors in CPU registers/stack) run ~2x faster there than 8 x 8,
# but take ~10 s to compile, so they are used only for products of at least 2^28 multiply-adds.
GPU_TILES = (
    MatMulTile("large", 256, 128, 128, 16, 8, 8),
    MatMulTile("medium", 128, 64, 64, 16, 4, 8),
    MatMulTile("small", 64, 32, 32, 16, 4, 4),
)
CPU_TILES = (
    MatMulTile("cpu_large", 64, 128, 128, 16, 16, 16, min_work=1 << 28),
    MatMulTile("cpu_small", 64, 64, 64, 16, 8, 8),
)
TILE_TABLE = {"cpu": CPU_TILES, "gpu": GPU_TILES}


def default_tiles(info) -> tuple[MatMulTile, ...]:
    """The tile set for this device class ('cpu' for software rasterizers, 'gpu' otherwise)."""
    return TILE_TABLE["cpu" if info.kind == "cpu" else "gpu"]


def usable_tiles(info, tiles: Sequence[MatMulTile]) -> tuple[MatMulTile, ...]:
    """Tiles this device can run: shared memory, workgroup size, and a whole number of subgroups."""
    ok = tuple(t for t in tiles
               if t.shared_bytes <= info.max_shared_memory
               and t.block_size <= info.max_workgroup_invocations
               and t.block_size % max(info.subgroup_size, 1) == 0)
    if not ok:
        raise RuntimeError(f"no matmul tile fits device '{info.name}' (shared {info.max_shared_memory} B, "
                           f"workgroup {info.max_workgroup_invocations}, subgroup {info.subgroup_size})")
    return ok


def _type_name(ggml_type: int) -> str:
    try:
        return GGMLType(ggml_type).name
    except ValueError:
        return f"ggml type {ggml_type}"


class MatMul:
    """Records Y (+)= W X^T for prefill chunks. One instance per device; variants compile on first use."""

    def __init__(self, device: Device, tiles: Sequence[MatMulTile] | None = None):
        self.device = device
        self.tiles = usable_tiles(device.info, tiles or default_tiles(device.info))

    def tile_for(self, n_rows: int, n_tok: int, k: int) -> MatMulTile:
        """The largest tile whose BM x BN the output fills more than half of along both axes (and whose
        `min_work` the product reaches)."""
        for tile in self.tiles:
            if n_rows * 2 > tile.bm and n_tok * 2 > tile.bn and n_rows * n_tok * k >= tile.min_work:
                return tile
        return self.tiles[-1]

    def record(self, rec, weight: View | Sequence[View], ggml_type: int, n_rows: int, k: int, x: View,
               y: View, n_tok: int, accumulate: bool = False, tile: MatMulTile | None = None) -> None:
        """Record Y[n][m] = sum_k W[m][k] X[n][k] (or Y += ... with `accumulate`).

        Args:
            weight: [n_rows, k] in `ggml_type` (GGUF row layout), one View, or a list of Views splitting the
                rows in order (tensors larger than maxStorageBufferRange); every part but the last holds a
                whole number of rows.
            x: [n_tok, k] f32.  y: [n_tok, n_rows] f32 (read too when `accumulate`).
            tile: force a tile shape (tests, benchmarks); default `tile_for(n_rows, n_tok, k)`.
        """
        parts = [weight] if isinstance(weight, View) else list(weight)
        if ggml_type not in SUPPORTED_TYPES:
            raise ValueError(f"matmul: weight type {_type_name(ggml_type)} is not supported "
                             f"(supported: {', '.join(s.name for s in SUPPORTED_TYPES)})")
        t = GGMLType(ggml_type)
        if n_rows < 1 or k < 1 or n_tok < 1:
            raise ValueError(f"matmul: empty product (n_rows={n_rows}, k={k}, n_tok={n_tok})")
        if k % block_size(t)[0]:
            raise ValueError(f"matmul: k={k} is not a whole number of {t.name} blocks of {block_size(t)[0]}")
        rb = row_bytes(t, k)
        if x.nbytes < n_tok * k * WORD:
            raise ValueError(f"matmul: x holds {x.nbytes} B, needs [{n_tok}, {k}] f32")
        if y.nbytes < n_tok * n_rows * WORD:
            raise ValueError(f"matmul: y holds {y.nbytes} B, needs [{n_tok}, {n_rows}] f32")
        part_rows = self._split_rows(parts, rb, n_rows)

        tile = tile or self.tile_for(n_rows, n_tok, k)
        defines = {f"DATA_A_{t.name}": 1}
        if k % tile.bk == 0:
            defines["ALIGNED"] = 1
        if accumulate:
            defines["ACCUMULATE"] = 1
        key = ShaderKey.make(SHADER, **defines)
        x_used = x.sub(0, n_tok * k * WORD)
        max_x, max_y = self.device.info.max_workgroup_count[:2]
        groups_n = -(-n_tok // tile.bn)
        if groups_n > max_y:
            raise ValueError(f"matmul: {n_tok} tokens need {groups_n} tile columns, device allows {max_y}")

        m0 = 0
        for part, rows in zip(parts, part_rows):
            tiles_m = -(-rows // tile.bm)
            groups_x = min(tiles_m, max_x)
            groups_z = -(-tiles_m // groups_x)
            # Part p writes y[n][m0 : m0 + rows] for every token: declare the contiguous span around it.
            y_span = y.sub(m0 * WORD, ((n_tok - 1) * n_rows + rows) * WORD)
            reads = [part.sub(0, rows * rb), x_used] + ([y_span] if accumulate else [])
            push = [rows, k, n_tok, part.word_offset, x.word_offset, k, y.word_offset + m0, n_rows, tiles_m]
            rec.dispatch(key, [part.buffer, x.buffer, y.buffer], (groups_x, groups_n, groups_z), push=push,
                         spec=tile.spec, reads=reads, writes=[y_span], label=f"{key.name}{tile}")
            m0 += rows

    @staticmethod
    def _split_rows(parts: list[View], rb: int, n_rows: int) -> list[int]:
        """Rows held by each weight part; errors name the part that does not fit."""
        if not parts:
            raise ValueError("matmul: no weight parts given")
        rows, left = [], n_rows
        for i, part in enumerate(parts):
            if left == 0:
                raise ValueError(f"matmul: weight part {i} is left over: earlier parts hold all {n_rows} rows")
            last = i == len(parts) - 1
            if not last and part.nbytes % rb:
                raise ValueError(f"matmul: weight part {i} of {part.nbytes} B is not a whole number of "
                                 f"{rb}-byte rows")
            n = left if last else min(part.nbytes // rb, left)
            if n < 1 or n * rb > part.nbytes:
                raise ValueError(f"matmul: weight part {i} ({part.nbytes} B) does not hold its {max(n, 1)} "
                                 f"rows of {rb} B ({n_rows} rows in {len(parts)} parts)")
            rows.append(n)
            left -= n
        if left:
            raise ValueError(f"matmul: weight parts hold {n_rows - left} of {n_rows} rows")
        return rows
