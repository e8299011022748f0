"""shaders/spec.comp against vkmtp.ref.ops.spec: draft tokens with the p-min cut, acceptance, row gather."""

import numpy as np
import pytest

from vkmtp.ops.spec import SpecOps
from vkmtp.ref.ops import spec as ref

GUARD = 0xDEADBEEF


class StepBuffer:
    """Named uint regions of one host-visible buffer, with guard words after each."""

    def __init__(self, device, sizes):
        self.offsets, total = {}, 0
        for name, n in sizes.items():
            self.offsets[name] = (total, n)
            total += n + 4
        self.buf = device.buffer(total * 4, "host", "step")
        self.words = self.buf.words()
        self.words[:] = GUARD

    def view(self, name):
        off, n = self.offsets[name]
        return self.buf.view(off * 4, n * 4)

    def arr(self, name, dtype=np.uint32):
        off, n = self.offsets[name]
        return self.words[off: off + n].view(dtype)

    def guards_intact(self):
        return all((self.words[off + n: off + n + 4] == GUARD).all() for off, n in self.offsets.values())


@pytest.mark.lanes
@pytest.mark.parametrize("n_seq,K", [(1, 1), (1, 3), (3, 3), (2, 7)])
@pytest.mark.parametrize("p_min", [0.0, 0.4])
def test_draft_tokens_and_accept_match_reference(device, n_seq, K, p_min):
    rng = np.random.default_rng(n_seq * 10 + K)
    V, n_top = K + 1, 10
    step = StepBuffer(device, {"ids": n_seq, "topv": n_seq * n_top, "valid": n_seq * K,
                               "vrec": n_seq * V * 4, "drec": K * n_seq * 4, "vids": n_seq * V,
                               "out": n_seq * V, "accept": n_seq, "nvalid": n_seq, "sel": 2 * n_seq,
                               "hsel": 2 * n_seq})
    vrec = step.arr("vrec").reshape(n_seq, V, 4)
    vrec[:] = 0
    vrec[:, :, 2] = np.arange(n_seq)[:, None] + 5  # sequence slots
    vrec[:, 0, 0] = rng.integers(0, 100, n_seq)
    ops = SpecOps(device)
    valid_ref = np.zeros((n_seq, K), np.uint32)
    vtok_ref = vrec[:, :, 0].copy()
    for i in range(K):
        ids = rng.integers(0, 6, n_seq).astype(np.uint32)
        topv = -np.sort(rng.exponential(1.5, (n_seq, n_top)).astype(np.float32), axis=1)
        step.arr("ids")[:] = ids
        step.arr("topv", np.float32)[:] = topv.ravel()
        rec = device.recorder()
        nxt = step.view("drec").sub(((i + 1) % K) * n_seq * 16, n_seq * 16)
        ops.record_draft_token(rec, step.view("ids"), step.view("valid"), step.view("vrec"), nxt, n_seq, K, i,
                               top_values=step.view("topv"), n_top=n_top, p_min=p_min)
        rec.finish()
        rec.run()
        nd = np.zeros(n_seq, np.uint32)
        ref.draft_token(ids, valid_ref, vtok_ref, nd, K, i, topv, p_min)
        np.testing.assert_array_equal(step.arr("valid").reshape(n_seq, K)[:, : i + 1], valid_ref[:, : i + 1])
        np.testing.assert_array_equal(vrec[:, :, 0], vtok_ref)
        if i + 1 < K:
            np.testing.assert_array_equal(step.arr("drec").reshape(K, n_seq, 4)[i + 1, :, 0], ids)
    # target argmax: agree with the drafts for a random prefix
    vids = rng.integers(0, 6, (n_seq, V)).astype(np.uint32)
    for s in range(n_seq):
        agree = rng.integers(0, V)
        vids[s, :agree] = vtok_ref[s, 1: agree + 1]
    step.arr("vids")[:] = vids.ravel()
    rec = device.recorder()
    ops.record_accept(rec, step.view("vids"), step.view("valid"), step.view("vrec"), step.view("out"),
                      step.view("accept"), step.view("nvalid"), step.view("sel"),
                      step.view("hsel"), n_seq, K)
    rec.finish()
    rec.run()
    out_ref, acc_ref, nvalid_ref = ref.accept(vids, valid_ref, vtok_ref)
    acc = step.arr("accept")
    np.testing.assert_array_equal(acc, acc_ref)
    np.testing.assert_array_equal(step.arr("nvalid"), nvalid_ref)
    np.testing.assert_array_equal(step.arr("sel").reshape(n_seq, 2), np.stack([np.arange(n_seq) + 5, acc_ref], 1))
    np.testing.assert_array_equal(step.arr("hsel").reshape(n_seq, 2),
                                  np.stack([np.arange(n_seq) * V + acc_ref, np.arange(n_seq) + 5], 1))
    out = step.arr("out").reshape(n_seq, V)
    for s in range(n_seq):
        np.testing.assert_array_equal(out[s, : acc[s] + 1], out_ref[s, : acc_ref[s] + 1])
    assert step.guards_intact()
    step.buf.destroy()


