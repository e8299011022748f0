"""RmsNorm (shaders/rms_norm.comp) against vkmtp.ref.ops.rms_norm: rows, per-head, fused add, gated."""

import numpy as np
import pytest

from guarded import Packed, assert_close
from vkmtp.ops.rms_norm import RmsNorm
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.rms_norm import rms_norm

RTOL = 2e-5   # f32 sum of squares over up to 5120 values + inversesqrt (2 ULP) against float64
ATOL = 1e-6


def variants(device):
    out = [False]
    if device.info.has_subgroup_arithmetic:
        out.append(True)
    return out


def run_rows(device, x, w, subgroup, residual=None, gate=None, block_size=256):
    n_tok, n = x.shape
    ops = {"x": x, "w": w, "y": x.nbytes}
    if residual is not None:
        ops["b"] = residual
    if gate is not None:
        ops["z"] = gate
    bufs = Packed(device, ops)
    norm = RmsNorm(device, 1e-6, block_size=block_size, subgroup=subgroup)
    rec = device.recorder()
    norm.record(rec, Strided.rows(bufs.view("x"), n), bufs.view("w"), Strided.rows(bufs.view("y"), n), n_tok, n,
                residual=Strided.rows(bufs.view("b"), n) if residual is not None else None,
                gate=Strided.rows(bufs.view("z"), n) if gate is not None else None)
    rec.finish()
    rec.run()
    y = bufs.read("y").reshape(n_tok, n)
    x_after = bufs.read("x").reshape(n_tok, n)
    bufs.check_guards()
    bufs.destroy()
    return y, x_after


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok,n", [(1, 5120), (3, 2048), (2, 77), (5, 1000), (1, 3)])
def test_rms_norm_rows_match_reference(device, n_tok, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 3, (n_tok, n)).astype(np.float32)
    w = rng.normal(1, 0.2, n).astype(np.float32)
    for subgroup in variants(device):
        y, _ = run_rows(device, x, w, subgroup)
        assert_close(y, rms_norm(x, w, 1e-6), ATOL, RTOL, f"subgroup={subgroup}")


@pytest.mark.lanes
def test_rms_norm_fused_add_writes_the_sum_back(device):
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (4, 2048)).astype(np.float32)
    m = rng.normal(0, 1, (4, 2048)).astype(np.float32)
    w = rng.normal(1, 0.2, 2048).astype(np.float32)
    for subgroup in variants(device):
        y, x_after = run_rows(device, x, w, subgroup, residual=m)
        np.testing.assert_array_equal(x_after, x + m)
        assert_close(y, rms_norm(x, w, 1e-6, residual=m), ATOL, RTOL, f"subgroup={subgroup}")


@pytest.mark.lanes
def test_gated_head_norm_matches_reference(device):
    """GDN output norm: 48 value heads of 128, weight shared, times silu(z)."""
    rng = np.random.default_rng(3)
    n_tok, n_head, d = 3, 48, 128
    o = rng.normal(0, 1, (n_tok, n_head * d)).astype(np.float32)
    z = rng.normal(0, 2, (n_tok, n_head * d)).astype(np.float32)
    w = rng.normal(1, 0.2, d).astype(np.float32)
    bufs = Packed(device, {"o": o, "z": z, "w": w, "y": o.nbytes})
    rec = device.recorder()
    RmsNorm(device).record(rec, Strided.heads(bufs.view("o"), n_head, d), bufs.view("w"),
                           Strided.heads(bufs.view("y"), n_head, d), n_tok, d, n_head=n_head,
                           gate=Strided.heads(bufs.view("z"), n_head, d))
    rec.finish()
    rec.run()
    want = rms_norm(o.reshape(n_tok, n_head, d), w, 1e-6, gate=z.reshape(n_tok, n_head, d))
    assert_close(bufs.read("y").reshape(n_tok, n_head, d), want, ATOL, RTOL)
    bufs.check_guards()
    bufs.destroy()


def test_q_heads_normed_in_place_inside_packed_q_gate(device):
    """q_norm on the query halves of attn_q's [n_tok, H * 2D] output; the gate halves stay untouched."""
    rng = np.random.default_rng(5)
    n_tok, n_head, d = 2, 24, 256
    qg = rng.normal(0, 1, (n_tok, n_head, 2, d)).astype(np.float32)
    w = rng.normal(1, 0.2, d).astype(np.float32)
    bufs = Packed(device, {"qg": qg, "w": w})
    q = Strided(bufs.view("qg"), n_head * 2 * d, 2 * d)
    rec = device.recorder()
    RmsNorm(device).record(rec, q, bufs.view("w"), q, n_tok, d, n_head=n_head)
    rec.finish()
    rec.run()
    got = bufs.read("qg").reshape(n_tok, n_head, 2, d)
    assert_close(got[:, :, 0], rms_norm(qg[:, :, 0], w, 1e-6), ATOL, RTOL, "q")
    np.testing.assert_array_equal(got[:, :, 1], qg[:, :, 1])
    bufs.check_guards()
    bufs.destroy()


@pytest.mark.lanes
def test_rms_norm_is_batch_invariant(device):
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (8, 5120)).astype(np.float32)
    w = rng.normal(1, 0.2, 5120).astype(np.float32)
    for subgroup in variants(device):
        together, _ = run_rows(device, x, w, subgroup)
        for t in range(8):
            alone, _ = run_rows(device, x[t: t + 1], w, subgroup)
            assert np.array_equal(alone[0], together[t]), f"row {t} differs alone vs in a batch of 8"


def test_small_block_size_and_many_rows_fold_into_y(device):
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (70000, 4)).astype(np.float32)
    w = rng.normal(1, 0.2, 4).astype(np.float32)
    y, _ = run_rows(device, x, w, False, block_size=max(8, device.info.subgroup_size))
    assert_close(y, rms_norm(x, w, 1e-6), ATOL, RTOL)


def test_bad_shapes_are_refused(device):
    bufs = Packed(device, {"x": 64})
    with pytest.raises(ValueError, match="rms_norm x"):
        RmsNorm(device).record(device.recorder(), Strided.rows(bufs.view("x"), 32), bufs.view("x"),
                               Strided.rows(bufs.view("x"), 32), 2, 32)
    with pytest.raises(ValueError, match="power of two"):
        RmsNorm(device, block_size=96)
    bufs.destroy()
