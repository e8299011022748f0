"""shaders/matmul.comp (vkmtp.ops.matmul.MatMul) vs the float64 NumPy reference of the dequantized weight.

Error measure: |gpu - ref| <= rel * sum_k |W[m][k] X[n][k]| per output: relative to the magnitude of the terms
summed, which bounds f32 accumulation error (~K * 2^-24 at worst) without blowing up on outputs that cancel.
lavapipe compiles each new pipeline (seconds for the bigger tiles), so the cases share one Workspace (same
bound buffers -> cached pipelines) and most run on the device's smallest tile.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from quant_testing import ALL_TYPES, TYPE_IDS, assert_close, random_weight
from vkmtp.gguf import GGMLType as T
from vkmtp.ops.matmul import CPU_TILES, GPU_TILES, MatMul, MatMulTile, usable_tiles
from vkmtp.ops.quant_types import RowPart
from vkmtp.ref.ops.matmul import matmul as matmul_ref
from vkmtp.ref.ops.matmul import matmul_error_bound

# Relative tolerance per weight type (error / sum |w x|): the GPU dequantizes in f32 (one fma where NumPy
# rounds twice), so what is left is the f32 accumulation order; 1e-5 is ~100x the typical error at K <= 5120.
TOLERANCE = {t: 1e-5 for t in ALL_TYPES}
FLOAT_TYPES = (T.F32, T.F16, T.BF16)


def k_for(ggml_type, k_float: int, n_blocks: int = 2) -> int:
    """K for a case: `k_float` (any length) for float types, else `n_blocks` blocks of the type."""
    if ggml_type in FLOAT_TYPES:
        return k_float
    return n_blocks * (256 if ggml_type.name.endswith("_K") or ggml_type == T.IQ4_XS else 32)


@pytest.fixture(scope="module")
def mm(device):
    return MatMul(device, int8=False)   # the f32 kernel; the int8 one is tests/ops/test_matmul_q8.py


def run_case(ws, mm, ggml_type, n_rows, k, n_tok, accumulate=False, parts=None, tile=None, seed=0,
             x_pad=1):
    """Run one product on the device and check it; returns the output [n_tok, n_rows] f32."""
    rng = np.random.default_rng(seed + 1)
    rows = random_weight(ggml_type, n_rows, k, seed)                     # [n_rows, row_bytes] u8
    x = rng.standard_normal((n_tok, k)).astype(np.float32)               # [n_tok, k] f32
    y0 = rng.standard_normal((n_tok, n_rows)).astype(np.float32)         # [n_tok, n_rows] f32
    weight = ws.weight(rows, ggml_type, k, parts)
    xv = ws.input("x", x, pad_words=x_pad)                               # odd word offset
    yv = ws.output(n_tok * n_rows, fill=y0)
    ws.run(lambda rec: mm.record(rec, weight, ggml_type, n_rows, k, xv, yv, n_tok, accumulate=accumulate,
                                 tile=tile))
    got = ws.read_output(n_tok * n_rows).reshape(n_tok, n_rows)
    want = matmul_ref(rows, ggml_type, n_rows, k, x, y0, n_tok, accumulate)
    tol = matmul_error_bound(rows, ggml_type, n_rows, k, x, n_tok, TOLERANCE[ggml_type])
    if accumulate:
        tol = tol + TOLERANCE[ggml_type] * np.abs(y0)
    assert_close(got, want, tol, f"{T(ggml_type).name} M={n_rows} K={k} N={n_tok} acc={accumulate} "
                                 f"parts={parts} tile={tile or mm.tile_for(n_rows, n_tok, k)}")
    return got


@pytest.mark.parametrize("ggml_type", ALL_TYPES, ids=TYPE_IDS)
@pytest.mark.parametrize("n_rows,k_float,n_tok", [(1, 8, 1), (37, 67, 5), (70, 96, 33)])
def test_matmul_matches_reference(ws, mm, ggml_type, n_rows, k_float, n_tok):
    run_case(ws, mm, ggml_type, n_rows, k_for(ggml_type, k_float), n_tok)


LANE_TYPES = [T.F16, T.Q4_0, T.Q4_K, T.Q6_K]


@pytest.mark.lanes
@pytest.mark.parametrize("ggml_type", LANE_TYPES, ids=[t.name.lower() for t in LANE_TYPES])
def test_matmul_matches_reference_lanes(ws, mm, ggml_type):
    """The subset re-run at other subgroup sizes: odd M and N, a partial last tile in both."""
    run_case(ws, mm, ggml_type, 45, k_for(ggml_type, 40), 19)


@pytest.mark.parametrize("ggml_type", [T.F32, T.BF16, T.Q8_0, T.Q3_K], ids=["f32", "bf16", "q8_0", "q3_k"])
@pytest.mark.parametrize("n_rows,k_float,n_tok", [(129, 260, 300), (200, 33, 130), (17, 512, 64)])
def test_matmul_matches_reference_edges(ws, mm, ggml_type, n_rows, k_float, n_tok):
    """Up to 300 tokens, odd K for float rows (unaligned variant), M and N off the tile grid."""
    run_case(ws, mm, ggml_type, n_rows, k_for(ggml_type, k_float, 3), n_tok)


@pytest.mark.parametrize("ggml_type", [T.F32, T.Q8_0, T.Q5_K], ids=["f32", "q8_0", "q5_k"])
def test_matmul_accumulates_into_y(ws, mm, ggml_type):
    run_case(ws, mm, ggml_type, 70, k_for(ggml_type, 96), 19, accumulate=True)


@pytest.mark.parametrize("tile", GPU_TILES + CPU_TILES, ids=lambda t: t.name)
def test_every_tile_gives_the_same_bits(device, ws, mm, tile):
    """Each output is one fma chain over k in order, so the tile shape changes no bit (GPU and CPU tables)."""
    if tile not in usable_tiles(device.info, [tile]):
        pytest.skip(f"{tile} does not fit this device")
    got = run_case(ws, mm, T.Q4_1, 150, 64, 70, tile=tile, seed=3)
    base = run_case(ws, mm, T.Q4_1, 150, 64, 70, tile=mm.tiles[-1], seed=3)
    np.testing.assert_array_equal(got, base)


@pytest.mark.lanes
def test_token_alone_equals_token_in_batch(ws, mm):
    """Batch invariance: each token's outputs are bit-identical computed alone, in 8 or in 300 tokens."""
    rows = random_weight(T.Q4_K, 45, 512, 5)
    x = np.random.default_rng(6).standard_normal((300, 512)).astype(np.float32)
    weight = ws.weight(rows, T.Q4_K, 512)
    xv = ws.input("x", x)
    outs = {}
    for n in (300, 8, 1):
        yv = ws.output(n * 45)
        ws.run(lambda rec: mm.record(rec, weight, T.Q4_K, 45, 512, xv, yv, n))
        outs[n] = ws.read_output(n * 45).reshape(n, 45)
    for n in (8, 1):
        np.testing.assert_array_equal(outs[n], outs[300][:n], err_msg=f"first {n} tokens differ from batch")


