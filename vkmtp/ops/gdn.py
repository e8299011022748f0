"""Wrapper of shaders/gdn.comp: the recurrent Gated DeltaNet update for a step of 1..T tokens.

Variant choice (reduction of a column's partial sums across its LANES_PER_COLUMN lanes):
  'shuffle'   subgroupShuffleXor butterfly (needs subgroup shuffle); bit-identical to 'shared'
  'clustered' subgroupClusteredAdd (needs subgroup arithmetic + clustered)
  'shared'    shared-memory butterfly; always available
Kompute cannot require a subgroup size or full subgroups, and drivers may run a different width than they
report (lavapipe at LP_NATIVE_VECTOR_WIDTH=1024 reports 32 lanes and runs 16). So the subgroup variants number
lanes by local invocation index and first check, on exact integer sums, that their reduction over
lanes_per_column consecutive invocations really sums the column; if not (a column straddles subgroups, the
width is not the reported one, lanes are mapped differently) the dispatch uses the shared-memory butterfly.
Every legal lanes_per_column (power of two dividing head_dim and workgroup_size) therefore works on every
device. (llama.cpp's reported L = 32 failure on gfx1150 used its whole-subgroup 'nocluster' path, which trusts
the reported width and full subgroups; that this was the cause is our unconfirmed guess.)
Nothing here depends on the number of tokens: a token's result is bit-identical whether the step holds 1 or n
tokens (batch invariance, tests/ops/test_gdn.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vkmtp.device import Device, DeviceCaps, Recorder, ShaderKey, View
from vkmtp.ops.row_views import power_of_two, rows_view, same_buffer, words_view

VARIANT_DEFINES = {"shared": {}, "shuffle": {"REDUCE_SHUFFLE": 1}, "clustered": {"REDUCE_CLUSTERED": 1}}
RECORD_WORDS = 4


def log_words(head_dim: int) -> int:
    """f32 words of one token of one value head in the step log: decay, delta[D], normed key[D]."""
    return 1 + 2 * head_dim

SHARED_BYTES_PER_LANE = 16   # one vec3 per invocation (padded to 16 B by most compilers)


@dataclass(frozen=True)
class GdnOperands:
    """What gdn.comp binds: buffers in binding order, push words, declared read and write ranges."""

    buffers: list
    push: list
    reads: list[View]
    writes: list[View]


def gdn_operands(head_dim: int, records: View, n_tokens: int, q: View, k: View, v: View, qkv_stride: int,
                 b: View, alpha: View, gate_stride: int, ssm_a: View, dt_bias: View, state: View, out: View,
                 out_stride: int, n_head_k: int, n_head_v: int, eps: float, snapshots: View | None,
                 n_snap: int, log_steps: bool = False) -> GdnOperands:
    """Check a GDN layer's operands (arguments as GatedDeltaNet.record) and build the dispatch words."""
    d = head_dim
    if n_tokens < 1:
        raise ValueError("gdn: n_tokens must be >= 1")
    if n_head_k < 1 or n_head_v % n_head_k:
        raise ValueError(f"gdn: n_head_v {n_head_v} must be a multiple of n_head_k {n_head_k}")
    same_buffer("gdn q/k/v", q, k, v)
    same_buffer("gdn b/alpha", b, alpha)
    same_buffer("gdn ssm_a/dt_bias", ssm_a, dt_bias)
    head_state = n_head_v * d * d
    n_slots = state.nbytes // (4 * head_state)
    if n_slots < 1:
        raise ValueError(f"gdn: state view of {state.nbytes} B holds no {head_state}-word state")
    live = words_view(state, n_slots * head_state, "gdn state")
    reads = [
        words_view(records, n_tokens * RECORD_WORDS, "gdn records"),
        rows_view(q, n_tokens, n_head_k * d, qkv_stride, "gdn q"),
        rows_view(k, n_tokens, n_head_k * d, qkv_stride, "gdn k"),
        rows_view(v, n_tokens, n_head_v * d, qkv_stride, "gdn v"),
        rows_view(b, n_tokens, n_head_v, gate_stride, "gdn b"),
        rows_view(alpha, n_tokens, n_head_v, gate_stride, "gdn alpha"),
        words_view(ssm_a, n_head_v, "gdn ssm_a"),
        words_view(dt_bias, n_head_v, "gdn dt_bias"),
        live,
    ]
    writes = [rows_view(out, n_tokens, n_head_v * d, out_stride, "gdn out")]
    if not log_steps:
        writes.append(live)
    if n_snap > 0:
        if snapshots is None:
            raise ValueError("gdn: n_snap > 0 needs a snapshots view")
        per = n_head_v * log_words(d) if log_steps else head_state
        writes.append(words_view(snapshots, n_slots * n_snap * per, "gdn step log" if log_steps else
                                 "gdn snapshots"))
    elif log_steps:
        raise ValueError("gdn: log_steps needs n_snap > 0 (log entries per sequence)")
    snap_view = snapshots if n_snap > 0 else live
    push = [records.word_offset, n_tokens, q.word_offset, k.word_offset, v.word_offset, qkv_stride,
            b.word_offset, alpha.word_offset, gate_stride, ssm_a.word_offset, dt_bias.word_offset,
            state.word_offset, n_slots, snap_view.word_offset, max(n_snap, 0), out.word_offset,
            out_stride, n_head_v, n_head_k, float(eps), float(1.0 / math.sqrt(d))]
    buffers = [records.buffer, q.buffer, b.buffer, ssm_a.buffer, state.buffer, snap_view.buffer, out.buffer]
    return GdnOperands(buffers, push, reads, writes)


