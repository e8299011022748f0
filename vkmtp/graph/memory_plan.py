"""Memory planned before anything is allocated: weights, KV cache, recurrent state, MTP head and its KV, scratch.

The plan is the list of every device buffer the engine will create (`PlannedBuffer`), each sized by the same
function the allocating code calls (`WeightPlan`, `DeviceState.buffer_sizes`, `scratch_bytes_for`,
`hidden_bytes`, `StepIO.total_words`), so what the plan reports is what the engine allocates
(tests/engine/test_memory_plan.py checks the two are equal). llama.cpp's `--fit` first ignored the MTP head
and its context (OOM at the first decode, llama.cpp #23472); here the MTP weights, the MTP KV cache and the
rollback snapshots are part of the one plan checked against the device's budget (VK_EXT_memory_budget where
the driver has it, the device-local heaps otherwise). Weights placed in host memory (--cpu-moe, --n-cpu-moe,
-ot; the `host_weights` row) are checked against the host's free memory instead. If it does not fit, the error
says how much is needed, for what, and what to reduce; `fit_context` picks the largest context that fits and
`fit_expert_layers` the fewest expert layers to move to host memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vkmtp.gguf import GGUFFile
from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import ModelTensors, TensorSpec, fused_groups, walk_specs
from vkmtp.graph.tensor_overrides import DEVICE, is_expert_stack, resolve
from vkmtp.ops.kv_layout import KvLayout, kv_type as kv_type_of
from vkmtp.ops.kv_parts import MAX_KV_PARTS

GiB = float(1 << 30)
MiB = float(1 << 20)
MIN_CTX = 256           # the smallest context `fit_context` offers (a usable prompt plus a reply)

# plan rows, in the order `describe` prints them
PARTS = ("weights", "mtp_weights", "host_weights", "kv", "mtp_kv", "recurrent", "snapshots", "checkpoints", "scratch",
         "hidden", "io", "staging")


class DeviceMemoryError(MemoryError):
    """The model does not fit the device; the message lists the plan and what to reduce."""


@dataclass(frozen=True)
class CacheTypes:
    """-ctk / -ctv for the trunk's KV cache, -ctkd / -ctvd for the MTP head's (None: the trunk's type)."""

    k: str = "f16"
    v: str = "f16"
    draft_k: str | None = None
    draft_v: str | None = None

    @property
    def mtp_k(self) -> str:
        return self.draft_k or self.k

    @property
    def mtp_v(self) -> str:
        return self.draft_v or self.v

    def label(self) -> str:
        return self.k if self.k == self.v else f"K {self.k}, V {self.v}"


@dataclass(frozen=True)
class KvLayouts:
    """The cache layouts of one engine: trunk K / V (all attention layers alike), MTP K / V (None: no MTP)."""

    k: KvLayout
    v: KvLayout
    mtp_k: KvLayout | None = None
    mtp_v: KvLayout | None = None

    @staticmethod
    def make(cfg: ModelConfig, n_ctx: int, n_slots: int, types: CacheTypes, mtp: bool,
             sink_rows: int) -> "KvLayouts":
        """n_slots sequence slots of n_ctx rows, then the sink slot's sink_rows (the largest prompt chunk)."""
        def lay(t: str) -> KvLayout:
            return KvLayout(t, cfg.n_head_kv, cfg.head_dim, n_ctx, n_slots, sink_rows)

        return KvLayouts(lay(types.k), lay(types.v), lay(types.mtp_k) if mtp else None,
                         lay(types.mtp_v) if mtp else None)


@dataclass(frozen=True)
class PlannedBuffer:
    name: str      # the name the buffer is allocated under (Device.buffer)
    part: str      # its plan row (PARTS)
    nbytes: int
    kind: str = "device"   # "device" | "host"


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[PlannedBuffer, ...]
    n_ctx: int
    n_slots: int
    types: CacheTypes
    mtp_weight_bytes: int = 0     # of the device weight buffers' bytes, what only the MTP head reads
    weight_plan: object = field(default=None, compare=False, repr=False)
    layouts: KvLayouts | None = field(default=None, compare=False, repr=False)
    max_buffer: int = 0           # the device's maxStorageBufferRange the plan was made for
    expert_bytes_on_device: int = 0   # routed expert stacks in device memory (what --cpu-moe would move)

    def part(self, name: str) -> int:
        return sum(b.nbytes for b in self.buffers if b.part == name)

    def size_of(self, buffer_name: str) -> int:
        return next(b.nbytes for b in self.buffers if b.name == buffer_name)

    @property
    def weights(self) -> int:
        """Weights in device memory, less the MTP head's own."""
        return self.part("weights") + self.part("mtp_weights") - self.mtp_weight_bytes

    @property
    def host_weights(self) -> int:
        """Weights in host memory the device reads (routed experts under --cpu-moe / --n-cpu-moe / -ot)."""
        return self.part("host_weights")

    @property
    def device_total(self) -> int:
        """What the device's budget must hold: every buffer but the weights in host memory (the small host-side
        step I/O and staging buffers are counted here too, as before placement existed)."""
        return self.total - self.host_weights

    @property
    def mtp_weights(self) -> int:
        return self.mtp_weight_bytes

    @property
    def kv(self) -> int:
        return self.part("kv")

    @property
    def mtp_kv(self) -> int:
        return self.part("mtp_kv")

    @property
    def recurrent(self) -> int:
        return self.part("recurrent")

    @property
    def snapshots(self) -> int:
        return self.part("snapshots")

    @property
    def scratch(self) -> int:
        return self.part("scratch")

    @property
    def total(self) -> int:
        return sum(b.nbytes for b in self.buffers)

    @property
    def kv_type(self) -> str:
        return self.types.label()

    def oversized(self) -> list[PlannedBuffer]:
        """Buffers larger than one storage-buffer binding may address (maxStorageBufferRange)."""
        return [b for b in self.buffers if self.max_buffer and b.nbytes > self.max_buffer]

    def describe(self) -> str:
        t = self.types
        mtp_types = t.mtp_k if t.mtp_k == t.mtp_v else f"K {t.mtp_k}, V {t.mtp_v}"
        rows = [("weights", self.weights), ("MTP head weights", self.mtp_weights),
                ("routed experts in host memory (GPU reads)", self.host_weights),
                (f"KV cache ({t.label()}, {self.n_slots} x {self.n_ctx} tokens)", self.kv),
                (f"MTP KV cache ({mtp_types})", self.mtp_kv), ("recurrent state", self.recurrent),
                ("rollback snapshots", self.snapshots),
                ("prompt-cache checkpoints", self.part("checkpoints")), ("scratch", self.scratch),
                ("hidden rows", self.part("hidden")), ("step I/O and logits (host)", self.part("io")),
                ("staging (host)", self.part("staging")), ("total", self.total),
                ("  checked against the device budget", self.device_total),
                ("  checked against free host memory", self.host_weights)]
        return "\n".join(f"  {name:<44} {n / GiB:9.3f} GiB" for name, n in rows)

    def hints(self) -> list[str]:
        hints = []
        if self.kv + self.mtp_kv > 0.2 * self.total or self.oversized():
            hints.append("a smaller --ctx-size (or -c 0: the largest that fits)")
            if "f16" in (self.types.k, self.types.v):
                hints.append("--cache-type-k q8_0 --cache-type-v q8_0")
        if self.n_slots > 1:
            hints.append("fewer --parallel slots")
        if self.mtp_weights:
            hints.append("--no-mtp (saves the MTP head)")
        if self.expert_bytes_on_device:
            hints.append("--cpu-moe or --n-cpu-moe N (routed experts in host memory)")
        hints.append("a smaller quantization of the model")
        return hints

    def problem(self, available: int, device_name: str = "device", host_available: int | None = None) -> str | None:
        """Why this plan cannot run on the device (None: it can). host_available: free host memory for the weights
        placed there (None: what /proc/meminfo says now)."""
        big = self.oversized()
        if big:
            b = max(big, key=lambda b: b.nbytes)
            cut = (f" (a layer's KV cache is cut into at most {MAX_KV_PARTS} such buffers)"
                   if b.part in ("kv", "mtp_kv") else "")
            return (f"one layer's buffer '{b.name}' ({b.part}) needs {b.nbytes / MiB:.1f} MiB but {device_name} "
                    f"binds at most {self.max_buffer / MiB:.1f} MiB per storage buffer (maxStorageBufferRange)"
                    + cut)
        if self.device_total > available:
            return (f"the model needs {_size(self.device_total)} on {device_name} but {_size(available)} is "
                    f"available")
        if self.host_weights:
            if host_available is None:
                from vkmtp.device.info import host_available_bytes

                host_available = host_available_bytes()
            if self.host_weights > host_available:
                return (f"the weights placed in host memory need {_size(self.host_weights)} but the host has "
                        f"{_size(host_available)} free")
        return None

    def fits(self, available: int) -> bool:
        return self.problem(available) is None

    def check(self, available: int, device_name: str = "device") -> None:
        why = self.problem(available, device_name)
        if why is not None:
            raise DeviceMemoryError(f"{why}:\n{self.describe()}\nreduce with: " + ", ".join(self.hints()))


def _size(n: int) -> str:
    """Bytes for a message: MiB below 1 GiB (a small plan and a small budget must not both read 0.01 GiB)."""
    return f"{n / MiB:.1f} MiB" if n < GiB else f"{n / GiB:.2f} GiB"


def kv_row_bytes(cfg: ModelConfig, kv_type: str) -> int:
    """Bytes of one cache row (one position, all KV heads) of K or of V."""
    return kv_type_of(kv_type).row_bytes(cfg.n_head_kv * cfg.head_dim)


def recurrent_bytes_per_slot(cfg: ModelConfig) -> int:
    """Conv window (K_c-1 raw inputs per channel) + delta-rule state (H_v x d_v x d_k), f32, all GDN layers."""
    conv = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
    ssm = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
    return 4 * (conv + ssm) * len(cfg.recurrent_layers)


def mtp_only_specs(table: ModelTensors) -> list[TensorSpec]:
    """Tensors read only by the MTP head (shared embedding / LM head / norms excluded)."""
    if table.mtp is None:
        return []
    trunk = {s.name for s in walk_specs((table.token_embd, table.output_norm, table.output, table.blocks))}
    return [s for s in dict.fromkeys(walk_specs(table.mtp)) if s.name not in trunk]


def weight_names(table: ModelTensors, use_mtp: bool) -> list[str]:
    """The tensors uploaded to the device, in file order (the MTP head's only with MTP on)."""
    mtp_only = {s.name for s in mtp_only_specs(table)}
    return [s.name for s in table.specs() if use_mtp or s.name not in mtp_only]


def stage_weight_names(table: ModelTensors, use_mtp: bool, stage) -> list[str]:
    """The tensors one stage of a layer split uploads (`stage`: vkmtp.graph.layer_split.DeviceLayers), in file
    order: the embedding on the first, its trunk blocks, and on the last the output norm, the LM head and the
    MTP head (with the embedding again where the tied LM head or the MTP head reads it)."""
    keep = {s.name for blk in table.blocks[stage.first: stage.first + stage.count] for s in walk_specs(blk)}
    if stage.embeds:
        keep.add(table.token_embd.name)
    if stage.heads:
        keep |= {s.name for s in walk_specs((table.output_norm, table.output))}
        if use_mtp and table.mtp is not None:
            keep |= {s.name for s in walk_specs(table.mtp)}
    return [n for n in weight_names(table, use_mtp) if n in keep]


def boundary_bytes(cfg: ModelConfig, shape: "EngineShape") -> int:
    """One host-visible boundary buffer of a layer split: the residual stream of the largest step's rows."""
    return 4 * shape.max_rows * cfg.n_embd


def weight_buffer_limit(max_storage_buffer_range: int) -> int:
    """Weight buffers: at most maxStorageBufferRange, capped at 1 GiB so the first upload starts early."""
    return min(max_storage_buffer_range, 1 << 30)


# MTP-head inputs kept per slot for positions that plain steps (adaptive depth 0) did not run the MTP head on;
# the head catches up over them in one pass before it drafts again, or when the ring is full
# (vkmtp.graph.steps.MtpLagGraph). The sink slot and the largest step hold at least this many rows.
MTP_LAG_ROWS = 64


@dataclass(frozen=True)
class EngineShape:
    """The settings that size an engine's buffers (vkmtp/engine/vulkan.py derives them from EngineConfig)."""

    n_ctx: int
    n_slots: int
    types: CacheTypes
    use_mtp: bool
    K: int            # draft depth (0 without MTP)
    ubatch: int
    n_ckpt: int = 0   # prompt-cache checkpoints per slot (--ctx-checkpoints)

    @property
    def max_rows(self) -> int:
        """Rows of the largest step: a prompt chunk, a verify batch of all slots, or an MTP catch-up."""
        return max(self.ubatch, self.n_slots * (self.K + 1), MTP_LAG_ROWS if self.use_mtp else 0)

    @property
    def sink_rows(self) -> int:
        """KV rows of the sink slot: the padding positions of the largest padded batch."""
        return self.max_rows

    @property
    def n_out(self) -> int:
        """Rows that need logits: a verify batch (a prompt chunk needs one)."""
        return self.n_slots * (self.K + 1)

    @property
    def n_snap(self) -> int:
        """Recurrent-state snapshots per slot: after verify rows 0..K-1 (the last row's state is the live one)."""
        return self.K if self.use_mtp else 0


def engine_shape(n_ctx: int, n_slots: int, types: CacheTypes, use_mtp: bool, n_max: int,
                 ubatch: int, n_ckpt: int = 0) -> EngineShape:
    K = n_max if use_mtp else 0
    return EngineShape(n_ctx, n_slots, types, use_mtp, K, max(8, min(ubatch, n_ctx)), n_ckpt)


def plan_memory(gguf: GGUFFile, cfg: ModelConfig, table: ModelTensors, shape: EngineShape, device,
                tuning=None, overrides=(), stage=None) -> MemoryPlan:
    """Every buffer the Vulkan engine allocates for `shape` on `device` (an opened vkmtp.device.Device).
    overrides: vkmtp.graph.tensor_overrides.TensorOverride in llama.cpp's order (-ot, --cpu-moe, --n-cpu-moe).
    stage: one device of a layer split (vkmtp.graph.layer_split.DeviceLayers; None: the whole model on one):
    the weights and states of its blocks, the heads' buffers only on the last, and its boundary buffers
    (`boundary_in` from the device before it, `boundary_out` to the one after it: part `io`)."""
    from vkmtp.graph.device_state import DeviceState
    from vkmtp.graph.forward import Ops, hidden_bytes, scratch_bytes_for
    from vkmtp.graph.placement import WeightPlan
    from vkmtp.graph.step_io import StepIO
    from vkmtp.device.context import staging_bytes

    info = device.info
    use_mtp = shape.use_mtp and table.mtp is not None
    heads = stage is None or stage.heads
    names = weight_names(table, use_mtp) if stage is None else stage_weight_names(table, use_mtp, stage)
    types = {n: gguf.tensors[n].ggml_type for n in names}
    locations = resolve([s.name for s in table.specs()], overrides, f"Vulkan{info.index}")
    wplan = WeightPlan(gguf, names, weight_buffer_limit(info.max_storage_buffer_range),
                       fused=fused_groups(table, types, set(names)), locations=locations)
    buffers = [PlannedBuffer(name, "weights" if loc == DEVICE else "host_weights", n,
                             "device" if loc == DEVICE else "host") for name, loc, n in wplan.planned()]
    mtp_bytes = sum(gguf.tensors[s.name].n_bytes for s in mtp_only_specs(table)
                    if s.name in gguf.tensors and locations[s.name] == DEVICE) if use_mtp and heads else 0
    experts_on_device = sum(gguf.tensors[n].n_bytes for n in names
                            if is_expert_stack(n) and locations[n] == DEVICE)
    layouts = KvLayouts.make(cfg, shape.n_ctx, shape.n_slots, shape.types, use_mtp and heads,
                             sink_rows=shape.sink_rows)
    for name, part, n in DeviceState.buffer_sizes(cfg, layouts, shape.n_slots, shape.n_snap,
                                                  info.max_storage_buffer_range, shape.n_ckpt,
                                                  None if stage is None else stage.blocks, heads):
        buffers.append(PlannedBuffer(name, part, n))
    ops = Ops(device, cfg, layouts, tuning)
    buffers.append(PlannedBuffer("scratch", "scratch", _words(scratch_bytes_for(cfg, shape.max_rows,
                                                                                 shape.n_out if heads else 1, ops))))
    if heads:
        buffers.append(PlannedBuffer("hidden", "hidden", hidden_bytes(cfg, shape.max_rows)))
        buffers.append(PlannedBuffer("logits", "io", logits_host_bytes(cfg, shape), "host"))
    buffers.append(PlannedBuffer("step", "io", 4 * StepIO.total_words(shape.max_rows, shape.n_slots, shape.K,
                                                                 cfg.n_vocab),
                                 "host"))
    if stage is not None and not stage.embeds:
        buffers.append(PlannedBuffer("boundary_in", "io", boundary_bytes(cfg, shape), "host"))
    if stage is not None and not stage.heads:
        buffers.append(PlannedBuffer("boundary_out", "io", boundary_bytes(cfg, shape), "host"))
    if not info.uma:
        buffers.append(PlannedBuffer("staging", "staging", staging_bytes(info.max_storage_buffer_range), "host"))
    return MemoryPlan(tuple(buffers), shape.n_ctx, shape.n_slots, shape.types, mtp_bytes, wplan, layouts,
                      info.max_storage_buffer_range, experts_on_device)


def _words(n: int) -> int:
    return max(-(-int(n) // 4) * 4, 4)


def logits_host_bytes(cfg: ModelConfig, shape: EngineShape) -> int:
    """The host-visible logits of a verify batch (temperature > 0 samples on the host)."""
    return 4 * max(shape.n_out, 1) * cfg.n_vocab


DEFAULT_FIT_MARGIN_MIB = 256   # --fit-target default: left for the driver (pipelines, command buffers) and others


def fit_budget(info, margin_mib: int | None = None) -> int:
    """Bytes a plan may use on a device (vkmtp.device.DeviceInfo): the budget VK_EXT_memory_budget reports
    (less what is in use), else the device-local heaps -- on UMA devices that is the share of system memory the
    driver reports, not the total RAM -- minus the margin (--fit-target / --fit-margin, MiB)."""
    margin = DEFAULT_FIT_MARGIN_MIB if margin_mib is None else margin_mib
    return max(info.available_bytes - (int(margin) << 20), 0)


def fit_context(make_plan, available: int, n_ctx_max: int, n_ctx_min: int = MIN_CTX,
                step: int = 256) -> int | None:
    """The largest context in [n_ctx_min, n_ctx_max] (a multiple of `step`, or n_ctx_max itself) whose plan
    fits `available` bytes; None when not even n_ctx_min fits. `make_plan(n_ctx)` -> MemoryPlan. Memory grows
    with the context, so a binary search over multiples of `step` finds it."""
    if make_plan(n_ctx_max).fits(available):
        return n_ctx_max
    hi = -(-n_ctx_max // step)        # in units of step: hi * step >= n_ctx_max does not fit
    if n_ctx_min > n_ctx_max or not make_plan(max(n_ctx_min, step)).fits(available):
        return None
    lo = max(n_ctx_min, step) // step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if make_plan(mid * step).fits(available):
            lo = mid
        else:
            hi = mid
    return lo * step


FIT_CTX = 4096   # llama.cpp's --fit-ctx default: the context --fit keeps before it moves experts to host memory


def fit_expert_layers(make_plan, available: int, n_blocks: int) -> int | None:
    """The fewest N in 0..n_blocks whose plan fits `available` device bytes, where `make_plan(N)` -> MemoryPlan
    puts the routed experts of blocks 0..N-1 in host memory (--n-cpu-moe N); None when not even N = n_blocks
    fits. Device memory falls as N grows, so a binary search finds it."""
    if make_plan(0).fits(available):
        return 0
    if not make_plan(n_blocks).fits(available):
        return None
    lo, hi = 0, n_blocks        # lo does not fit, hi fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if make_plan(mid).fits(available):
            hi = mid
        else:
            lo = mid
    return hi
