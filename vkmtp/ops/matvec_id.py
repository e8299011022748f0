"""Expert-indexed mat-vec for MoE decode and verification (shaders/matvec_id*.comp).

Three dispatches per MoE block, all reading routing decisions from device memory (a recorded step replays):
  record_routes        groups the (token, slot) entries by expert (matvec_id_routes.comp), once per layer
  record               y[t, j] = W_{ids[t, j]} x  for gate/up (x per token) or down (x per slot); a
                       workgroup serves every entry of its expert group: each distinct expert is read once
  record_weighted_sum  y[t] (+)= sum_j w[t, j] y_slots[t, j] in slot order (routing weights, residual add)
Every token's result is bit-identical whatever the other tokens of the batch are (batch invariance).
"""

from __future__ import annotations

from typing import Sequence

from vkmtp.device import Device, ShaderKey, View
from vkmtp.ops.matvec import MAX_COLS, InputPrep, MatVecTuning, check_tuning, variant_key
from vkmtp.ops.quant_types import RowPart, aligned8, check_view, fold, row_parts, weight_row_bytes

# An expert stack [n_expert, n_rows, n_k] split by experts: RowPart(view, expert_start, n_experts), where a
# "row" of the split is one expert's whole matrix.
ExpertPart = RowPart

MAX_ENTRIES = 4096  # n_tok * n_used handled by one routing pass (16 KiB of shared memory)
ROUTES_BLOCK = 64
SUM_BLOCK = 64


def group_capacity(n_tok: int) -> int:
    """Entries per expert group = matvec_id's column count (a group never holds two slots of one token)."""
    return min(n_tok, MAX_COLS)


def routes_words(n_tok: int, n_used: int) -> int:
    """Size in words of the routes buffer for a step of n_tok tokens with n_used experts each."""
    n = n_tok * n_used
    return 1 + 2 * n + n * group_capacity(n_tok)


