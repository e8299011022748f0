"""Softmax over each row of f32 (shaders/softmax.comp); mirrors vkmtp.ref.ops.softmax.softmax."""

from __future__ import annotations

from vkmtp.device import ShaderKey
from vkmtp.ops._select import check_block_size, fold_groups, use_subgroup
from vkmtp.ops.strided import Strided


class Softmax:
    """y[r] = exp(x[r] - max) / sum(exp(x[r] - max)), one workgroup per row; y may be x."""

    def __init__(self, device, block_size: int = 256, subgroup: bool | None = None):
        self.device = device
        self.block_size = check_block_size(block_size, device)
        self.subgroup = use_subgroup(device, subgroup)

    def record(self, rec, x: Strided, y: Strided, n_rows: int, n: int) -> None:
        """x, y: [n_rows, n] rows at tok_stride words apart."""
        x.check("softmax x", n_rows, 1, n)
        y.check("softmax y", n_rows, 1, n)
        groups = fold_groups(n_rows, self.device.info.max_workgroup_count[0])
        rec.dispatch(ShaderKey.make("softmax.comp", **({"USE_SUBGROUP": 1} if self.subgroup else {})),
                     [x.buffer, y.buffer], (groups[0], groups[1], 1),
                     push=[x.offset, x.tok_stride, y.offset, y.tok_stride, n, n_rows], spec=[self.block_size],
                     reads=[x.view], writes=[y.view])
