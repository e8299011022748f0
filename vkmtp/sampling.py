"""Token sampling with llama.cpp's default sampler chain.

Order (llama.cpp common sampler): penalties -> top_k -> top_p -> min_p -> temperature -> dist. With
temperature <= 0 the chain ends in the single most likely token (greedy), after the penalties. Defaults are
llama.cpp's (`common_params_sampling`). The random draw uses a seeded NumPy Generator, so seeded runs
repeat exactly (they do not reproduce llama.cpp's RNG stream).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # >= 1: off
    min_p: float = 0.05  # <= 0: off
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64  # tokens the penalties look at; 0: off, -1: all
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None: fresh entropy

    def __post_init__(self) -> None:
        checks = [
            ("top_p", self.top_p >= 0.0, "must be >= 0"),
            ("min_p", 0.0 <= self.min_p <= 1.0, "must be in [0, 1]"),
            ("repeat_penalty", self.repeat_penalty > 0.0, "must be > 0"),
            ("repeat_last_n", self.repeat_last_n >= -1, "must be >= -1"),
            ("seed", self.seed is None or self.seed >= 0, "must be >= 0 or None"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"SamplingParams.{name}={getattr(self, name)!r} {rule}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def plain_argmax(self) -> bool:
        """Greedy without penalties: the token is the argmax of the raw logits (the GPU computes it)."""
        return self.greedy and self.repeat_penalty == 1.0 and self.presence_penalty == 0.0 \
            and self.frequency_penalty == 0.0

    @classmethod
    def greedy_params(cls) -> "SamplingParams":
        """Plain argmax: temperature 0 and no penalties."""
        return cls(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0)


def apply_penalties(logits: np.ndarray, history: list[int], params: SamplingParams) -> np.ndarray:
    """llama.cpp's penalties on a copy of `logits` [n_vocab] for the tokens in `history` (the window).

    repeat: positive logits are divided by the penalty, the others multiplied; then
    logit -= count * frequency_penalty + presence_penalty for every token seen.
    """
    out = np.array(logits, dtype=np.float32)
    if params.repeat_penalty == 1.0 and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0:
        return out
    for token, count in Counter(history).items():
        value = out[token]
        value = value / params.repeat_penalty if value > 0 else value * params.repeat_penalty
        out[token] = value - count * params.frequency_penalty - params.presence_penalty
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64) - logits.max()
    p = np.exp(x)
    return p / p.sum()


def filter_candidates(logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """top_k -> top_p -> min_p on penalised logits [n_vocab].

    Returns the surviving token ids sorted by descending logit and their logits (temperature not applied).
    """
    ids = np.argsort(-logits, kind="stable")
    if params.top_k > 0:
        ids = ids[: params.top_k]
    cand = logits[ids]
    if params.top_p < 1.0:
        cum = np.cumsum(_softmax(cand))
        keep = int(np.searchsorted(cum, params.top_p) + 1)  # first index with cum >= p, inclusive
        ids, cand = ids[:keep], cand[:keep]
    if params.min_p > 0.0:
        keep = cand >= cand[0] + np.log(params.min_p)  # p >= min_p * p_max, on this set
        keep[0] = True
        ids, cand = ids[keep], cand[keep]
    return ids, cand


class Sampler:
    """Stateful sampler of one sequence: penalty history plus a seeded Generator."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        window = None if params.repeat_last_n < 0 else params.repeat_last_n
        self.history: deque[int] = deque(maxlen=window)

    def accept(self, token: int) -> None:
        """Record a token of the sequence (prompt or generated) for the penalties."""
        if self.params.repeat_last_n != 0:
            self.history.append(int(token))

    def distribution(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate ids and their probabilities after the whole chain (one id with p=1 when greedy)."""
        penalised = apply_penalties(logits, list(self.history), self.params)
        if self.params.greedy:
            return np.array([int(np.argmax(penalised))]), np.array([1.0])
        ids, cand = filter_candidates(penalised, self.params)
        return ids, _softmax(cand / self.params.temperature)

    def distributions(self, logits: np.ndarray, drafts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The chain's distribution at each verified row [n_rows, n_vocab], row j seen after drafts[:j] were
        accepted (their penalties apply), without changing this sampler."""
        saved = self.history
        try:
            out = []
            for j, row in enumerate(logits):
                self.history = deque(list(saved) + list(drafts[:j]), maxlen=saved.maxlen)
                out.append(self.distribution(row))
            return out
        finally:
            self.history = saved

    def sample(self, logits: np.ndarray) -> int:
        """Draw the next token from logits [n_vocab] (does not `accept` it)."""
        return draw(*self.distribution(logits), self.rng)


def draw(ids: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token from candidates `ids` with probabilities `probs` by inverse CDF on one uniform (none when
    there is a single candidate). The speculative verifier draws the same way, so seeded runs match."""
    if ids.size == 1:
        return int(ids[0])
    u = rng.random()
    index = min(int(np.searchsorted(np.cumsum(probs), u, side="right")), ids.size - 1)
    return int(ids[index])
