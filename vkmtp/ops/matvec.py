"""Quantized mat-vec for decode and speculative verification (shaders/matvec.comp).

One dispatch multiplies a GGUF weight by up to 8 activation columns (the n_max + 1 tokens of a verify batch);
more columns are recorded as several dispatches. Every column's result is bit-identical whatever the number of
columns it was computed with (batch invariance, needed for MTP to be token-identical to plain decoding): the
block size and reduction variant are fixed per MatVec instance, never chosen per column count.
A dispatch may also prepare its input (a fused RMSNorm, gated head norm or SwiGLU: InputPrep) and gate its output
write (out_gate), in place of separate dispatches (shaders/common/matvec_io.glsl).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vkmtp.device import Device, DeviceCaps, DeviceInfo, MatVecTuning, ShaderKey, View
from vkmtp.ops.quant_types import RowPart, aligned8, fold, linear_operands, type_define

MAX_COLS = 8
MAX_IN_HEADS = 64   # heads per column of a HEAD_NORM input (shaders/common/matvec_io.glsl)


@dataclass(frozen=True)
class InputPrep:
    """What the mat-vec does to each input column while loading it (shaders/common/matvec_io.glsl), in place of
    a separate dispatch before it, with that dispatch's arithmetic:
      "norm"       RMSNorm of the column with `weight` (rms_norm.comp)
      "head_norm"  RMSNorm of each head_dim-wide head with `weight`, times silu(side) (rms_norm.comp GATED)
      "swiglu"     silu(x) * side: x the gate half, `side` the up half (elementwise.comp OP_SWIGLU)
    side: View of column 0's side operand, in the activations' buffer; column c's at side_stride words on
    (matvec_id: the side operand sits at a fixed distance from each input row, side_stride unused)."""

    mode: str
    weight: View | None = None
    eps: float = 0.0
    side: View | None = None
    side_stride: int = 0
    head_dim: int = 0

    DEFINES = {"norm": "X_NORM", "head_norm": "X_HEAD_NORM", "swiglu": "X_SWIGLU"}

    def check(self, op: str, x: View, n_k: int) -> None:
        if self.mode not in self.DEFINES:
            raise ValueError(f"{op}: input preparation {self.mode!r} is not one of {sorted(self.DEFINES)}")
        if self.mode != "swiglu":
            width = self.head_dim if self.mode == "head_norm" else n_k
            if self.weight is None or self.weight.nbytes < 4 * width:
                raise ValueError(f"{op}: {self.mode} needs a norm weight of {width} f32")
        if self.mode == "head_norm":
            if self.head_dim < 8 or self.head_dim % 8 or n_k % self.head_dim or n_k // self.head_dim > MAX_IN_HEADS:
                raise ValueError(f"{op}: head_norm needs head_dim a multiple of 8 dividing n_k {n_k} into at "
                                 f"most {MAX_IN_HEADS} heads (head_dim {self.head_dim})")
        if self.mode != "norm":
            if self.side is None or self.side.buffer is not x.buffer:
                raise ValueError(f"{op}: {self.mode}'s side operand must be a view of the activations' buffer")

    def aligned(self) -> bool:
        """The side operand allows the 16-byte loads."""
        return self.side is None or (self.side.word_offset % 4 == 0 and self.side_stride % 4 == 0)

    def push(self, side_word: int) -> list:
        w = self.weight.word_offset if self.weight is not None else 0
        return [w, float(self.eps), self.head_dim, side_word]


def check_tuning(info: DeviceInfo, tuning: MatVecTuning, n_cols: int = MAX_COLS) -> None:
    """ValueError unless the device can run `tuning` for n_cols columns (workgroup, subgroup, shared memory)."""
    b, sg = tuning.block_size, info.subgroup_size
    if b & (b - 1) or not 1 <= b <= info.max_workgroup_invocations:
        raise ValueError(f"matvec block_size {b} must be a power of 2 <= {info.max_workgroup_invocations}")
    if tuning.use_subgroup:
        if not info.has_subgroup_arithmetic:
            raise ValueError(f"{info.name} has no subgroup arithmetic; use the shared-memory variant")
        if b % sg:
            raise ValueError(f"matvec block_size {b} is not a multiple of the subgroup size {sg}")
    slots = b // sg if tuning.use_subgroup else b
    shared = tuning.rows_per_group * n_cols * slots * 4
    if tuning.rows_per_group < 1 or shared > info.max_shared_memory:
        raise ValueError(f"matvec {tuning.rows_per_group} rows x {n_cols} columns x {slots} partial sums "
                         f"need {shared} B of shared memory, the device has {info.max_shared_memory} B")


def variant_key(source: str, ggml_type: int, tuning: MatVecTuning, accumulate: bool,
                x_aligned: bool = True, prep: InputPrep | None = None, out_gate: bool = False,
                a_aligned8: bool = False) -> ShaderKey:
    """a_aligned8: a split-layout weight whose rows all start on 8 bytes (quant_types.aligned8): 8-byte loads."""
    defines = type_define(ggml_type)
    if a_aligned8:
        defines["A_ALIGN8"] = 1
    if prep is not None:
        defines[InputPrep.DEFINES[prep.mode]] = 1
    if out_gate:
        defines["D_SIGMOID_ADD"] = 1
    if not x_aligned:
        defines["B_SCALAR"] = 1
    if tuning.use_subgroup:
        defines["USE_SUBGROUP_ADD"] = 1
    if accumulate:
        defines["ACCUMULATE"] = 1
    return ShaderKey.make(source, **defines)


class MatVec:
    """y[c] = W x[c] (accumulate: y[c] += W x[c]) for n_tok columns c; W a GGUF weight of a supported type.

    `tuning` applies to every type; `per_type` (ggml type id -> tuning, from a tuning profile) overrides it
    for some. Both default to `caps` (default: the device's, vkmtp.device.capabilities). A weight's tuning
    depends only on its type, never on the column count (batch invariance).
    """

    def __init__(self, device: Device, tuning: MatVecTuning | None = None,
                 per_type: dict[int, MatVecTuning] | None = None, caps: DeviceCaps | None = None):
        caps = caps or device.caps
        self.device = device
        self.tuning = tuning or caps.matvec
        self.per_type = dict(caps.matvec_per_type if per_type is None else per_type)
        for t in (self.tuning, *self.per_type.values()):
            check_tuning(device.info, t)

    def tuning_for(self, ggml_type: int) -> MatVecTuning:
        return self.per_type.get(int(ggml_type), self.tuning)

    def record(self, rec, weight: View | Sequence[RowPart], ggml_type: int, n_rows: int, n_k: int, x: View,
               y: View, n_tok: int, accumulate: bool = False, x_stride: int | None = None,
               y_stride: int | None = None, prep: InputPrep | None = None,
               out_gate: tuple[View, int] | None = None) -> None:
        """Record ceil(n_tok / 8) dispatches per weight part.

        Args:
            weight: GGUF rows [n_rows, row_bytes] u8 in the device layout (quant_types.to_device_layout) in one
                View, or RowParts (one dispatch each)
            x: [n_tok, x_stride] f32 activations (x_stride defaults to n_k)
            y: [n_tok, y_stride] f32 output, rows 0..n_rows-1 of each column (y_stride defaults to n_rows)
            accumulate: add to y (residual add) instead of overwriting it
            prep: what to do to each input column while loading it (InputPrep: a fused norm or SwiGLU)
            out_gate: (view, stride): y[c] += sigmoid(view[c * stride]) * (W x[c]) (the MoE shared expert's
                gated add; the view in x's buffer)
        """
        ops = linear_operands("matvec", weight, ggml_type, n_rows, n_k, x, y, n_tok, x_stride, y_stride)
        if prep is not None:
            prep.check("matvec", x, n_k)
        if out_gate is not None:
            if accumulate:
                raise ValueError("matvec: out_gate adds to y already; accumulate must be False")
            if out_gate[0].buffer is not x.buffer:
                raise ValueError("matvec: out_gate must be a view of the activations' buffer")
        parts, row_bytes, x_stride, y_stride = ops.parts, ops.row_bytes, ops.x_stride, ops.y_stride
        t = self.tuning_for(ggml_type)
        limit = self.device.info.max_workgroup_count[0]
        for c0 in range(0, n_tok, MAX_COLS):
            n_cols = min(MAX_COLS, n_tok - c0)
            xc = x.sub(c0 * x_stride * 4, ((n_cols - 1) * x_stride + n_k) * 4)
            yc = y.sub(c0 * y_stride * 4, ((n_cols - 1) * y_stride + n_rows) * 4)
            aligned = xc.word_offset % 4 == 0 and (n_cols == 1 or x_stride % 4 == 0)
            extra, buffers, reads = [0, 0.0, 0, 0], [], [xc]
            if prep is not None:
                extra = prep.push(prep.side.word_offset + c0 * prep.side_stride if prep.side is not None else 0)
                if prep.weight is not None:
                    buffers.append(prep.weight.buffer)
                    reads.append(prep.weight)
                if prep.side is not None:
                    reads.append(prep.side.sub(c0 * prep.side_stride * 4,
                                               ((n_cols - 1) * prep.side_stride + n_k) * 4))
            gate_push = [0, 0]
            if out_gate is not None:
                g, gs = out_gate
                gate_push = [g.word_offset + c0 * gs, gs]
                reads += [g.sub(c0 * gs * 4, ((n_cols - 1) * gs + 1) * 4), yc]
            if accumulate:
                reads.append(yc)
            for part in parts:
                key = variant_key("matvec.comp", ggml_type, t, accumulate,
                                  x_aligned=aligned and (prep is None or prep.aligned()), prep=prep,
                                  out_gate=out_gate is not None,
                                  a_aligned8=aligned8(ggml_type, part.view.offset, row_bytes))
                groups = fold(-(-part.n_rows // t.rows_per_group), limit)
                push = [part.view.offset, row_bytes, n_k, part.n_rows, xc.word_offset, x_stride,
                        yc.word_offset + part.row_start, y_stride, *extra,
                        prep.side_stride if prep is not None else 0, *gate_push]
                rec.dispatch(key, [part.view.buffer, x.buffer, y.buffer, *buffers], (*groups, 1), push=push,
                             spec=[t.block_size, t.rows_per_group, n_cols, self.device.info.subgroup_size],
                             reads=[part.view, *reads], writes=[yc])
