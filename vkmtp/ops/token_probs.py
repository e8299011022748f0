"""Token log-probabilities of logits rows on the GPU: top-n (logit, id) pairs, log-sum-exp, chosen logit.

A client that asks for `logprobs` / `n_probs` gets log p_i = x_i - logsumexp(x) for the chosen token and the n
most likely ones. The GPU reduces each requested row to n pairs + 2 words (shaders/topk.comp, then
shaders/logsumexp.comp), so the host never reads a 248320-wide row for it. Mirrors
vkmtp.ref.ops.token_probs.token_probs.
"""

from __future__ import annotations

from vkmtp.device import WORD, ShaderKey, View
from vkmtp.ops._select import TwoPassRows, flag_variants
from vkmtp.ops.strided import Strided
from vkmtp.ops.topk import MAX_K, TopK

MAX_TOP = MAX_K   # the most alternatives per token (OpenAI's top_logprobs bound, 20)


class TokenProbs(TwoPassRows):
    """Per row r of x: top values/ids [r, :k] (descending, ties to the lower id), and out[r] = {lse, x[chosen[r]]}."""

    def __init__(self, device, k: int = MAX_TOP, block_size: int = 64, part_size: int = 16384,
                 subgroup: bool | None = None):
        """Defaults: 64 invocations over 16384 values per pass-1 workgroup (16 per 248320-wide row), as the
        top-k's (its merge keeps a list per invocation in shared memory)."""
        super().__init__(device, block_size, part_size, subgroup)
        self.k = k
        self.topk = TopK(device, k, block_size, part_size) if k > 0 else None

    def lse_scratch_bytes(self, n_rows: int, n: int) -> int:
        return n_rows * self.n_parts(n) * 2 * WORD

    def scratch_bytes(self, n_rows: int, n: int) -> int:
        """The top-k's partial pairs, then the log-sum-exp's partial {max, sum} pairs."""
        return (self.topk.scratch_bytes(n_rows, n) if self.topk else 0) + self.lse_scratch_bytes(n_rows, n)

    def record(self, rec, x: Strided, n_rows: int, n: int, out: View, scratch: View, values: View | None = None,
               ids: View | None = None, chosen: View | None = None) -> None:
        """x: [n_rows, n] f32 rows; out: f32 [n_rows, 2] {lse, chosen logit (0 without `chosen`)};
        values / ids: f32 / uint32 [n_rows, k] (k > 0); chosen: uint32 [n_rows] token ids, or None."""
        x.check("token_probs x", n_rows, 1, n)
        if n_rows > self.device.info.max_workgroup_count[0]:
            raise ValueError(f"token_probs of {n_rows} rows exceeds one dispatch row")
        if out.nbytes < 2 * n_rows * WORD:
            raise ValueError(f"token_probs out view of {out.nbytes} B too small for [{n_rows}, 2]")
        if chosen is not None and chosen.nbytes < n_rows * WORD:
            raise ValueError(f"token_probs chosen view of {chosen.nbytes} B too small for {n_rows} rows")
        need = self.scratch_bytes(n_rows, n)
        if scratch.nbytes < need:
            raise ValueError(f"token_probs scratch of {scratch.nbytes} B, {need} B needed")
        lse_at = 0
        if self.topk is not None:
            if values is None or ids is None:
                raise ValueError(f"token_probs with k={self.k} needs values and ids views")
            lse_at = self.topk.scratch_bytes(n_rows, n)
            self.topk.record(rec, x, values, ids, n_rows, n, scratch.sub(0, lse_at))
        part = scratch.sub(lse_at, self.lse_scratch_bytes(n_rows, n))
        n_parts = self.n_parts(n)
        ch = chosen if chosen is not None else out
        push = [x.offset, x.tok_stride, n, n_parts, self.part_size, part.word_offset, out.word_offset,
                ch.word_offset, int(chosen is not None)]
        buffers = [x.buffer, part.buffer, out.buffer, ch.buffer]
        base = {"USE_SUBGROUP": 1} if self.subgroup else {}
        rec.dispatch(ShaderKey.make("logsumexp.comp", **base), buffers, (n_parts, n_rows, 1), push=push,
                     spec=[self.block_size], reads=[x.view], writes=[part])
        rec.dispatch(ShaderKey.make("logsumexp.comp", FINAL=1, **base), buffers, (n_rows, 1, 1), push=push,
                     spec=[self.block_size], reads=[part, x.view] + ([chosen] if chosen is not None else []),
                     writes=[out])


def shader_variants() -> list[ShaderKey]:
    return flag_variants("logsumexp.comp", "FINAL", "USE_SUBGROUP")
