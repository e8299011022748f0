"""Memory planned before anything is allocated: weights, KV cache, recurrent state, MTP head and its KV, scratch.

llama.cpp's `--fit` first ignored the MTP head and its context (OOM at the first decode, llama.cpp #23472);
here the MTP weights, the MTP KV cache and the rollback snapshots are part of the one plan that is checked
against the device's heaps (and VK_EXT_memory_budget where the driver has it). If it does not fit, the error
says how much is needed, for what, and what to reduce.
"""

from __future__ import annotations

from dataclasses import dataclass

from vkmtp.gguf import GGUFFile
from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import ModelTensors, TensorSpec, walk_specs
from vkmtp.ops.kv_layout import MTP_KV_TYPE, kv_type as kv_type_of
GiB = float(1 << 30)


class DeviceMemoryError(MemoryError):
    """The model does not fit the device; the message lists the plan and what to reduce."""


@dataclass(frozen=True)
class MemoryPlan:
    weights: int          # trunk weights (incl. embedding and LM head)
    mtp_weights: int      # MTP block + nextn tensors (0 without MTP)
    kv: int               # trunk KV cache, all slots
    mtp_kv: int           # MTP block's KV cache, all slots
    recurrent: int        # conv + delta-rule state, all slots (+ the sink slot)
    snapshots: int        # per-token state snapshots for rollback of a verify batch
    scratch: int          # activations of the largest step
    n_ctx: int
    n_slots: int
    kv_type: str

    @property
    def total(self) -> int:
        return (self.weights + self.mtp_weights + self.kv + self.mtp_kv + self.recurrent + self.snapshots
                + self.scratch)

    def describe(self) -> str:
        rows = [("weights", self.weights), ("MTP head weights", self.mtp_weights),
                (f"KV cache ({self.kv_type}, {self.n_slots} x {self.n_ctx} tokens)", self.kv),
                ("MTP KV cache", self.mtp_kv), ("recurrent state", self.recurrent),
                ("rollback snapshots", self.snapshots), ("scratch", self.scratch), ("total", self.total)]
        return "\n".join(f"  {name:<44} {n / GiB:9.3f} GiB" for name, n in rows)

    def check(self, available: int, device_name: str = "device") -> None:
        if self.total <= available:
            return
        hints = []
        if self.kv + self.mtp_kv > 0.2 * self.total:
            hints.append("a smaller --ctx-size")
            if self.kv_type == "f16":
                hints.append("--cache-type-k q8_0 --cache-type-v q8_0")
        if self.n_slots > 1:
            hints.append("fewer --parallel slots")
        if self.mtp_weights:
            hints.append("--no-mtp (saves the MTP head)")
        hints.append("a smaller quantization of the model")
        raise DeviceMemoryError(
            f"the model needs {self.total / GiB:.2f} GiB on {device_name} but {available / GiB:.2f} GiB is "
            f"available:\n{self.describe()}\nreduce with: " + ", ".join(hints))


def kv_row_bytes(cfg: ModelConfig, kv_type: str) -> int:
    """Bytes of one cache row (one position, all KV heads) of K or of V."""
    return kv_type_of(kv_type).row_bytes(cfg.n_head_kv * cfg.head_dim)


def recurrent_bytes_per_slot(cfg: ModelConfig) -> int:
    """Conv window (K_c-1 raw inputs per channel) + delta-rule state (H_v x d_v x d_k), f32, all GDN layers."""
    conv = (cfg.ssm_conv_kernel - 1) * cfg.ssm_conv_dim
    ssm = cfg.ssm_dt_rank * cfg.ssm_head_v_dim * cfg.ssm_d_state
    return 4 * (conv + ssm) * len(cfg.recurrent_layers)


def scratch_bytes(cfg: ModelConfig, n_tokens: int) -> int:
    """Activations of one step of `n_tokens` tokens (an upper bound used to size the scratch arena)."""
    e = cfg.n_embd
    ff = max(cfg.n_ff, cfg.n_expert_used * cfg.n_ff_exp + cfg.n_ff_shexp)
    attn = 2 * cfg.n_head * cfg.head_dim + 2 * cfg.n_head_kv * cfg.head_dim + cfg.n_head * cfg.head_dim
    gdn = 2 * cfg.ssm_conv_dim + 2 * cfg.ssm_d_inner + 4 * cfg.ssm_dt_rank
    per_token = 8 * e + 3 * ff + max(attn, gdn) + cfg.n_expert + 64
    return 4 * n_tokens * per_token


def _spec_bytes(gguf: GGUFFile, specs) -> int:
    total = 0
    for spec in specs:
        info = gguf.tensors.get(spec.name)
        if info is not None:
            total += info.n_bytes
    return total


def mtp_only_specs(table: ModelTensors) -> list[TensorSpec]:
    """Tensors read only by the MTP head (shared embedding / LM head / norms excluded)."""
    if table.mtp is None:
        return []
    trunk = {s.name for s in walk_specs((table.token_embd, table.output_norm, table.output, table.blocks))}
    return [s for s in dict.fromkeys(walk_specs(table.mtp)) if s.name not in trunk]


def plan_memory(gguf: GGUFFile, cfg: ModelConfig, table: ModelTensors, n_ctx: int, n_slots: int = 1,
                kv_type: str = "f16", mtp: bool = True, n_max: int = 3, ubatch: int = 256) -> MemoryPlan:
    use_mtp = mtp and table.mtp is not None
    trunk_specs = [s for s in table.specs() if s.name not in {m.name for m in mtp_only_specs(table)}]
    weights = _spec_bytes(gguf, trunk_specs)
    mtp_weights = _spec_bytes(gguf, mtp_only_specs(table)) if use_mtp else 0
    rows = n_slots * n_ctx
    kv = 2 * rows * kv_row_bytes(cfg, kv_type) * len(cfg.attention_layers)
    mtp_kv = 2 * rows * kv_row_bytes(cfg, MTP_KV_TYPE) if use_mtp else 0
    recurrent = (n_slots + 1) * recurrent_bytes_per_slot(cfg)
    verify_width = (n_max + 1) if use_mtp else 1
    snapshots = n_slots * verify_width * recurrent_bytes_per_slot(cfg) if use_mtp else 0
    logits = 4 * cfg.n_vocab * max(verify_width * n_slots, 1)
    scratch = scratch_bytes(cfg, max(ubatch, verify_width * n_slots)) + logits
    return MemoryPlan(weights, mtp_weights, kv, mtp_kv, recurrent, snapshots, scratch, n_ctx, n_slots, kv_type)
