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
                   tuning=None, split: tuple | None = None) -> str:
    """What `vkmtp info` prints: the model, and the memory plan for these settings on `device` (None: the
    default device, opened here) per location (device memory, host memory the GPU reads) with whether it fits.
    n_ctx 0: the largest context that fits. overrides: -ot / --cpu-moe / --n-cpu-moe
    (vkmtp.graph.tensor_overrides); without them and with --fit on, a MoE plan that does not fit says how many
    expert layers --fit would move to host memory. n_ckpt (--ctx-checkpoints) and tuning (the device's profile)
    are the engine's, so the plan printed is the one the engine allocates. split: (physical devices, -ts
    proportions or None) of a layer split: the plan of each device (vkmtp.engine.split)."""
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
    if split is not None:
        return "\n".join(lines + _split_plans(path, n_ctx, n_slots, types, mtp, n_max, ubatch, fit_margin_mib,
                                              overrides, fit, n_ckpt, split))
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


def _split_plans(path: str, n_ctx: int, n_slots: int, types: CacheTypes, mtp: bool, n_max: int, ubatch: int,
                 fit_margin_mib: int | None, overrides, fit: bool, n_ckpt: int, split: tuple) -> list[str]:
    """The memory plan of each device of a layer split (each stage's plan is what that stage allocates), checked
    per physical device: the stages opened on one device share its budget."""
    from vkmtp.device.info import format_memory
    from vkmtp.engine.api import EngineConfig
    from vkmtp.engine.split import _open, fit_split, layer_split
    from vkmtp.spec import SpecConfig
    from vkmtp.tuning.profile import load_profile

    gguf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gguf)
    table = validate(gguf, cfg)
    physical, shares = split
    config = EngineConfig(n_ctx=n_ctx, n_slots=n_slots, ubatch=ubatch, kv_type=types.k, kv_type_v=types.v,
                          draft_kv_type_k=types.draft_k, draft_kv_type_v=types.draft_v,
                          spec=SpecConfig(enabled=mtp, n_max=n_max), fit=fit, fit_margin_mib=fit_margin_mib,
                          ctx_fixed=n_ctx != 0, ctx_checkpoints=n_ckpt, tensor_overrides=tuple(overrides),
                          split_devices=tuple(physical), tensor_split=shares)
    use_mtp = mtp and table.mtp is not None
    devices = _open(physical)
    try:
        tunings = [load_profile(d.info) for d in devices]
        stages = layer_split(cfg, config, devices)
        lines = [f"layer split   {'-ts ' + ','.join(f'{p:g}' for p in shares) if shares else 'by free memory'}: "
                 + "; ".join(st.describe() for st in stages)]
        try:
            plans, message = fit_split(gguf, cfg, table, config, devices, tunings, stages, use_mtp,
                                       n_max if use_mtp else 0)
        except MemoryError as exc:   # the message holds each device's plan and what to reduce
            return lines + [f"does not fit: {exc}"]
        if message:
            lines.append(f"fit           {message}")
        for st, dev, plan in zip(stages, devices, plans.plans):
            lines += [f"memory plan   {st.describe()}: ctx {plan.n_ctx}, {n_slots} slot(s), MTP "
                      f"{'on, n-max %d' % n_max if use_mtp and st.heads else 'off' if not use_mtp else 'on the last device'}"
                      f", on {dev.info.name} (Vulkan{dev.info.index})"
                      + (f", {', '.join(dict.fromkeys(str(o) for o in overrides))}" if overrides else ""),
                      plan.describe()]
        for p, budget in plans.budgets.items():
            mine = [(st, plan) for st, dev, plan in zip(stages, devices, plans.plans) if dev.info.index == p]
            total = sum(plan.device_total for _, plan in mine)
            lines.append(f"Vulkan{p}       {' + '.join(st.name for st, _ in mine)}: {total / GiB:.3f} GiB of "
                         f"{budget / GiB:.2f} GiB budget")
        lines.append(f"memory types  per buffer role on {devices[-1].info.name}")
        lines += ["  " + line for line in format_memory(devices[-1].info)]
        lines.append("fits on every device")
        return lines
    finally:
        for d in devices:
            d.destroy()

