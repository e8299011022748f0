"""shaders/conv1d.comp against vkmtp.ref.ops.conv1d: sequences shorter and longer than the kernel, several
slots per step, snapshots, prefill chunks, real conv_dim, and bit-exact batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import Workspace, assert_close, token_records

from vkmtp.ops.conv1d import CausalConv1d
from vkmtp.ref.ops.conv1d import conv1d

# f32 sum of 4 products + SiLU (GPU exp) vs float64
ATOL, RTOL = 1e-6, 1e-5


def make_inputs(rng, seqs, n_ch, n_slots, n_snap=0, k_c=4, pad=3):
    n = len(seqs)
    u = rng.standard_normal((n, n_ch + pad)).astype(np.float32)
    weight = rng.standard_normal((n_ch, k_c)).astype(np.float32)
    state = rng.standard_normal((n_slots, k_c - 1, n_ch)).astype(np.float32)
    snaps = np.full((n_slots, n_snap, k_c - 1, n_ch), -3.0, np.float32) if n_snap else None
    return np.asarray(seqs, np.uint32), u, weight, state, snaps


def run_conv(device, op: CausalConv1d, seqs, u, weight, state, snaps, steps=None):
    n, stride = u.shape
    n_ch = weight.shape[0]
    out0 = np.full((n, n_ch + 2), 9.0, np.float32)
    arrays = [token_records(seqs), u, weight, state, out0] + ([snaps] if snaps is not None else [])
    ws = Workspace(device, Workspace.size_for(*arrays))
    recs, uv, wv = ws.put("records", arrays[0]), ws.put("u", u), ws.put("weight", weight)
    sv, ov = ws.put("state", state), ws.put("out", out0)
    n_snap = 0 if snaps is None else snaps.shape[1]
    snv = ws.put("snaps", snaps) if n_snap else None
    rec = device.recorder()
    for first, count in steps or [(0, n)]:
        op.record(rec, recs.sub(16 * first, 16 * count), count,
                  uv.sub(first * stride * 4, ((count - 1) * stride + n_ch) * 4), stride, wv, sv,
                  ov.sub(first * out0.shape[1] * 4, ((count - 1) * out0.shape[1] + n_ch) * 4), out0.shape[1],
                  n_ch, snapshots=snv, n_snap=n_snap)
    rec.finish()
    rec.run()
    rec.destroy()
    got = ws.read("out", out0.shape), ws.read("state", state.shape), \
        ws.read("snaps", snaps.shape) if n_snap else None
    ws.check_guards()
    ws.destroy()
    np.testing.assert_array_equal(got[0][:, n_ch:], 9.0, err_msg="out padding columns written")
    return got[0][:, :n_ch], got[1], got[2]


def check(device, op, seqs, u, weight, state, snaps):
    got = run_conv(device, op, seqs, u, weight, state, snaps)
    want = conv1d(seqs, u[:, : weight.shape[0]], weight, state, snaps)
    assert_close("out", got[0], want[0], ATOL, RTOL)
    np.testing.assert_array_equal(got[1], want[1])        # states are copies of raw inputs: exact
    if snaps is not None:
        np.testing.assert_array_equal(got[2], want[2])
    return got


@pytest.mark.lanes
@pytest.mark.parametrize("seqs", [[0], [1, 1], [2, 2, 2, 0, 3, 3, 3, 3], [0, 1, 2, 3], [3] * 8])
@pytest.mark.parametrize("token_lanes", [1, 4])
def test_conv1d_decode_and_verify_steps(device, seqs, token_lanes):
    """1..8 tokens, sequences shorter than the kernel (state feeds the window) and longer, 4 snapshots."""
    inputs = make_inputs(np.random.default_rng(len(seqs)), seqs, n_ch=200, n_slots=4, n_snap=4)
    check(device, CausalConv1d(device, token_lanes=token_lanes), *inputs)


@pytest.mark.parametrize("k_c", [2, 3, 5])
def test_conv1d_other_kernel_sizes(device, k_c):
    inputs = make_inputs(np.random.default_rng(k_c), [1, 1, 1, 0, 0], n_ch=70, n_slots=2, n_snap=3, k_c=k_c)
    check(device, CausalConv1d(device, kernel_size=k_c), *inputs)


@pytest.mark.lanes
def test_conv1d_real_conv_dim(device):
    """27B: conv_dim 10240; a 4-token verify of slot 1 and a decode token of slot 0."""
    inputs = make_inputs(np.random.default_rng(0), [1, 1, 1, 1, 0], n_ch=10240, n_slots=2, n_snap=4)
    check(device, CausalConv1d(device), *inputs)


@pytest.mark.parametrize("n_tok", [64, 256])
def test_conv1d_prefill_chunk(device, n_tok):
    seqs = [0] * (n_tok - 3) + [2, 2, 2]
    inputs = make_inputs(np.random.default_rng(n_tok), seqs, n_ch=1000, n_slots=3)
    check(device, CausalConv1d(device), *inputs)


@pytest.mark.lanes
def test_conv1d_batch_invariance_one_dispatch_per_token(device):
    seqs, u, weight, state, snaps = make_inputs(np.random.default_rng(4), [1] * 6, n_ch=300, n_slots=2,
                                                n_snap=6)
    op = CausalConv1d(device)
    batch = run_conv(device, op, seqs, u, weight, state, snaps)
    single = run_conv(device, op, seqs, u, weight, state, None, steps=[(t, 1) for t in range(6)])
    np.testing.assert_array_equal(batch[0], single[0])
    np.testing.assert_array_equal(batch[1], single[1])
    for m in range(6):
        prefix = run_conv(device, op, seqs, u, weight, state, None, steps=[(t, 1) for t in range(m + 1)])
        np.testing.assert_array_equal(batch[2][1, m], prefix[1][1])


def test_conv1d_skips_slots_it_does_not_have(device):
    seqs, u, weight, state, _ = make_inputs(np.random.default_rng(8), [0, 5, 5, 1], n_ch=50, n_slots=2)
    got = run_conv(device, CausalConv1d(device), seqs, u, weight, state, None)
    want = conv1d(seqs, u[:, :50], weight, state)
    np.testing.assert_array_equal(got[0][1:3], 9.0)
    assert_close("out", got[0][[0, 3]], want[0][[0, 3]], ATOL, RTOL)
    np.testing.assert_array_equal(got[1], want[1])


def test_conv1d_refuses_bad_configuration(device):
    with pytest.raises(ValueError, match="kernel_size"):
        CausalConv1d(device, kernel_size=9)
    seqs, u, weight, state, _ = make_inputs(np.random.default_rng(1), [0, 0], n_ch=16, n_slots=1)
    ws = Workspace(device, Workspace.size_for(u, weight, state) + 4096)
    try:
        uv, wv, sv = ws.put("u", u), ws.put("weight", weight), ws.put("state", state)
        rec = device.recorder()
        with pytest.raises(ValueError, match="conv1d u"):
            CausalConv1d(device).record(rec, uv, 2, uv.sub(0, 64), 19, wv, sv, uv, 19, 16)
        with pytest.raises(ValueError, match="snapshots"):
            CausalConv1d(device).record(rec, uv, 2, uv, 19, wv, sv, uv, 19, 16, n_snap=2)
        rec.destroy()
    finally:
        ws.destroy()
