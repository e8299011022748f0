"""Softmax (shaders/softmax.comp) against vkmtp.ref.ops.softmax."""

import numpy as np
import pytest

from guarded import Packed, assert_close
from vkmtp.ops.softmax import Softmax
from vkmtp.ops.strided import Strided
from vkmtp.ref.ops.softmax import softmax


def run_softmax(device, x, subgroup):
    n_rows, n = x.shape
    bufs = Packed(device, {"x": x, "y": x.nbytes})
    rec = device.recorder()
    Softmax(device, subgroup=subgroup).record(rec, Strided.rows(bufs.view("x"), n), Strided.rows(bufs.view("y"), n),
                                             n_rows, n)
    rec.finish()
    rec.run()
    y = bufs.read("y").reshape(n_rows, n)
    bufs.check_guards()
    bufs.destroy()
    return y


@pytest.mark.lanes
@pytest.mark.parametrize("n_rows,n", [(1, 10), (4, 256), (2, 248320), (3, 7)])
def test_softmax_matches_reference(device, n_rows, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 5, (n_rows, n)).astype(np.float32)
    x[0, 0] = -np.inf  # a masked entry gets probability 0
    for subgroup in ([False, True] if device.info.has_subgroup_arithmetic else [False]):
        y = run_softmax(device, x, subgroup)
        assert_close(y, softmax(x), 1e-7, 2e-5, f"subgroup={subgroup}")
        assert y[0, 0] == 0.0


def test_softmax_rows_are_batch_invariant(device):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 5, (6, 1000)).astype(np.float32)
    together = run_softmax(device, x, None)
    for r in range(6):
        assert np.array_equal(run_softmax(device, x[r: r + 1], None)[0], together[r])
