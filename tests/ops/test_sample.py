"""shaders/sample.comp against vkmtp.ref.ops.sample and the host Sampler, at the real vocabulary (248320) and on
rows built to hit the selections' edge cases: tied logits across the top-k and top-p boundaries, -inf rows,
penalty windows of history + GPU-written drafts, logit bias, a grammar's allowed-token bitmask."""

import numpy as np
import pytest

from vkmtp.ops.sample import PARAM_WORDS, Sample, row_params
from vkmtp.ref.ops.sample import sample_rows
from vkmtp.sampling import Sampler, SamplingParams, seed_key

N_VOCAB = 248320

# (inv_t / temperature, top_k, top_p, min_p, repeat, frequency, presence, history length, drafts, bias pairs)
CASES = [
    (0.8, 40, 0.95, 0.05, 1.0, 0.0, 0.0, 0, 0, 0),       # llama.cpp's defaults
    (0.8, 1, 1.0, 0.0, 1.0, 0.0, 0.0, 0, 0, 0),
    (0.8, 0, 0.9, 0.0, 1.0, 0.0, 0.0, 0, 0, 0),          # top-p over the whole vocabulary
    (1.2, 0, 1.0, 0.0, 1.0, 0.0, 0.0, 0, 0, 0),          # the whole vocabulary
    (0.7, 0, 1.0, 0.05, 1.0, 0.0, 0.0, 0, 0, 0),         # min-p alone
    (0.8, 40, 0.5, 0.05, 1.3, 0.2, 0.4, 60, 3, 0),       # penalties over history + drafts
    (0.0, 0, 1.0, 0.0, 1.5, 0.0, 0.0, 20, 2, 0),         # greedy after penalties
    (1.0, 5000, 0.99, 0.0, 1.0, 0.0, 0.0, 0, 0, 40),     # logit bias (some -inf)
    (0.8, 1, 0.95, 0.05, 1.0, 0.0, 0.0, 0, 0, 0),        # top-p's digit range holds keys outside the top-k
    (0.8, 3, 0.3, 0.0, 1.0, 0.0, 0.0, 0, 0, 0),
]


