"""TokenProbs (shaders/topk.comp + shaders/logsumexp.comp): top-n pairs, log-sum-exp and the chosen logit."""

import numpy as np
import pytest

from guarded import Packed
from test_argmax import VOCAB, variants
from vkmtp.ops.strided import Strided
from vkmtp.ops.token_probs import MAX_TOP, TokenProbs
from vkmtp.ref.ops.token_probs import logsumexp, token_probs


def run_token_probs(device, x, k, chosen, subgroup, **knobs):
    n_rows, n = x.shape
    op = TokenProbs(device, k, subgroup=subgroup, **knobs)
    operands = {"x": x, "out": n_rows * 2 * 4, "scratch": op.scratch_bytes(n_rows, n)}
    if k:
        operands.update(vals=n_rows * k * 4, ids=n_rows * k * 4)
    if chosen is not None:
        operands["chosen"] = np.asarray(chosen, np.uint32)
    bufs = Packed(device, operands, fill=0)
    rec = device.recorder()
    op.record(rec, Strided.rows(bufs.view("x"), n), n_rows, n, bufs.view("out"), bufs.view("scratch"),
              values=bufs.view("vals") if k else None, ids=bufs.view("ids") if k else None,
              chosen=bufs.view("chosen") if chosen is not None else None)
    rec.finish()
    rec.run()
    out = bufs.read("out").reshape(n_rows, 2)
    vals = bufs.read("vals").reshape(n_rows, k) if k else None
    ids = bufs.read("ids", np.uint32).reshape(n_rows, k) if k else None
    bufs.check_guards()
    bufs.destroy()
    return vals, ids, out


def logits_rows(rng, n_rows, n):
    """Logit-like rows: a few large values over a broad normal background; row 1 has NaNs and -inf."""
    x = rng.normal(0, 4, (n_rows, n)).astype(np.float32)
    x[0, rng.integers(0, n, 5)] += 20.0
    if n_rows > 1:
        x[1, : n // 3] = -np.inf
        x[1, n // 2] = np.nan
    return x


@pytest.mark.lanes
@pytest.mark.parametrize("n_rows,n,k", [(3, VOCAB, MAX_TOP), (2, VOCAB, 0), (4, 5000, 5), (1, 40, 20)])
def test_token_probs_match_reference(device, n_rows, n, k):
    rng = np.random.default_rng(n + k)
    x = logits_rows(rng, n_rows, n)
    chosen = rng.integers(n // 2 + 1, n, n_rows)
    want_vals, want_ids, want_lse, want_chosen = token_probs(x, k, chosen)
    for subgroup in variants(device):
        vals, ids, out = run_token_probs(device, x, k, chosen, subgroup)
        np.testing.assert_allclose(out[:, 0], want_lse, rtol=0, atol=2e-5 * np.abs(want_lse).max(),
                                   err_msg=f"lse subgroup={subgroup}")
        np.testing.assert_array_equal(out[:, 1], want_chosen)
        if k:
            np.testing.assert_array_equal(ids, want_ids, err_msg=f"subgroup={subgroup}")
            np.testing.assert_array_equal(vals, want_vals)
            # log-probabilities as the host forms them: top logit - lse, within 1e-5 of float64
            np.testing.assert_allclose(vals - out[:, :1], want_vals.astype(np.float64) - want_lse[:, None],
                                       atol=1e-4)


def test_token_probs_without_chosen_and_degenerate_rows(device):
    """No chosen ids (sampled steps): the second word is 0. A row of only -inf has lse -inf; a constant row
    of n values has lse = c + log n."""
    x = np.full((2, 300), -np.inf, np.float32)
    x[1, :] = 2.0
    vals, ids, out = run_token_probs(device, x, 3, None, None, part_size=64, block_size=64)
    assert out[0, 0] == -np.inf
    np.testing.assert_allclose(out[1, 0], 2.0 + np.log(300), rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], 0.0)
    np.testing.assert_array_equal(ids[1], [0, 1, 2])
    np.testing.assert_allclose(logsumexp(x[1:]), [2.0 + np.log(300)])
