"""Argmax and TopK (shaders/argmax.comp, topk.comp): exact ids, ties to the lowest index, NaN as -inf."""

import numpy as np
import pytest

from guarded import Packed
from vkmtp.ops.argmax import Argmax
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.argmax import argmax

VOCAB = 248320


def logits_with_ties(rng, n_rows, n):
    x = rng.normal(0, 3, (n_rows, n)).astype(np.float32)
    top = x.max() + 1.0
    tied = [i for i in (n - 1, 5000, 4097, 123, 3) if i < n]
    x[0, tied] = top                                  # tie across parts: the lowest index wins
    if n_rows > 1:
        x[1, :] = np.float32(0.5)                     # all equal: index 0
    if n_rows > 2:
        x[2, 1] = np.nan
        x[2, 2] = np.inf                              # +inf wins, NaN ignored
    if n_rows > 3:
        x[3, :] = np.nan                              # all NaN: treated as -inf -> 0
    return x


def run_argmax(device, x, subgroup, ids_stride=1, **knobs):
    n_rows, n = x.shape
    am = Argmax(device, subgroup=subgroup, **knobs)
    bufs = Packed(device, {"x": x, "ids": n_rows * ids_stride * 4, "vals": n_rows * 4,
                           "scratch": am.scratch_bytes(n_rows, n)}, fill=0)
    rec = device.recorder()
    am.record(rec, Strided.rows(bufs.view("x"), n), bufs.view("ids"), n_rows, n, bufs.view("scratch"),
              ids_stride=ids_stride, values=bufs.view("vals"))
    rec.finish()
    rec.run()
    ids = bufs.read("ids", np.uint32).reshape(n_rows, ids_stride)
    vals = bufs.read("vals")
    bufs.check_guards()
    bufs.destroy()
    return ids, vals


def variants(device):
    return [False, True] if device.info.has_subgroup_arithmetic else [False]


@pytest.mark.lanes
@pytest.mark.parametrize("n_rows,n", [(4, VOCAB), (1, 10), (3, 4097)])
def test_argmax_ties_to_lowest_index(device, n_rows, n):
    rng = np.random.default_rng(n)
    x = logits_with_ties(rng, n_rows, n)
    want = argmax(x)
    for subgroup in variants(device):
        ids, vals = run_argmax(device, x, subgroup)
        np.testing.assert_array_equal(ids[:, 0], want, err_msg=f"subgroup={subgroup}")
        clean = np.where(np.isnan(x), -np.inf, x)
        np.testing.assert_array_equal(vals, clean[np.arange(n_rows), want])


def test_argmax_writes_ids_into_token_records(device):
    """ids_stride 4: the id lands in word 0 of each {token_id, pos, seq, flags} record."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (3, 5000)).astype(np.float32)
    ids, _ = run_argmax(device, x, None, ids_stride=4, part_size=512, block_size=64)
    np.testing.assert_array_equal(ids[:, 0], argmax(x))
    np.testing.assert_array_equal(ids[:, 1:], 0)
