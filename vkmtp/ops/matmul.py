"""Prefill matrix-matrix product Y[n][m] (+)= sum_k W[m][k] X[n][k], quantized W (shaders/matmul.comp).

A shared-memory tiled kernel in the shape of llama.cpp's scalar `mul_mm` (ggml-vulkan.cpp's warptiles):
a workgroup owns a BM x BN output tile, walks K in steps of BK through padded shared tiles and keeps a
TM x TN register tile per invocation. Tile shapes are spec constants picked per device (shared memory,
workgroup size limit, subgroup size) and per shape (few rows or tokens -> smaller tiles).

Quantized weights of a type the device's capability record sends there (`matmul_int8`, overridden per type by
`matmul_int8_per_type` from the tuning profile that `vkmtp tune` measured; never without shaderIntegerDotProduct)
go through shaders/matmul_q8.comp instead: the activations are quantized per block of 32 like ggml's Q8_1 while
the X tile is staged, and each group of 8 is an exact int8 dot product (OpSDot, or bit-field extracts without
INT_DOT) scaled in f32 -- the NumPy reference is vkmtp.ref.ops.matmul.matmul_q8_1. This is the one kernel that
quantizes activations. The decode/verify mat-vec (vkmtp.ops.matvec) and the MoE expert mat-vecs
(vkmtp.ops.matvec_id, which also run the routed experts of prompt chunks) keep f32 activations: in a MoE model's
prompt chunks only the attention/GDN projections and the shared expert see quantized activations, never the
routed experts or the router (F32 weights). Float weights always take the f32 kernel. No cooperative-matrix
path: no device with VK_KHR_cooperative_matrix was available to test one on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vkmtp.device import WORD, Device, DeviceCaps, ShaderKey, View
from vkmtp.ops.quant_types import FLOAT_TYPES, SUPPORTED_TYPES, RowPart, fold, linear_operands, type_define

SHADER = "matmul.comp"
SHADER_Q8 = "matmul_q8.comp"
Q8_BLOCK = 32   # activation quantization block (and the int8 kernel's BK)


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

# Tiles of matmul_q8.comp (BK is always one activation block of 32): the same warptile shapes on GPUs; on
# CPU drivers, as for the f32 kernel, 16 x 16 registers per invocation for products of at least 2^28
# multiply-adds (2x faster on lavapipe at 0.8B shapes, 128 tokens) and 8 x 8 below.
GPU_INT8_TILES = (
    MatMulTile("q8_large", 256, 128, 128, Q8_BLOCK, 8, 8),
    MatMulTile("q8_medium", 128, 64, 64, Q8_BLOCK, 4, 8),
    MatMulTile("q8_small", 64, 32, 32, Q8_BLOCK, 4, 4),
)
CPU_INT8_TILES = (
    MatMulTile("q8_cpu_large", 64, 128, 128, Q8_BLOCK, 16, 16, min_work=1 << 28),
    MatMulTile("q8_cpu", 64, 64, 64, Q8_BLOCK, 8, 8),
)
INT8_TILE_TABLE = {"cpu": CPU_INT8_TILES, "gpu": GPU_INT8_TILES}
# Weight types the int8 kernel takes: every quantized type (dq_quants8 yields integers in int8 range).
INT8_TYPES = tuple(t for t in SUPPORTED_TYPES if t not in FLOAT_TYPES)


def int8_shared_bytes(tile: MatMulTile) -> int:
    """matmul_q8.comp's shared memory: packed W quants + (scale, min) per group, packed X quants + scale + sums."""
    return 8 * tile.bm * WORD + 4 * tile.bm * 2 * WORD + 8 * tile.bn * WORD + tile.bn * WORD + 8 * tile.bn * WORD


def default_tiles(device) -> tuple[MatMulTile, ...]:
    """The tile set the device's capability record names (vkmtp.device.capabilities: 'cpu' or 'gpu')."""
    return TILE_TABLE[device.caps.matmul_tiles]


