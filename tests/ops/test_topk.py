"""TopK (shaders/topk.comp): the k greatest values and ids, descending, ties to the lower index."""

import numpy as np
import pytest

from guarded import Packed
from test_argmax import VOCAB, logits_with_ties
from vkmtp.ops.strided import Strided
from vkmtp.ops.topk import TopK
from vkmtp.ref.ops.topk import topk


def run_topk(device, x, k, **knobs):
    n_rows, n = x.shape
    tk = TopK(device, k, **knobs)
    bufs = Packed(device, {"x": x, "vals": n_rows * k * 4, "ids": n_rows * k * 4,
                           "scratch": tk.scratch_bytes(n_rows, n)}, fill=0)
    rec = device.recorder()
    tk.record(rec, Strided.rows(bufs.view("x"), n), bufs.view("vals"), bufs.view("ids"), n_rows, n,
              bufs.view("scratch"))
    rec.finish()
    rec.run()
    vals = bufs.read("vals").reshape(n_rows, k)
    ids = bufs.read("ids", np.uint32).reshape(n_rows, k)
    bufs.check_guards()
    bufs.destroy()
    return vals, ids


@pytest.mark.lanes
@pytest.mark.parametrize("n_rows,n,k", [(4, VOCAB, 10), (2, 5000, 16), (1, 300, 1), (3, 16, 16), (2, VOCAB, 20)])
@pytest.mark.parametrize("block_size,part_size", [(64, 16384), (128, 4096), (8, 512)])
def test_topk_matches_reference_exactly(device, n_rows, n, k, block_size, part_size):
    """Workgroups of 8..128 invocations (a merge tree of 3..7 levels) and 1..485 parts per row."""
    rng = np.random.default_rng(n + k)
    x = logits_with_ties(rng, n_rows, n)
    want_vals, want_ids = topk(x, k)
    vals, ids = run_topk(device, x, k, block_size=block_size, part_size=part_size)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(vals, want_vals)


def test_topk_with_parts_smaller_than_k(device):
    """part_size 8 < k 12: parts run out of values and pass 2 must skip their empty slots."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 3, (2, 50)).astype(np.float32)  # many ties
    vals, ids = run_topk(device, x, 12, part_size=8, block_size=64)
    want_vals, want_ids = topk(x, 12)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(vals, want_vals)


def test_topk_refuses_k_beyond_20(device):
    with pytest.raises(ValueError, match="k <= 20"):
        TopK(device, 21)


def test_topk_refuses_a_workgroup_whose_lists_do_not_fit_shared_memory(device):
    with pytest.raises(ValueError, match="shared memory"):
        TopK(device, 10, block_size=1024)
