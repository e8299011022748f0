"""Embedding lookup from a quantized table (shaders/get_rows.comp): out[t] = dequant(table[id_t]).

Token ids are read on the device, from the per-token records of a step (shaders/common/tokens.glsl: word 0 of
each 4-word record is the token id) or from a plain uint array, so a recorded step can be replayed.
"""

from __future__ import annotations

from typing import Sequence

from vkmtp.device import Device, ShaderKey, View
from vkmtp.ops.quant_types import GROUP, RowPart, check_view, fold, row_parts, type_define, weight_row_bytes

TOKEN_RECORD_WORDS = 4  # {token_id, pos, seq, flags}, tokens.glsl
PLAIN_IDS = 1


class GetRows:
    """Rows of a GGUF table (one View or RowParts) selected by device-side token ids, written as f32."""

    def __init__(self, device: Device, block_size: int = 64):
        self.device = device
        self.block_size = block_size

    def record(self, rec, table: View | Sequence[RowPart], ggml_type: int, n_vocab: int, n_embd: int,
               ids: View, out: View, n_tok: int, ids_stride: int = TOKEN_RECORD_WORDS,
               out_stride: int | None = None) -> None:
        """Record one dispatch per table part.

        Args:
            table: GGUF rows [n_vocab, row_bytes] u8 in the device layout (or RowParts of it)
            ids: token ids, id of token t at word t * ids_stride (TOKEN_RECORD_WORDS: step records; PLAIN_IDS)
            out: [n_tok, out_stride] f32 (out_stride defaults to n_embd); ids >= n_vocab give NaN rows
        """
        out_stride = n_embd if out_stride is None else out_stride
        row_bytes = weight_row_bytes(ggml_type, n_embd)
        parts = row_parts(table, n_vocab, row_bytes, "get_rows table")
        if n_tok < 1 or ids_stride < 1 or out_stride < n_embd:
            raise ValueError(f"get_rows: need n_tok >= 1 (got {n_tok}), ids_stride >= 1 (got {ids_stride}) "
                             f"and out_stride >= n_embd ({out_stride} < {n_embd}?)")
        check_view(ids, ((n_tok - 1) * ids_stride + 1) * 4, "get_rows token ids")
        out_used = out.sub(0, ((n_tok - 1) * out_stride + n_embd) * 4)
        check_view(out, out_used.nbytes, "get_rows output")
        key = ShaderKey.make("get_rows.comp", **type_define(ggml_type))
        gx = -(-(-(-n_embd // GROUP)) // self.block_size)
        gy, gz = fold(n_tok, self.device.info.max_workgroup_count[1])
        for part in parts:
            push = [part.view.offset, row_bytes, n_embd, part.row_start, part.n_rows, n_vocab,
                    ids.word_offset, ids_stride, out_used.word_offset, out_stride, n_tok]
            rec.dispatch(key, [part.view.buffer, ids.buffer, out.buffer], (gx, gy, gz), push=push,
                         spec=[self.block_size], reads=[part.view, ids], writes=[out_used])
