"""shaders/gdn_chunked.comp (prefill) against the recurrence oracle, within a tolerance (not bit-exact).

Each distinct (workgroup, D, chunk, columns) is a pipeline that lavapipe compiles for several seconds, so the
fast cases share two configurations.
"""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import assert_close
from test_gdn import make_layer, reference, run_gdn

from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.gdn_chunked import ChunkedGatedDeltaNet

# The forward substitution over a chunk and the C-term state sums round differently from the recurrence:
# measured max errors out 9e-7 (values ~0.1), state 7e-6 (values ~1, 27B heads, 64 tokens).
OUT_ATOL, STATE_ATOL, RTOL = 3e-6, 3e-5, 1e-4
SMALL = dict(chunk=16, columns=8, workgroup_size=128)   # several chunks per sequence, 4 workgroups per head


class _Adapter:
    """Lets run_gdn drive the chunked wrapper (which takes no snapshots)."""

    def __init__(self, op):
        self.op = op

    def record(self, rec, *args, snapshots=None, n_snap=0, n_seqs=1):
        assert n_snap == 0
        self.op.record(rec, *args, n_seqs=n_seqs)


def check(device, op, layer, n_seqs=1):
    got_out, got_state, _ = run_gdn(device, _Adapter(op), layer, n_seqs)
    want_out, want_state, _ = reference(layer)
    assert_close("out", got_out, want_out, OUT_ATOL, RTOL)
    assert_close("state", got_state, want_state, STATE_ATOL, RTOL)
    return got_out, got_state


@pytest.mark.parametrize("n_tok", [1, 16, 37])
def test_gdn_chunked_matches_reference(device, n_tok):
    layer = make_layer(np.random.default_rng(n_tok), [1] * n_tok, h_k=2, h_v=4, d=32, n_slots=2)
    check(device, ChunkedGatedDeltaNet(device, 32, **SMALL), layer)


def test_gdn_chunked_several_sequences(device):
    seqs = [2] * 20 + [0] * 3 + [1] * 35
    layer = make_layer(np.random.default_rng(2), seqs, h_k=2, h_v=6, d=32, n_slots=3)
    op = ChunkedGatedDeltaNet(device, 32, **SMALL)
    one = check(device, op, layer, n_seqs=1)
    three = check(device, op, layer, n_seqs=3)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a, b)


def test_gdn_chunked_prefill_256_tokens_then_recurrent_decode(device):
    """A 256-token prefill with the default configuration, then decode tokens with the recurrent kernel
    from the state the chunked kernel left: both stay within tolerance of the oracle."""
    rng = np.random.default_rng(256)
    layer = make_layer(rng, [0] * 259, h_k=2, h_v=4, d=32, n_slots=1)
    prefill = make_layer(rng, [0] * 256, h_k=2, h_v=4, d=32, n_slots=1)
    for name in ("qkv", "gates"):
        setattr(prefill, name, getattr(layer, name)[:256])
    prefill.params, prefill.state = layer.params, layer.state
    _, state_after_prefill = check(device, ChunkedGatedDeltaNet(device, 32), prefill)
    decode = make_layer(rng, [0] * 3, h_k=2, h_v=4, d=32, n_slots=1)
    decode.qkv, decode.gates, decode.params = layer.qkv[256:], layer.gates[256:], layer.params
    decode.state = state_after_prefill
    got_out, got_state, _ = run_gdn(device, GatedDeltaNet(device, 32), decode)
    want_out, want_state, _ = reference(layer)
    assert_close("decode out", got_out, want_out[256:], OUT_ATOL, RTOL)
    assert_close("decode state", got_state, want_state, STATE_ATOL, RTOL)


@pytest.mark.slow
def test_gdn_chunked_real_shape(device):
    """27B heads (16 key, 48 value, D 128), one 64-token chunk (about 30 s on lavapipe)."""
    layer = make_layer(np.random.default_rng(27), [0] * 64, h_k=16, h_v=48, d=128, n_slots=1)
    check(device, ChunkedGatedDeltaNet(device, 128), layer)


def test_gdn_chunked_refuses_shared_memory_it_cannot_have(device):
    with pytest.raises(ValueError, match="shared memory"):
        ChunkedGatedDeltaNet(device, 128, chunk=256, columns=64)
