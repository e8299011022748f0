"""Row-wise top-k (k <= 20) values and ids, ties to the lower index (shaders/topk.comp, two passes).

For the MTP draft's p-min check (the softmax over the top-10 draft logits needs 10 values, not 248320) and for
the top-n token log-probabilities a client asks for (OpenAI's bound: 20; vkmtp.ops.token_probs).
Mirrors vkmtp.ref.ops.topk.topk.
"""

from __future__ import annotations

from vkmtp.device import WORD, ShaderKey, View
from vkmtp.ops._select import TwoPassRows, flag_variants
from vkmtp.ops.strided import Strided

MAX_K = 20


class TopK(TwoPassRows):
    """values[r, :k], ids[r, :k]: the k greatest of x[r] in descending order (NaN as -inf)."""

    def __init__(self, device, k: int, block_size: int = 64, part_size: int = 16384):
        """block_size: invocations per workgroup, each keeping a k-list in shared memory for the merge
        (2 * MAX_K words each); part_size: values per pass-1 workgroup (248320 / 16384 -> 16 per row)."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"top-k supports 1 <= k <= {MAX_K}, got {k}")
        super().__init__(device, block_size, part_size, subgroup=False)
        shared = 4 * (2 * MAX_K + 1) * block_size
        limit = device.info.max_shared_memory
        if limit and shared > limit:
            raise ValueError(f"top-k workgroup of {block_size} needs {shared} B of shared memory; the device has "
                             f"{limit} B")
        self.k = k

    def scratch_bytes(self, n_rows: int, n: int) -> int:
        return n_rows * self.n_parts(n) * self.k * 2 * WORD

    def record(self, rec, x: Strided, values: View, ids: View, n_rows: int, n: int, scratch: View) -> None:
        """x: [n_rows, n] f32 rows; values: f32 [n_rows, k]; ids: uint32 [n_rows, k]."""
        x.check("topk x", n_rows, 1, n)
        if n < self.k:
            raise ValueError(f"top-{self.k} of rows of only {n} values")
        if n_rows > self.device.info.max_workgroup_count[0]:
            raise ValueError(f"topk of {n_rows} rows exceeds one dispatch row")
        for name, view in (("values", values), ("ids", ids)):
            if view.nbytes < n_rows * self.k * WORD:
                raise ValueError(f"topk {name} view of {view.nbytes} B too small for [{n_rows}, {self.k}]")
        part = self.scratch_part("topk", scratch, self.scratch_bytes(n_rows, n))
        n_parts = self.n_parts(n)
        push = [x.offset, x.tok_stride, n, n_parts, self.part_size, scratch.word_offset, values.word_offset,
                ids.word_offset, self.k]
        buffers = [x.buffer, scratch.buffer, values.buffer, ids.buffer]
        rec.dispatch(ShaderKey.make("topk.comp"), buffers, (n_parts, n_rows, 1), push=push,
                     spec=[self.block_size], reads=[x.view], writes=[part])
        rec.dispatch(ShaderKey.make("topk.comp", FINAL=1), buffers, (n_rows, 1, 1), push=push,
                     spec=[self.block_size], reads=[part], writes=[values, ids])


def shader_variants() -> list[ShaderKey]:
    return flag_variants("topk.comp", "FINAL")