def test_drafts_shorter_than_n_min_are_dropped(device):
    n_seq, K = 2, 3
    V = K + 1
    step = StepBuffer(device, {"vids": n_seq * V, "valid": n_seq * K, "vrec": n_seq * V * 4, "out": n_seq * V,
                               "accept": n_seq, "nvalid": n_seq, "sel": 2 * n_seq, "hsel": 2 * n_seq})
    valid = np.array([[1, 0, 0], [1, 1, 0]], np.uint32)   # 1 and 2 valid drafts
    step.arr("valid")[:] = valid.ravel()
    vrec = step.arr("vrec").reshape(n_seq, V, 4)
    vrec[:] = 0
    vrec[:, 1:, 0] = 5
    step.arr("vids")[:] = 5                                # the target agrees with every draft
    rec = device.recorder()
    SpecOps(device).record_accept(rec, step.view("vids"), step.view("valid"), step.view("vrec"),
                                  step.view("out"), step.view("accept"), step.view("nvalid"),
                                  step.view("sel"), step.view("hsel"), n_seq, K, n_min=2)
    rec.finish()
    rec.run()
    np.testing.assert_array_equal(step.arr("accept"), [0, 2])
    np.testing.assert_array_equal(step.arr("nvalid"), [0, 2])
    _, acc_ref, nvalid_ref = ref.accept(np.full((n_seq, V), 5, np.uint32), valid, vrec[:, :, 0], n_min=2)
    np.testing.assert_array_equal(acc_ref, [0, 2])
    np.testing.assert_array_equal(nvalid_ref, [0, 2])
    step.buf.destroy()


def test_synthetic_acceptance_uses_the_uniforms(device):
    n_seq, K = 2, 3
    V = K + 1
    step = StepBuffer(device, {"vids": n_seq * V, "valid": n_seq * K, "vrec": n_seq * V * 4, "out": n_seq * V,
                               "accept": n_seq, "nvalid": n_seq, "u": n_seq * K, "sel": 2 * n_seq,
                               "hsel": 2 * n_seq})
    step.arr("valid")[:] = 1
    step.arr("vrec")[:] = 7
    step.arr("vids")[:] = 9          # never equal to the drafts: greedy would accept nothing
    u = np.array([[0.1, 0.5, 0.95], [0.9, 0.1, 0.1]], np.float32)
    step.arr("u", np.float32)[:] = u.ravel()
    rec = device.recorder()
    SpecOps(device).record_accept(rec, step.view("vids"), step.view("valid"), step.view("vrec"),
                                  step.view("out"), step.view("accept"), step.view("nvalid"),
                                  step.view("sel"), step.view("hsel"), n_seq, K,
                                  uniforms=step.view("u"), synthetic_rate=0.8)
    rec.finish()
    rec.run()
    np.testing.assert_array_equal(step.arr("accept"), [2, 0])
    step.buf.destroy()


