"""Wrapper of shaders/conv1d.comp: causal depthwise conv1d + SiLU of a GDN layer's qkv channels.

The arithmetic of a token does not depend on how the step is split over invocations (one fixed sum order per
channel), so results are bit-identical for any number of tokens per dispatch (batch invariance).
"""

from __future__ import annotations

from vkmtp.device import Device, Recorder, ShaderKey, View
from vkmtp.ops.row_views import rows_view, words_view

KEY = ShaderKey.make("conv1d.comp")
RECORD_WORDS = 4
MAX_KERNEL = 8


class CausalConv1d:
    """Records the conv of one GDN layer for the tokens of a step.

    Args:
        device: the Device.
        kernel_size: K_c (taps per channel, 2..8).
        channels_per_workgroup: channels of one workgroup (x); default 64.
        token_lanes: invocations per channel splitting the tokens (y); default 1 for steps of <= 8 tokens,
            4 above (a prefill chunk). Does not change any result bit.
    """

    def __init__(self, device: Device, kernel_size: int = 4, channels_per_workgroup: int = 64,
                 token_lanes: int | None = None):
        if not 2 <= kernel_size <= MAX_KERNEL:
            raise ValueError(f"conv1d: kernel_size {kernel_size} outside 2..{MAX_KERNEL}")
        limit = device.info.max_workgroup_invocations
        if channels_per_workgroup * (token_lanes or 4) > limit:
            raise ValueError(f"conv1d: {channels_per_workgroup} x {token_lanes or 4} invocations exceed "
                             f"the device's {limit}")
        self.device = device
        self.kernel_size = kernel_size
        self.channels = channels_per_workgroup
        self.token_lanes = token_lanes

    def state_words(self, n_ch: int) -> int:
        """f32 words of one slot's conv state."""
        return (self.kernel_size - 1) * n_ch

    def record(self, rec: Recorder, records: View, n_tokens: int, u: View, u_stride: int, weight: View,
               state: View, out: View, out_stride: int, n_ch: int,
               snapshots: View | None = None, n_snap: int = 0) -> None:
        """Record one dispatch for `n_tokens` tokens.

        Args:
            records: per-token records {token_id, pos, seq, flags} of the step (only seq is read).
            u: row 0 of the raw qkv projection, [n_tokens][u_stride] f32, n_ch used per row.
            weight: ssm_conv1d, [n_ch][K_c] f32.
            state: live conv states, [n_slots][K_c - 1][n_ch] f32 (channel fastest, oldest first).
            out: row 0 of the output, [n_tokens][out_stride] f32.
            snapshots: [n_slots][n_snap][K_c - 1][n_ch] f32; snapshot m = state after the sequence's token m.
        """
        if n_tokens < 1 or n_ch < 1:
            raise ValueError("conv1d: n_tokens and n_ch must be >= 1")
        one = self.state_words(n_ch)
        n_slots = state.nbytes // (4 * one)
        if n_slots < 1:
            raise ValueError(f"conv1d: state view of {state.nbytes} B holds no {one}-word conv state")
        live = words_view(state, n_slots * one, "conv1d state")
        reads = [words_view(records, n_tokens * RECORD_WORDS, "conv1d records"),
                 rows_view(u, n_tokens, n_ch, u_stride, "conv1d u"),
                 words_view(weight, n_ch * self.kernel_size, "conv1d weight"), live]
        writes = [live, rows_view(out, n_tokens, n_ch, out_stride, "conv1d out")]
        if n_snap > 0:
            if snapshots is None:
                raise ValueError("conv1d: n_snap > 0 needs a snapshots view")
            writes.append(words_view(snapshots, n_slots * n_snap * one, "conv1d snapshots"))
        snap_view = snapshots if n_snap > 0 else live
        lanes = self.token_lanes or (1 if n_tokens <= 8 else 4)
        push = [records.word_offset, n_tokens, n_ch, u.word_offset, u_stride, weight.word_offset,
                state.word_offset, n_slots, snap_view.word_offset, max(n_snap, 0), out.word_offset,
                out_stride]
        groups = (-(-n_ch // self.channels), 1, 1)
        buffers = [records.buffer, u.buffer, weight.buffer, state.buffer, snap_view.buffer, out.buffer]
        rec.dispatch(KEY, buffers, groups, push=push, spec=[self.channels, lanes, self.kernel_size],
                     reads=reads, writes=writes, label=f"conv1d[ch={self.channels},tok={lanes}]")