def build(n_vocab: int, cases, rng, tie_step: float, offset: float = 0.0):
    n_rows = len(cases)
    logits = (rng.standard_normal((n_rows, n_vocab)) * 2.5 + offset).astype(np.float32)
    logits = np.round(logits / tie_step) * tie_step   # many exact ties, at every boundary
    logits = logits.astype(np.float32)
    logits[:, rng.integers(0, n_vocab, 50)] = -np.inf
    n_rec = 8
    off_params = 0
    off_ids = off_params + n_rows * PARAM_WORDS
    off_rec = off_ids + n_rows
    off_hist = off_rec + 4 * n_rec
    off_bias = off_hist + 64 * n_rows
    mask_words = (n_vocab + 31) // 32
    off_mask = off_bias + 2 * 64 * n_rows
    words = np.zeros(off_mask + mask_words * n_rows, np.uint32)
    records = words[off_rec: off_hist].reshape(n_rec, 4)
    records[:, 0] = rng.integers(0, n_vocab, n_rec)
    records[2:5, 0] = np.argsort(-logits[0])[:3]   # drafts that hit the top logits
    samplers = []
    for r, (t, k, top_p, min_p, rep, freq, pres, n_hist, n_draft, n_bias) in enumerate(cases):
        hist = rng.integers(0, n_vocab, n_hist).astype(np.uint32)
        hist[: n_hist // 2] = np.argsort(-logits[r])[: n_hist // 2]   # penalise the likely tokens
        hist[n_hist // 2: n_hist // 2 + 3] = hist[:3]                  # repeated: counts > 1
        words[off_hist + 64 * r: off_hist + 64 * r + n_hist] = hist
        bias = np.zeros((n_bias, 2), np.uint32)
        bias[:, 0] = rng.choice(n_vocab, n_bias, replace=False)
        b = (rng.standard_normal(n_bias) * 3).astype(np.float32)
        b[:5] = -np.inf
        bias[:, 1] = b.view(np.uint32)
        words[off_bias + 128 * r: off_bias + 128 * r + 2 * n_bias] = bias.ravel()
        key, pos = seed_key(100 + r), 7 + 13 * r
        allowed = None
        if r in (0, 5, 7):   # a grammar's mask: a third of the tokens, the row's best one forbidden
            allowed = rng.random(n_vocab) < 0.33
            allowed[int(np.argmax(logits[r]))] = False
            m = off_mask + mask_words * r
            words[m: m + mask_words] = np.packbits(np.concatenate([allowed, np.zeros(32 * mask_words - n_vocab,
                                                                                       bool)]),
                                                   bitorder="little").view(np.uint32)
        words[off_params + r * PARAM_WORDS: off_params + (r + 1) * PARAM_WORDS] = row_params(
            key, pos, float(np.float32(1 / t)) if t > 0 else 0.0, k, top_p, min_p, rep, freq, pres,
            hist=(off_hist + 64 * r, n_hist), drafts=(2, n_draft), bias=(off_bias + 128 * r, n_bias),
            mask=None if allowed is None else off_mask + mask_words * r)
        params = SamplingParams(temperature=t, top_k=k, top_p=top_p, min_p=min_p, repeat_penalty=rep,
                                frequency_penalty=freq, presence_penalty=pres, repeat_last_n=1024, seed=100 + r)
        samplers.append((params, hist.tolist() + records[2: 2 + n_draft, 0].tolist(), bias, pos, allowed))
    return logits, words, (off_params, off_ids, off_rec), samplers


def run_gpu(device, logits, words, offs):
    n_rows, n = logits.shape
    off_params, off_ids, off_rec = offs
    xb = device.buffer(4 * logits.size, "host", "x")
    sb = device.buffer(4 * words.size, "host", "step")
    xb.words()[:] = logits.ravel().view(np.uint32)
    sb.words()[:] = words
    rec = device.recorder()
    Sample(device).record(rec, xb.view(), n, n, n_rows, sb.view(4 * off_params, 4 * n_rows * PARAM_WORDS),
                          sb.view(4 * off_ids, 4 * n_rows), sb.view(4 * off_rec, 4 * 32))
    rec.finish().run()
    got = sb.words()[off_ids: off_ids + n_rows].copy()
    shaped = xb.words().view(np.float32).reshape(n_rows, n).copy()
    xb.destroy()
    sb.destroy()
    return got, shaped


@pytest.mark.lanes
@pytest.mark.parametrize("n_vocab,tie_step,offset", [(N_VOCAB, 0.05, 0.0), (1000, 0.5, 0.0), (512, 1e-6, 30.0)])
def test_sample_matches_the_reference_and_the_host_sampler(device, n_vocab, tie_step, offset):
    """offset 30: every logit has the same top key byte, so the selections go past their first digit."""
    rng = np.random.default_rng(n_vocab)
    logits, words, offs, samplers = build(n_vocab, CASES, rng, tie_step, offset)
    got, shaped = run_gpu(device, logits, words, offs)
    want, want_shaped = sample_rows(logits, words[offs[0]:offs[1]], words, offs[2])
    np.testing.assert_array_equal(shaped, want_shaped)   # bias and penalties, bit for bit
    assert got.tolist() == want.tolist()
    # the host sampler (what the reference engine runs) picks the same tokens from the same logits
    for r, (params, window, bias, pos, allowed) in enumerate(samplers):
        sampler = Sampler(params)
        sampler.pos = pos
        sampler.history.extend(window)
        row = logits[r].copy()
        row[bias[:, 0].astype(np.int64)] += bias[:, 1].view(np.float32)
        if allowed is not None:
            row[~allowed] = -np.inf
            assert allowed[int(got[r])]
        assert sampler.sample(row) == int(got[r]), f"row {r}"


def test_sample_draws_follow_the_chain_distribution(device):
    """Over many positions the GPU's draws are distributed as the chain's distribution (chi-square, 1e-4):
    a row of 8 live logits under top-k 6 / top-p 0.9 / temperature 0.8."""
    n, rows = 64, 2048
    logits = np.full((rows, n), -np.inf, np.float32)
    base = np.array([2.0, 1.5, 1.2, 1.0, 0.4, 0.1, -0.5, -1.0], np.float32)
    logits[:, :8] = base
    words = np.zeros(rows * PARAM_WORDS + rows + 32, np.uint32)
    for r in range(rows):
        words[r * PARAM_WORDS: (r + 1) * PARAM_WORDS] = row_params(seed_key(5), r, float(np.float32(1 / 0.8)),
                                                                 6, 0.9, 0.0, 1.0, 0.0, 0.0)
    got, _ = run_gpu(device, logits, words, (0, rows * PARAM_WORDS, rows * PARAM_WORDS + rows))
    ids, _ = Sampler(SamplingParams(temperature=0.8, top_k=6, top_p=0.9, min_p=0.0)).distribution(base)
    probs = Sampler(SamplingParams(temperature=0.8, top_k=6, top_p=0.9, min_p=0.0)).distribution(base)[1]
    counts = np.bincount(got, minlength=n)
    assert counts[8:].sum() == 0 and set(np.flatnonzero(counts)) <= set(ids.tolist())
    expected = probs * rows
    chi2 = float(((counts[ids] - expected) ** 2 / expected).sum())
    assert chi2 < 23.5, f"chi2={chi2:.1f}: counts {counts[ids]} vs expected {expected.round()}"
