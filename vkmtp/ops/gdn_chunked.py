"""Wrapper of shaders/gdn_chunked.comp: the Gated DeltaNet update of a prompt chunk, chunk-parallel (WY/UT form).

Same operands as vkmtp.ops.gdn.GatedDeltaNet (checked by the same function), no snapshots or step log. Results
agree with the recurrent kernel within rounding but are not bit-identical to it, so it runs only where batch
invariance is not required: prompt chunks (vkmtp.graph.forward, when the device capability record or the
tuning profile selects it: `gdn.chunked`). Decode and MTP verify steps always use GatedDeltaNet. The state
left after the chunk is written where GatedDeltaNet writes it, so decode continues from it unchanged.
"""

from __future__ import annotations

from vkmtp.device import Device, DeviceCaps, Recorder, ShaderKey, View
from vkmtp.ops.gdn import gdn_operands

KEY = ShaderKey.make("gdn_chunked.comp")
CHUNK_SIZES = (16, 8)   # the default: the largest whose shared memory fits (each token costs registers)


def shared_bytes(chunk: int, head_dim: int) -> int:
    """Shared memory of one workgroup: the chunk's normed keys and queries [C][D], A and B [C][C], four
    per-token scalars."""
    return 4 * (2 * chunk * head_dim + 2 * chunk * chunk + 4 * chunk)


class ChunkedGatedDeltaNet:
    """Records the chunked delta-rule update of one GDN layer for a prompt chunk.

    Args:
        device: the Device.
        head_dim: D (= d_k = d_v).
        chunk: tokens per chunk; default `caps.gdn_chunk_tokens` where it fits, else the largest of 16, 8 whose
            shared memory fits the device.
        columns: value columns (= invocations) per workgroup, a divisor of head_dim; default
            `caps.gdn_chunk_columns` where it divides head_dim, else head_dim (one workgroup per head: the
            chunk's C x C matrices computed once). Workgroups per head = head_dim / columns.
        caps: the kernel defaults to use (None: the device's).
    """

    def __init__(self, device: Device, head_dim: int = 128, chunk: int | None = None, columns: int | None = None,
                 caps: DeviceCaps | None = None):
        info = device.info
        caps = caps or device.caps
        if columns is None:   # a profile's value may come from another head size: it must divide this one
            tuned = caps.gdn_chunk_columns
            columns = tuned if tuned and tuned <= head_dim and head_dim % tuned == 0 else head_dim
        columns = int(columns)
        if columns < 1 or columns > head_dim or head_dim % columns:
            raise ValueError(f"gdn_chunked: columns {columns} must divide head_dim {head_dim}")
        if columns > info.max_workgroup_invocations:
            raise ValueError(f"gdn_chunked: columns {columns} (invocations per workgroup) exceed the device "
                             f"limit {info.max_workgroup_invocations}")
        if chunk is None and caps.gdn_chunk_tokens and \
                shared_bytes(caps.gdn_chunk_tokens, head_dim) <= info.max_shared_memory:
            chunk = caps.gdn_chunk_tokens
        if chunk is None:
            fitting = [c for c in CHUNK_SIZES if shared_bytes(c, head_dim) <= info.max_shared_memory]
            if not fitting:
                raise ValueError(f"gdn_chunked: no chunk size fits {info.max_shared_memory} B of shared "
                                 f"memory at head_dim {head_dim}")
            chunk = fitting[0]
        need = shared_bytes(chunk, head_dim)
        if chunk < 1 or need > info.max_shared_memory:
            raise ValueError(f"gdn_chunked: chunk {chunk} at head_dim {head_dim} needs {need} B of shared "
                             f"memory, the device has {info.max_shared_memory} B")
        self.device = device
        self.head_dim = head_dim
        self.chunk = chunk
        self.columns = columns
        self.spec = [columns, head_dim, chunk]

    def max_tokens_per_dispatch(self, loop_limit: int | None) -> int:
        """Tokens of one sequence a dispatch may hold on a driver that ends an invocation's loops after
        `loop_limit` iterations in all (DeviceCaps.loop_iterations; None or 0: any number). The kernel runs about
        1.5 C D + 64 loop iterations per chunk (measured: lavapipe stops after 400 tokens at C 16, D 128, 360 at
        C 8); half the limit is used, in whole chunks."""
        if not loop_limit:
            return 1 << 30
        per_chunk = 3 * self.chunk * self.head_dim // 2 + 64
        return self.chunk * max(1, loop_limit // (2 * per_chunk))

    def record(self, rec: Recorder, records: View, n_tokens: int, q: View, k: View, v: View, qkv_stride: int,
               b: View, alpha: View, gate_stride: int, ssm_a: View, dt_bias: View, state: View, out: View,
               out_stride: int, n_head_k: int, n_head_v: int, eps: float, n_seqs: int = 1) -> None:
        """Record one dispatch; arguments as GatedDeltaNet.record (without snapshots or step log)."""
        ops = gdn_operands(self.head_dim, records, n_tokens, q, k, v, qkv_stride, b, alpha, gate_stride,
                           ssm_a, dt_bias, state, out, out_stride, n_head_k, n_head_v, eps, None, 0)
        groups = (self.head_dim // self.columns, n_head_v, max(1, min(n_seqs, n_tokens, 65535)))
        rec.dispatch(KEY, ops.buffers, groups, push=ops.push, spec=self.spec, reads=ops.reads,
                     writes=ops.writes, label=f"gdn_chunked[chunk={self.chunk},cols={self.columns}]")
