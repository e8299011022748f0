"""The draft settings of the speculative loop, for both engines (llama-server's flag names in the comments)."""

from __future__ import annotations

from dataclasses import dataclass, replace

# llama.cpp's draft sampler: the top-1 probability for the --spec-draft-p-min cut is a softmax over this many
# top draft logits (the GPU's top-k kernel, spec.comp and the host loop all use it)
DRAFT_TOP_K = 10


def draft_rows(draft_vocab: int, n_vocab: int) -> int:
    """Rows of the LM head the draft evaluates: the `draft_vocab` lowest token ids (for a byte-level BPE the
    lowest ranks are the most frequent tokens), or all of them. Verification always uses all n_vocab."""
    return n_vocab if draft_vocab <= 0 else min(draft_vocab, n_vocab)


@dataclass(frozen=True)
class SpecConfig:
    enabled: bool = True          # --no-mtp turns it off
    n_max: int = 3                # --spec-draft-n-max: draft tokens per step (the cap of the adaptive depth)
    n_min: int = 0                # --spec-draft-n-min: drafts shorter than this are dropped; == n_max: fixed depth
    p_min: float = 0.0            # --spec-draft-p-min: stop drafting when the top-1 draft probability is lower
    adaptive: bool = True         # depth 0 or n_min..n_max per step from acceptance and measured step cost
                                  # (--no-spec-adaptive: always n_max)
    draft_vocab: int = 0          # --spec-draft-vocab: the draft's LM head covers token ids < N only (0: all)
    synthetic_accept: float | None = None  # BENCHMARK MODE: accept each draft with this probability
    from_profile: bool = False    # n_max / p_min were not given: use the device profile's (vkmtp tune) if any

    def __post_init__(self):
        if not 1 <= self.n_max <= 7:
            raise ValueError(f"--spec-draft-n-max must be in 1..7 (verify batches are at most 8 tokens), "
                             f"got {self.n_max}")
        if not 0 <= self.n_min <= self.n_max:
            raise ValueError(f"--spec-draft-n-min must be in 0..n_max, got {self.n_min}")
        if not 0.0 <= self.p_min <= 1.0:
            raise ValueError(f"--spec-draft-p-min must be in [0, 1], got {self.p_min}")
        if self.draft_vocab < 0:
            raise ValueError(f"--spec-draft-vocab must be >= 0 (0: the whole vocabulary), got {self.draft_vocab}")
        if self.synthetic_accept is not None and not 0.0 <= self.synthetic_accept <= 1.0:
            raise ValueError(f"synthetic acceptance must be in [0, 1], got {self.synthetic_accept}")


@dataclass(frozen=True)
class SpecOverride:
    """A request's own draft settings (llama-server's `speculative.n_max` / `n_min` / `p_min` on /completion);
    None: the engine's."""

    n_max: int | None = None
    n_min: int | None = None
    p_min: float | None = None

    def apply(self, spec: SpecConfig) -> SpecConfig:
        """The request's settings over the engine's `spec`. An n_max above the engine's is refused (its step
        buffers are sized for that depth); the engine's n_min is lowered to a smaller request n_max."""
        n_max = spec.n_max if self.n_max is None else self.n_max
        if not 1 <= n_max <= spec.n_max:
            raise ValueError(f"speculative.n_max must be in 1..{spec.n_max} (this server's --spec-draft-n-max, "
                             f"the depth its step buffers hold), got {n_max}")
        n_min = min(spec.n_min, n_max) if self.n_min is None else self.n_min
        if not 0 <= n_min <= n_max:
            raise ValueError(f"speculative.n_min must be in 0..{n_max} (speculative.n_max), got {n_min}")
        p_min = spec.p_min if self.p_min is None else self.p_min
        if not 0.0 <= p_min <= 1.0:
            raise ValueError(f"speculative.p_min must be in [0, 1], got {p_min}")
        return replace(spec, n_max=n_max, n_min=n_min, p_min=p_min)
