"""Token sampling with llama.cpp's default sampler chain.

Order (llama.cpp common sampler): penalties -> top_k -> top_p -> min_p -> temperature -> dist. With
temperature <= 0 the chain ends in the single most likely token (greedy), after the penalties. Defaults are
llama.cpp's (`common_params_sampling`).

The draw is Gumbel-max: the token at position `pos` of a sequence is argmax_i (l_i / T + g_i) over the
chain's candidates (l: the shaped, penalised logits), with g_i = -log(-log(u_i)) and u_i a hash of
(seed, pos, i) (`gumbel_noise_f32`), which is distributed exactly as the chain's softmax. The noise depends on
nothing but the seed and the position, so a token never depends on how it was reached: with MTP the verifier
samples each verified row at its own position and accepts a draft when the sample equals it, giving the tokens
of plain decoding whatever was drafted; and the MTP draft itself is argmax(l / T + g) over the draft's logits
with the same noise, which agrees with the target's sample far more often than the draft's argmax does
(tools/sampling_acceptance.py). Seeded runs repeat exactly (they do not reproduce llama.cpp's RNG stream);
without a seed one is drawn from the OS.

The whole chain is written in the GPU's arithmetic (shaders/sample.comp runs it in the Vulkan engine's one
submission per step): f32 values, every product and sum rounded on its own (the shader marks them `precise`,
so no fused multiply-add), the penalty's division as a product with 1/penalty, exp and log as the polynomials
`_exp2_f32` / `_log_f32` built from correctly rounded adds and multiplies only, and top-p's cumulative
probability as an exact integer sum of 24-bit fixed-point masses exp(l - max) compared in f32. The host and
the GPU therefore pick the same token bit for bit from the same logits, by construction, near-ties included.
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


F32 = np.float32
# 2^f on [0, 1) and log1p(t) = t + t^2 q(t) on [sqrt(1/2) - 1, sqrt(2) - 1]: least-squares fits on Chebyshev
# nodes (max errors 2.6e-9 and 3.5e-9 before f32 rounding); shaders/common/sample_math.glsl has the same numbers
EXP2_POLY = (1.0, 0.6931469440460205, 0.2402305006980896, 0.05548042804002762, 0.009684580378234386,
             0.0012387821916490793, 0.00021877505059819669)
LOG1P_POLY = (-0.4999999701976776, 0.33333322405815125, -0.2500077188014984, 0.2000196874141693,
              -0.1662759929895401, 0.1418900042772293, -0.131016343832016, 0.12821748852729797,
              -0.07866667956113815)
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
MASS_ONE = 1 << 24   # top-p's fixed-point probability mass of the most likely candidate


def _horner(t: np.ndarray, coeffs) -> np.ndarray:
    acc = np.full_like(t, F32(coeffs[-1]))
    for c in coeffs[-2::-1]:
        acc = acc * t + F32(c)
    return acc


def _exp2_f32(y: np.ndarray) -> np.ndarray:
    """2^y in f32 for -25 <= y <= 0: 2^floor(y) (exact) times the polynomial of the fraction."""
    n = np.floor(y)
    return np.ldexp(_horner(y - n, EXP2_POLY), n.astype(np.int32))


def _log_f32(x: np.ndarray) -> np.ndarray:
    """ln x in f32 for normal x > 0: exponent * ln 2 + log1p of the mantissa moved into [sqrt(1/2), sqrt(2))."""
    bits = np.asarray(x, F32).view(np.uint32)
    e = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    m = ((bits & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)).view(F32)
    big = m > F32(1.41421356)
    m = np.where(big, m * F32(0.5), m)
    e = e + big
    t = m - F32(1.0)
    return e.astype(F32) * F32(LN2) + (t + (t * t) * _horner(t, LOG1P_POLY))


def top_p_masses(shifted: np.ndarray) -> np.ndarray:
    """Fixed-point probability masses (uint64, MASS_ONE = the most likely) of logits minus their maximum."""
    y = np.asarray(shifted, F32) * F32(LOG2E)
    ok = y >= F32(-25.0)
    e = _exp2_f32(np.where(ok, y, F32(0.0)))
    return np.where(ok, (e * F32(MASS_ONE)).astype(np.uint32), 0).astype(np.uint64)


def mass_to_f32(v) -> np.ndarray:
    """A 64-bit mass sum as f32, as the shader converts its two words: f32(hi) * 2^32 + f32(lo)."""
    v = np.asarray(v, np.uint64)
    return (v >> np.uint64(32)).astype(F32) * F32(4294967296.0) + (v & np.uint64(0xFFFFFFFF)).astype(F32)


def apply_penalties(logits: np.ndarray, history: list[int], params: SamplingParams) -> np.ndarray:
    """llama.cpp's penalties on a copy of `logits` [n_vocab] for the tokens in `history` (the window).

    repeat: positive logits are multiplied by 1 / penalty (f32), the others by the penalty; then
    logit = (logit - count * frequency_penalty) - presence_penalty for every token seen, all in f32.
    """
    out = np.array(logits, dtype=np.float32)
    if params.repeat_penalty == 1.0 and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0:
        return out
    inv, rep = F32(1.0 / params.repeat_penalty), F32(params.repeat_penalty)
    freq, pres = F32(params.frequency_penalty), F32(params.presence_penalty)
    for token, count in Counter(history).items():
        value = out[token]
        value = value * inv if value > 0 else value * rep
        out[token] = (value - F32(count) * freq) - pres
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
    """top_k -> top_p -> min_p on penalised f32 logits [n_vocab].

    Returns the surviving token ids sorted by descending logit (ties: ascending id) and their logits
    (temperature not applied). top-p keeps the shortest prefix whose mass reaches top_p of the top-k set's mass
    (`top_p_masses`, summed exactly, compared in f32); min-p keeps logits >= max + f32(log min_p), in f32.
    """
    logits = np.asarray(logits, F32)
    ids = top_k_ids(logits, params.top_k) if 0 < params.top_k < logits.shape[-1] \
        else np.argsort(-logits, kind="stable")
    cand = logits[ids]
    if F32(params.top_p) < 1.0:   # in f32, as the GPU sees it
        cum = np.cumsum(top_p_masses(cand - cand[0]))
        target = F32(params.top_p) * mass_to_f32(cum[-1])
        keep = int(np.argmax(mass_to_f32(cum) >= target)) + 1   # first index with cum >= p, inclusive
        ids, cand = ids[:keep], cand[:keep]
    if params.min_p > 0.0:
        keep = cand >= cand[0] + F32(np.log(params.min_p))  # p >= min_p * p_max, on this set
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


def gumbel_noise_f32(key: int, pos: int, ids: np.ndarray) -> np.ndarray:
    """The sampler's Gumbel(0, 1) noise in the GPU's arithmetic: u = (23 hash bits + 0.5) / 2^23 in f32
    (never 0 or 1), g = -ln(-ln u) with `_log_f32`."""
    h = _pcg(_pcg(np.asarray(ids, np.uint64) ^ _pcg(np.array([pos & 0xFFFFFFFF], np.uint64)))
             ^ np.uint64(key))
    u = ((h >> np.uint64(9)).astype(F32) + F32(0.5)) * F32(1.0 / (1 << 23))
    return -_log_f32(-_log_f32(u))


def gumbel_draw(ids: np.ndarray, logits: np.ndarray, inv_t: float, key: int, pos: int) -> int:
    """The Gumbel-max sample of candidates `ids` with (penalised) logits at position pos: argmax of
    f32(l * inv_t) + g in f32, ties to the lowest id (shaders/sample.comp's arithmetic)."""
    ids = np.asarray(ids)
    if ids.size == 1:
        return int(ids[0])
    score = np.asarray(logits, F32) * F32(inv_t) + gumbel_noise_f32(key, pos, ids)
    score[np.isnan(score)] = -np.inf   # a NaN never wins (the shader's comparisons skip it)
    best = np.flatnonzero(score == score.max())
    return int(ids[best].min())


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

    @property
    def inv_t(self) -> float:
        """f32(1 / temperature): the draw's scale (0 when greedy)."""
        return 0.0 if self.params.greedy else float(F32(1.0 / self.params.temperature))

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chain's candidate ids and their penalised f32 logits (the argmax alone when greedy)."""
        penalised = apply_penalties(logits, list(self.history), self.params)
        if self.params.greedy:
            best = int(np.argmax(penalised))
            return np.array([best]), penalised[[best]]
        return filter_candidates(penalised, self.params)

    def _row_candidates(self, row: np.ndarray, drafts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """`candidates` of a verified row after `drafts` (the history already holds them)."""
        return self.candidates(row)

    def distribution(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate ids and their probabilities after the whole chain (one id with p=1 when greedy)."""
        return self._probabilities(*self.candidates(logits))

    def _probabilities(self, ids: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.params.greedy:
            return ids, np.array([1.0])
        return ids, _softmax(cand.astype(np.float64) / self.params.temperature)

    def rows(self, logits: np.ndarray, drafts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`candidates` at each verified row [n_rows, n_vocab], row j seen after drafts[:j] were accepted (their
        penalties apply: the window is the last repeat_last_n of history + drafts[:j]), without changing this
        sampler."""
        saved = self.history
        try:
            out = []
            for j, row in enumerate(logits):
                self.history = deque(list(saved) + list(drafts[:j]), maxlen=saved.maxlen)
                out.append(self._row_candidates(row, list(drafts[:j])))
            return out
        finally:
            self.history = saved

    def distributions(self, logits: np.ndarray, drafts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The chain's distribution at each verified row, as `rows` sees them (for rejection sampling)."""
        return [self._probabilities(ids, cand) for ids, cand in self.rows(logits, drafts)]

    def sample(self, logits: np.ndarray, ahead: int = 0) -> int:
        """The token at position pos + ahead from logits [n_vocab] (does not `accept` it); `ahead` > 0 for a
        verified row after `ahead` drafts (their penalties apply through `rows`)."""
        return self.sample_from(*self.candidates(logits), ahead)

    def sample_from(self, ids: np.ndarray, cand: np.ndarray, ahead: int = 0) -> int:
        """The Gumbel-max sample at position pos + ahead of the chain's candidates (ids, penalised logits)."""
        if self.params.greedy:
            return int(np.asarray(ids)[int(np.argmax(cand))])
        return gumbel_draw(ids, cand, self.inv_t, self.key, self.pos + ahead)

    def draft(self, logits: np.ndarray, ahead: int) -> int:
        """The MTP draft for position pos + ahead from draft logits [n] (token ids < n): argmax(l / T + g) with
        the noise the target's sample at that position uses (greedy: the argmax). The chain's filters and
        penalties are not applied to the draft (the GPU adds the noise in one pass, shaders/gumbel.comp)."""
        if self.params.greedy:
            return int(np.argmax(logits))
        noise = gumbel_noise(self.key, self.pos + ahead, np.arange(logits.shape[-1]))
        return int(np.argmax(logits.astype(np.float64) / self.params.temperature + noise))
