"""vkmtp.sampling: llama.cpp's chain order and each sampler's rule."""

import numpy as np
import pytest

from vkmtp.sampling import Sampler, SamplingParams, apply_penalties, filter_candidates, top_k_ids

LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0], dtype=np.float32)  # order by logit: 5 0 1 2 3 4


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_defaults_are_llama_cpp_defaults():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    assert (p.repeat_penalty, p.repeat_last_n, p.presence_penalty, p.frequency_penalty) == (1.0, 64, 0.0, 0.0)


def test_greedy_is_argmax_of_penalised_logits():
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0))
    assert sampler.sample(LOGITS) == 5
    sampler.accept(5)  # 3.0 / 2 = 1.5 < 2.0
    assert sampler.sample(LOGITS) == 0


def test_penalties_follow_sign_and_counts():
    params = SamplingParams(repeat_penalty=2.0, frequency_penalty=0.25, presence_penalty=0.5)
    out = apply_penalties(LOGITS, [0, 0, 4, 3], params)
    assert out[0] == pytest.approx(2.0 / 2 - 2 * 0.25 - 0.5)
    assert out[4] == pytest.approx(-1.0 * 2 - 0.25 - 0.5)
    assert out[3] == pytest.approx(0.0 - 0.25 - 0.5)  # zero counts as non-positive: multiplied
    assert out[5] == LOGITS[5]


def test_penalty_window_is_repeat_last_n():
    sampler = Sampler(SamplingParams(temperature=0.0, repeat_penalty=100.0, repeat_last_n=2))
    for token in (5, 1, 2):  # 5 has left the 2-token window
        sampler.accept(token)
    assert list(sampler.history) == [1, 2]
    assert sampler.sample(LOGITS) == 5


def test_top_k_then_top_p_then_min_p():
    ids, _ = filter_candidates(LOGITS, SamplingParams(top_k=3, top_p=1.0, min_p=0.0))
    assert ids.tolist() == [5, 0, 1]
    p = softmax(LOGITS.astype(np.float64))[[5, 0, 1, 2, 3, 4]]
    cut = float(p[0] + p[1]) - 1e-6  # nucleus ends at the second token
    ids, _ = filter_candidates(LOGITS, SamplingParams(top_k=0, top_p=cut, min_p=0.0))
    assert ids.tolist() == [5, 0]
    ids, _ = filter_candidates(LOGITS, SamplingParams(top_k=0, top_p=1.0, min_p=0.3))
    assert ids.tolist() == [5, 0]  # e^-1 = 0.37 >= 0.3 > e^-2
    ids, _ = filter_candidates(LOGITS, SamplingParams(top_k=1, top_p=0.0, min_p=0.9))
    assert ids.tolist() == [5]


def test_temperature_comes_after_truncation():
    # top_p is decided on T=1 probabilities; a high temperature must not widen the nucleus
    hot = Sampler(SamplingParams(temperature=100.0, top_k=0, top_p=0.7, min_p=0.0))
    ids, probs = hot.distribution(LOGITS)
    assert ids.tolist() == [5, 0]
    np.testing.assert_allclose(probs, softmax(np.array([3.0, 2.0]) / 100.0))


def test_seeded_sampling_repeats_and_follows_the_distribution():
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234)
    draws = [Sampler(params).sample(LOGITS) for _ in range(3)]
    assert len(set(draws)) == 1
    sampler = Sampler(params)
    draws = []
    for _ in range(20000):   # the draw is keyed by the position: each accepted token moves it on
        draws.append(sampler.sample(LOGITS))
        sampler.accept(draws[-1])
    assert Sampler(params).sample(LOGITS) == draws[0]
    counts = np.bincount(draws, minlength=LOGITS.size)
    np.testing.assert_allclose(counts / counts.sum(), softmax(LOGITS.astype(np.float64)), atol=0.012)


@pytest.mark.parametrize(
    "field,value",
    [("top_p", -0.1), ("min_p", 1.5), ("repeat_penalty", 0.0), ("repeat_last_n", -2), ("seed", -1)],
)
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


@pytest.mark.parametrize("k", [1, 2, 40, 1000, 4095])
def test_top_k_selection_is_the_stable_sort_prefix(k):
    """top_k_ids picks the ids a stable full sort puts first, in its order, also when ties straddle the k-th
    value (rounded logits tie often), with -inf entries and signed zeros."""
    rng = np.random.default_rng(k)
    for _ in range(5):
        logits = np.round(rng.normal(size=4096).astype(np.float32), 1)
        logits[rng.integers(0, 4096, 50)] = -np.inf
        logits[rng.integers(0, 4096, 20)] = -0.0
        logits[rng.integers(0, 4096, 20)] = 0.0
        assert np.array_equal(top_k_ids(logits, k), np.argsort(-logits, kind="stable")[:k])