@pytest.mark.parametrize("parts", [[(0, 40), (40, 50)], [(0, 1), (1, 60), (61, 29)]], ids=["2", "3"])
def test_weight_split_into_row_parts(ws, mm, parts):
    """Q6_K rows of 210 B: parts start on 2-byte row boundaries; results equal the unsplit weight's."""
    got = run_case(ws, mm, T.Q6_K, 90, 256, 40, parts=parts)
    whole = run_case(ws, mm, T.Q6_K, 90, 256, 40)
    np.testing.assert_array_equal(got, whole)


def test_strided_x_and_y(ws, mm):
    """x rows k+3 floats apart, y a 40-row slice of 47-float token rows: the other 7 floats stay untouched."""
    n_rows, k, n_tok, xs, ys = 40, 64, 21, 67, 47
    rows = random_weight(T.IQ4_NL, n_rows, k, 9)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((n_tok, xs)).astype(np.float32)
    y0 = rng.standard_normal((n_tok, ys)).astype(np.float32)
    weight = ws.weight(rows, T.IQ4_NL, k)
    xv = ws.input("x", x, pad_words=3)
    yv = ws.output(n_tok * ys, fill=y0)
    ws.run(lambda rec: mm.record(rec, weight, T.IQ4_NL, n_rows, k, xv, yv, n_tok, x_stride=xs, y_stride=ys))
    got = ws.read_output(n_tok * ys).reshape(n_tok, ys)
    xk = np.ascontiguousarray(x[:, :k])
    want = matmul_ref(rows, T.IQ4_NL, n_rows, k, xk, None, n_tok)
    tol = matmul_error_bound(rows, T.IQ4_NL, n_rows, k, xk, n_tok, TOLERANCE[T.IQ4_NL])
    assert_close(got[:, :n_rows], want, tol, "strided IQ4_NL")
    np.testing.assert_array_equal(got[:, n_rows:], y0[:, n_rows:])


