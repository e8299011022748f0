"""shaders/gdn_replay.comp and gdn.comp's step log (LOG_STEPS): the logged verify leaves the live state as it was,
gives the same outputs as the plain kernel, and replaying tokens 0..m from the log gives, bit for bit, the state
of running only those tokens (so MTP stays token-identical to plain decoding); both against their oracles."""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import Workspace, assert_close
from test_gdn import EPS, STATE_ATOL, RTOL, Layer, make_layer, run_gdn

from vkmtp.ops.gdn import GatedDeltaNet, available_variants, log_words
from vkmtp.ops.gdn_replay import GdnReplay
from vkmtp.ref.ops.gdn import gdn_replay, gdn_step_log


class Logged:
    """A GatedDeltaNet that records its dispatches with the step log (run_gdn passes the log as snapshots)."""

    def __init__(self, op: GatedDeltaNet):
        self.op = op

    def record(self, *args, **kw):
        self.op.record(*args, log_steps=True, **kw)


def logged_layer(layer: Layer, n_log: int) -> Layer:
    log = np.full((layer.state.shape[0], n_log, layer.h_v, log_words(layer.d)), -7.0, np.float32)
    return Layer(layer.seqs, layer.qkv, layer.gates, layer.params, layer.state, log, layer.h_k, layer.h_v,
                 layer.d)


def rows_of(layer: Layer, rows: list[int]) -> Layer:
    return Layer(layer.seqs[rows], layer.qkv[rows], layer.gates[rows], layer.params, layer.state, None,
                 layer.h_k, layer.h_v, layer.d)


def run_replay(device, select: np.ndarray, log: np.ndarray, state: np.ndarray, d: int) -> np.ndarray:
    """log [G, n_slots, n_log, H_v, 1 + 2D], state [G, n_slots, H_v, D, D] -> states after the replay."""
    n_groups, n_slots, n_log, h_v = log.shape[:4]
    ws = Workspace(device, Workspace.size_for(select, log, state))
    sel_v, log_v, state_v = ws.put("select", select), ws.put("log", log), ws.put("state", state)
    rec = device.recorder()
    GdnReplay(device, d).record(rec, sel_v, len(select), log_v, state_v, h_v, n_slots, n_log, n_groups,
                                log_group_stride=log[0].size, state_group_stride=state[0].size)
    rec.finish()
    rec.run()
    rec.destroy()
    got = ws.read("state", state.shape)
    ws.check_guards()
    ws.destroy()
    return got


@pytest.mark.lanes
@pytest.mark.parametrize("lanes_per_column", [1, 4])
def test_replay_equals_running_only_the_accepted_tokens(device, lanes_per_column):
    rng = np.random.default_rng(lanes_per_column)
    # a verify step: slot 2 and slot 0 with 4 rows each (last token + 3 drafts), slot 1 with one row
    seqs = [2, 2, 2, 2, 0, 0, 0, 0, 1]
    layer = make_layer(rng, seqs, h_k=2, h_v=4, d=32, n_slots=3)
    for variant in available_variants(device):
        op = GatedDeltaNet(device, 32, lanes_per_column=lanes_per_column, variant=variant)
        plain_out, _, _ = run_gdn(device, op, layer)
        log_out, live, log = run_gdn(device, Logged(op), logged_layer(layer, 4))
        np.testing.assert_array_equal(log_out, plain_out)          # the log changes no output bit
        np.testing.assert_array_equal(live, layer.state)           # the live state is left as it was
        for m in range(4):
            select = np.array([[2, m], [0, 3 - m], [1, 0], [7, 1]], np.uint32)   # slot 7: none, skipped
            got = run_replay(device, select, log[None], layer.state[None], 32)[0]
            rows = list(range(m + 1)) + list(range(4, 4 + 4 - m)) + [8]
            _, want, _ = run_gdn(device, op, rows_of(layer, rows))
            np.testing.assert_array_equal(got, want)


@pytest.mark.lanes
def test_step_log_and_replay_match_their_oracles(device):
    rng = np.random.default_rng(5)
    layer = make_layer(rng, [1, 1, 1, 0, 0], h_k=1, h_v=2, d=64, n_slots=2)
    op = GatedDeltaNet(device, 64)
    _, _, log = run_gdn(device, Logged(op), logged_layer(layer, 3))
    q, k, v, b, alpha, ssm_a, dt_bias = layer.split()
    _, want_log = gdn_step_log(layer.seqs, q, k, v, b, alpha, ssm_a, dt_bias, layer.state, EPS, 3)
    assert_close("log slot 1", log[1, :3], want_log[1, :3], STATE_ATOL, RTOL)     # 3 tokens
    assert_close("log slot 0", log[0, :2], want_log[0, :2], STATE_ATOL, RTOL)     # 2 tokens
    np.testing.assert_array_equal(log[0, 2], -7.0)                                  # no third token: untouched
    # two layers at once (group strides), m beyond the log clamped to its last entry
    logs = np.stack([log, log[::-1]])
    states = np.stack([layer.state, layer.state[::-1] * 0.5])
    select = np.array([[1, 1], [0, 9]], np.uint32)
    got = run_replay(device, select, logs, states, 64)
    want = gdn_replay(select, logs, states)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.abs(got - states).max() > 0.01
