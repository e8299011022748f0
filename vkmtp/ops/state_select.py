"""Wrapper of shaders/state_select.comp: restore live GDN/conv states from per-token snapshots.

After a verify step the kernels conv1d and gdn have written, for every sequence, the state after each of its
first n_snap tokens (snapshot m = after token m of the step). When only the tokens 0..r are accepted, the live
state must become snapshot r. r is decided on the GPU, so it is read from a device buffer of entries
{seq slot, snapshot index} (vkmtp.ref.ops.state_select.NO_ROLLBACK = keep the live state).
"""

from __future__ import annotations

from vkmtp.device import Device, Recorder, ShaderKey, View
from vkmtp.ops.row_views import words_view

KEY = ShaderKey.make("state_select.comp")
BLOCK_SIZE = 256
MAX_GROUPS_X = 65535


class StateSelect:
    """Records the rollback copy of one kind of state (conv or GDN), for one layer or several layers."""

    def __init__(self, device: Device, block_size: int = BLOCK_SIZE):
        if block_size > device.info.max_workgroup_invocations:
            raise ValueError(f"state_select: block_size {block_size} exceeds the device limit")
        self.device = device
        self.block_size = block_size

    def record(self, rec: Recorder, select: View, n_sel: int, snapshots: View, live: View, n_words: int,
               n_slots: int, n_snap: int, n_groups: int = 1, snap_group_stride: int = 0,
               live_group_stride: int = 0) -> None:
        """Record one dispatch.

        Args:
            select: n_sel entries {seq slot, snapshot index} (uint32 pairs).
            snapshots: group g at word g * snap_group_stride: [n_slots][n_snap][n_words] f32.
            live: group g at word g * live_group_stride: [n_slots][n_words] f32.
            n_words: f32 words of one slot's state (conv: (K_c - 1) * conv_dim; GDN: H_v * D * D).
        """
        if min(n_sel, n_words, n_slots, n_snap, n_groups) < 1:
            raise ValueError("state_select: n_sel, n_words, n_slots, n_snap and n_groups must be >= 1")
        if n_groups > 1 and (snap_group_stride < n_slots * n_snap * n_words
                             or live_group_stride < n_slots * n_words):
            raise ValueError("state_select: group strides smaller than one group's states")
        snap_words = (n_groups - 1) * snap_group_stride + n_slots * n_snap * n_words
        live_words = (n_groups - 1) * live_group_stride + n_slots * n_words
        reads = [words_view(select, 2 * n_sel, "state_select select"),
                 words_view(snapshots, snap_words, "state_select snapshots")]
        writes = [words_view(live, live_words, "state_select live")]
        push = [select.word_offset, n_sel, n_slots, n_snap, n_words, snapshots.word_offset, live.word_offset,
                snap_group_stride, live_group_stride]
        groups = (min(-(-n_words // self.block_size), MAX_GROUPS_X), n_sel, n_groups)
        rec.dispatch(KEY, [select.buffer, snapshots.buffer, live.buffer], groups, push=push,
                     spec=[self.block_size], reads=reads, writes=writes, label="state_select")