@pytest.mark.lanes
def test_copy_rows_follows_pairs_read_at_run_time(device):
    rows, width = 12, 70
    src_buf = device.buffer(rows * width * 4, "device", "src")
    dst_buf = device.buffer((rows * width + 8) * 4, "device", "dst")
    data = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    device.upload(src_buf.view(), data)
    device.upload(dst_buf.view(), np.zeros(rows * width + 8, np.float32))
    step = StepBuffer(device, {"pairs": 6})
    pairs = np.array([[3, 0], [0, 5], [11, 2]], np.uint32)
    step.arr("pairs")[:] = pairs.ravel()
    rec = device.recorder()
    SpecOps(device).record_copy_rows(rec, step.view("pairs"), 3, src_buf.view(),
                                     dst_buf.view(0, rows * width * 4), width, rows, rows)
    rec.finish()
    rec.run()
    got = device.read(dst_buf.view())
    want = np.zeros((rows, width), np.float32)
    ref.copy_rows(pairs, data, want)
    np.testing.assert_array_equal(got[: rows * width].reshape(rows, width), want)
    np.testing.assert_array_equal(got[rows * width:], 0.0)
    for b in (src_buf, dst_buf, step.buf):
        b.destroy()


@pytest.mark.lanes
@pytest.mark.parametrize("width", [70, 1024])
def test_shift_rows_moves_the_old_row_to_the_ring_and_the_new_row_in(device, width):
    """A plain decode step's MTP bookkeeping in one dispatch: each slot's row (pending hidden) goes to its ring
    row, the step's row takes its place; other rows and the guard words after the buffers are untouched."""
    src_rows, slots, ring_rows = 3, 5, 12
    rng = np.random.default_rng(width)
    src = rng.standard_normal((src_rows, width)).astype(np.float32)
    cur = rng.standard_normal((slots, width)).astype(np.float32)
    ring = rng.standard_normal((ring_rows, width)).astype(np.float32)
    bufs = {}
    for name, data in (("src", src), ("cur", cur), ("ring", ring)):
        bufs[name] = device.buffer((data.size + 8) * 4, "device", name)
        device.upload(bufs[name].view(), np.concatenate([data.ravel(), np.full(8, 7.5, np.float32)]))
    step = StepBuffer(device, {"pairs": 6, "ring_pairs": 6})
    pairs = np.array([[0, 4], [1, 0], [2, 2]], np.uint32)          # {src row, slot}
    ring_pairs = np.array([[4, 9], [0, 1], [2, 5]], np.uint32)     # {slot, ring row}
    step.arr("pairs")[:] = pairs.ravel()
    step.arr("ring_pairs")[:] = ring_pairs.ravel()
    rec = device.recorder()
    SpecOps(device).record_shift_rows(rec, step.view("pairs"), step.view("ring_pairs"), 3,
                                      bufs["src"].view(0, src.nbytes), bufs["cur"].view(0, cur.nbytes),
                                      bufs["ring"].view(0, ring.nbytes), width, src_rows, slots, ring_rows)
    rec.finish()
    assert rec.n_dispatches == 1
    rec.run()
    want_cur, want_ring = cur.copy(), ring.copy()
    ref.shift_rows(pairs, ring_pairs, src, want_cur, want_ring)
    assert not np.array_equal(want_ring[9], ring[9]) and np.array_equal(want_ring[9], cur[4])
    for name, want in (("cur", want_cur), ("ring", want_ring)):
        got = device.read(bufs[name].view())
        np.testing.assert_array_equal(got[: want.size].reshape(want.shape), want)
        np.testing.assert_array_equal(got[want.size:], 7.5)
    assert step.guards_intact()
    for b in (*bufs.values(), step.buf):
        b.destroy()


def test_shift_rows_reference_refuses_a_slot_twice():
    rows = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="slot appears twice"):
        ref.shift_rows(np.array([[0, 1], [1, 1]]), np.array([[1, 0], [1, 2]]), rows, rows.copy(), rows.copy())
