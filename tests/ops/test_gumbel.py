"""shaders/gumbel.comp against vkmtp.ref.ops.gumbel and against the host sampler's noise."""

import numpy as np
import pytest

from vkmtp.ops.gumbel import GumbelNoise
from vkmtp.ref.ops.gumbel import gumbel_noise
from vkmtp.sampling import gumbel_noise as host_noise, seed_key


@pytest.mark.lanes
@pytest.mark.parametrize("n_rows,n_cols,stride", [(1, 1000, 1000), (3, 517, 520)])
def test_noise_matches_the_reference_and_the_host_sampler(device, n_rows, n_cols, stride):
    rng = np.random.default_rng(n_cols)
    x = rng.standard_normal((n_rows, stride)).astype(np.float32)
    params = np.zeros((n_rows, 4), np.uint32)
    params[:, 0] = [seed_key(s) for s in range(n_rows)]
    params[:, 1] = rng.integers(0, 5000, n_rows)
    params[:, 2] = np.full(n_rows, 1 / 0.7, np.float32).view(np.uint32)
    params[:, 3] = 1
    params[-1, 3] = 0 if n_rows > 1 else 1       # a greedy row in a mixed batch stays as it is
    xb = device.buffer(4 * x.size + 64, "host", "x")
    pb = device.buffer(4 * params.size, "host", "prm")
    xw = xb.words()
    xw[: x.size] = x.ravel().view(np.uint32)
    guard = xw[x.size:].copy()
    pb.words()[:] = params.ravel()
    rec = device.recorder()
    GumbelNoise(device).record(rec, xb.view(0, 4 * x.size), stride, n_cols, n_rows, pb.view(0, 4 * params.size), 2)
    rec.finish().run()
    got = xw[: x.size].view(np.float32).reshape(n_rows, stride)
    want = x.copy()
    want[:, :n_cols] = gumbel_noise(x[:, :n_cols], params, 2)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)   # f32 log near u = 1
    assert (xw[x.size:] == guard).all()
    # the host sampler's noise (f64) for the same key and position: the same draws up to f32 rounding
    on = params[0]
    host = x[0, :n_cols] / 0.7 + host_noise(int(on[0]), int(on[1]) + 2, np.arange(n_cols))
    np.testing.assert_allclose(got[0, :n_cols], host, rtol=1e-3, atol=1e-3)
    assert int(np.argmax(got[0, :n_cols])) == int(np.argmax(host))
    xb.destroy()
    pb.destroy()
