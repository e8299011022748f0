"""Acceptance statistics of speculative decoding, per request and cumulative.

Counted as llama-server counts them: `draft_n` = drafted tokens (rejected ones included), `draft_n_accepted` =
accepted drafted tokens, `steps` = verify steps; mean accepted length = 1 + accepted / steps (the verify step
always yields one token of its own).

Over ALL generation steps (plain decode steps at depth 0 included): `gen_steps`, `gen_tokens` (tokens per
step = gen_tokens / gen_steps, what the speed follows), drafts per step = draft_n / gen_steps, the wall time
of steps that drafted (`draft_verify_ms`: draft and verify run in one submission, so the device time inside
it is not split) and of plain steps (`decode_ms`), and the depth chosen over time (`depths`: [first step,
depth] at each change).
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
    gen_steps: int = 0
    gen_tokens: int = 0
    draft_steps: int = 0        # generation steps at depth > 0
    draft_verify_ms: float = 0.0
    decode_ms: float = 0.0
    depths: list[list[int]] = field(default_factory=list)    # [first step, depth] at each change of depth

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

    def record_step(self, depth: int, n_tokens: int, ms: float) -> None:
        """One generation step of this sequence at `depth` (0: plain decode) that gave n_tokens, in ms."""
        if not self.depths or self.depths[-1][1] != depth:
            self.depths.append([self.gen_steps, depth])
        self.gen_steps += 1
        self.gen_tokens += n_tokens
        if depth:
            self.draft_steps += 1
            self.draft_verify_ms += ms
        else:
            self.decode_ms += ms

    def merge(self, other: "SpecStats") -> None:
        self.gen_steps += other.gen_steps
        self.gen_tokens += other.gen_tokens
        self.draft_steps += other.draft_steps
        self.draft_verify_ms += other.draft_verify_ms
        self.decode_ms += other.decode_ms
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

    @property
    def tokens_per_step(self) -> float | None:
        return self.gen_tokens / self.gen_steps if self.gen_steps else None

    @property
    def drafts_per_step(self) -> float | None:
        return self.draft_n / self.gen_steps if self.gen_steps else None

    def acceptance_per_pos(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos + [0] * len(self.drafted_per_pos),
                                                     self.drafted_per_pos)]

    def to_dict(self) -> dict:
        return {"draft_n": self.draft_n, "draft_n_accepted": self.draft_n_accepted, "steps": self.steps,
                "acceptance": self.acceptance, "mean_accepted_length": self.mean_accepted_length,
                "acceptance_per_pos": self.acceptance_per_pos(), "accept_hist": list(self.accept_hist),
                "gen_steps": self.gen_steps, "gen_tokens": self.gen_tokens, "draft_steps": self.draft_steps,
                "tokens_per_step": self.tokens_per_step, "drafts_per_step": self.drafts_per_step,
                "draft_verify_ms": self.draft_verify_ms, "decode_ms": self.decode_ms,
                "depths": [list(d) for d in self.depths]}

    def summary(self) -> str:
        """One line for the CLI: acceptance, tokens and drafts per step over all steps, time split, depths."""
        parts = []
        if self.draft_n:
            parts.append(f"{self.draft_n_accepted}/{self.draft_n} drafts accepted ({100 * self.acceptance:.1f}%)")
        if self.gen_steps:
            parts.append(f"{self.tokens_per_step:.2f} tokens and {self.drafts_per_step:.2f} drafts per step "
                         f"over {self.gen_steps} steps")
            parts.append(f"{self.draft_verify_ms:.0f} ms in draft+verify steps, {self.decode_ms:.0f} ms in plain "
                         f"steps")
            parts.append("depth " + " ".join(f"{d}@{s}" for s, d in self.depths[:12])
                         + (" ..." if len(self.depths) > 12 else ""))
        return ", ".join(parts)


def _bump(values: list[int], index: int, n: int = 1) -> None:
    while len(values) <= index:
        values.append(0)
    values[index] += n