class MatVecId:
    """MoE expert mat-vecs over the n_used experts each of n_tok tokens picked (ids and weights on device)."""

    def __init__(self, device: Device, tuning: MatVecTuning | None = None):
        self.device = device
        self.tuning = tuning or device.caps.matvec
        check_tuning(device.info, self.tuning)

    def record_routes(self, rec, ids: View, routes: View, n_tok: int, n_used: int) -> None:
        """Group entries by expert.

        Args:
            ids: [n_tok, n_used] u32 expert ids (the router's output)
            routes: routes_words(n_tok, n_used) u32 words (scratch read by record)
        """
        n = n_tok * n_used
        if not 1 <= n <= MAX_ENTRIES:
            raise ValueError(f"matvec_id: {n_tok} tokens x {n_used} experts = {n} entries, "
                             f"1..{MAX_ENTRIES} allowed")
        check_view(ids, n * 4, "matvec_id expert ids")
        check_view(routes, routes_words(n_tok, n_used) * 4, "matvec_id routes")
        routes = routes.sub(0, routes_words(n_tok, n_used) * 4)
        rec.dispatch(ShaderKey.make("matvec_id_routes.comp"), [ids.buffer, routes.buffer], (1, 1, 1),
                     push=[ids.word_offset, routes.word_offset, n, group_capacity(n_tok)],
                     spec=[ROUTES_BLOCK, max(n, 1)], reads=[ids.sub(0, n * 4)], writes=[routes])

    def record(self, rec, experts: View | Sequence[ExpertPart], ggml_type: int, n_expert: int, n_rows: int,
               n_k: int, x: View, y: View, routes: View, n_tok: int, n_used: int,
               x_per_slot: bool = False, x_stride: int | None = None, prep: InputPrep | None = None) -> None:
        """Record one dispatch per expert part.

        Args:
            experts: GGUF expert stack [n_expert, n_rows, row_bytes] u8 in the device layout (or ExpertParts)
            x: [n_tok, n_k] f32 (gate/up), or with x_per_slot [n_tok * n_used, n_k] f32 (down)
            y: [n_tok * n_used, n_rows] f32, row t * n_used + j for token t's j-th expert
            routes: written by record_routes for the same n_tok, n_used
            x_stride: words between input rows (default n_k)
            prep: InputPrep "norm" (weight of n_k) or "swiglu" (side: the up half of input row 0, in x's
                buffer; every row's up half at the same distance from its gate half)
        """
        row_bytes = weight_row_bytes(ggml_type, n_k)
        parts = row_parts(experts, n_expert, n_rows * row_bytes, "matvec_id expert stack")
        n = n_tok * n_used
        n_x_rows = n if x_per_slot else n_tok
        x_stride = n_k if x_stride is None else x_stride
        if x_stride < n_k:
            raise ValueError(f"matvec_id: x_stride {x_stride} < n_k {n_k}")
        x_words = (n_x_rows - 1) * x_stride + n_k
        check_view(x, x_words * 4, "matvec_id inputs x")
        side_rel, extra, buffers, reads = 0, [0, 0.0, 0, 0], [], []
        if prep is not None:
            if prep.mode == "head_norm":
                raise ValueError("matvec_id: head_norm input preparation is not supported")
            prep.check("matvec_id", x, n_k)
            if prep.side is not None:
                side_rel = prep.side.word_offset - x.word_offset
                if side_rel < n_k:
                    raise ValueError("matvec_id: the side operand must follow its input row's first n_k words")
                reads.append(prep.side.sub(0, x_words * 4))
            extra = prep.push(side_rel)
            if prep.weight is not None:
                buffers.append(prep.weight.buffer)
                reads.append(prep.weight)
        check_view(y, n * n_rows * 4, "matvec_id output y")
        check_view(routes, routes_words(n_tok, n_used) * 4, "matvec_id routes")
        routes = routes.sub(0, routes_words(n_tok, n_used) * 4)
        x_used = x.sub(0, x_words * 4)
        y_used = y.sub(0, n * n_rows * 4)
        t = self.tuning
        spec = [t.block_size, t.rows_per_group, group_capacity(n_tok), self.device.info.subgroup_size]
        gx = -(-n_rows // t.rows_per_group)
        if gx > self.device.info.max_workgroup_count[0] or n > self.device.info.max_workgroup_count[1]:
            raise ValueError(f"matvec_id: grid {gx} x {n} exceeds the device's workgroup count limits")
        for part in parts:
            key = variant_key("matvec_id.comp", ggml_type, t, False,
                              x_aligned=x.word_offset % 4 == 0 and x_stride % 4 == 0 and side_rel % 4 == 0,
                              prep=prep, a_aligned8=aligned8(ggml_type, part.view.offset, row_bytes))
            push = [part.view.offset, row_bytes, n_k, n_rows, part.row_start, part.n_rows, n_expert,
                    x.word_offset, x_stride, int(x_per_slot), y.word_offset, n_rows, routes.word_offset, n, n_used,
                    *extra]
            rec.dispatch(key, [part.view.buffer, x.buffer, y.buffer, routes.buffer, *buffers], (gx, n, 1),
                         push=push, spec=spec, reads=[part.view, x_used, routes, *reads], writes=[y_used])

    def record_weighted_sum(self, rec, slots: View, weights: View, y: View, n_tok: int, n_used: int,
                            n_rows: int, accumulate: bool = False) -> None:
        """y[t] = sum_j weights[t, j] * slots[t * n_used + j] (accumulate: y[t] += ...), j in slot order.

        Args:
            slots: [n_tok * n_used, n_rows] f32 (record's output for the down projection)
            weights: [n_tok, n_used] f32 routing weights
            y: [n_tok, n_rows] f32
        """
        n = n_tok * n_used
        check_view(slots, n * n_rows * 4, "matvec_id slot outputs")
        check_view(weights, n * 4, "matvec_id routing weights")
        check_view(y, n_tok * n_rows * 4, "matvec_id combined output")
        y_used = y.sub(0, n_tok * n_rows * 4)
        key = ShaderKey.make("matvec_id_sum.comp", **({"ACCUMULATE": 1} if accumulate else {}))
        gy, gz = fold(n_tok, self.device.info.max_workgroup_count[1])
        rec.dispatch(key, [slots.buffer, weights.buffer, y.buffer], (-(-n_rows // SUM_BLOCK), gy, gz),
                     push=[slots.word_offset, n_rows, weights.word_offset, y.word_offset, n_rows, n_rows,
                           n_used, n_tok],
                     spec=[SUM_BLOCK], reads=[slots.sub(0, n * n_rows * 4), weights.sub(0, n * 4)]
                     + ([y_used] if accumulate else []), writes=[y_used])
