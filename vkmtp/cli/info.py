"""`vkmtp info`: what a GGUF holds and what running it costs in memory."""

from __future__ import annotations

from collections import Counter

from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.graph.memory_plan import (MIN_CTX, CacheTypes, GiB, engine_shape, fit_budget, fit_context,
                                     fit_expert_layers, kv_row_bytes, plan_memory, recurrent_bytes_per_slot)
from vkmtp.graph.tensor_overrides import expert_blocks, n_cpu_moe_overrides
from vkmtp.model.weights import validate


def describe_model(path: str, n_ctx: int = 4096, n_slots: int = 1, types: CacheTypes | str = "f16",
                   mtp: bool = True, n_max: int = 3, ubatch: int = 256, device=None,
                   fit_margin_mib: int | None = None, overrides=(), fit: bool = True, n_ckpt: int = 0,
                   tuning=None) -> str:
    """What `vkmtp info` prints: the model, and the memory plan for these settings on `device` (None: the
    default device, opened here) per location (device memory, host memory the GPU reads) with whether it fits.
    n_ctx 0: the largest context that fits. overrides: -ot / --cpu-moe / --n-cpu-moe
    (vkmtp.graph.tensor_overrides); without them and with --fit on, a MoE plan that does not fit says how many
    expert layers --fit would move to host memory. n_ckpt (--ctx-checkpoints) and tuning (the device's profile)
    are the engine's, so the plan printed is the one the engine allocates."""
    from vkmtp.device import Device
    from vkmtp.device.info import format_memory

    if isinstance(types, str):
        types = CacheTypes(types, types)
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
        f"KV per token  {kv_row_bytes(cfg, types.k) * len(cfg.attention_layers)} B K ({types.k}) + "
        f"{kv_row_bytes(cfg, types.v) * len(cfg.attention_layers)} B V ({types.v}); "
        f"recurrent state per sequence {recurrent_bytes_per_slot(cfg) / 2**20:.1f} MiB",
    ]
    own = device is None
    dev = Device() if own else device
    try:
        use_mtp = mtp and table.mtp is not None
        budget = fit_budget(dev.info, fit_margin_mib)

        def plan_for(n: int, n_cpu: int = 0):
            return plan_memory(gguf, cfg, table, engine_shape(n, n_slots, types, use_mtp, n_max, ubatch, n_ckpt),
                               dev, tuning, overrides=overrides or n_cpu_moe_overrides(n_cpu))

        if n_ctx == 0:
            trained = cfg.n_ctx_train or 4096
            fitted = fit_context(plan_for, budget, trained, n_ctx_min=min(MIN_CTX, trained))
            lines.append("fit           -c 0: " + (f"context {fitted} (the largest that fits, trained {trained})"
                                                   if fitted else "no context fits"))
            n_ctx = fitted or min(MIN_CTX, trained)
        plan = plan_for(n_ctx)
        lines += [f"memory plan   ctx {n_ctx}, {n_slots} slot(s), MTP "
                  f"{'on, n-max %d' % n_max if use_mtp else 'off'}, on {dev.info.name} (Vulkan{dev.info.index})"
                  + (f", {', '.join(dict.fromkeys(str(o) for o in overrides))}" if overrides else ""),
                  plan.describe()]
        lines.append(f"memory types  per buffer role on {dev.info.name} "
                     f"({'UMA: mapped, nothing staged' if dev.info.uma else 'discrete'})")
        lines += ["  " + line for line in format_memory(dev.info)]
        why = plan.problem(budget, dev.info.name)
        verdict = "fits" if why is None else "does not fit"
        lines.append(f"{verdict} on {dev.info.name} (budget {budget / GiB:.2f} GiB)"
                     + ("" if why is None else f": {why}; reduce with: " + ", ".join(plan.hints())))
        blocks = expert_blocks(plan.weight_plan.names)
        if why is not None and fit and not overrides and blocks:
            n_cpu = fit_expert_layers(lambda n: plan_for(n_ctx, n), budget, blocks[-1] + 1)
            lines.append("fit           " + (f"--fit on moves the routed experts of {n_cpu} layer(s) to host memory "
                                             f"(--n-cpu-moe {n_cpu}): the plan then fits"
                                             if n_cpu else "not even every routed expert in host memory fits"))
    finally:
        if own:
            dev.destroy()
    return "\n".join(lines)