def available_variants(device: Device) -> list[str]:
    """The reduction variants this device can run, preferred first."""
    info = device.info
    out = []
    if info.has_subgroup_shuffle:
        out.append("shuffle")
    if info.has_subgroup_arithmetic and info.has_subgroup_clustered:
        out.append("clustered")
    out.append("shared")
    return out


class GatedDeltaNet:
    """Records the delta-rule update of one GDN layer for the tokens of a step.

    Args:
        device: the Device.
        head_dim: D (= d_k = d_v).
        lanes_per_column: lanes sharing one value column (power of two <= head_dim); default
            `caps.gdn_lanes_for(head_dim)` (1 on CPU drivers, 8 on GPUs, or the tuned value).
        variant: 'shuffle' | 'clustered' | 'shared'; default `caps.gdn_variant`, else the first of
            available_variants(device).
        workgroup_size: invocations per workgroup (a multiple of lanes_per_column); default
            max(caps.workgroup_size, lanes_per_column) (caps.workgroup_size is max(64, subgroup size)),
            capped at lanes_per_column * head_dim.
        caps: the kernel defaults to use (None: the device's, vkmtp.device.capabilities).
    """

    def __init__(self, device: Device, head_dim: int = 128, lanes_per_column: int | None = None,
                 variant: str | None = None, workgroup_size: int | None = None, caps: DeviceCaps | None = None):
        info = device.info
        caps = caps or device.caps
        if lanes_per_column is None:
            lanes_per_column = caps.gdn_lanes_for(head_dim)
        lanes = int(lanes_per_column)
        if not power_of_two(lanes) or lanes > head_dim or head_dim % lanes:
            raise ValueError(f"gdn: lanes_per_column {lanes} must be a power of two dividing "
                             f"head_dim {head_dim}")
        variant = variant or caps.gdn_variant or available_variants(device)[0]
        if variant not in VARIANT_DEFINES:
            raise ValueError(f"gdn: unknown variant {variant!r} (one of {sorted(VARIANT_DEFINES)})")
        if variant not in available_variants(device):
            raise ValueError(f"gdn: variant {variant!r} needs subgroup operations this device lacks "
                             f"({info.name}: {info.subgroup_ops})")
        if workgroup_size is None:
            workgroup_size = min(max(caps.workgroup_size, lanes), lanes * head_dim)
        if workgroup_size % lanes or workgroup_size > info.max_workgroup_invocations:
            raise ValueError(f"gdn: workgroup_size {workgroup_size} must be a multiple of lanes_per_column "
                             f"{lanes} and <= {info.max_workgroup_invocations}")
        if workgroup_size * SHARED_BYTES_PER_LANE > info.max_shared_memory:
            raise ValueError(f"gdn: workgroup_size {workgroup_size} needs more shared memory than "
                             f"{info.max_shared_memory} B")
        self.device = device
        self.head_dim = head_dim
        self.lanes_per_column = lanes
        self.variant = variant
        self.workgroup_size = workgroup_size
        self.key = ShaderKey.make("gdn.comp", **VARIANT_DEFINES[variant])
        self.log_key = ShaderKey.make("gdn.comp", LOG_STEPS=1, **VARIANT_DEFINES[variant])
        self.spec = [workgroup_size, head_dim, lanes]

    @property
    def columns_per_workgroup(self) -> int:
        return self.workgroup_size // self.lanes_per_column

    def max_tokens_per_dispatch(self, loop_limit: int | None) -> int:
        """Tokens a prefill dispatch may hold on a driver that ends an invocation's loops after `loop_limit`
        iterations in all (DeviceCaps.loop_iterations; None or 0: any number). An invocation loops over every token
        of the step, about 2 D / lanes_per_column + 2 log2(lanes) + 6 iterations each (lavapipe, D 128, one lane:
        it stops after token 250); half the limit is used."""
        if not loop_limit:
            return 1 << 30
        lanes = self.lanes_per_column
        per_token = 2 * (self.head_dim // lanes) + 2 * lanes.bit_length() + 6
        return max(1, loop_limit // (2 * per_token))

    def state_words(self, n_head_v: int) -> int:
        """f32 words of one slot's state (all value heads)."""
        return n_head_v * self.head_dim * self.head_dim

    def record(self, rec: Recorder, records: View, n_tokens: int, q: View, k: View, v: View, qkv_stride: int,
               b: View, alpha: View, gate_stride: int, ssm_a: View, dt_bias: View, state: View, out: View,
               out_stride: int, n_head_k: int, n_head_v: int, eps: float,
               snapshots: View | None = None, n_snap: int = 0, n_seqs: int = 1, log_steps: bool = False) -> None:
        """Record one dispatch for `n_tokens` tokens.

        Args:
            records: per-token records {token_id, pos, seq, flags} of the step (only seq is read).
            q, k: row 0 of the conv output's q / k part, [n_tokens][qkv_stride] f32, n_head_k * D each.
            v: row 0 of the v part, n_head_v * D per row, same buffer and stride as q and k.
            b, alpha: row 0 of the raw beta / alpha projections, [n_tokens][gate_stride] f32 (one buffer).
            ssm_a, dt_bias: [n_head_v] f32 (one buffer).
            state: live states, [n_slots][n_head_v][D (j)][D (i)] f32; n_slots = its size / one state.
            out: row 0 of o, [n_tokens][out_stride] f32, n_head_v * D per row.
            snapshots: [n_slots][n_snap][n_head_v][D][D] f32; snapshot m = state after the sequence's token m
                of this step, written for m < n_snap.
            n_seqs: how many sequences the step holds at most (workgroups along z; any value >= 1 is correct).
            log_steps: `snapshots` is a step log instead, [n_slots][n_snap][n_head_v][log_words(D)] f32 (decay,
                delta, normed key of each token), and the live state is left as it was before the step, for
                vkmtp.ops.gdn_replay to bring forward by the accepted tokens. Every token of a sequence must
                have an entry (n_snap >= its tokens in the step).
        """
        ops = gdn_operands(self.head_dim, records, n_tokens, q, k, v, qkv_stride, b, alpha, gate_stride,
                           ssm_a, dt_bias, state, out, out_stride, n_head_k, n_head_v, eps, snapshots, n_snap,
                           log_steps)
        d = self.head_dim
        groups = (-(-d // self.columns_per_workgroup), n_head_v, max(1, min(n_seqs, n_tokens, 65535)))
        key = self.log_key if log_steps else self.key
        rec.dispatch(key, ops.buffers, groups, push=ops.push, spec=self.spec, reads=ops.reads,
                     writes=ops.writes,
                     label=f"{key.name}[wg={self.workgroup_size},lanes={self.lanes_per_column}]")
