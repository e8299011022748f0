"""A sequence's sampler behind a grammar and a logit bias: the chain sees the shaped logits at every position.

`LogitShape` is what a request asks for: a compiled grammar (vkmtp.constrain.grammar) with the llguidance
vocabulary of the model, and/or a logit bias (token id -> added value; -inf bans the token). `ShapedSampler`
wraps the request's `Sampler` once its prompt is accepted: before the chain (penalties, top-k/p, min-p,
temperature, the Gumbel-max draw) a row gets the bias added and the tokens the grammar forbids set to -inf. The
grammar's matcher follows the generated tokens (`accept`). With MTP, `allowed_drafts` cuts a draft at the first
token the grammar forbids, and `rows` masks verified row j with the grammar state after drafts[:j]
(the matcher consumes the drafts, computes the mask, and rolls back), so the verified tokens are the tokens
plain constrained decoding gives. The sampler's parameters say `plain_argmax = False`: the reference engine shapes
and samples on the host; the Vulkan engine uploads the bias pairs and each row's `allowed` mask and samples on the
GPU (docs/CONSTRAINED.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import llguidance
import numpy as np

from vkmtp.constrain.grammar import Grammar, limits
from vkmtp.sampling import Sampler, SamplingParams


@dataclass(frozen=True)
class ShapedParams(SamplingParams):
    """The request's sampling parameters; the token is never the raw logits' argmax (the shape changes it)."""

    @property
    def plain_argmax(self) -> bool:
        return False


@dataclass(frozen=True, eq=False)
class LogitShape:
    """A request's grammar (with the model's llguidance vocabulary) and logit bias."""

    grammar: Grammar | None = None
    vocab: llguidance.LLTokenizer | None = None
    bias: dict[int, float] | None = None

    def __post_init__(self) -> None:
        if self.grammar is not None and self.vocab is None:
            raise ValueError("a grammar needs the model's llguidance vocabulary")

    def sampler(self, base: Sampler, n_vocab: int) -> "ShapedSampler":
        return ShapedSampler(base, self, n_vocab)


class ShapedSampler(Sampler):
    """`Sampler` whose rows are shaped by a `LogitShape` first (see the module docstring)."""

    def __init__(self, base: Sampler, shape: LogitShape, n_vocab: int):
        fields = {f: getattr(base.params, f) for f in base.params.__dataclass_fields__}
        self.params = ShapedParams(**fields)
        self.key, self.pos, self.history = base.key, base.pos, base.history
        self.n_vocab = n_vocab
        self.matcher = None
        if shape.grammar is not None:
            self.matcher = llguidance.LLMatcher(shape.vocab, shape.grammar.text, log_level=0, limits=limits())
            if self.matcher.is_error():
                raise ValueError(f"{shape.grammar.source}: {self.matcher.get_error()[:300]}")
        self.bias_ids = self.bias_values = None
        if shape.bias:
            self.bias_ids = np.fromiter(shape.bias.keys(), np.int64, len(shape.bias))
            self.bias_values = np.fromiter(shape.bias.values(), np.float32, len(shape.bias))

    # ---- the grammar's view of the sequence ---------------------------------------------------------------
    def accept(self, token: int) -> None:
        super().accept(token)
        if self.matcher is not None and not self.matcher.is_stopped():
            self.matcher.consume_token(int(token))

    def allowed_drafts(self, drafts: list[int]) -> list[int]:
        """The drafts up to (not including) the first one the grammar forbids."""
        if self.matcher is None or not drafts:
            return list(drafts)
        return list(drafts[: self.matcher.validate_tokens([int(t) for t in drafts])])

    def allowed(self, drafts: list[int] = ()) -> np.ndarray:
        """[n_vocab] bool: the tokens the grammar allows after the generated tokens and then `drafts`."""
        m = self.matcher
        n = 0
        if drafts:
            n = m.try_consume_tokens([int(t) for t in drafts])
            if n != len(drafts):
                m.rollback(n)
                raise ValueError("a draft the grammar forbids was verified (allowed_drafts cuts them)")
        try:
            bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), np.uint8), bitorder="little")
        finally:
            if n:
                m.rollback(n)
        out = np.zeros(self.n_vocab, bool)
        k = min(self.n_vocab, bits.size)
        out[:k] = bits[:k].astype(bool)
        return out

    # ---- shaping -------------------------------------------------------------------------------------------
    def shape(self, logits: np.ndarray, drafts: list[int] = ()) -> np.ndarray:
        """A copy of one row with the bias added and the forbidden tokens at -inf."""
        out = np.array(logits, dtype=np.float32)
        if self.bias_ids is not None:
            out[self.bias_ids] += self.bias_values
        if self.matcher is not None:
            allowed = self.allowed(drafts)
            if allowed.any():   # a stopped or broken matcher allows nothing: the row is left as it is
                out[~allowed] = -np.inf
        return out

    def candidates(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return super().candidates(self.shape(logits))

    def _row_candidates(self, row: np.ndarray, drafts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return Sampler.candidates(self, self.shape(row, drafts))
