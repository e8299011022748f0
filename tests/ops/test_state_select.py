"""shaders/state_select.comp: the rollback copy, alone against its oracle and end to end after a verify step
of conv1d + gdn (the rolled-back state equals, bit for bit, the state of running only the accepted tokens)."""

from __future__ import annotations

import numpy as np
import pytest
from guarded_workspace import Workspace, token_records
from test_gdn import EPS, make_layer

from vkmtp.ops.conv1d import CausalConv1d
from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.state_select import StateSelect
from vkmtp.ref.ops.state_select import NO_ROLLBACK, state_select


@pytest.mark.lanes
@pytest.mark.parametrize("n_groups", [1, 3])
def test_state_select_matches_reference(device, n_groups):
    rng = np.random.default_rng(n_groups)
    n_slots, n_snap, n_words = 4, 3, 1000
    snaps = rng.standard_normal((n_groups, n_slots, n_snap, n_words)).astype(np.float32)
    live = rng.standard_normal((n_groups, n_slots, n_words)).astype(np.float32)
    select = np.array([[2, 1], [0, NO_ROLLBACK], [3, 0], [9, 0], [1, 3]], np.uint32)
    ws = Workspace(device, Workspace.size_for(snaps, live, select))
    sel_v, snap_v, live_v = ws.put("select", select), ws.put("snaps", snaps), ws.put("live", live)
    rec = device.recorder()
    StateSelect(device).record(rec, sel_v, len(select), snap_v, live_v, n_words, n_slots, n_snap, n_groups,
                               snap_group_stride=n_slots * n_snap * n_words,
                               live_group_stride=n_slots * n_words)
    rec.finish()
    rec.run()
    got = ws.read("live", live.shape)
    ws.check_guards()
    ws.destroy()
    want = state_select(select, snaps, live)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[:, 2], snaps[:, 2, 1])
    np.testing.assert_array_equal(got[:, [0, 1]], live[:, [0, 1]])   # no-op entries


def test_state_select_refuses_overlapping_groups(device):
    ws = Workspace(device, 1 << 16)
    v = ws.put("x", np.zeros(1024, np.float32))
    rec = device.recorder()
    with pytest.raises(ValueError, match="group strides"):
        StateSelect(device).record(rec, v, 1, v, v, 10, 2, 2, n_groups=2, snap_group_stride=5,
                                   live_group_stride=20)
    rec.destroy()
    ws.destroy()


@pytest.mark.lanes
def test_rollback_after_partial_acceptance_is_exact(device):
    """Verify step: slot 1 runs [last token + 3 drafts], slot 0 one token, both with 4 snapshots. Rolling back
    to snapshot r (accepted = tokens 0..r) must give exactly the states of a step over those tokens only.
    The recorded sequence is replayed with a different r written into the select buffer each time."""
    rng = np.random.default_rng(21)
    h_k, h_v, d, n_ch, n_slots, n_snap = 2, 4, 32, 300, 2, 4
    seqs = [1, 1, 1, 1, 0]
    layer = make_layer(rng, seqs, h_k, h_v, d, n_slots)
    u = rng.standard_normal((len(seqs), n_ch)).astype(np.float32)
    weight = rng.standard_normal((n_ch, 4)).astype(np.float32)
    conv_state = rng.standard_normal((n_slots, 3, n_ch)).astype(np.float32)
    conv = CausalConv1d(device)
    gdn = GatedDeltaNet(device, d)
    select = StateSelect(device)

    def step(tokens: list[int], snapshots: bool):
        """conv1d + gdn over a subset of the step's tokens; with snapshots also the rollback copies."""
        sub = np.asarray(tokens)
        n = len(sub)
        arrays = dict(records=token_records(np.asarray(seqs)[sub]), u=u[sub], weight=weight,
                      conv_state=conv_state, conv_out=np.zeros((n, n_ch), np.float32), qkv=layer.qkv[sub],
                      gates=layer.gates[sub], params=layer.params, state=layer.state,
                      out=np.zeros((n, h_v * d), np.float32),
                      conv_snaps=np.zeros((n_slots, n_snap, 3, n_ch), np.float32),
                      snaps=np.zeros((n_slots, n_snap, h_v, d, d), np.float32),
                      select=np.array([[1, NO_ROLLBACK], [0, NO_ROLLBACK]], np.uint32))
        ws = Workspace(device, Workspace.size_for(*arrays.values()))
        v = {name: ws.put(name, a) for name, a in arrays.items()}
        stride, hk_d = layer.qkv.shape[1], h_k * d
        qkv, gates, gs = v["qkv"], v["gates"], layer.gates.shape[1]
        rec = device.recorder()
        ns = n_snap if snapshots else 0
        conv.record(rec, v["records"], n, v["u"], n_ch, v["weight"], v["conv_state"], v["conv_out"], n_ch,
                    n_ch, snapshots=v["conv_snaps"], n_snap=ns)
        gdn.record(rec, v["records"], n, qkv, qkv.sub(hk_d * 4, qkv.nbytes - hk_d * 4),
                   qkv.sub(2 * hk_d * 4, qkv.nbytes - 2 * hk_d * 4), stride, gates,
                   gates.sub(h_v * 4, gates.nbytes - h_v * 4), gs, v["params"],
                   v["params"].sub(h_v * 4, h_v * 4), v["state"], v["out"], h_v * d, h_k, h_v, EPS,
                   snapshots=v["snaps"], n_snap=ns, n_seqs=2)
        if snapshots:
            select.record(rec, v["select"], 2, v["conv_snaps"], v["conv_state"], 3 * n_ch, n_slots, n_snap)
            select.record(rec, v["select"], 2, v["snaps"], v["state"], h_v * d * d, n_slots, n_snap)
        rec.finish()
        return ws, rec

    ws, rec = step(list(range(len(seqs))), snapshots=True)
    for r in [NO_ROLLBACK, 0, 1, 2, 3]:
        device.upload(ws.views["conv_state"], conv_state)     # the replay starts from the same states
        device.upload(ws.views["state"], layer.state)
        device.upload(ws.views["select"], np.array([[1, r], [0, NO_ROLLBACK]], np.uint32))
        rec.run()
        kept = 3 if r == NO_ROLLBACK else r
        ref_ws, ref_rec = step(list(range(kept + 1)) + [4], snapshots=False)
        ref_rec.run()
        for name, shape in [("conv_state", conv_state.shape), ("state", layer.state.shape)]:
            np.testing.assert_array_equal(ws.read(name, shape), ref_ws.read(name, shape),
                                          err_msg=f"r={r} {name}")
        ref_ws.check_guards()
        ref_rec.destroy()
        ref_ws.destroy()
    ws.check_guards()
    rec.destroy()
    ws.destroy()
