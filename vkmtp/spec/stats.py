"""Acceptance statistics of speculative decoding, per request and cumulative.

Counted as llama-server counts them: `draft_n` = drafted tokens (rejected ones included), `draft_n_accepted` =
accepted drafted tokens, `steps` = verify steps; mean accepted length = 1 + accepted / steps (the verify step
always yields one token of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecStats:
    draft_n: int = 0
    draft_n_accepted: int = 0
    steps: int = 0
    drafted_per_pos: list[int] = field(default_factory=list)
    accepted_per_pos: list[int] = field(default_factory=list)
    accept_hist: list[int] = field(default_factory=list)   # accept_hist[m] = steps that accepted m drafts

    def record(self, n_drafted: int, n_accepted: int) -> None:
        """One verify step that checked `n_drafted` drafts and accepted the first `n_accepted`."""
        if not 0 <= n_accepted <= n_drafted:
            raise ValueError(f"accepted {n_accepted} of {n_drafted} drafts")
        self.steps += 1
        self.draft_n += n_drafted
        self.draft_n_accepted += n_accepted
        for pos in range(n_drafted):
            _bump(self.drafted_per_pos, pos)
            if pos < n_accepted:
                _bump(self.accepted_per_pos, pos)
        _bump(self.accept_hist, n_accepted)

    def merge(self, other: "SpecStats") -> None:
        self.draft_n += other.draft_n
        self.draft_n_accepted += other.draft_n_accepted
        self.steps += other.steps
        for mine, theirs in ((self.drafted_per_pos, other.drafted_per_pos),
                             (self.accepted_per_pos, other.accepted_per_pos),
                             (self.accept_hist, other.accept_hist)):
            for i, n in enumerate(theirs):
                _bump(mine, i, n)

    @property
    def acceptance(self) -> float | None:
        return self.draft_n_accepted / self.draft_n if self.draft_n else None

    @property
    def mean_accepted_length(self) -> float | None:
        return 1.0 + self.draft_n_accepted / self.steps if self.steps else None

    def acceptance_per_pos(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos + [0] * len(self.drafted_per_pos),
                                                     self.drafted_per_pos)]

    def to_dict(self) -> dict:
        return {"draft_n": self.draft_n, "draft_n_accepted": self.draft_n_accepted, "steps": self.steps,
                "acceptance": self.acceptance, "mean_accepted_length": self.mean_accepted_length,
                "acceptance_per_pos": self.acceptance_per_pos(), "accept_hist": list(self.accept_hist)}


def _bump(values: list[int], index: int, n: int = 1) -> None:
    while len(values) <= index:
        values.append(0)
    values[index] += n
