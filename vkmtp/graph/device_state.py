"""Device memory of a running model: KV caches, recurrent states, their rollback snapshots, MTP KV, hidden rows.

Slots: `n_slots` sequence slots plus one *sink* slot. Tokens that only pad a fixed-shape step (a prefill chunk
rounded up to its bucket, an idle sequence in a batched step) are given the sink slot, so every kernel can write
unconditionally and nothing real is touched.

Per-layer states of one kind live in "layer stacks": equal-size blocks, several layers per buffer, so one
rollback dispatch covers every layer of a buffer (constant stride) and no buffer exceeds the device's limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from vkmtp.device import Buffer, Device, View
from vkmtp.model.config import ModelConfig
from vkmtp.ops.kv_layout import MTP_KV_TYPE, KvLayout

ALIGN = 256


@dataclass(frozen=True)
class StackGroup:
    """Layers [first, first + count) stored at `view` with `stride_words` between consecutive layers."""

    view: View
    first: int
    count: int
    stride_words: int


class LayerStack:
    """`n_layers` blocks of `block_bytes`, packed into as few buffers as the device allows."""

    def __init__(self, device: Device, n_layers: int, block_bytes: int, name: str):
        stride = -(-block_bytes // ALIGN) * ALIGN
        per_buffer = max(1, min(n_layers, device.info.max_storage_buffer_range // stride))
        self.buffers: list[Buffer] = []
        self.groups: list[StackGroup] = []
        self.layers: list[View] = []
        for first in range(0, n_layers, per_buffer):
            count = min(per_buffer, n_layers - first)
            buf = device.buffer(count * stride, "device", f"{name}{len(self.buffers)}")
            self.buffers.append(buf)
            self.groups.append(StackGroup(buf.view(0, count * stride), first, count, stride // 4))
            self.layers.extend(buf.view(i * stride, block_bytes) for i in range(count))

    def destroy(self) -> None:
        for b in self.buffers:
            b.destroy()


class DeviceState:
    """Everything per sequence that lives on the device."""

    def __init__(self, device: Device, cfg: ModelConfig, n_ctx: int, n_slots: int, kv_type: str,
                 use_mtp: bool, n_snap: int):
        self.cfg = cfg
        self.n_ctx = n_ctx
        self.n_slots = n_slots
        self.sink = n_slots                  # the padding slot
        self.n_slots_total = n_slots + 1
        self.n_snap = n_snap                 # verify rows whose states are kept for rollback (0: none)
        S = self.n_slots_total
        self.kv_layout = KvLayout(kv_type, cfg.n_head_kv, cfg.head_dim, n_ctx, S)
        n_attn = len(cfg.attention_layers)
        self.k_cache = LayerStack(device, n_attn, self.kv_layout.nbytes, "k_cache")
        self.v_cache = LayerStack(device, n_attn, self.kv_layout.nbytes, "v_cache")
        self.attn_index = {layer: i for i, layer in enumerate(cfg.attention_layers)}

        self.conv_words = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
        self.ssm_words = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
        n_gdn = len(cfg.recurrent_layers)
        self.gdn_index = {layer: i for i, layer in enumerate(cfg.recurrent_layers)}
        self.conv = LayerStack(device, n_gdn, 4 * S * self.conv_words, "conv_state")
        self.ssm = LayerStack(device, n_gdn, 4 * S * self.ssm_words, "ssm_state")
        self.conv_snap = self.ssm_snap = None
        if n_snap:
            self.conv_snap = LayerStack(device, n_gdn, 4 * S * n_snap * self.conv_words, "conv_snap")
            self.ssm_snap = LayerStack(device, n_gdn, 4 * S * n_snap * self.ssm_words, "ssm_snap")

        self.mtp_kv_layout = KvLayout(MTP_KV_TYPE, cfg.n_head_kv, cfg.head_dim, n_ctx, S) if use_mtp else None
        self.mtp_k = self.mtp_v = None
        if use_mtp:
            self.mtp_k = LayerStack(device, 1, self.mtp_kv_layout.nbytes, "mtp_k")
            self.mtp_v = LayerStack(device, 1, self.mtp_kv_layout.nbytes, "mtp_v")
        # post-norm hidden of each slot's last processed token: the next MTP draft's input (llama.cpp's pending_h)
        self.pending_h_buffer = device.buffer(4 * S * cfg.n_embd, "device", "pending_h")
        self.pending_h = self.pending_h_buffer.view()
        self.device = device

    def kv(self, layer: int) -> tuple[View, View]:
        i = self.attn_index[layer]
        return self.k_cache.layers[i], self.v_cache.layers[i]

    def gdn(self, layer: int) -> tuple[View, View, View | None, View | None]:
        """(conv state, ssm state, conv snapshots, ssm snapshots) of a GDN layer."""
        i = self.gdn_index[layer]
        return (self.conv.layers[i], self.ssm.layers[i],
                self.conv_snap.layers[i] if self.conv_snap else None,
                self.ssm_snap.layers[i] if self.ssm_snap else None)

    def pending_h_of(self, slot: int) -> View:
        row = 4 * self.cfg.n_embd
        return self.pending_h.sub(slot * row, row)

    def reset_slot(self, slot: int) -> None:
        """Zero a slot's recurrent state and pending hidden (a new sequence starts from nothing)."""
        import numpy as np

        for stack, words in ((self.conv, self.conv_words), (self.ssm, self.ssm_words)):
            zeros = np.zeros(words, np.float32)
            for view in stack.layers:
                self.device.upload(view.sub(4 * slot * words, 4 * words), zeros)
        self.device.upload(self.pending_h_of(slot), np.zeros(self.cfg.n_embd, np.float32))

    @property
    def stacks(self) -> list[LayerStack]:
        out = [self.k_cache, self.v_cache, self.conv, self.ssm]
        out += [s for s in (self.conv_snap, self.ssm_snap, self.mtp_k, self.mtp_v) if s is not None]
        return out

    def destroy(self) -> None:
        for s in self.stacks:
            s.destroy()
        self.pending_h_buffer.destroy()
