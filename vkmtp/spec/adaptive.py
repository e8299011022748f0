"""Adaptive draft depth: pick the depth K that maximises expected tokens per second on this device, now.

Expected tokens of a step with depth K for one sequence: E(K) = 1 + sum_{j=1..K} prod_{i<=j} p_i, where p_i is
the observed conditional acceptance of draft position i *of that sequence's slot* (`SlotAcceptance`, an
exponential moving average started from the policy's pooled estimate). A batched step has one depth for all
its sequences, so its expected tokens are the sum over them. The cost t(S, K) is the measured wall time of a
step of S sequences at depth K on this device (K = 0: a plain decode step): the minimum of its measurements
within the last `cost_span` steps of the policy (at least the latest one), since other load on the machine only
ever adds time to a step. The span is counted in steps, the same for every depth, so the depth the policy sits
at and a rarely probed one are judged over the same stretch of the machine's load: a window of a fixed number of
measurements would compare the plain steps of the last moment with probes collected over minutes, whose minimum
catches a quiet moment -- on a loaded CPU driver that made drafting look cheaper than it is.

Measuring a depth costs a step at that depth, which on a compute-bound driver (lavapipe) is several plain
steps; so depths are measured upwards only while they look worth it: depth K+1 is tried when its rate, with
its cost extrapolated linearly from the two depths below it, beats the best measured rate. Once every
candidate is measured or ruled out, the best rate wins; every `explore_every` steps a neighbour of the chosen
depth is re-measured (at depth 0: depth 1, with the interval doubling each time the probe loses, up to
`max_explore_every`), so costs and acceptance stay current without the probes costing the run much.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SlotAcceptance:
    """Conditional acceptance per draft position of one slot (EMA), started from a prior."""

    p: list[float]
    alpha: float = 0.1

    def expected_tokens(self, K: int) -> float:
        total, run = 1.0, 1.0
        for i in range(K):
            run *= self.p[i]
            total += run
        return total

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        """A step verified n_drafted drafts of this slot and accepted the first n_accepted: positions up to the
        first rejection (inclusive) were decided; later ones say nothing."""
        a = self.alpha
        for i in range(min(n_drafted, len(self.p))):
            if i > n_accepted:
                break
            hit = 1.0 if i < n_accepted else 0.0
            self.p[i] = (1 - a) * self.p[i] + a * hit


@dataclass
class DepthChoice:
    """One decision, for the statistics: the step index and the depth chosen."""

    step: int
    depth: int


class AdaptiveDepth:
    """The depth policy of one engine. `choose(acceptances)` -> K for the next step of those slots;
    `observe(S, K, seconds, per_slot)` after it."""

    def __init__(self, n_max: int, n_min: int = 1, alpha: float = 0.1, explore_every: int = 16,
                 max_explore_every: int = 256, prior: float = 0.7, cost_span: int = 512):
        if not 1 <= n_max:
            raise ValueError(f"n_max must be >= 1, got {n_max}")
        self.n_max = n_max
        self.depths = [0] + list(range(max(1, n_min), n_max + 1))   # the candidates
        self.alpha = alpha
        self.explore_every = explore_every
        self.max_explore_every = max_explore_every
        self.pooled = SlotAcceptance([prior] * n_max, alpha)   # all slots together: a new slot's prior
        self.cost: dict[tuple[int, int], float] = {}           # (S, K) -> seconds per step
        self.cost_span = cost_span
        self._times: dict[tuple[int, int], list[tuple[int, float]]] = {}   # (S, K) -> (step, seconds) in the span
        self.steps = 0
        self._since_probe = 0
        self._probe_every = explore_every
        self._probing: int | None = None
        self.last = 0
        self.history: list[DepthChoice] = []                   # run-length: one entry per change of depth

    # ---- acceptance -------------------------------------------------------------------------------------
    def new_slot(self) -> SlotAcceptance:
        """The acceptance estimate of a sequence that starts now: the pooled one, copied."""
        return SlotAcceptance(list(self.pooled.p), self.alpha)

    @property
    def p(self) -> list[float]:
        return self.pooled.p

    def expected_tokens(self, K: int, acceptances: list[SlotAcceptance] | None = None) -> float:
        """Expected tokens of a step at depth K over these slots (None: one slot at the pooled estimate)."""
        return sum(a.expected_tokens(K) for a in (acceptances or [self.pooled]))

    # ---- the choice -------------------------------------------------------------------------------------
    def _rate(self, S: int, K: int, acc: list[SlotAcceptance]) -> float | None:
        c = self.cost.get((S, K))
        return None if c is None else self.expected_tokens(K, acc) / c

    def _extrapolated(self, S: int, K: int) -> float | None:
        """Cost of depth K from the two measured candidate depths below it (linear), None if unknown."""
        below = [d for d in self.depths if d < K and (S, d) in self.cost]
        if len(below) < 2:
            return None
        k1, k2 = below[-2], below[-1]
        c1, c2 = self.cost[(S, k1)], self.cost[(S, k2)]
        return c2 + (c2 - c1) * (K - k2) / (k2 - k1)

    def best(self, S: int, acc: list[SlotAcceptance]) -> int:
        """The measured depth with the highest expected tokens per second."""
        measured = [K for K in self.depths if (S, K) in self.cost]
        return max(measured, key=lambda K: (self._rate(S, K, acc), -K))

    def choose(self, acceptances: list[SlotAcceptance] | None = None) -> int:
        """The depth for the next step of these slots (0 = plain decoding)."""
        acc = acceptances or [self.pooled]
        S = len(acc)
        self.steps += 1
        K = self._choose(S, acc)
        if not self.history or self.history[-1].depth != K:
            self.history.append(DepthChoice(self.steps, K))
        self.last = K
        return K

    def _choose(self, S: int, acc: list[SlotAcceptance]) -> int:
        self._probing = None
        if (S, 0) not in self.cost:
            return 0
        if len(self.depths) > 1 and (S, self.depths[1]) not in self.cost:
            self._probing = self.depths[1]
            return self.depths[1]
        best = self.best(S, acc)
        best_rate = self._rate(S, best, acc)
        # climb: the next unmeasured depth, when its extrapolated rate beats the best measured one
        for K in self.depths:
            if (S, K) in self.cost:
                continue
            c = self._extrapolated(S, K)
            if c is not None and c > 0 and self.expected_tokens(K, acc) / c > best_rate:
                self._probing = K
                return K
            break
        self._since_probe += 1
        if self._since_probe >= self._probe_every and len(self.depths) > 1:
            self._since_probe = 0
            i = self.depths.index(best)
            if best == 0:
                self._probing = self.depths[1]
            else:   # alternate between the neighbours
                up = (self.steps // self._probe_every) % 2 == 1 and i + 1 < len(self.depths)
                self._probing = self.depths[i + 1] if up else self.depths[i - 1]
            return self._probing
        return best

    def observe(self, S: int, K: int, seconds: float | None,
                per_slot: list[tuple[SlotAcceptance, int, int]]) -> None:
        """A step of S sequences at depth K took `seconds` (None: not a fair measurement, e.g. the step
        recorded its graph first); per_slot holds (slot estimate, n_drafted, n_accepted) for each sequence
        that drafted."""
        key = (S, K)
        if seconds is not None:
            times = self._times.setdefault(key, [])
            times.append((self.steps, seconds))
            oldest = self.steps - self.cost_span
            while times[0][0] <= oldest:
                del times[0]
            self.cost[key] = min(t for _, t in times)
        for slot_acc, n_drafted, m in per_slot:
            slot_acc.observe(n_drafted, m)
            self.pooled.observe(n_drafted, m)
        if self._probing is not None and self._probing > 0 and (S, 0) in self.cost:
            # a probe from depth 0 that still loses doubles the interval to the next one; one that wins resets it
            acc = [s for s, _, _ in per_slot] or [self.pooled]
            if self.best(S, acc) == 0:
                self._probe_every = min(2 * self._probe_every, self.max_explore_every)
            else:
                self._probe_every = self.explore_every

