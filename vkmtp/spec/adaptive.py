"""Adaptive draft depth: pick the depth K that maximises expected tokens per second on this device, now.

Expected tokens of a step with depth K: E(K) = 1 + sum_{j=1..K} prod_{i<j} p_i, where p_i is the observed
conditional acceptance of draft position i (exponential moving average). The cost t(K) is the measured wall
time of a step of depth K (K = 0: a plain decode step), also averaged. Each depth is measured once before
the choice is made on the estimates; every `explore_every` steps a neighbouring depth is re-measured so costs
and acceptance stay current (users tune n-max by hand per machine today; see docs/TUNING.md).
"""

from __future__ import annotations


class AdaptiveDepth:
    def __init__(self, n_max: int, alpha: float = 0.1, explore_every: int = 32, prior: float = 0.7):
        self.n_max = n_max
        self.alpha = alpha
        self.explore_every = explore_every
        self.p = [prior] * n_max            # conditional acceptance per draft position
        self.cost: dict[int, float] = {}    # depth -> seconds per step
        self.steps = 0
        self.last = n_max

    def expected_tokens(self, K: int) -> float:
        total, run = 1.0, 1.0
        for i in range(K):
            run *= self.p[i]
            total += run
        return total

    def choose(self) -> int:
        """The depth for the next step (0 = plain decoding)."""
        self.steps += 1
        for K in range(self.n_max, -1, -1):
            if K not in self.cost:
                self.last = K
                return K
        best = max(range(self.n_max + 1), key=lambda K: self.expected_tokens(K) / self.cost[K])
        if self.steps % self.explore_every == 0:
            best = min(self.n_max, best + 1) if (self.steps // self.explore_every) % 2 else max(0, best - 1)
        self.last = best
        return best

    def observe(self, K: int, seconds: float, accepted: list[tuple[int, int]]) -> None:
        """A step of depth K took `seconds`; `accepted` holds (n_drafted, n_accepted) per sequence."""
        a = self.alpha
        self.cost[K] = seconds if K not in self.cost else (1 - a) * self.cost[K] + a * seconds
        for n_drafted, m in accepted:
            for i in range(min(n_drafted, self.n_max)):
                if i > m:
                    break
                hit = 1.0 if i < m else 0.0
                self.p[i] = (1 - a) * self.p[i] + a * hit
