"""Elementwise ops on [n_tok, n] f32 rows: residual add, SwiGLU, sigmoid-gated add (shaders/elementwise.comp).

One shader, one define per op. Mirrors vkmtp.ref.ops.elementwise. Operands are `Strided` rows (their
head_stride is not used); y may be the same view as an input (in place).
"""

from __future__ import annotations

from vkmtp.device import ShaderKey
from vkmtp.ops._select import check_block_size
from vkmtp.ops.strided import Strided


class _Elementwise:
    op = ""

    def __init__(self, device, block_size: int = 256):
        self.device = device
        self.block_size = check_block_size(block_size, device, power_of_two=False)

    def _record(self, rec, a: Strided, b: Strided, s: Strided, y: Strided, n_tok: int, n: int,
                reads: list, writes: list) -> None:
        for name, op in (("a", a), ("b", b), ("y", y)):
            op.check(f"{self.op.lower()} {name}", n_tok, 1, n)
        limit = self.device.info.max_workgroup_count[1]
        groups = (-(-n // self.block_size), min(n_tok, limit), -(-n_tok // limit))
        push = [a.offset, a.tok_stride, b.offset, b.tok_stride, s.offset, s.tok_stride, y.offset, y.tok_stride,
                n, n_tok]
        rec.dispatch(ShaderKey.make("elementwise.comp", **{self.op: 1}),
                     [a.buffer, b.buffer, s.buffer, y.buffer], groups, push=push, spec=[self.block_size],
                     reads=reads, writes=writes)


class Add(_Elementwise):
    """y = a + b (the residual stream: x += m)."""

    op = "OP_ADD"

    def record(self, rec, a: Strided, b: Strided, y: Strided, n_tok: int, n: int) -> None:
        self._record(rec, a, b, a, y, n_tok, n, [a.view, b.view], [y.view])


class SwiGlu(_Elementwise):
    """y = silu(gate) * up; gate and up may be two halves of one projection output."""

    op = "OP_SWIGLU"

    def record(self, rec, gate: Strided, up: Strided, y: Strided, n_tok: int, n: int) -> None:
        self._record(rec, gate, up, gate, y, n_tok, n, [gate.view, up.view], [y.view])


class SigmoidScaleAdd(_Elementwise):
    """y += sigmoid(s_t) * x per token t (Qwen3.5 MoE shared expert with its scalar gate)."""

    op = "OP_SIGMOID_SCALE_ADD"

    def record(self, rec, x: Strided, s: Strided, y: Strided, n_tok: int, n: int) -> None:
        s.check("sigmoid_scale_add s", n_tok, 1, 1)
        self._record(rec, x, x, s, y, n_tok, n, [x.view, s.view, y.view], [y.view])
