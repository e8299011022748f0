"""shaders/gdn_chunked.comp (prompt chunks) against its oracle vkmtp.ref.ops.gdn_chunked and the recurrence oracle
vkmtp.ref.ops.gdn, within a tolerance (not bit-exact), at small and real head shapes.

Each distinct (workgroup, D, chunk, columns) is a pipeline that lavapipe compiles for seconds, so the cases
share a few configurations. The kernel uses no subgroup operation and no optional feature; it still runs at
4/8/16 lanes (`lanes`) and under VKMTP_FEATURES=none (.ci/run) like every op.
"""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import assert_close
from test_gdn import EPS, make_layer, reference, run_gdn

from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.gdn_chunked import ChunkedGatedDeltaNet, shared_bytes
from vkmtp.ref.ops.gdn import gated_delta_net
from vkmtp.ref.ops.gdn_chunked import chunked_gated_delta_net

# The forward substitution over a chunk and the C-term state sums round differently from the recurrence:
# measured max errors out 9e-7 (values ~0.1), state 7e-6 (values ~1, 27B heads, 64 tokens).
OUT_ATOL, STATE_ATOL, RTOL = 3e-6, 3e-5, 1e-4
SMALL = dict(chunk=16, columns=8)         # several chunks per sequence, 4 workgroups per head
WHOLE_HEAD = dict(chunk=8, columns=32)    # one workgroup per head (the default layout)
# (H_k, H_v) of the released models' GDN layers, D = 128 (tools/make_synthetic_model.py PRESETS)
REAL_HEADS = {"0.8b": (16, 16), "9b": (16, 32), "27b": (16, 48), "35b-a3b": (16, 32)}


class _Adapter:
    """Lets run_gdn drive the chunked wrapper (which takes no snapshots)."""

    def __init__(self, op):
        self.op = op

    def record(self, rec, *args, snapshots=None, n_snap=0, n_seqs=1):
        assert n_snap == 0
        self.op.record(rec, *args, n_seqs=n_seqs)


def chunked_reference(layer, chunk):
    q, k, v, b, alpha, ssm_a, dt_bias = layer.split()
    return chunked_gated_delta_net(layer.seqs, q, k, v, b, alpha, ssm_a, dt_bias, layer.state, EPS, chunk)


def check(device, op, layer, n_seqs=1):
    got_out, got_state, _ = run_gdn(device, _Adapter(op), layer, n_seqs)
    want_out, want_state = chunked_reference(layer, op.chunk)
    assert_close("out vs chunked oracle", got_out, want_out, OUT_ATOL, RTOL)
    assert_close("state vs chunked oracle", got_state, want_state, STATE_ATOL, RTOL)
    rec_out, rec_state, _ = reference(layer)
    assert_close("out vs recurrence", got_out, rec_out, OUT_ATOL, RTOL)
    assert_close("state vs recurrence", got_state, rec_state, STATE_ATOL, RTOL)
    return got_out, got_state


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_chunked_oracle_is_the_recurrence(chunk):
    """In float64 the chunked evaluation and the token-by-token recurrence agree to rounding."""
    layer = make_layer(np.random.default_rng(chunk), [1] * 40 + [0] * 7, h_k=2, h_v=6, d=16, n_slots=3)
    q, k, v, b, alpha, ssm_a, dt_bias = layer.split()
    want_out, want_state, _ = gated_delta_net(layer.seqs, q, k, v, b, alpha, ssm_a, dt_bias, layer.state, EPS,
                                              dtype=np.float64)
    got_out, got_state = chunked_reference(layer, chunk)
    np.testing.assert_allclose(got_out, want_out, rtol=0, atol=1e-12)
    # the recurrence oracle stores its final state in the state array's dtype (f32): one rounding
    np.testing.assert_allclose(got_state, want_state, rtol=2 ** -23, atol=1e-11)


@pytest.mark.lanes
@pytest.mark.parametrize("n_tok", [1, 16, 37])
def test_gdn_chunked_matches_reference(device, n_tok):
    layer = make_layer(np.random.default_rng(n_tok), [1] * n_tok, h_k=2, h_v=4, d=32, n_slots=2)
    check(device, ChunkedGatedDeltaNet(device, 32, **SMALL), layer)


def test_gdn_chunked_one_workgroup_per_head(device):
    layer = make_layer(np.random.default_rng(5), [0] * 37, h_k=2, h_v=4, d=32, n_slots=1)
    check(device, ChunkedGatedDeltaNet(device, 32, **WHOLE_HEAD), layer)