def test_tile_grid_folds_into_z_past_the_group_limit(device, ws):
    """More M tiles than maxComputeWorkGroupCount.x: the grid folds into z (here with a limit of 3 tiles)."""
    mm = MatMul(device, int8=False)
    mm.max_group_count = (3, 65535, 65535)
    tile = mm.tiles[-1]
    run_case(ws, mm, T.Q8_0, 7 * tile.bm + 5, 64, 9, tile=tile)


def test_bad_arguments_are_refused_clearly(ws, mm):
    rows = random_weight(T.F32, 8, 16)
    weight = ws.weight(rows, T.F32, 16)
    xv = ws.input("x", np.zeros((4, 16), np.float32))
    yv = ws.output(4 * 8)
    rec = mm.device.recorder()
    try:
        with pytest.raises(ValueError, match="not supported"):
            mm.record(rec, weight, T.IQ2_XXS, 8, 256, xv, yv, 4)
        with pytest.raises(ValueError, match="activations x"):
            mm.record(rec, weight, T.F32, 8, 16, xv, yv, 5)
        with pytest.raises(ValueError, match="output y"):
            mm.record(rec, weight, T.F32, 8, 16, xv, yv.sub(0, 64), 4)
        with pytest.raises(ValueError, match="multiple of 32"):
            mm.record(rec, weight, T.Q8_0, 8, 16, xv, yv, 4)
        with pytest.raises(ValueError, match="rows need"):
            mm.record(rec, weight.sub(0, 32), T.F32, 8, 16, xv, yv, 1)
        with pytest.raises(ValueError, match="parts cover"):
            mm.record(rec, [RowPart(weight, 0, 4)], T.F32, 8, 16, xv, yv, 1)
        with pytest.raises(ValueError, match="n_tok"):
            mm.record(rec, weight, T.F32, 8, 16, xv, yv, 0)
    finally:
        rec.destroy()


def test_tile_choice_follows_the_shape(device, mm):
    big, small = mm.tiles[0], mm.tiles[-1]
    assert mm.tile_for(5120, 512, 5120) == big
    assert mm.tile_for(5120, 3, 5120) == small
    assert mm.tile_for(1, 512, 5120) == small
    with pytest.raises(ValueError, match="inconsistent"):
        MatMulTile("bad", 64, 64, 64, 16, 4, 4)        # 256 invocations' worth of tile for 64


@pytest.mark.slow
def test_real_size_prefill_chunk(ws, mm):
    """512 tokens x 5120 -> 1024 (Qwen3.6-27B E=5120, a 1024-row projection) at Q4_K."""
    start = time.perf_counter()
    run_case(ws, mm, T.Q4_K, 1024, 5120, 512)
    print(f"512 x 5120 -> 1024 Q4_K: {time.perf_counter() - start:.1f} s with reference")
