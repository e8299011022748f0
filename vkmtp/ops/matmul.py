"""Prefill matrix-matrix product Y[n][m] (+)= sum_k W[m][k] X[n][k], quantized W (shaders/matmul.comp).

A shared-memory tiled kernel in the shape of llama.cpp's scalar `mul_mm` (ggml-vulkan.cpp's warptiles):
a workgroup owns a BM x BN output tile, walks K in steps of BK through padded shared tiles and keeps a
TM x TN register tile per invocation. Cooperative-matrix and integer-dot paths need device features Kompute
does not enable, so there are none. Tile shapes are spec constants picked per device (shared memory, workgroup
size limit, subgroup size) and per shape (few rows or tokens -> smaller tiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vkmtp.device import WORD, Device, ShaderKey, View
from vkmtp.ops.quant_types import FLOAT_TYPES, SUPPORTED_TYPES, RowPart, fold, linear_operands, type_define

SHADER = "matmul.comp"


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
                or self.bn % self.tn or self.bk % 8 or self.tm % 4 or self.tn % 4:
            raise ValueError(f"inconsistent matmul tile {self}")

    @property
    def spec(self) -> list[int]:
        return [self.block_size, self.bm, self.bn, self.bk, self.tm, self.tn]

    @property
    def shared_bytes(self) -> int:
        return self.bk * (self.bm + 4 + self.bn + 4) * WORD   # k-major tiles, rows padded by one vec4

    def __str__(self) -> str:
        return f"{self.name}[bs={self.block_size},{self.bm}x{self.bn}x{self.bk},t={self.tm}x{self.tn}]"


# Tile sets per device class, largest first; `MatMul.tile_for` takes the largest the output fills.
# GPUs: llama.cpp's scalar warptile sizes (l/m/s_warptile in ggml-vulkan.cpp). lavapipe, a CPU driver
# (DeviceCaps.matmul_tiles 'cpu'), turns every shared-memory load into a per-lane scalar loop (gallivm's
# emit_load_mem), so loads per FMA decide its speed:
# 16 x 16 register tiles (256 accumulators, SoA vectors in CPU registers/stack) run ~2x faster there than
# 8 x 8 but take ~10 s to compile, so they are used only for products of at least 2^28 multiply-adds.
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


def default_tiles(device) -> tuple[MatMulTile, ...]:
    """The tile set the device's capability record names (vkmtp.device.capabilities: 'cpu' or 'gpu')."""
    return TILE_TABLE[device.caps.matmul_tiles]


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


def variant_key(ggml_type: int, aligned: bool, accumulate: bool) -> ShaderKey:
    """matmul.comp for one weight type; `aligned` when K is a multiple of the tile's BK."""
    defines = type_define(ggml_type)
    if aligned:
        defines["ALIGNED"] = 1
    if accumulate:
        defines["ACCUMULATE"] = 1
    return ShaderKey.make(SHADER, **defines)


def shader_variants() -> list[ShaderKey]:
    """Every variant `record` may pick (quantized K is a multiple of 32, so always aligned with BK = 16)."""
    return [variant_key(t, aligned, acc) for t in SUPPORTED_TYPES for acc in (False, True)
            for aligned in ((True, False) if t in FLOAT_TYPES else (True,))]


class MatMul:
    """Records Y (+)= W X^T for prefill chunks. One instance per device; variants compile on first use."""

    def __init__(self, device: Device, tiles: Sequence[MatMulTile] | None = None):
        self.device = device
        self.tiles = usable_tiles(device.info, tiles or default_tiles(device))
        self.max_group_count = tuple(device.info.max_workgroup_count)  # tiles past x fold into z

    def tile_for(self, n_rows: int, n_tok: int, k: int) -> MatMulTile:
        """The largest tile whose BM x BN the output fills more than half of along both axes (and whose
        `min_work` the product reaches)."""
        for tile in self.tiles:
            if n_rows * 2 > tile.bm and n_tok * 2 > tile.bn and n_rows * n_tok * k >= tile.min_work:
                return tile
        return self.tiles[-1]

    def record(self, rec, weight: View | Sequence[RowPart], ggml_type: int, n_rows: int, k: int, x: View,
               y: View, n_tok: int, accumulate: bool = False, x_stride: int | None = None,
               y_stride: int | None = None, tile: MatMulTile | None = None) -> None:
        """Record Y[n][m] = sum_k W[m][k] X[n][k] (or Y += ... with `accumulate`), one dispatch per part.

        Args:
            weight: [n_rows, row_bytes] u8 raw GGUF rows of `ggml_type` in one View, or RowParts covering the
                rows in order (weights larger than maxStorageBufferRange; vkmtp.ops.quant_types).
            x: [n_tok, x_stride] f32 (x_stride defaults to k).
            y: [n_tok, y_stride] f32, rows 0..n_rows-1 of each token written (read too when `accumulate`);
                y_stride defaults to n_rows.
            tile: force a tile shape (tests, benchmarks); default `tile_for(n_rows, n_tok, k)`.
        """
        ops = linear_operands("matmul", weight, ggml_type, n_rows, k, x, y, n_tok, x_stride, y_stride)
        parts, rb, x_stride, y_stride = ops.parts, ops.row_bytes, ops.x_stride, ops.y_stride
        x_used = x.sub(0, ((n_tok - 1) * x_stride + k) * WORD)
        tile = tile or self.tile_for(n_rows, n_tok, k)
        key = variant_key(ggml_type, k % tile.bk == 0, accumulate)
        max_x, max_y = self.max_group_count[:2]
        groups_n = -(-n_tok // tile.bn)
        if groups_n > max_y:
            raise ValueError(f"matmul: {n_tok} tokens need {groups_n} tile columns, the device allows "
                             f"{max_y}")

        for part in parts:
            tiles_m = -(-part.n_rows // tile.bm)
            groups_x, groups_z = fold(tiles_m, max_x)
            # The part writes y[n][row_start : row_start + n_rows] of every token: declare the span around it.
            y_span = y.sub(part.row_start * WORD, ((n_tok - 1) * y_stride + part.n_rows) * WORD)
            reads = [part.view.sub(0, part.n_rows * rb), x_used] + ([y_span] if accumulate else [])
            push = [part.n_rows, k, n_tok, part.view.offset, rb, x.word_offset, x_stride,
                    y.word_offset + part.row_start, y_stride, tiles_m]
            rec.dispatch(key, [part.view.buffer, x.buffer, y.buffer], (groups_x, groups_n, groups_z),
                         push=push, spec=tile.spec, reads=reads, writes=[y_span], label=f"{key.name}_{tile}")
