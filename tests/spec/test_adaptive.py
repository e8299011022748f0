"""Adaptive draft depth: measures every depth once, then follows acceptance and cost."""

from vkmtp.spec.adaptive import AdaptiveDepth


def test_measures_each_depth_then_prefers_the_best_rate():
    ad = AdaptiveDepth(3, alpha=0.5, explore_every=1000)
    seen = []
    for _ in range(4):   # step cost grows with depth; drafts are always accepted -> deep drafts win
        K = ad.choose()
        seen.append(K)
        ad.observe(K, 1.0 + 0.1 * K, [(K, K)] if K else [])
    assert sorted(seen) == [0, 1, 2, 3]
    for _ in range(5):
        ad.observe(3, 1.3, [(3, 3)])
    assert ad.choose() == 3


def test_low_acceptance_falls_back_to_shallow_or_no_drafts():
    ad = AdaptiveDepth(3, alpha=0.5, explore_every=1000)
    for _ in range(4):
        K = ad.choose()
        ad.observe(K, 1.0 + 0.3 * K, [(K, 0)] if K else [])
    for _ in range(10):
        ad.observe(1, 1.3, [(1, 0)])
    assert ad.choose() == 0
    assert ad.expected_tokens(0) == 1.0


def test_expected_tokens_follow_conditional_acceptance():
    ad = AdaptiveDepth(3)
    ad.p = [0.5, 0.5, 1.0]
    assert ad.expected_tokens(3) == 1 + 0.5 + 0.25 + 0.25