def usable_tiles(info, tiles: Sequence[MatMulTile], int8: bool = False) -> tuple[MatMulTile, ...]:
    """Tiles this device can run: shared memory, workgroup size, and a whole number of subgroups."""
    ok = tuple(t for t in tiles
               if (int8_shared_bytes(t) if int8 else t.shared_bytes) <= info.max_shared_memory
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


def int8_variant_key(ggml_type: int, accumulate: bool, int_dot: bool) -> ShaderKey:
    """matmul_q8.comp for one quantized weight type; `int_dot` uses OpSDot (device feature)."""
    defines = type_define(ggml_type)
    if accumulate:
        defines["ACCUMULATE"] = 1
    if int_dot:
        defines["INT_DOT"] = 1
    return ShaderKey.make(SHADER_Q8, **defines)


def shader_variants() -> list[ShaderKey]:
    """Every variant `record` may pick (quantized K is a multiple of 32, so always aligned with BK = 16)."""
    return [variant_key(t, aligned, acc) for t in SUPPORTED_TYPES for acc in (False, True)
            for aligned in ((True, False) if t in FLOAT_TYPES else (True,))] + \
        [int8_variant_key(t, acc, dot) for t in INT8_TYPES for acc in (False, True) for dot in (False, True)]


class MatMul:
    """Records Y (+)= W X^T for prefill chunks. One instance per device; variants compile on first use.

    int8: every quantized weight type takes the int8 kernel with Q8_1 activations (True) or none does (False);
    None (the default) follows `caps` (default: the device's): `caps.matmul_int8`, overridden per type by
    `caps.matmul_int8_per_type` (a tuning profile's per-type choice). int_dot: that kernel uses OpSDot (default:
    `caps.int_dot`; needs the device feature).
    """

    def __init__(self, device: Device, tiles: Sequence[MatMulTile] | None = None, int8: bool | None = None,
                 int_dot: bool | None = None, int8_tiles: Sequence[MatMulTile] | None = None,
                 caps: DeviceCaps | None = None):
        caps = caps or device.caps
        self.device = device
        self.tiles = usable_tiles(device.info, tiles or default_tiles(device))
        self.int8 = caps.matmul_int8 if int8 is None else bool(int8)   # types without a per-type choice
        self.int8_per_type = {int(t): bool(v) for t, v in caps.matmul_int8_per_type.items()} if int8 is None \
            else {}
        self.int_dot = caps.int_dot if int_dot is None else bool(int_dot)
        if self.int_dot and not device.info.has_feature("integer_dot_product"):
            raise ValueError("matmul: int_dot needs the device feature integer_dot_product (not enabled)")
        self.int8_tiles = usable_tiles(device.info, int8_tiles or INT8_TILE_TABLE[device.caps.matmul_tiles],
                                       int8=True)
        self.max_group_count = tuple(device.info.max_workgroup_count)  # tiles past x fold into z

    def uses_int8(self, ggml_type: int) -> bool:
        """Whether `record` takes the int8 kernel (Q8_1 activations) for this weight type."""
        t = int(ggml_type)
        return t in INT8_TYPES and self.int8_per_type.get(t, self.int8)

    def int8_types(self) -> tuple[int, ...]:
        """The weight types `record` sends through the int8 kernel."""
        return tuple(t for t in INT8_TYPES if self.uses_int8(t))

    def tile_for(self, n_rows: int, n_tok: int, k: int, int8: bool = False) -> MatMulTile:
        """The largest tile whose BM x BN the output fills more than half of along both axes (and whose
        `min_work` the product reaches)."""
        tiles = self.int8_tiles if int8 else self.tiles
        for tile in tiles:
            if n_rows * 2 > tile.bm and n_tok * 2 > tile.bn and n_rows * n_tok * k >= tile.min_work:
                return tile
        return tiles[-1]

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
            tile: force a tile shape (tests, benchmarks; one of `int8_tiles` when `uses_int8(ggml_type)`);
                default `tile_for(n_rows, n_tok, k)`.
        """
        ops = linear_operands("matmul", weight, ggml_type, n_rows, k, x, y, n_tok, x_stride, y_stride)
        parts, rb, x_stride, y_stride = ops.parts, ops.row_bytes, ops.x_stride, ops.y_stride
        x_used = x.sub(0, ((n_tok - 1) * x_stride + k) * WORD)
        int8 = self.uses_int8(ggml_type)
        tile = tile or self.tile_for(n_rows, n_tok, k, int8)
        if int8:
            if tile.bk != Q8_BLOCK:
                raise ValueError(f"matmul: {tile} is not an int8 tile (BK {Q8_BLOCK})")
            key = int8_variant_key(ggml_type, accumulate, self.int_dot)
            spec = [tile.block_size, tile.bm, tile.bn, tile.tm, tile.tn]
        else:
            key = variant_key(ggml_type, k % tile.bk == 0, accumulate)
            spec = tile.spec
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
                         push=push, spec=spec, reads=reads, writes=[y_span], label=f"{key.name}_{tile}")
