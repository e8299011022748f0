"""RMSNorm of rows or heads, optionally fused with the residual add before it or a SiLU gate after it.

Drives shaders/rms_norm.comp (one workgroup per row). Mirrors vkmtp.ref.ops.rms_norm.
"""

from __future__ import annotations

from vkmtp.device import WORD, ShaderKey, View
from vkmtp.ops._select import check_block_size, fold_groups, use_subgroup
from vkmtp.ops.strided import Strided


class RmsNorm:
    """y = x * rsqrt(mean(x^2) + eps) * w over each length-n row (token, head).

    Args:
        device: the Device.
        eps: epsilon added to the mean of squares (attention.layer_norm_rms_epsilon, 1e-6 for Qwen3.5).
        block_size: workgroup size (power of two, multiple of the subgroup size); 256 by default.
        subgroup: subgroup reductions (None: where the device reports subgroup arithmetic).
    """

    def __init__(self, device, eps: float = 1e-6, block_size: int = 256, subgroup: bool | None = None):
        self.device = device
        self.eps = float(eps)
        self.block_size = check_block_size(block_size, device)
        self.subgroup = use_subgroup(device, subgroup)

    def record(self, rec, x: Strided, w: View, y: Strided, n_tok: int, n: int, n_head: int = 1,
               residual: Strided | None = None, gate: Strided | None = None) -> None:
        """Record the norm of x [n_tok, n_head, n] into y with weight w [n] (shared by heads and tokens).

        residual: when given, x <- x + residual is written back into x first and the sum is normed.
        gate: when given, y is multiplied by silu(gate) (same shape as x).
        """
        x.check("rms_norm x", n_tok, n_head, n)
        y.check("rms_norm y", n_tok, n_head, n)
        if w.nbytes < n * WORD:
            raise ValueError(f"rms_norm weight view of {w.nbytes} B is shorter than n = {n}")
        defines = {}
        if self.subgroup:
            defines["USE_SUBGROUP"] = 1
        b = residual or x
        z = gate or x
        if residual is not None:
            residual.check("rms_norm residual", n_tok, n_head, n)
            defines["FUSE_ADD"] = 1
        if gate is not None:
            gate.check("rms_norm gate", n_tok, n_head, n)
            defines["GATED"] = 1
        n_rows = n_tok * n_head
        groups = fold_groups(n_rows, self.device.info.max_workgroup_count[0])
        push = [*x.push(), *b.push(), *z.push(), w.word_offset, *y.push(), n, n_head, n_rows, self.eps]
        reads = [x.view, w] + ([residual.view] if residual else []) + ([gate.view] if gate else [])
        writes = [y.view] + ([x.view] if residual else [])
        rec.dispatch(ShaderKey.make("rms_norm.comp", **defines),
                     [x.buffer, b.buffer, z.buffer, w.buffer, y.buffer], (groups[0], groups[1], 1),
                     push=push, spec=[self.block_size], reads=reads, writes=writes)
