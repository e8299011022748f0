"""Row-wise argmax of logits on the GPU, ties to the lowest index (shaders/argmax.comp, two passes).

Greedy decoding and the MTP draft read token ids, not 248320 logits. The ids can be written with a word
stride, e.g. straight into the token_id field of the next step's token records. Mirrors
vkmtp.ref.ops.argmax.argmax.
"""

from __future__ import annotations

from vkmtp.device import WORD, ShaderKey, View
from vkmtp.ops._select import TwoPassRows, flag_variants
from vkmtp.ops.strided import Strided


class Argmax(TwoPassRows):
    """ids[r] = argmax(x[r]) (NaN counts as -inf; equal values: the lowest index).

    Args:
        part_size: values per pass-1 workgroup (248320 / 4096 -> 61 workgroups per row).
    """

    def __init__(self, device, block_size: int = 256, part_size: int = 4096, subgroup: bool | None = None):
        super().__init__(device, block_size, part_size, subgroup)

    def scratch_bytes(self, n_rows: int, n: int) -> int:
        return n_rows * self.n_parts(n) * 2 * WORD

    def record(self, rec, x: Strided, ids: View, n_rows: int, n: int, scratch: View, ids_stride: int = 1,
               values: View | None = None) -> None:
        """x: [n_rows, n] f32 rows; ids: uint32 at ids[r * ids_stride]; values: f32 [n_rows] (optional)."""
        x.check("argmax x", n_rows, 1, n)
        if n_rows > self.device.info.max_workgroup_count[0]:
            raise ValueError(f"argmax of {n_rows} rows exceeds one dispatch row")
        if ids.nbytes < ((n_rows - 1) * ids_stride + 1) * WORD:
            raise ValueError(f"argmax ids view of {ids.nbytes} B too small for {n_rows} rows "
                             f"at stride {ids_stride}")
        if values is not None and values.nbytes < n_rows * WORD:
            raise ValueError(f"argmax values view of {values.nbytes} B too small for {n_rows} rows")
        part = self.scratch_part("argmax", scratch, self.scratch_bytes(n_rows, n))
        n_parts = self.n_parts(n)
        vals = values or ids
        push = [x.offset, x.tok_stride, n, n_parts, self.part_size, scratch.word_offset, ids.word_offset,
                ids_stride, vals.word_offset, int(values is not None), n_rows]
        buffers = [x.buffer, scratch.buffer, ids.buffer, vals.buffer]
        base = {"USE_SUBGROUP": 1} if self.subgroup else {}
        rec.dispatch(ShaderKey.make("argmax.comp", **base), buffers, (n_parts, n_rows, 1), push=push,
                     spec=[self.block_size], reads=[x.view], writes=[part])
        rec.dispatch(ShaderKey.make("argmax.comp", FINAL=1, **base), buffers, (n_rows, 1, 1), push=push,
                     spec=[self.block_size], reads=[part],
                     writes=[ids] + ([values] if values is not None else []))


def shader_variants() -> list[ShaderKey]:
    return flag_variants("argmax.comp", "FINAL", "USE_SUBGROUP")