def test_gdn_chunked_several_sequences(device):
    seqs = [2] * 20 + [0] * 3 + [1] * 35
    layer = make_layer(np.random.default_rng(2), seqs, h_k=2, h_v=6, d=32, n_slots=3)
    op = ChunkedGatedDeltaNet(device, 32, **SMALL)
    one = check(device, op, layer, n_seqs=1)
    three = check(device, op, layer, n_seqs=3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_gdn_chunked_skips_slots_it_does_not_have(device):
    """Tokens of a slot >= n_slots are skipped (out rows unwritten, no state touched), as gdn.comp does."""
    layer = make_layer(np.random.default_rng(9), [0] * 10 + [7] * 6, h_k=2, h_v=4, d=32, n_slots=1)
    got_out, got_state, _ = run_gdn(device, _Adapter(ChunkedGatedDeltaNet(device, 32, **SMALL)), layer)
    np.testing.assert_array_equal(got_out[10:], 5.0)
    want_out, want_state, _ = reference(layer)
    assert_close("state", got_state, want_state, STATE_ATOL, RTOL)
    assert_close("out", got_out[:10], want_out[:10], OUT_ATOL, RTOL)


def test_gdn_chunked_prefill_then_recurrent_decode(device):
    """A 100-token prefill with the default chunk / columns, then decode tokens with the recurrent kernel from
    the state the chunked kernel left: both stay within tolerance of the oracle."""
    rng = np.random.default_rng(256)
    layer = make_layer(rng, [0] * 103, h_k=2, h_v=4, d=32, n_slots=1)
    prefill = make_layer(rng, [0] * 100, h_k=2, h_v=4, d=32, n_slots=1)
    for name in ("qkv", "gates"):
        setattr(prefill, name, getattr(layer, name)[:100])
    prefill.params, prefill.state = layer.params, layer.state
    _, state_after_prefill = check(device, ChunkedGatedDeltaNet(device, 32), prefill)
    decode = make_layer(rng, [0] * 3, h_k=2, h_v=4, d=32, n_slots=1)
    decode.qkv, decode.gates, decode.params = layer.qkv[100:], layer.gates[100:], layer.params
    decode.state = state_after_prefill
    got_out, got_state, _ = run_gdn(device, GatedDeltaNet(device, 32), decode)
    want_out, want_state, _ = reference(layer)
    assert_close("decode out", got_out, want_out[100:], OUT_ATOL, RTOL)
    assert_close("decode state", got_state, want_state, STATE_ATOL, RTOL)


def real_shape(device, model, n_tok):
    h_k, h_v = REAL_HEADS[model]
    layer = make_layer(np.random.default_rng(n_tok), [0] * n_tok, h_k=h_k, h_v=h_v, d=128, n_slots=1)
    op = ChunkedGatedDeltaNet(device, 128)   # the engine's configuration on this device
    check(device, op, layer)


def test_gdn_chunked_real_shape_0_8b(device):
    """0.8B heads (16 key, 16 value, D 128), more tokens than one chunk."""
    real_shape(device, "0.8b", 40)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["9b", "27b"])   # 35B-A3B has the 9B's GDN heads
def test_gdn_chunked_real_shape(device, model):
    real_shape(device, model, 64)


def test_gdn_chunked_refuses_what_it_cannot_run(device):
    with pytest.raises(ValueError, match="shared memory"):
        ChunkedGatedDeltaNet(device, 128, chunk=256)
    with pytest.raises(ValueError, match="columns 48 must divide"):
        ChunkedGatedDeltaNet(device, 128, columns=48)
    assert shared_bytes(32, 128) == 4 * (2 * 32 * 128 + 2 * 32 * 32 + 4 * 32)


@pytest.mark.parametrize("kernel", ["recurrent", "chunked"])
def test_long_prompt_chunk_in_dispatches_below_the_drivers_loop_limit(device, kernel):
    """300 tokens of one sequence at D = 128 in the slices the engine records (vkmtp.graph.forward): on lavapipe,
    whose gallivm ends an invocation's loops after 65535 iterations (DeviceCaps.loop_iterations), a single
    dispatch of the recurrent kernel with one lane per column stops after token 250 and never stores the state;
    in slices every token and the final state agree with the oracle."""
    n = 300
    layer = make_layer(np.random.default_rng(300), [0] * n, h_k=1, h_v=2, d=128, n_slots=1)
    op = GatedDeltaNet(device, 128) if kernel == "recurrent" else ChunkedGatedDeltaNet(device, 128, chunk=16)
    step = op.max_tokens_per_dispatch(device.caps.loop_iterations)
    if device.caps.lavapipe:
        assert device.caps.loop_iterations == 65535 and step < 250
    steps = [(first, min(step, n - first)) for first in range(0, n, step)]
    got_out, got_state, _ = run_gdn(device, op if kernel == "recurrent" else _Adapter(op), layer, steps=steps)
    want_out, want_state, _ = reference(layer)
    assert_close("out", got_out, want_out, OUT_ATOL, RTOL)
    assert_close("state", got_state, want_state, STATE_ATOL, RTOL)
