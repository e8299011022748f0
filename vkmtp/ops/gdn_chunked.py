"""Wrapper of shaders/gdn_chunked.comp: the Gated DeltaNet update for long prefill steps, chunk-parallel.

Same operands as vkmtp.ops.gdn.GatedDeltaNet (checked by the same function), no snapshots. Results agree with
the recurrent kernel within rounding but are not bit-identical to it, so use it only where batch invariance is
not required: prompt prefill. Decode and MTP verify steps must use GatedDeltaNet.
"""

from __future__ import annotations

from vkmtp.device import Device, Recorder, ShaderKey, View
from vkmtp.ops.gdn import gdn_operands

KEY = ShaderKey.make("gdn_chunked.comp")
CHUNK_SIZES = (64, 32, 16)


def shared_bytes(chunk: int, columns: int) -> int:
    return 4 * (chunk * chunk + chunk * columns + 4 * chunk)


class ChunkedGatedDeltaNet:
    """Records the chunked delta-rule update of one GDN layer for a prefill step.

    Args:
        device: the Device.
        head_dim: D (= d_k = d_v).
        chunk: tokens per chunk; default the largest of 64, 32, 16 whose shared memory fits the device.
        columns: value columns per workgroup (default 32); workgroups per head = ceil(D / columns).
        workgroup_size: invocations per workgroup (default 256).
    """

    def __init__(self, device: Device, head_dim: int = 128, chunk: int | None = None, columns: int = 32,
                 workgroup_size: int = 256):
        info = device.info
        if chunk is None:
            fitting = [c for c in CHUNK_SIZES if shared_bytes(c, columns) <= info.max_shared_memory]
            if not fitting:
                raise ValueError(f"gdn_chunked: no chunk size fits {info.max_shared_memory} B of shared "
                                 "memory")
            chunk = fitting[0]
        if chunk < 1 or columns < 1 or shared_bytes(chunk, columns) > info.max_shared_memory:
            raise ValueError(f"gdn_chunked: chunk {chunk} x columns {columns} needs "
                             f"{shared_bytes(chunk, columns)} B of shared memory, the device has "
                             f"{info.max_shared_memory} B")
        if workgroup_size > info.max_workgroup_invocations:
            raise ValueError(f"gdn_chunked: workgroup_size {workgroup_size} exceeds the device limit")
        self.device = device
        self.head_dim = head_dim
        self.chunk = chunk
        self.columns = columns
        self.workgroup_size = workgroup_size
        self.spec = [workgroup_size, head_dim, chunk, columns]

    def record(self, rec: Recorder, records: View, n_tokens: int, q: View, k: View, v: View, qkv_stride: int,
               b: View, alpha: View, gate_stride: int, ssm_a: View, dt_bias: View, state: View, out: View,
               out_stride: int, n_head_k: int, n_head_v: int, eps: float, n_seqs: int = 1) -> None:
        """Record one dispatch; arguments as GatedDeltaNet.record (without snapshots)."""
        ops = gdn_operands(self.head_dim, records, n_tokens, q, k, v, qkv_stride, b, alpha, gate_stride,
                           ssm_a, dt_bias, state, out, out_stride, n_head_k, n_head_v, eps, None, 0)
        groups = (-(-self.head_dim // self.columns), n_head_v, max(1, min(n_seqs, n_tokens, 65535)))
        rec.dispatch(KEY, ops.buffers, groups, push=ops.push, spec=self.spec, reads=ops.reads,
                     writes=ops.writes, label=f"gdn_chunked[chunk={self.chunk},cols={self.columns}]")
