"""Token sampling with llama.cpp's default sampler chain.

Order (llama.cpp common sampler): penalties -> top_k -> top_p -> min_p -> temperature -> dist. With
temperature <= 0 the chain ends in the single most likely token (greedy), after the penalties. Defaults are
llama.cpp's (`common_params_sampling`).

The draw is Gumbel-max: the token at position `pos` of a sequence is argmax_i (log p_i + g_i) over the
chain's candidates, with g_i = -log(-log(u_i)) and u_i a hash of (seed, pos, i) (`gumbel_noise`), which is
distributed exactly as p. The noise depends on nothing but the seed and the position, so a token never
depends on how it was reached: with MTP the verifier samples each verified row at its own position and
accepts a draft when the sample equals it, giving the tokens of plain decoding whatever was drafted; and the
MTP draft itself is argmax(log q + g) over the draft's distribution with the same noise, which agrees with
the target's sample far more often than the draft's argmax does (tools/sampling_acceptance.py). Seeded runs
repeat exactly (they do not reproduce llama.cpp's RNG stream); without a seed one is drawn from the OS.
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


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The k ids of the largest logits, by descending logit, ties by ascending id: exactly
    np.argsort(-logits, kind="stable")[:k], without sorting the whole row (a selection of the k-th largest value,
    then a sort of k ids: ~1 ms instead of ~38 ms over a 248320-token vocabulary)."""
    threshold = np.partition(logits, logits.shape[-1] - k)[logits.shape[-1] - k]   # the k-th largest logit
    above = np.flatnonzero(logits > threshold)
    tied = np.flatnonzero(logits == threshold)[: k - above.size]   # lowest ids first, as the stable sort
    sel = np.concatenate([above, tied])
    return sel[np.argsort(-logits[sel], kind="stable")]


def filter_candidates(logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """top_k -> top_p -> min_p on penalised logits [n_vocab].

    Returns the surviving token ids sorted by descending logit and their logits (temperature not applied).
    """
    ids = top_k_ids(logits, params.top_k) if 0 < params.top_k < logits.shape[-1] \
        else np.argsort(-logits, kind="stable")
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


_M32 = np.uint64(0xFFFFFFFF)


def _pcg(x: np.ndarray) -> np.ndarray:
    """PCG output hash of 32-bit words (uint64 arrays holding values < 2^32), as shaders/gumbel.comp has it."""
    state = (x * np.uint64(747796405) + np.uint64(2891336453)) & _M32
    word = (((state >> ((state >> np.uint64(28)) + np.uint64(4))) ^ state) * np.uint64(277803737)) & _M32
    return (word >> np.uint64(22)) ^ word


def seed_key(seed: int) -> int:
    """A sampling seed (any size) folded to the 32-bit key of `gumbel_noise`."""
    key = np.zeros(1, np.uint64)
    while True:
        key = _pcg(key ^ np.uint64(seed & 0xFFFFFFFF))
        seed >>= 32
        if not seed:
            return int(key[0])


def gumbel_uniform(key: int, pos: int, ids: np.ndarray) -> np.ndarray:
    """u in (0, 1) for token ids at position pos: 24 bits of hash(key, pos, id), centred in their bin."""
    h = _pcg(_pcg(np.asarray(ids, np.uint64) ^ _pcg(np.array([pos & 0xFFFFFFFF], np.uint64)))
             ^ np.uint64(key))
    return ((h >> np.uint64(8)).astype(np.float64) + 0.5) / float(1 << 24)


def gumbel_noise(key: int, pos: int, ids: np.ndarray) -> np.ndarray:
    """Gumbel(0, 1) noise of token ids at position pos of a sequence sampled with seed key `key`."""
    return -np.log(-np.log(gumbel_uniform(key, pos, ids)))


def gumbel_argmax(ids: np.ndarray, probs: np.ndarray, key: int, pos: int) -> int:
    """The Gumbel-max sample of candidates `ids` with probabilities `probs` at position pos."""
    if ids.size == 1:
        return int(ids[0])
    with np.errstate(divide="ignore"):
        score = np.log(probs) + gumbel_noise(key, pos, ids)
    return int(ids[int(np.argmax(score))])


class Sampler:
    """Stateful sampler of one sequence: penalty history, the seed key and the position of the next token."""

    def __init__(self, params: SamplingParams):
        self.params = params
        seed = params.seed if params.seed is not None else int(np.random.SeedSequence().entropy)
        self.key = seed_key(seed)
        self.pos = 0   # tokens of the sequence so far (prompt + generated): the next token's position
        window = None if params.repeat_last_n < 0 else params.repeat_last_n
        self.history: deque[int] = deque(maxlen=window)

    def accept(self, token: int) -> None:
        """Record a token of the sequence (prompt or generated): penalties and position."""
        self.pos += 1
        if self.params.repeat_last_n != 0:
            self.history.append(int(token))

    def allowed_drafts(self, drafts: list[int]) -> list[int]:
        """The drafts worth verifying: all of them (a grammar cuts them at the first forbidden token,
        vkmtp.constrain.sampler)."""
        return list(drafts)

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

    def sample(self, logits: np.ndarray, ahead: int = 0) -> int:
        """The token at position pos + ahead from logits [n_vocab] (does not `accept` it); `ahead` > 0 for a
        verified row after `ahead` drafts (their penalties apply through `distributions`)."""
        return self.sample_from(*self.distribution(logits), ahead)

    def sample_from(self, ids: np.ndarray, probs: np.ndarray, ahead: int = 0) -> int:
        """The Gumbel-max sample at position pos + ahead of a chain distribution (ids, probabilities)."""
        return gumbel_argmax(ids, probs, self.key, self.pos + ahead)

    def draft(self, logits: np.ndarray, ahead: int) -> int:
        """The MTP draft for position pos + ahead from draft logits [n] (token ids < n): argmax(l / T + g) with
        the noise the target's sample at that position uses (greedy: the argmax). The chain's filters and
        penalties are not applied to the draft (the GPU adds the noise in one pass, shaders/gumbel.comp)."""
        if self.params.greedy:
            return int(np.argmax(logits))
        noise = gumbel_noise(self.key, self.pos + ahead, np.arange(logits.shape[-1]))
        return int(np.argmax(logits.astype(np.float64) / self.params.temperature + noise))
