"""Device memory of a running model: KV caches, recurrent states, their rollback snapshots and step logs, MTP KV, hidden rows.

Slots: `n_slots` sequence slots plus one *sink* slot. Tokens that only pad a prompt chunk (rounded up to its
bucket) are given the sink slot, so every kernel can write unconditionally and nothing real is touched. Their
positions are below the chunk size, so the sink slot's KV cache is only `sink_rows` (the largest chunk) rows,
not a whole context.

Per-layer states of one kind live in "layer stacks": equal-size blocks, several layers per buffer, so one
rollback dispatch covers every layer of a buffer (constant stride) and no buffer exceeds the device's limit.
A KV cache too large for one buffer (long contexts: maxStorageBufferRange is 128 MiB on some drivers) is cut
by rows into at most MAX_KV_PARTS buffers per layer, which the KV kernels address as one (vkmtp.ops.kv_parts).

Rollback after a verify of K drafts: the conv states keep snapshots after rows 0..K-1 (small; the last row's
state is the live one); the GDN states are not snapshotted at all: the verify logs each row's decay, delta and
normed key (1 + 2D words per value head instead of D * D) and leaves the live state as it was, and the commit
replays the accepted rows from the log (vkmtp.ops.gdn_replay), writing each state once.
"""

from __future__ import annotations

from dataclasses import dataclass

from vkmtp.device import Buffer, Device, View
from vkmtp.model.config import ModelConfig
from vkmtp.graph.memory_plan import MTP_LAG_ROWS, KvLayouts
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.kv_parts import MAX_KV_PARTS, rows_per_part

ALIGN = 256
_ATTR = {"conv_state": "conv", "ssm_state": "ssm"}   # stack name -> DeviceState attribute (others: the same)


@dataclass(frozen=True)
class StackGroup:
    """Layers [first, first + count) stored at `view` with `stride_words` between consecutive layers."""

    view: View
    first: int
    count: int
    stride_words: int


