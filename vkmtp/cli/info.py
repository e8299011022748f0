"""`vkmtp info`: what a GGUF holds and what running it costs in memory."""

from __future__ import annotations

from collections import Counter

from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.graph.memory_plan import GiB, kv_row_bytes, plan_memory, recurrent_bytes_per_slot
from vkmtp.model.weights import validate


def describe_model(path: str, n_ctx: int = 4096, n_slots: int = 1, kv_type: str = "f16", mtp: bool = True,
                   n_max: int = 3) -> str:
    gguf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gguf)
    table = validate(gguf, cfg)
    n_params = sum(t.n_elements for t in gguf.tensors.values())
    file_bytes = sum(t.n_bytes for t in gguf.tensors.values())
    mix = Counter()
    for t in gguf.tensors.values():
        mix[t.type_name] += t.n_bytes
    lines = [
        f"file          {path}",
        f"name          {gguf.metadata.get('general.name', '')}",
        f"architecture  {cfg.arch} ({'MoE' if cfg.is_moe else 'dense'}), {cfg.n_layer} layers "
        f"({len(cfg.recurrent_layers)} Gated DeltaNet + {len(cfg.attention_layers)} gated attention)",
        f"embedding     {cfg.n_embd}, vocab {cfg.n_vocab}, heads {cfg.n_head}/{cfg.n_head_kv} x {cfg.head_dim}, "
        f"rotary {cfg.n_rot}, GDN heads {cfg.ssm_dt_rank}v/{cfg.ssm_n_group}k x {cfg.ssm_d_state}",
        (f"FFN           {cfg.n_expert} experts, {cfg.n_expert_used} used, {cfg.n_ff_exp} wide, "
         f"shared {cfg.n_ff_shexp}") if cfg.is_moe else f"FFN           dense {cfg.n_ff}",
        f"LM head       {'tied to the embedding' if cfg.tied_lm_head else 'untied'}",
        f"MTP head      {'present (blk.%d.nextn.*)' % cfg.mtp_layer if table.mtp else 'absent'}",
        f"parameters    {n_params / 1e9:.3f} B, {file_bytes / GiB:.3f} GiB of tensor data "
        f"({8 * file_bytes / max(n_params, 1):.2f} bits/weight)",
        "quant mix     " + ", ".join(f"{k} {v / GiB:.3f} GiB" for k, v in mix.most_common()),
        f"KV per token  {2 * kv_row_bytes(cfg, kv_type) * len(cfg.attention_layers)} B ({kv_type}); "
        f"recurrent state per sequence {recurrent_bytes_per_slot(cfg) / 2**20:.1f} MiB",
        f"memory plan   ctx {n_ctx}, {n_slots} slot(s), MTP {'on, n-max %d' % n_max if mtp and table.mtp else 'off'}",
        plan_memory(gguf, cfg, table, n_ctx, n_slots, kv_type, mtp, n_max).describe(),
    ]
    return "\n".join(lines)
