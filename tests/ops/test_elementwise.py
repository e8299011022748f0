"""Add, SwiGlu, SigmoidScaleAdd (shaders/elementwise.comp) against vkmtp.ref.ops.elementwise."""

import numpy as np
import pytest

from guarded import Packed, assert_close
from vkmtp.ops.elementwise import Add, SigmoidScaleAdd, SwiGlu
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.elementwise import add, sigmoid_scale_add, swiglu

RTOL = 1e-5  # exp() of the GPU vs float64 (1 + exp(-x) and the division add a few ULP)


def run(device, arrays, record):
    bufs = Packed(device, arrays)
    rec = device.recorder()
    record(rec, bufs)
    rec.finish()
    rec.run()
    return bufs


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok,n", [(1, 5120), (7, 2048), (3, 1)])
def test_residual_add_in_place_is_exact(device, n_tok, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    m = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    bufs = run(device, {"x": x, "m": m}, lambda rec, b: Add(device).record(
        rec, Strided.rows(b.view("x"), n), Strided.rows(b.view("m"), n), Strided.rows(b.view("x"), n), n_tok, n))
    np.testing.assert_array_equal(bufs.read("x").reshape(n_tok, n), add(x, m))
    bufs.check_guards()
    bufs.destroy()


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok,ffn", [(1, 17408), (5, 512), (2, 333)])
def test_swiglu_on_the_halves_of_one_projection(device, n_tok, ffn):
    """gate = [:, :ffn], up = [:, ffn:] of one [n_tok, 2 ffn] output (merged gate_up)."""
    rng = np.random.default_rng(ffn)
    gu = (rng.normal(0, 3, (n_tok, 2 * ffn))).astype(np.float32)
    gu[0, :4] = [-100.0, 100.0, 0.0, -1e-8]   # saturated and zero gates

    def record(rec, b):
        v = b.view("gu")
        gate = Strided(v, 2 * ffn)
        up = Strided(v.sub(ffn * 4, v.nbytes - ffn * 4), 2 * ffn)
        SwiGlu(device).record(rec, gate, up, Strided.rows(b.view("y"), ffn), n_tok, ffn)

    bufs = run(device, {"gu": gu, "y": n_tok * ffn * 4}, record)
    assert_close(bufs.read("y").reshape(n_tok, ffn), swiglu(gu[:, :ffn], gu[:, ffn:]), 1e-6, RTOL)
    bufs.check_guards()
    bufs.destroy()


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok", [1, 8])
def test_sigmoid_scale_add_of_the_shared_expert(device, n_tok):
    rng = np.random.default_rng(n_tok)
    n = 2048
    x = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    y = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    s = rng.normal(0, 4, n_tok).astype(np.float32)
    bufs = run(device, {"x": x, "y": y, "s": s}, lambda rec, b: SigmoidScaleAdd(device).record(
        rec, Strided.rows(b.view("x"), n), Strided.rows(b.view("s"), 1), Strided.rows(b.view("y"), n), n_tok, n))
    assert_close(bufs.read("y").reshape(n_tok, n), sigmoid_scale_add(x, s, y), 1e-6, RTOL)
    bufs.check_guards()
    bufs.destroy()


def test_rows_beyond_the_group_count_limit_fold_into_z(device):
    n_tok, n = 70000, 3
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    b = rng.normal(0, 1, (n_tok, n)).astype(np.float32)
    bufs = run(device, {"a": a, "b": b, "y": a.nbytes}, lambda rec, k: Add(device, block_size=64).record(
        rec, Strided.rows(k.view("a"), n), Strided.rows(k.view("b"), n), Strided.rows(k.view("y"), n), n_tok, n))
    np.testing.assert_array_equal(bufs.read("y").reshape(n_tok, n), a + b)
    bufs.check_guards()
    bufs.destroy()
