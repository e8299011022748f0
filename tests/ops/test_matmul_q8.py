"""shaders/matmul_q8.comp (MatMul's int8 kernel: Q8_1 activations, integer dot products) vs its NumPy reference.

The reference (vkmtp.ref.ops.matmul.matmul_q8_1) quantizes the activations the way the shader does, bit for bit
(correctly rounded scale and product, ties away from zero), so what is left is f32 accumulation order: the
same relative bound as the f32 kernel's test. Both dot-product variants run where the device enabled
shaderIntegerDotProduct (OpSDot and the bit-field fallback); with VKMTP_FEATURES=none only the fallback.
The effect of quantizing activations against the float product is measured and bounded separately.
"""

from __future__ import annotations

import numpy as np
import pytest

from quant_testing import assert_close, random_weight
from vkmtp.gguf import GGMLType as T
from vkmtp.ops.matmul import CPU_INT8_TILES, GPU_INT8_TILES, INT8_TYPES, MatMul, usable_tiles
from vkmtp.ref.ops.matmul import matmul as matmul_f64
from vkmtp.ref.ops.matmul import matmul_error_bound, matmul_q8_1, quantize_q8_1

REL = 1e-5
MAIN_TYPES = [T.Q8_0, T.Q4_0, T.Q4_K, T.Q6_K]   # the types Qwen3.5 GGUFs are mostly published in


def k_blocks(ggml_type, n_blocks: int) -> int:
    return n_blocks * (256 if T(ggml_type).name.endswith("_K") or ggml_type == T.IQ4_XS else 32)


def dot_variants(device):
    return [False, True] if device.info.has_feature("integer_dot_product") else [False]


@pytest.fixture(scope="module", params=["int_dot", "packed"])
def mm(request, device):
    int_dot = request.param == "int_dot"
    if int_dot not in dot_variants(device):
        pytest.skip("integer_dot_product not enabled on this device (VKMTP_FEATURES)")
    return MatMul(device, int8=True, int_dot=int_dot)


def run_case(ws, mm, ggml_type, n_rows, k, n_tok, accumulate=False, seed=0, tile=None, x_scale=1.0):
    rng = np.random.default_rng(seed + 1)
    rows = random_weight(ggml_type, n_rows, k, seed)
    x = (rng.standard_normal((n_tok, k)) * x_scale).astype(np.float32)
    x[:, :32] = 0.0 if n_tok > 2 else x[:, :32]       # an all-zero activation block (d = 0) when N > 2
    y0 = rng.standard_normal((n_tok, n_rows)).astype(np.float32)
    weight = ws.weight(rows, ggml_type, k)
    xv = ws.input("x", x, pad_words=1)
    yv = ws.output(n_tok * n_rows, fill=y0)
    assert mm.uses_int8(ggml_type)
    ws.run(lambda rec: mm.record(rec, weight, ggml_type, n_rows, k, xv, yv, n_tok, accumulate=accumulate,
                                 tile=tile))
    got = ws.read_output(n_tok * n_rows).reshape(n_tok, n_rows)
    want = matmul_q8_1(rows, ggml_type, n_rows, k, x, y0, n_tok, accumulate)
    q, d = quantize_q8_1(x, k)
    xq = (q.reshape(n_tok, -1, 32) * d[:, :, None]).reshape(n_tok, k).astype(np.float32)
    tol = matmul_error_bound(rows, ggml_type, n_rows, k, xq, n_tok, REL) + 1e-30
    if accumulate:
        tol = tol + REL * np.abs(y0)
    assert_close(got, want, tol, f"{T(ggml_type).name} M={n_rows} K={k} N={n_tok} acc={accumulate} "
                                 f"int_dot={mm.int_dot}")
    return rows, x, got


@pytest.mark.lanes
@pytest.mark.parametrize("ggml_type", MAIN_TYPES, ids=[t.name.lower() for t in MAIN_TYPES])
def test_int8_matmul_matches_reference(ws, mm, ggml_type):
    """Odd M and N: a partial last tile in both."""
    run_case(ws, mm, ggml_type, 45, k_blocks(ggml_type, 2), 19)


@pytest.mark.parametrize("ggml_type", [t for t in INT8_TYPES if t not in MAIN_TYPES],
                         ids=lambda t: T(t).name.lower())
def test_int8_matmul_every_quant_type(ws, device, ggml_type):
    run_case(ws, MatMul(device, int8=True), ggml_type, 33, k_blocks(ggml_type, 1), 5)


@pytest.mark.parametrize("ggml_type", [T.Q4_K, T.Q8_0], ids=["q4_k", "q8_0"])
def test_int8_matmul_accumulates_and_spans_tiles(ws, mm, ggml_type):
    """Y += W X over several M and N tiles (130 tokens, 150 rows)."""
    run_case(ws, mm, ggml_type, 150, k_blocks(ggml_type, 2), 130, accumulate=True, seed=4)


# Row widths K of the prefill projections of the real models (tools/make_synthetic_model.py presets): the
# embedding width (every q/k/v/gate/up projection reads it) and the FFN width (ffn_down reads it). A band of
# 67 rows (a partial row tile) and a 37-token chunk (a partial token tile): every K block of the real row.
REAL_K = [("0.8b", 1024), ("0.8b", 3584), ("9b", 4096), ("9b", 12288), ("27b", 5120), ("27b", 17408)]