class LayerStack:
    """`n_layers` blocks of `block_bytes`, packed into as few buffers as the device allows.

    With `part_bytes` (a KV cache larger than one buffer), each layer is instead its own list of buffers of
    `part_bytes` (the last one shorter): `layers[i]` is then that list of views, and there are no groups.
    """

    @staticmethod
    def buffer_sizes(max_range: int, n_layers: int, block_bytes: int, part_bytes: int | None = None) -> list[int]:
        """Bytes of each buffer of the stack (what __init__ allocates; the memory plan reports the same)."""
        if part_bytes:
            n_parts = -(-block_bytes // part_bytes)
            per_layer = [part_bytes] * (n_parts - 1) + [block_bytes - (n_parts - 1) * part_bytes]
            return per_layer * n_layers
        stride = -(-block_bytes // ALIGN) * ALIGN
        per_buffer = max(1, min(n_layers, max_range // stride))
        return [min(per_buffer, n_layers - first) * stride for first in range(0, n_layers, per_buffer)]

    def __init__(self, device: Device, n_layers: int, block_bytes: int, name: str, part_bytes: int | None = None):
        stride = -(-block_bytes // ALIGN) * ALIGN
        self.buffers: list[Buffer] = []
        self.groups: list[StackGroup] = []
        self.layers: list = []
        if part_bytes:
            sizes = LayerStack.buffer_sizes(device.info.max_storage_buffer_range, n_layers, block_bytes, part_bytes)
            per_layer = len(sizes) // n_layers
            for size in sizes:
                self.buffers.append(device.buffer(size, "device", f"{name}{len(self.buffers)}", role="state"))
            self.layers = [[b.view() for b in self.buffers[i * per_layer:(i + 1) * per_layer]]
                           for i in range(n_layers)]
            return
        first = 0
        for size in LayerStack.buffer_sizes(device.info.max_storage_buffer_range, n_layers, block_bytes):
            count = size // stride
            buf = device.buffer(size, "device", f"{name}{len(self.buffers)}", role="state")
            self.buffers.append(buf)
            self.groups.append(StackGroup(buf.view(0, count * stride), first, count, stride // 4))
            self.layers.extend(buf.view(i * stride, block_bytes) for i in range(count))
            first += count

    def destroy(self) -> None:
        for b in self.buffers:
            b.destroy()


def _kv_rows(cache, layout: KvLayout, slot: int, n: int) -> list[View]:
    """Views of rows slot * n_ctx .. + n of a KV cache (one View, or a list of parts of equal rows but the last)."""
    first, rb = slot * layout.n_ctx, layout.row_bytes
    if not isinstance(cache, list):
        return [cache.sub(first * rb, n * rb)]
    per_part = cache[0].nbytes // rb
    out = []
    row, end = first, first + n
    while row < end:
        part, r = divmod(row, per_part)
        take = min(end - row, per_part - r)
        out.append(cache[part].sub(r * rb, take * rb))
        row += take
    return out


class DeviceState:
    """Everything per sequence that lives on the device."""

    @staticmethod
    def kv_part_bytes(k: KvLayout, v: KvLayout, max_range: int) -> tuple[int | None, int | None]:
        """Bytes per buffer of a K and a V cache cut into parts (None, None: each fits one buffer). Both are cut
        at the same rows, so a position's K and V rows are in parts of the same index."""
        if max(k.nbytes, v.nbytes) <= max_range:
            return None, None
        rows = rows_per_part(max(k.row_bytes, v.row_bytes), max_range)
        return rows * k.row_bytes, rows * v.row_bytes

    @staticmethod
    def layers_of(cfg: ModelConfig, layers: range | None) -> tuple[list[int], list[int]]:
        """The attention and GDN layers among `layers` (None: every trunk layer): a stage of a layer split
        (vkmtp.graph.layer_split) keeps only its own blocks' states."""
        if layers is None:
            return list(cfg.attention_layers), list(cfg.recurrent_layers)
        return [i for i in cfg.attention_layers if i in layers], [i for i in cfg.recurrent_layers if i in layers]

    @staticmethod
    def _stacks(cfg: ModelConfig, layouts: KvLayouts, n_slots: int, n_snap: int, max_range: int, n_ckpt: int = 0,
                layers: range | None = None):
        """(name, plan row, n_layers, block bytes, part bytes) of every layer stack, in allocation order."""
        S = n_slots + 1
        conv_words = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
        ssm_words = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
        attn, gdn = DeviceState.layers_of(cfg, layers)
        n_attn, n_gdn = len(attn), len(gdn)
        kp, vp = DeviceState.kv_part_bytes(layouts.k, layouts.v, max_range)
        out = [("k_cache", "kv", n_attn, layouts.k.nbytes, kp), ("v_cache", "kv", n_attn, layouts.v.nbytes, vp),
               ("conv_state", "recurrent", n_gdn, 4 * S * conv_words, None),
               ("ssm_state", "recurrent", n_gdn, 4 * S * ssm_words, None)]
        if n_snap:
            log_words = cfg.ssm_dt_rank * (1 + 2 * cfg.ssm_d_state)
            out += [("conv_snap", "snapshots", n_gdn, 4 * S * n_snap * conv_words, None),
                    ("ssm_log", "snapshots", n_gdn, 4 * S * (n_snap + 1) * log_words, None)]
        if n_ckpt:   # prompt-cache checkpoints: n_ckpt copies of each real slot's states (vkmtp.engine.prompt_cache)
            out += [("conv_ckpt", "checkpoints", n_gdn, 4 * n_slots * n_ckpt * conv_words, None),
                    ("ssm_ckpt", "checkpoints", n_gdn, 4 * n_slots * n_ckpt * ssm_words, None)]
        if layouts.mtp_k is not None:
            kp, vp = DeviceState.kv_part_bytes(layouts.mtp_k, layouts.mtp_v, max_range)
            out += [("mtp_k", "mtp_kv", 1, layouts.mtp_k.nbytes, kp), ("mtp_v", "mtp_kv", 1, layouts.mtp_v.nbytes, vp)]
        return [t for t in out if t[2] > 0]

    @staticmethod
    def buffer_sizes(cfg: ModelConfig, layouts: KvLayouts, n_slots: int, n_snap: int,
                     max_range: int, n_ckpt: int = 0, layers: range | None = None,
                     heads: bool = True) -> list[tuple[str, str, int]]:
        """(buffer name, plan row, bytes) of every buffer DeviceState allocates. A KV cache that would need
        more than MAX_KV_PARTS buffers per layer is reported as one oversized buffer (the plan refuses it).
        layers / heads: a stage of a layer split (its blocks; whether it holds the heads and pending hidden)."""
        out = []
        for name, part, n_layers, block, part_bytes in DeviceState._stacks(cfg, layouts, n_slots, n_snap,
                                                                           max_range, n_ckpt, layers):
            if part_bytes and -(-block // part_bytes) > MAX_KV_PARTS:
                out.append((f"{name}0", part, block))
                continue
            sizes = LayerStack.buffer_sizes(max_range, n_layers, block, part_bytes)
            out += [(f"{name}{i}", part, n) for i, n in enumerate(sizes)]
        if not heads:
            return out
        out.append(("pending_h", "hidden", 4 * (n_slots + 1) * cfg.n_embd))
        if layouts.mtp_k is not None:
            out.append(("mtp_lag", "hidden", 4 * n_slots * MTP_LAG_ROWS * cfg.n_embd))
            if n_ckpt:
                out.append(("pending_h_ckpt", "checkpoints", 4 * n_slots * n_ckpt * cfg.n_embd))
        return out

    def __init__(self, device: Device, cfg: ModelConfig, layouts: KvLayouts, n_slots: int, n_snap: int,
                 n_ckpt: int = 0, layers: range | None = None, heads: bool = True):
        """layers: the trunk layers whose states live here (None: all); heads: this device runs the LM head
        and the MTP head (pending hidden, MTP KV and lag ring). Both are a layer split's stage's."""
        self.cfg = cfg
        self.n_ctx = layouts.k.n_ctx
        self.n_slots = n_slots
        self.sink = n_slots                  # the padding slot
        self.n_slots_total = n_slots + 1
        self.n_snap = n_snap                 # drafts whose conv states are kept for rollback (0: none)
        self.n_log = n_snap + 1 if n_snap else 0   # verify rows the GDN step log holds per slot
        S = self.n_slots_total
        if layouts.k.n_slots != n_slots or layouts.k.sink_rows < 1:
            raise ValueError(f"KV layouts for {layouts.k.n_slots} slots and {layouts.k.sink_rows} sink rows, "
                             f"{n_slots} slots and a sink slot needed")
        self.layouts = layouts
        self.kv_layout = layouts.k
        self.v_layout = layouts.v
        attn, gdn = DeviceState.layers_of(cfg, layers)
        self.attn_index = {layer: i for i, layer in enumerate(attn)}
        self.conv_words = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
        self.ssm_words = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
        self.gdn_index = {layer: i for i, layer in enumerate(gdn)}
        self.k_cache = self.v_cache = self.conv = self.ssm = None
        self.conv_snap = self.ssm_log = self.mtp_k = self.mtp_v = None
        self.conv_ckpt = self.ssm_ckpt = None
        self.n_ckpt = n_ckpt                 # prompt-cache checkpoints per slot (0: none)
        max_range = device.info.max_storage_buffer_range
        for name, _, n_layers, block, part_bytes in DeviceState._stacks(cfg, layouts, n_slots, n_snap, max_range,
                                                                        n_ckpt, layers):
            setattr(self, _ATTR.get(name, name), LayerStack(device, n_layers, block, name, part_bytes))
        self.mtp_kv_layout = layouts.mtp_k
        self.mtp_v_layout = layouts.mtp_v
        # post-norm hidden of each slot's last processed token: the next MTP draft's input (llama.cpp's pending_h)
        self.pending_h_buffer = device.buffer(4 * S * cfg.n_embd, "device", "pending_h", role="state") \
            if heads else None
        self.pending_h = self.pending_h_buffer.view() if heads else None
        # the MTP head's input hidden (h_{p-1}) of each position p it has not run on yet, LAG ring rows per slot
        self.lag_rows = MTP_LAG_ROWS if layouts.mtp_k is not None else 0
        if self.lag_rows > layouts.k.sink_rows:
            raise ValueError(f"the sink slot's {layouts.k.sink_rows} KV rows cannot pad a {self.lag_rows}-row "
                             f"MTP catch-up")
        self.mtp_lag_buffer = device.buffer(4 * n_slots * self.lag_rows * cfg.n_embd, "device", "mtp_lag",
                                            role="state") \
            if self.lag_rows and heads else None
        self.mtp_lag = self.mtp_lag_buffer.view() if self.mtp_lag_buffer else None
        self.pending_h_ckpt_buffer = device.buffer(4 * n_slots * n_ckpt * cfg.n_embd, "device", "pending_h_ckpt") \
            if n_ckpt and self.lag_rows and heads else None
        self.device = device

    def kv(self, layer: int) -> tuple:
        """(K cache, V cache) of an attention layer: each a View, or a list of Views (its parts)."""
        i = self.attn_index[layer]
        return self.k_cache.layers[i], self.v_cache.layers[i]

    def gdn(self, layer: int) -> tuple[View, View, View | None, View | None]:
        """(conv state, ssm state, conv snapshots, ssm step log) of a GDN layer."""
        i = self.gdn_index[layer]
        return (self.conv.layers[i], self.ssm.layers[i],
                self.conv_snap.layers[i] if self.conv_snap else None,
                self.ssm_log.layers[i] if self.ssm_log else None)

    def pending_h_of(self, slot: int) -> View:
        row = 4 * self.cfg.n_embd
        return self.pending_h.sub(slot * row, row)

    def checkpoint_pairs(self, slot: int, place: int) -> list[tuple[View, View]]:
        """(live view, checkpoint view) of everything a prompt-cache checkpoint keeps for `slot` in storage place
        `place`: each GDN layer's conv and ssm state and, with the MTP head, the slot's pending hidden. Copying
        live -> checkpoint takes it, checkpoint -> live restores it (the KV caches are not copied)."""
        if not 0 <= place < self.n_ckpt or not 0 <= slot < self.n_slots:
            raise ValueError(f"checkpoint place {place} of slot {slot}: {self.n_ckpt} places, {self.n_slots} slots")
        pairs = []
        k = slot * self.n_ckpt + place
        for live, ckpt, words in ((self.conv, self.conv_ckpt, self.conv_words), (self.ssm, self.ssm_ckpt,
                                                                                 self.ssm_words)):
            if live is None:
                continue
            for lv, cv in zip(live.layers, ckpt.layers):
                pairs.append((lv.sub(4 * slot * words, 4 * words), cv.sub(4 * k * words, 4 * words)))
        if self.pending_h_ckpt_buffer is not None:
            row = 4 * self.cfg.n_embd
            pairs.append((self.pending_h_of(slot), self.pending_h_ckpt_buffer.view(k * row, row)))
        return pairs

    def slot_views(self, slot: int, n_tokens: int, places: list[tuple[int, int]]) -> dict[str, list[View]]:
        """Named device ranges of a slot's prompt cache (a slot image, vkmtp.engine.host_cache): attention and
        MTP-head KV rows of positions 0..n_tokens-1, live GDN/conv states, pending hidden and the MTP lag ring
        (its live memory; nothing of it when n_tokens is 0), and the states of the checkpoints `places`
        ((position, storage place) pairs), named by position."""
        out: dict[str, list[View]] = {}
        if n_tokens:
            for i in range(len(self.attn_index)):
                out[f"k{i}"] = _kv_rows(self.k_cache.layers[i], self.kv_layout, slot, n_tokens)
                out[f"v{i}"] = _kv_rows(self.v_cache.layers[i], self.v_layout, slot, n_tokens)
            if self.mtp_k is not None:
                out["mtp_k"] = _kv_rows(self.mtp_k.layers[0], self.mtp_kv_layout, slot, n_tokens)
                out["mtp_v"] = _kv_rows(self.mtp_v.layers[0], self.mtp_v_layout, slot, n_tokens)
            for name, stack, words in (("conv", self.conv, self.conv_words), ("ssm", self.ssm, self.ssm_words)):
                for i, view in enumerate(stack.layers if stack is not None else []):
                    out[f"{name}{i}"] = [view.sub(4 * slot * words, 4 * words)]
            if self.pending_h is not None:
                out["pending_h"] = [self.pending_h_of(slot)]
            if self.mtp_lag is not None:
                ring = 4 * self.lag_rows * self.cfg.n_embd
                out["mtp_lag"] = [self.mtp_lag.sub(slot * ring, ring)]
        for pos, place in places:
            for j, (_, ckpt) in enumerate(self.checkpoint_pairs(slot, place)):
                out[f"ckpt{pos}.{j}"] = [ckpt]
        return out

    def reset_slot(self, slot: int) -> None:
        """Zero a slot's recurrent state and pending hidden (a new sequence starts from nothing)."""
        import numpy as np

        for stack, words in ((self.conv, self.conv_words), (self.ssm, self.ssm_words)):
            if stack is None:
                continue
            zeros = np.zeros(words, np.float32)
            for view in stack.layers:
                self.device.upload(view.sub(4 * slot * words, 4 * words), zeros)
        if self.pending_h is not None:
            self.device.upload(self.pending_h_of(slot), np.zeros(self.cfg.n_embd, np.float32))

    @property
    def stacks(self) -> list[LayerStack]:
        return [s for s in (self.k_cache, self.v_cache, self.conv, self.ssm, self.conv_snap, self.ssm_log,
                            self.conv_ckpt, self.ssm_ckpt, self.mtp_k, self.mtp_v) if s is not None]

    def destroy(self) -> None:
        for s in self.stacks:
            s.destroy()
        if self.pending_h_buffer:
            self.pending_h_buffer.destroy()
        if self.mtp_lag_buffer:
            self.mtp_lag_buffer.destroy()
        if self.pending_h_ckpt_buffer:
            self.pending_h_ckpt_buffer.destroy()
