"""Adaptive draft depth against simulated devices: step costs injected, acceptance drawn from a seeded RNG."""

import numpy as np

from vkmtp.spec.adaptive import AdaptiveDepth, SlotAcceptance


def simulate(policy: AdaptiveDepth, cost, accept: float, steps: int, seed: int = 0):
    """Run the policy for `steps` steps of one sequence; returns (tokens, total cost, depths chosen)."""
    rng = np.random.default_rng(seed)
    slot = policy.new_slot()
    tokens, total, depths = 0, 0.0, []
    for _ in range(steps):
        K = policy.choose([slot])
        m = 0
        while m < K and rng.random() < accept:
            m += 1
        tokens += m + 1
        total += cost(K)
        depths.append(K)
        policy.observe(1, K, cost(K), [(slot, K, m)] if K else [])
    return tokens, total, depths


def best_fixed_rate(cost, accept: float, n_max: int) -> float:
    return max(sum(accept ** i for i in range(K + 1)) / cost(K) for K in range(n_max + 1))


def test_bandwidth_bound_costs_draft_deep():
    """Verifying k+1 tokens costs 1.1x one token (plus a small draft cost): depth >= 2, >= 90 % of the best
    fixed depth's tokens per unit cost."""
    def cost(K):
        return 1.0 if K == 0 else 1.1 + 0.05 * K

    policy = AdaptiveDepth(7)
    tokens, total, depths = simulate(policy, cost, 0.8, 600)
    settled = depths[-200:]
    assert max(set(settled), key=settled.count) >= 2
    assert tokens / total >= 0.9 * best_fixed_rate(cost, 0.8, 7)


def test_compute_bound_costs_settle_at_zero():
    """Costs proportional to k+1 (lavapipe): drafting never pays, the policy settles at depth 0 and its probes
    become rare (the interval doubles while they lose)."""
    def cost(K):
        return float(K + 1)

    policy = AdaptiveDepth(3)
    tokens, total, depths = simulate(policy, cost, 0.8, 600)
    settled = depths[-300:]
    assert settled.count(0) >= 0.97 * len(settled)
    assert tokens / total >= 0.95 * best_fixed_rate(cost, 0.8, 3)
    assert max(depths) == 1   # deeper depths are ruled out by the extrapolated cost, never measured


def test_acceptance_drop_moves_to_zero_and_back():
    def cost(K):
        return 1.0 if K == 0 else 1.1 + 0.05 * K

    policy = AdaptiveDepth(3)
    simulate(policy, cost, 0.9, 200)
    assert policy.last >= 2
    _, _, depths = simulate(policy, cost, 0.0, 300, seed=1)
    assert depths[-50:].count(0) >= 45
    _, _, depths = simulate(policy, cost, 0.9, 600, seed=2)   # probes find drafting pays again
    assert depths[-50:].count(0) <= 5


def test_per_slot_acceptance_decides_for_its_slot():
    policy = AdaptiveDepth(3)
    good, bad = policy.new_slot(), policy.new_slot()
    for _ in range(60):
        good.observe(3, 3)
        bad.observe(3, 0)
    policy.cost = {(1, K): 1.0 if K == 0 else 1.1 + 0.05 * K for K in range(4)}
    assert policy.choose([good]) == 3
    assert policy.choose([bad]) == 0


def test_fixed_candidates_with_n_min():
    policy = AdaptiveDepth(3, n_min=2)
    assert policy.depths == [0, 2, 3]


def test_expected_tokens_follow_conditional_acceptance():
    acc = SlotAcceptance([0.5, 0.5, 1.0])
    assert acc.expected_tokens(3) == 1 + 0.5 + 0.25 + 0.25


def test_a_load_change_does_not_make_drafting_look_cheap():
    """Other load doubles every step's time half-way (a shared CPU driver): the policy judges plain steps and
    its rare probes over the same span of steps, so quiet-moment probes are not compared with loaded plain steps,
    and drafting, which never pays here (cost proportional to k+1), is never chosen for two steps in a row."""
    load = [1.0]

    def cost(K):
        return load[0] * (K + 1)

    policy = AdaptiveDepth(3)
    slot = policy.new_slot()
    rng = np.random.default_rng(0)
    depths = []
    for step in range(400):
        if step == 100:
            load[0] = 2.0
        K = policy.choose([slot])
        m = 0
        while m < K and rng.random() < 0.8:
            m += 1
        depths.append(K)
        policy.observe(1, K, cost(K), [(slot, K, m)] if K else [])
    loaded = depths[100:]
    assert not any(a and b for a, b in zip(loaded, loaded[1:]))
    assert loaded.count(0) >= 0.95 * len(loaded)
