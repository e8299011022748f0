"""shaders/gdn.comp against vkmtp.ref.ops.gdn: every reduction variant and lanes_per_column, several sequence
slots per step, snapshots, prefill-length steps, and bit-exact batch invariance."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from guarded_workspace import Workspace, assert_close, token_records

from vkmtp.ops.gdn import GatedDeltaNet, available_variants
from vkmtp.ref.ops.gdn import gated_delta_net

EPS = 1e-6
# f32 kernel vs float64 reference. Outputs are ~0.1 (unit q times 1/sqrt(D)); measured max error 5e-8 on 256
# tokens. States are O(1); measured max error 3e-7 (the update is a contraction, errors do not grow).
OUT_ATOL, STATE_ATOL, RTOL = 5e-7, 2e-6, 1e-5


@dataclass
class Layer:
    """Random inputs of one GDN layer for a step, laid out as the engine passes them."""

    seqs: np.ndarray          # [n_tok]
    qkv: np.ndarray           # [n_tok, stride]: q | k | v | padding
    gates: np.ndarray         # [n_tok, 2 H_v + 3]: b | alpha | padding
    params: np.ndarray        # [2 H_v]: ssm_a | dt_bias
    state: np.ndarray         # [n_slots, H_v, D, D]
    snaps: np.ndarray | None  # [n_slots, n_snap, H_v, D, D]
    h_k: int
    h_v: int
    d: int

    @property
    def n_tok(self) -> int:
        return len(self.seqs)

    def split(self):
        hk, hv, d, n = self.h_k, self.h_v, self.d, self.n_tok
        q = self.qkv[:, :hk * d].reshape(n, hk, d)
        k = self.qkv[:, hk * d: 2 * hk * d].reshape(n, hk, d)
        v = self.qkv[:, 2 * hk * d: 2 * hk * d + hv * d].reshape(n, hv, d)
        return q, k, v, self.gates[:, :hv], self.gates[:, hv: 2 * hv], self.params[:hv], self.params[hv:]


def make_layer(rng, seqs, h_k, h_v, d, n_slots, n_snap=0) -> Layer:
    n = len(seqs)
    stride = (2 * h_k + h_v) * d + 5
    qkv = rng.standard_normal((n, stride)).astype(np.float32)
    gates = rng.standard_normal((n, 2 * h_v + 3)).astype(np.float32)
    gates[:, h_v: 2 * h_v] *= 3.0
    gates[0, h_v] = 25.0            # softplus above its threshold 20 (identity branch)
    gates[-1, 2 * h_v - 1] = -30.0  # softplus of a tiny exp: log1p precision
    params = np.concatenate([-np.exp(rng.uniform(-2, 1.5, h_v)), rng.uniform(-1, 1, h_v)]).astype(np.float32)
    state = (0.3 * rng.standard_normal((n_slots, h_v, d, d))).astype(np.float32)
    snaps = (np.full((n_slots, n_snap, h_v, d, d), -7.0, np.float32) if n_snap else None)
    return Layer(np.asarray(seqs, np.uint32), qkv, gates, params, state, snaps, h_k, h_v, d)


def reference(layer: Layer):
    q, k, v, b, alpha, ssm_a, dt_bias = layer.split()
    return gated_delta_net(layer.seqs, q, k, v, b, alpha, ssm_a, dt_bias, layer.state, EPS, layer.snaps)


def run_gdn(device, op: GatedDeltaNet, layer: Layer, n_seqs: int = 1, steps=None):
    """Run the kernel; `steps` splits the tokens into consecutive dispatches (default: one dispatch)."""
    n, hv, d = layer.n_tok, layer.h_v, layer.d
    out0 = np.full((n, hv * d + 2), 5.0, np.float32)
    arrays = [token_records(layer.seqs), layer.qkv, layer.gates, layer.params, layer.state, out0]
    if layer.snaps is not None:
        arrays.append(layer.snaps)
    ws = Workspace(device, Workspace.size_for(*arrays))
    recs = ws.put("records", arrays[0])
    qkv = ws.put("qkv", layer.qkv)
    gates = ws.put("gates", layer.gates)
    params = ws.put("params", layer.params)
    state = ws.put("state", layer.state)
    out = ws.put("out", out0)
    n_snap = 0 if layer.snaps is None else layer.snaps.shape[1]
    snaps = ws.put("snaps", layer.snaps) if n_snap else None
    hk_d = layer.h_k * d
    stride = layer.qkv.shape[1]
    gstride = layer.gates.shape[1]
    rec = device.recorder()
    for first, count in steps or [(0, n)]:
        op.record(rec, recs.sub(16 * first, 16 * count), count,
                  qkv.sub(first * stride * 4, (count - 1) * stride * 4 + hk_d * 4),
                  qkv.sub((first * stride + hk_d) * 4, (count - 1) * stride * 4 + hk_d * 4),
                  qkv.sub((first * stride + 2 * hk_d) * 4, (count - 1) * stride * 4 + hv * d * 4), stride,
                  gates.sub(first * gstride * 4, ((count - 1) * gstride + hv) * 4),
                  gates.sub((first * gstride + hv) * 4, ((count - 1) * gstride + hv) * 4), gstride,
                  params.sub(0, hv * 4), params.sub(hv * 4, hv * 4), state,
                  out.sub(first * out0.shape[1] * 4, ((count - 1) * out0.shape[1] + hv * d) * 4),
                  out0.shape[1],
                  layer.h_k, hv, EPS, snapshots=snaps, n_snap=n_snap, n_seqs=n_seqs)
    rec.finish()
    rec.run()
    rec.destroy()
    got_out = ws.read("out", out0.shape)
    got_state = ws.read("state", layer.state.shape)
    got_snaps = ws.read("snaps", layer.snaps.shape) if n_snap else None
    ws.check_guards()
    ws.destroy()
    np.testing.assert_array_equal(got_out[:, hv * d:], 5.0, err_msg="out padding columns written")
    return got_out[:, : hv * d].reshape(n, hv, d), got_state, got_snaps


def check_against_reference(device, op, layer, n_seqs=1):
    got_out, got_state, got_snaps = run_gdn(device, op, layer, n_seqs)
    want_out, want_state, want_snaps = reference(layer)
    assert_close("out", got_out, want_out, OUT_ATOL, RTOL)
    assert_close("state", got_state, want_state, STATE_ATOL, RTOL)
    if got_snaps is not None:
        assert_close("snapshots", got_snaps, want_snaps, STATE_ATOL, RTOL)
    return got_out, got_state, got_snaps


def variants(device):
    return available_variants(device)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shared", "shuffle", "clustered"])
@pytest.mark.parametrize("lanes_per_column", [1, 2, 4, 8, 16, 32])
def test_gdn_matches_reference_every_variant_and_lane_count(device, variant, lanes_per_column):
    if variant not in variants(device):
        pytest.skip(f"{variant} needs subgroup ops this device lacks")
    rng = np.random.default_rng(lanes_per_column)
    # H_v != H_k, three sequences in non-sorted slots, one of them a single token; 4 snapshots
    layer = make_layer(rng, [2, 2, 2, 0, 3, 3], h_k=2, h_v=6, d=32, n_slots=4, n_snap=4)
    op = GatedDeltaNet(device, head_dim=32, lanes_per_column=lanes_per_column, variant=variant)
    check_against_reference(device, op, layer, n_seqs=3)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shuffle", "clustered"])
def test_gdn_lanes_equal_to_subgroup_size(device, lanes, variant):
    """lanes_per_column == subgroup size (llama.cpp's 'nocluster' case, which crashed at 32 on gfx1150)."""
    if variant not in variants(device):
        pytest.skip(f"{variant} needs subgroup ops this device lacks")
    d = max(32, lanes)
    layer = make_layer(np.random.default_rng(7), [1, 1, 0], h_k=1, h_v=2, d=d, n_slots=2, n_snap=2)
    op = GatedDeltaNet(device, head_dim=d, lanes_per_column=lanes, variant=variant)
    check_against_reference(device, op, layer, n_seqs=2)


@pytest.mark.parametrize("lanes_per_column", [64, 128])
def test_gdn_lanes_wider_than_any_subgroup(device, lanes_per_column):
    """A column spread over more lanes than a subgroup has: subgroup variants fall back to shared memory."""
    layer = make_layer(np.random.default_rng(3), [0, 0, 0], h_k=1, h_v=2, d=128, n_slots=1)
    for variant in variants(device):
        op = GatedDeltaNet(device, head_dim=128, lanes_per_column=lanes_per_column, variant=variant)
        check_against_reference(device, op, layer)


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok", [1, 2, 5, 8])
def test_gdn_shuffle_and_shared_are_bit_identical(device, n_tok):
    if "shuffle" not in variants(device):
        pytest.skip("no subgroup shuffle")
    layer = make_layer(np.random.default_rng(n_tok), [1] * n_tok, h_k=2, h_v=4, d=64, n_slots=2, n_snap=3)
    a = run_gdn(device, GatedDeltaNet(device, 64, 8, "shuffle"), layer)
    b = run_gdn(device, GatedDeltaNet(device, 64, 8, "shared"), layer)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.lanes
@pytest.mark.parametrize("variant", ["shared", "shuffle", "clustered"])
def test_gdn_batch_invariance_one_dispatch_per_token(device, variant):
    """Outputs, final state and snapshots of a multi-token dispatch equal, bit for bit, those of processing
    the same tokens one dispatch at a time (MTP verify vs plain decode)."""
    if variant not in variants(device):
        pytest.skip(f"{variant} needs subgroup ops this device lacks")
    n = 6
    layer = make_layer(np.random.default_rng(11), [0] * n, h_k=2, h_v=4, d=32, n_slots=1, n_snap=n)
    op = GatedDeltaNet(device, 32, 4, variant)
    batch_out, batch_state, batch_snaps = run_gdn(device, op, layer)
    single_out, single_state, _ = run_gdn(device, op, Layer(**{**layer.__dict__, "snaps": None}),
                                          steps=[(t, 1) for t in range(n)])
    np.testing.assert_array_equal(batch_out, single_out)
    np.testing.assert_array_equal(batch_state, single_state)
    np.testing.assert_array_equal(batch_snaps[0, n - 1], single_state[0])
    # snapshot m == live state after m + 1 single-token dispatches
    for m in range(n):
        _, prefix_state, _ = run_gdn(device, op, Layer(**{**layer.__dict__, "snaps": None}),
                                     steps=[(t, 1) for t in range(m + 1)])
        np.testing.assert_array_equal(batch_snaps[0, m], prefix_state[0])


@pytest.mark.lanes
def test_gdn_sequences_per_workgroup_do_not_change_bits(device):
    layer = make_layer(np.random.default_rng(5), [3, 3, 1, 1, 1, 0, 2, 2], h_k=2, h_v=4, d=32, n_slots=4,
                       n_snap=2)
    op = GatedDeltaNet(device, 32)
    one = run_gdn(device, op, layer, n_seqs=1)
    four = run_gdn(device, op, layer, n_seqs=4)
    two = run_gdn(device, op, layer, n_seqs=2)
    for a, b, c in zip(one, four, two):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_gdn_skips_tokens_of_slots_it_does_not_have(device):
    layer = make_layer(np.random.default_rng(9), [0, 0, 7, 1], h_k=1, h_v=2, d=16, n_slots=2, n_snap=2)
    got_out, got_state, got_snaps = run_gdn(device, GatedDeltaNet(device, 16), layer, n_seqs=3)
    want_out, want_state, want_snaps = reference(layer)
    np.testing.assert_array_equal(got_out[2], 5.0)   # row of slot 7 untouched
    assert_close("out", np.delete(got_out, 2, 0), np.delete(want_out, 2, 0), OUT_ATOL, RTOL)
    assert_close("state", got_state, want_state, STATE_ATOL, RTOL)


@pytest.mark.parametrize("n_tok,d,lanes_per_column", [(256, 32, 8), (64, 128, 8)])
def test_gdn_prefill_chunk(device, n_tok, d, lanes_per_column):
    layer = make_layer(np.random.default_rng(n_tok), [1] * n_tok, h_k=2, h_v=4, d=d, n_slots=2)
    op = GatedDeltaNet(device, d, lanes_per_column)
    check_against_reference(device, op, layer)


@pytest.mark.lanes
@pytest.mark.parametrize("name,h_k,h_v", [("27B", 16, 48), ("35B-A3B", 16, 32)])
def test_gdn_real_shapes_verify_step(device, name, h_k, h_v):
    """A 4-token verify step of one sequence plus a 1-token decode of another, with 4 snapshots."""
    layer = make_layer(np.random.default_rng(h_v), [1, 1, 1, 1, 0], h_k=h_k, h_v=h_v, d=128, n_slots=2,
                       n_snap=4)
    check_against_reference(device, GatedDeltaNet(device, 128), layer, n_seqs=2)


def test_gdn_refuses_bad_configuration(device):
    with pytest.raises(ValueError, match="lanes_per_column"):
        GatedDeltaNet(device, 128, lanes_per_column=3)
    with pytest.raises(ValueError, match="lanes_per_column"):
        GatedDeltaNet(device, 32, lanes_per_column=64)
    with pytest.raises(ValueError, match="variant"):
        GatedDeltaNet(device, 128, variant="warp")
    layer = make_layer(np.random.default_rng(0), [0], h_k=1, h_v=2, d=16, n_slots=1)
    ws = Workspace(device, Workspace.size_for(layer.qkv, layer.state) * 2)
    try:
        qkv = ws.put("qkv", layer.qkv)
        state = ws.put("state", layer.state)
        op = GatedDeltaNet(device, 16)
        rec = device.recorder()
        with pytest.raises(ValueError, match="gdn v"):
            op.record(rec, qkv, 1, qkv, qkv, qkv.sub(0, 64), 16, qkv, qkv, 4, qkv, qkv, state, qkv, 32,
                      1, 2, EPS)
        with pytest.raises(ValueError, match="multiple of n_head_k"):
            op.record(rec, qkv, 1, qkv, qkv, qkv, 16, qkv, qkv, 4, qkv, qkv, state, qkv, 32, 2, 3, EPS)
        rec.destroy()
    finally:
        ws.destroy()


def test_gdn_survives_a_driver_that_misreports_its_subgroup_size(device):
    """lavapipe at LP_NATIVE_VECTOR_WIDTH=1024 reports 32 lanes but runs 16-lane subgroups: every variant and
    lane count must still be right (the subgroup variants detect it and use shared memory where needed)."""
    if not device.caps.lavapipe or os.environ.get("LP_NATIVE_VECTOR_WIDTH"):
        pytest.skip("only on lavapipe, from the default-width run")
    env = dict(os.environ, LP_NATIVE_VECTOR_WIDTH="1024")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
         "-k", "every_variant or lanes_equal or batch_invariance or real_shapes"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
    assert proc.returncode == 0, f"gdn tests failed at LP_NATIVE_VECTOR_WIDTH=1024:\n{tail}"
