"""GPU dequantization of GGUF weight rows to f32 (shaders/dequant.comp, the test bed of dequant.glsl)."""

from __future__ import annotations

from typing import Sequence

from vkmtp.device import Device, ShaderKey, View
from vkmtp.ops.quant_types import GROUP, RowPart, check_view, fold, row_parts, type_define, weight_row_bytes


class Dequant:
    """out[r][e] = W[r][e] as f32, for a weight of any supported type (one View or RowParts)."""

    def __init__(self, device: Device, block_size: int = 64):
        self.device = device
        self.block_size = block_size

    def record(self, rec, weight: View | Sequence[RowPart], ggml_type: int, n_rows: int, n_k: int,
               out: View) -> None:
        """Record the dispatches (one per part).

        Args:
            weight: raw GGUF rows, [n_rows, row_bytes] u8 (or RowParts of it)
            out: [n_rows, n_k] f32
        """
        row_bytes = weight_row_bytes(ggml_type, n_k)
        parts = row_parts(weight, n_rows, row_bytes, "dequant weight")
        check_view(out, n_rows * n_k * 4, "dequant output")
        key = ShaderKey.make("dequant.comp", **type_define(ggml_type))
        gx = -(-(-(-n_k // GROUP)) // self.block_size)
        for part in parts:
            ny, nz = fold(part.n_rows, self.device.info.max_workgroup_count[1])
            rows_out = out.sub(part.row_start * n_k * 4, part.n_rows * n_k * 4)
            rec.dispatch(key, [part.view.buffer, out.buffer], (gx, ny, nz),
                         push=[part.view.offset, row_bytes, n_k, part.n_rows, rows_out.word_offset, n_k],
                         spec=[self.block_size], reads=[part.view], writes=[rows_out])
