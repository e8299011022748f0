"""TopK (shaders/topk.comp): the k greatest values and ids, descending, ties to the lower index."""

import numpy as np
import pytest

from guarded import Packed
from test_argmax import VOCAB, logits_with_ties, variants
from vkmtp.ops.strided import Strided
from vkmtp.ops.topk import TopK
from vkmtp.ref.ops.topk import topk


def run_topk(device, x, k, subgroup, **knobs):
    n_rows, n = x.shape
    tk = TopK(device, k, subgroup=subgroup, **knobs)
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
@pytest.mark.parametrize("n_rows,n,k", [(4, VOCAB, 10), (2, 5000, 16), (1, 300, 1), (3, 16, 16)])
def test_topk_matches_reference_exactly(device, n_rows, n, k):
    rng = np.random.default_rng(n + k)
    x = logits_with_ties(rng, n_rows, n)
    want_vals, want_ids = topk(x, k)
    for subgroup in variants(device):
        vals, ids = run_topk(device, x, k, subgroup)
        np.testing.assert_array_equal(ids, want_ids, err_msg=f"subgroup={subgroup}")
        np.testing.assert_array_equal(vals, want_vals)


def test_topk_with_parts_smaller_than_k(device):
    """part_size 8 < k 12: parts run out of values and pass 2 must skip their empty slots."""
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 3, (2, 50)).astype(np.float32)  # many ties
    vals, ids = run_topk(device, x, 12, None, part_size=8, block_size=64)
    want_vals, want_ids = topk(x, 12)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(vals, want_vals)


def test_topk_refuses_k_beyond_20(device):
    with pytest.raises(ValueError, match="k <= 20"):
        TopK(device, 21)
