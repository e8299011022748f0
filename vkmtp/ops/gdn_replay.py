"""Wrapper of shaders/gdn_replay.comp: roll GDN states forward by the accepted tokens of a logged verify step.

A verify step with a step log (vkmtp.ops.gdn.GatedDeltaNet.record(log_steps=True)) leaves the live states as
they were before the step and logs, per token and value head, the decay, delta and normed key its update used.
Once the accept decision {seq slot, m} is known on the GPU, this kernel redoes tokens 0..m of each selected
sequence from the log (the same functions as gdn.comp, so the same bits) and writes the state once: one state
write per sequence and step instead of a snapshot per verified token plus a rollback copy.
"""

from __future__ import annotations

from vkmtp.device import Device, Recorder, ShaderKey, View
from vkmtp.ops.gdn import log_words
from vkmtp.ops.row_views import words_view

KEY = ShaderKey.make("gdn_replay.comp")
BLOCK_SIZE = 256
MAX_GROUPS_X = 65535


class GdnReplay:
    """Records the replay of one or several GDN layers' states (layers `group_stride` words apart)."""

    def __init__(self, device: Device, head_dim: int = 128, block_size: int = BLOCK_SIZE):
        if block_size > device.info.max_workgroup_invocations:
            raise ValueError(f"gdn_replay: block_size {block_size} exceeds the device limit")
        self.device = device
        self.head_dim = head_dim
        self.block_size = block_size

    def record(self, rec: Recorder, select: View, n_sel: int, log: View, state: View, n_head_v: int,
               n_slots: int, n_log: int, n_groups: int = 1, log_group_stride: int = 0,
               state_group_stride: int = 0) -> None:
        """Record one dispatch.

        Args:
            select: n_sel entries {seq slot, m} (uint32 pairs): slot's state becomes the state after its tokens
                0..m of the logged step (m clamped to n_log - 1; a slot >= n_slots is skipped).
            log: group g at word g * log_group_stride: [n_slots][n_log][n_head_v][log_words(D)] f32.
            state: group g at word g * state_group_stride: [n_slots][n_head_v][D][D] f32 live states.
        """
        d = self.head_dim
        if min(n_sel, n_slots, n_log, n_groups, n_head_v) < 1:
            raise ValueError("gdn_replay: n_sel, n_slots, n_log, n_groups and n_head_v must be >= 1")
        log_one = n_slots * n_log * n_head_v * log_words(d)
        state_one = n_slots * n_head_v * d * d
        if n_groups > 1 and (log_group_stride < log_one or state_group_stride < state_one):
            raise ValueError("gdn_replay: group strides smaller than one group's log or states")
        if n_head_v * n_sel > self.device.info.max_workgroup_count[1]:
            raise ValueError(f"gdn_replay: {n_head_v} heads x {n_sel} sequences exceed the device's group count")
        log_v = words_view(log, (n_groups - 1) * log_group_stride + log_one, "gdn_replay log")
        state_v = words_view(state, (n_groups - 1) * state_group_stride + state_one, "gdn_replay state")
        reads = [words_view(select, 2 * n_sel, "gdn_replay select"), log_v, state_v]
        push = [select.word_offset, n_sel, n_slots, n_log, n_head_v, log.word_offset, state.word_offset,
                log_group_stride, state_group_stride]
        groups = (min(-(-d * d // self.block_size), MAX_GROUPS_X), n_head_v * n_sel, n_groups)
        rec.dispatch(KEY, [select.buffer, log.buffer, state.buffer], groups, push=push,
                     spec=[self.block_size, d], reads=reads, writes=[state_v], label="gdn_replay")