@pytest.mark.parametrize("ggml_type", [T.Q8_0, T.Q4_K], ids=["q8_0", "q4_k"])
@pytest.mark.parametrize("model,k", [pytest.param(m, k, marks=[pytest.mark.lanes] if m == "0.8b" else [])
                                     for m, k in REAL_K], ids=[f"{m}-k{k}" for m, k in REAL_K])
def test_int8_matmul_at_real_row_widths(ws, mm, ggml_type, model, k):
    run_case(ws, mm, ggml_type, 67, k, 37, accumulate=ggml_type == T.Q4_K, seed=k)


# Qwen3.6-35B-A3B (tools/make_synthetic_model.py preset 35b-a3b): E = 2048, 256 experts of FFN 512 (top 8) and a
# shared expert of FFN 512. Its prompt chunks run the shared expert's gate / up [512, 2048] and down [2048, 512]
# (and every attention / GDN projection, K = 2048) on this kernel; the routed experts, the same shapes per
# expert, run on the expert mat-vec (vkmtp.ops.matvec_id) with f32 activations. Whole matrices, 37 tokens.
MOE_35B_SHAPES = [("gate_up", 512, 2048), ("down", 2048, 512)]


@pytest.mark.parametrize("ggml_type", [T.Q8_0, T.Q4_K, T.Q6_K], ids=["q8_0", "q4_k", "q6_k"])
@pytest.mark.parametrize("what,n_rows,k", MOE_35B_SHAPES, ids=[w for w, _, _ in MOE_35B_SHAPES])
def test_int8_matmul_at_35b_a3b_expert_shapes(ws, mm, ggml_type, what, n_rows, k):
    run_case(ws, mm, ggml_type, n_rows, k, 37, accumulate=what == "down", seed=n_rows)


def test_int8_tile_shapes_give_the_same_bits(ws, mm):
    """Each output is one chain over the K blocks whatever the tile: every int8 tile of the GPU and CPU tables
    (their 16 x 16 and 8 x 8 register tiles, partial tiles in M and N) gives the same bits."""
    outs = [run_case(ws, mm, T.Q4_K, 150, 512, 130, seed=9, tile=tile)[2]
            for tile in usable_tiles(mm.device.info, GPU_INT8_TILES + CPU_INT8_TILES, int8=True)]
    for got in outs[1:]:
        np.testing.assert_array_equal(got, outs[0])


def test_int8_token_alone_equals_token_in_batch(ws, mm):
    """A token's quantization and sums depend on that token only: alone, in 8 or in 70 the same bits."""
    rows = random_weight(T.Q6_K, 45, 512, 5)
    x = np.random.default_rng(6).standard_normal((70, 512)).astype(np.float32)
    weight = ws.weight(rows, T.Q6_K, 512)
    xv = ws.input("x", x)
    outs = {}
    for n in (70, 8, 1):
        yv = ws.output(n * 45)
        ws.run(lambda rec: mm.record(rec, weight, T.Q6_K, 45, 512, xv, yv, n))
        outs[n] = ws.read_output(n * 45).reshape(n, 45)
    for n in (8, 1):
        np.testing.assert_array_equal(outs[n], outs[70][:n])


def test_both_dot_variants_give_the_same_bits(ws, device):
    """OpSDot and the bit-field fallback compute the same exact integers."""
    if True not in dot_variants(device):
        pytest.skip("integer_dot_product not enabled on this device")
    got = [run_case(ws, MatMul(device, int8=True, int_dot=v), T.Q4_0, 40, 64, 9, seed=7)[2] for v in (False, True)]
    np.testing.assert_array_equal(got[0], got[1])


def test_quantize_q8_1_rounds_like_ggml():
    x = np.array([[127.0, -63.5, 0.5, -0.49] + [0.0] * 28, [0.0] * 32], np.float32)
    q, d = quantize_q8_1(x, 32)
    assert d[0, 0] == np.float32(1.0) and d[1, 0] == 0.0
    assert q[0, :4].tolist() == [127, -64, 1, 0] and not q[1].any()


# Activation quantization error vs the float product, at a real shape (0.8B: E = 1024, FFN 3584): measured
# max |got - float| / max |float| per type; the bound is ~3x what random N(0,1) activations give (about
# 0.4-0.6 % for 4-bit weights: Q8_1 steps are amax/127 per block of 32).
ACT_QUANT_BOUND = 0.02


@pytest.mark.parametrize("ggml_type", [T.Q8_0, T.Q4_K], ids=["q8_0", "q4_k"])
def test_activation_quantization_error_is_bounded(ws, device, ggml_type):
    mm = MatMul(device, int8=True)
    n_rows, k, n_tok = 64, 1024, 16
    rows, x, got = run_case(ws, mm, ggml_type, n_rows, k, n_tok, seed=11)
    exact = matmul_f64(rows, ggml_type, n_rows, k, x, None, n_tok)
    rel = np.abs(got - exact).max() / np.abs(exact).max()
    print(f"{T(ggml_type).name}: max |int8 - f64| / max |f64| = {rel:.2e}")
    assert rel < ACT_QUANT_BOUND
