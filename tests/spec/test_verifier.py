"""The verifier: hand-made cases, and a chi-square test that rejection sampling keeps the target distribution."""

import numpy as np
import pytest

from vkmtp.spec.stats import SpecStats
from vkmtp.spec.verifier import synthetic_accept, verify_greedy, verify_sampled


def test_greedy_perfect_match_takes_the_bonus_token():
    assert verify_greedy(np.array([5, 6, 7]), np.array([5, 6, 7, 8])) == ([5, 6, 7, 8], 3)


def test_greedy_early_mismatch_takes_the_target_token():
    assert verify_greedy(np.array([5, 6, 7]), np.array([5, 9, 7, 8])) == ([5, 9], 1)
    assert verify_greedy(np.array([5, 6, 7]), np.array([4, 6, 7, 8])) == ([4], 0)


def test_sampled_certain_target_accepts_and_rejects_deterministically():
    rng = np.random.default_rng(0)
    probs = np.zeros((3, 4))
    probs[0, 1] = probs[1, 2] = probs[2, 3] = 1.0
    assert verify_sampled(np.array([1, 2]), probs, rng) == ([1, 2, 3], 2)
    assert verify_sampled(np.array([1, 0]), probs, rng) == ([1, 2], 1)


def test_sampled_is_deterministic_when_seeded():
    probs = np.random.default_rng(1).dirichlet(np.ones(16), size=4)
    a = [verify_sampled(np.array([3, 4, 5]), probs, np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


@pytest.mark.parametrize("draft_kind", ["greedy", "sampled"])
def test_rejection_sampling_keeps_the_target_distribution(draft_kind):
    """First emitted token over many trials ~ target row 0 (chi-square, 1e-4 significance)."""
    rng = np.random.default_rng(1234)
    vocab = 8
    target = rng.dirichlet(np.ones(vocab) * 0.7, size=3)        # [k+1, V]
    draft = rng.dirichlet(np.ones(vocab) * 0.7, size=2)         # [k, V]
    trials = 40000
    counts = np.zeros(vocab)
    for _ in range(trials):
        if draft_kind == "greedy":
            d = np.array([int(np.argmax(draft[0])), int(np.argmax(draft[1]))])
            out, _ = verify_sampled(d, target, rng)
        else:
            d = np.array([rng.choice(vocab, p=draft[0]), rng.choice(vocab, p=draft[1])])
            out, _ = verify_sampled(d, target, rng, draft)
        counts[out[0]] += 1
    expected = target[0] * trials
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi-square critical value for 7 degrees of freedom at p = 1e-4 is 27.88
    assert chi2 < 27.88, f"chi2={chi2:.1f}: counts {counts} vs expected {expected.round()}"


def test_synthetic_acceptance_rate_matches_the_setting():
    rng = np.random.default_rng(3)
    stats = SpecStats()
    for _ in range(5000):
        stats.record(3, synthetic_accept(3, 0.8, rng))
    assert abs(stats.accepted_per_pos[0] / stats.drafted_per_pos[0] - 0.8) < 0.02
    assert stats.mean_accepted_length == pytest.approx(1 + stats.draft_n_accepted / 5000)


def test_stats_count_like_llama_server():
    s = SpecStats()
    s.record(3, 2)
    s.record(3, 0)
    s.record(2, 2)
    assert (s.draft_n, s.draft_n_accepted, s.steps) == (8, 4, 3)
    assert s.drafted_per_pos == [3, 3, 2] and s.accepted_per_pos == [2, 2]
    assert s.accept_hist == [1, 0, 2]
    assert s.acceptance_per_pos() == [2 / 3, 2 / 3, 0.0]
    other = SpecStats()
    other.record(1, 1)
    s.merge(other)
    assert (s.draft_n, s.draft_n_accepted, s.steps) == (9, 5, 4)
    with pytest.raises(ValueError):
        s.record(2, 3)


def test_gumbel_max_sampling_keeps_the_distribution():
    """The sampler's draw (Gumbel-max, noise keyed by seed and position) ~ the chain's distribution over seeds
    and over positions (chi-square, 1e-4 significance)."""
    from vkmtp.sampling import gumbel_argmax, seed_key

    target = np.random.default_rng(5).dirichlet(np.ones(8) * 0.7)
    ids = np.arange(8)
    for draws in ([gumbel_argmax(ids, target, seed_key(seed), 17) for seed in range(20000)],
                  [gumbel_argmax(ids, target, seed_key(3), pos) for pos in range(20000)]):
        counts = np.bincount(draws, minlength=8)
        expected = target * len(draws)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 27.88, f"chi2={chi2:.1f}: counts {counts} vs expected {expected.round()}"


def test_f32_gumbel_draw_keeps_the_distribution():
    """The draw in the GPU's arithmetic (f32 scores, polynomial logs: vkmtp.sampling.gumbel_draw, what
    shaders/sample.comp computes) ~ softmax(l / T) over seeds and over positions (chi-square, 1e-4)."""
    from vkmtp.sampling import _log_f32, gumbel_draw, seed_key

    x = np.linspace(1e-30, 40.0, 200001, dtype=np.float32)[1:]
    np.testing.assert_allclose(_log_f32(x), np.log(x.astype(np.float64)), rtol=2e-7, atol=2e-7)
    logits = np.random.default_rng(6).normal(size=8).astype(np.float32) * 1.5
    target = np.exp(logits / 0.8) / np.exp(logits / 0.8).sum()
    ids = np.arange(8)
    inv_t = float(np.float32(1 / 0.8))
    for draws in ([gumbel_draw(ids, logits, inv_t, seed_key(seed), 17) for seed in range(20000)],
                  [gumbel_draw(ids, logits, inv_t, seed_key(3), pos) for pos in range(20000)]):
        counts = np.bincount(draws, minlength=8)
        expected = target * len(draws)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 27.88, f"chi2={chi2:.1f}: counts {counts} vs expected {expected.round()}"


def test_gumbel_verifier_gives_plain_sampling_tokens_whatever_the_drafts():
    """Sample matching: the output is the token sampled at each position, whichever drafts were proposed."""
    from vkmtp.sampling import Sampler, SamplingParams
    from vkmtp.spec.verifier import verify_gumbel

    rng = np.random.default_rng(2)
    rows = [(np.arange(16), np.log(p).astype(np.float32)) for p in rng.dirichlet(np.ones(16), size=4)]
    sampler = Sampler(SamplingParams(temperature=1.0, seed=9))
    plain = [sampler.sample_from(ids, x, j) for j, (ids, x) in enumerate(rows)]
    for drafts in ([0, 1, 2], plain[:3], plain[:1] + [(plain[1] + 1) % 16, 0], plain[:2] + [(plain[2] + 1) % 16]):
        out, m = verify_gumbel(drafts, rows, sampler)
        assert out == plain[: m + 1]
        assert m == next((j for j in range(3) if drafts[j] != plain[j]), 3)
