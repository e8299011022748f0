"""A model split by layers over several devices (`-dev A,B`, --split-mode layer): one stage per device.

Each device of the split (vkmtp.graph.layer_split) is a *stage* with its own Device (kp manager), the weights of
its blocks (the embedding on the first; output norm, LM head and MTP head on the last), its own DeviceState (KV
and recurrent states of ITS layers, their snapshots and step log), step buffer, scratch and host-visible boundary
buffers. Every stage records each step kind once and replays it; the residual stream crosses each boundary once
per step through the host (the earlier stage's submission ends with a copy into its boundary output, the host
waits for it, copies the rows into the next stage's boundary input, and submits that stage, whose graph starts by
copying them into its residual stream). The step logic (records, sampling inputs, accept bookkeeping, prompt
cache) is the single-device engine's: the host writes the last stage's step buffer and the token records (and
the accepted rows) are copied into the earlier stages' step buffers before they run.

A speculative step: the last stage drafts (one submission; the drafted tokens land in its token records), the
earlier stages verify their blocks one after another, the last stage verifies its blocks, accepts and rolls its
own states back (one submission), then each earlier stage with GDN layers rolls its states back to the accepted
rows (one small recorded submission). docs/DESIGN.md, "Several devices", counts the submissions and waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from vkmtp.device import Device
from vkmtp.engine.api import EngineConfig
from vkmtp.engine.vulkan import VulkanEngine, _Copies, _n_checkpoints, _with_profile
from vkmtp.gguf import open_gguf
from vkmtp.graph.device_state import DeviceState
from vkmtp.graph.forward import Forward, Ops
from vkmtp.graph.graph_counts import GraphCounts
from vkmtp.graph.layer_split import DeviceLayers, logical_names, proportions_from_free, split_layers
from vkmtp.graph.memory_plan import (MIN_CTX, DeviceMemoryError, EngineShape, MemoryPlan, engine_shape, fit_budget,
                                     fit_context, plan_memory)
from vkmtp.graph.stages import StageCommitGraph, StageContext, StageTrunkGraph
from vkmtp.graph.step_io import StepIO
from vkmtp.graph.steps import CommitGraph, DecodeGraph, GraphContext, MtpLagGraph, PrefillGraph, SpecGraph, Submissions
from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import validate
from vkmtp.tuning.profile import load_profile

MIRRORED = ("records", "select", "pairs_ckpt")   # step-buffer regions the earlier stages' graphs read


def layer_split(cfg: ModelConfig, config: EngineConfig, devices: list[Device]) -> list[DeviceLayers]:
    """Each device's blocks: -ts/--tensor-split proportions, else each device's free memory (--fit's budget)."""
    physical = list(config.split_devices)
    shares = config.tensor_split or proportions_from_free(
        [fit_budget(d.info, config.fit_margin_mib) for d in devices], physical)
    return split_layers(cfg.n_layer_all, cfg.n_layer, tuple(shares), logical_names(tuple(physical)))


@dataclass
class SplitPlan:
    """The memory plans of every stage, checked per physical device: the stages opened on one physical device
    (`-dev 0,0`) share its budget, so their plans' sum must fit it."""

    plans: list[MemoryPlan]
    stages: list[DeviceLayers]
    devices: list[Device]
    budgets: dict[int, int] = field(default_factory=dict)   # physical device index -> bytes a plan may use

    def problem(self) -> str | None:
        for p, budget in self.budgets.items():
            mine = [(plan, st, dev) for plan, st, dev in zip(self.plans, self.stages, self.devices)
                    if dev.info.index == p]
            for plan, st, dev in mine:
                # each plan alone: oversized buffers, host memory; the device budget below, for all of them
                why = plan.problem(max(budget, plan.device_total), f"{st.name} ({dev.info.name})")
                if why is not None:
                    return why
            total = sum(plan.device_total for plan, _, _ in mine)
            if total > budget and len(mine) == 1:
                return mine[0][0].problem(budget, f"{mine[0][1].name} ({mine[0][2].info.name})")
            if total > budget:
                names = " + ".join(f"{st.name} {plan.device_total / 2**20:.1f} MiB" for plan, st, _ in mine)
                return (f"the stages on Vulkan{p} ({mine[0][2].info.name}) need {total / 2**20:.1f} MiB "
                        f"({names}) but {budget / 2**20:.1f} MiB is available")
        return None

    def fits(self, _available: int = 0) -> bool:
        return self.problem() is None

    def describe(self) -> str:
        return "\n".join(f"{st.describe()} on {dev.info.name}:\n{plan.describe()}"
                         for plan, st, dev in zip(self.plans, self.stages, self.devices))

    def check(self) -> None:
        why = self.problem()
        if why is not None:
            hints = dict.fromkeys(h for plan in self.plans for h in plan.hints())
            raise DeviceMemoryError(f"{why}:\n{self.describe()}\nreduce with: " + ", ".join(hints)
                                    + ", or another -ts/--tensor-split")


def fit_split(gguf, cfg: ModelConfig, table, config: EngineConfig, devices: list[Device], tunings: list,
              stages: list[DeviceLayers], use_mtp: bool, K: int) -> tuple[SplitPlan, str | None]:
    """Every stage's plan for `config`, checked before anything is allocated, and the line saying what --fit
    chose. A fixed context (-c N) must fit on every device; otherwise (--fit on) the context is the largest for
    which every device's plans fit (one context for all stages: the smallest each allows). With a split, --fit
    chooses the context only: routed experts move to host memory by -ot / --cpu-moe / --n-cpu-moe."""
    budgets = {d.info.index: fit_budget(d.info, config.fit_margin_mib) for d in devices}
    overrides = tuple(config.tensor_overrides)

    def plans_for(n_ctx: int) -> SplitPlan:
        shape = engine_shape(n_ctx, config.n_slots, config.cache_types, use_mtp, K, config.ubatch,
                             _n_checkpoints(config))
        plans = [plan_memory(gguf, cfg, table, shape, dev, tun, overrides, stage=st)
                 for dev, tun, st in zip(devices, tunings, stages)]
        return SplitPlan(plans, stages, devices, budgets)

    if config.ctx_fixed or not config.fit:
        if config.n_ctx < 16:
            raise ValueError(f"--ctx-size {config.n_ctx} is too small" + (" (-c 0 needs --fit on)"
                                                                          if config.n_ctx == 0 else ""))
        split = plans_for(config.n_ctx)
        split.check()
        return split, None
    trained = cfg.n_ctx_train or 4096
    target = config.n_ctx or trained
    smallest = min(MIN_CTX, target)
    n_ctx = fit_context(plans_for, 0, target, n_ctx_min=smallest)
    if n_ctx is None:
        plans_for(smallest).check()   # raises: not even the smallest context fits
    split = plans_for(n_ctx)
    split.check()
    why = "the model's trained context" if n_ctx == trained else \
        "the default" if n_ctx == target and config.n_ctx else "the largest that fits"
    used = "; ".join(f"{st.name} {plan.device_total / 2**20:.0f} MiB" for plan, st in zip(split.plans, stages))
    return split, f"context {n_ctx} tokens per slot ({why}; plans {used})"


def fit_split_config(model_path: str, config: EngineConfig) -> tuple[EngineConfig, str | None]:
    """`config` with the context --fit picks for the split fixed (what the CLI and the server do before
    building engines); opens the devices for the plan only."""
    gguf = open_gguf(model_path)
    cfg = ModelConfig.from_gguf(gguf)
    if config.ctx_fixed:
        return config, None
    table = validate(gguf, cfg)
    devices = _open(config.split_devices)
    try:
        tunings = [load_profile(d.info) for d in devices]
        spec = _with_profile(config, tunings[-1], model_path).spec
        use_mtp = spec.enabled and table.mtp is not None
        stages = layer_split(cfg, config, devices)
        split, message = fit_split(gguf, cfg, table, config, devices, tunings, stages, use_mtp,
                                   spec.n_max if use_mtp else 0)
    finally:
        for d in devices:
            d.destroy()
    return replace(config, n_ctx=split.plans[-1].n_ctx, ctx_fixed=True), message


def _open(physical) -> list[Device]:
    """One Device (kp manager) per logical device: a physical device listed twice is opened twice."""
    devices = []
    try:
        for p in physical:
            devices.append(Device(p))
    except Exception:
        for d in devices:
            d.destroy()
        raise
    return devices


class Stage:
    """One device of the split and everything on it (its plan is what it allocates, to the byte)."""

    def __init__(self, layers: DeviceLayers, device: Device, plan: MemoryPlan, tuning, cfg: ModelConfig, table,
                 shape: EngineShape, K: int):
        n_slots, rows = shape.n_slots, shape.max_rows
        self.layers = layers
        self.name = layers.name
        self.device = device
        self.plan = plan
        self.weights = plan.weight_plan.allocate(device)
        self.weight_buffers = list(getattr(plan.weight_plan, "buffers", []))
        self.state = DeviceState(device, cfg, plan.layouts, n_slots, shape.n_snap, shape.n_ckpt,
                                 layers=layers.blocks, heads=layers.heads)
        self.ops = Ops(device, cfg, plan.layouts, tuning)
        self.boundary_in = None if layers.embeds else \
            device.buffer(plan.size_of("boundary_in"), "host", "boundary_in", role="step_inputs")
        self.fwd = Forward(device, cfg, table, self.weights, self.state, self.ops, blocks=layers.blocks,
                           x_in=self.boundary_in.view() if self.boundary_in is not None else None)
        self.scratch = device.buffer(plan.size_of("scratch"), "device", "scratch", role="scratch")
        self.io = StepIO(device, rows, n_slots, K, cfg.n_vocab)
        self.hidden = self.logits_host = self.boundary_out = None
        if layers.heads:
            self.hidden = device.buffer(plan.size_of("hidden"), "device", "hidden", role="scratch")
            self.logits_host = device.buffer(plan.size_of("logits"), "host", "logits", role="outputs")
            self.ctx = GraphContext(device, self.fwd, self.io, self.scratch, self.hidden, self.logits_host,
                                    rows)
        else:
            self.boundary_out = device.buffer(plan.size_of("boundary_out"), "host", "boundary_out", role="outputs")
            self.ctx = StageContext(device, self.fwd, self.io, self.scratch, self.boundary_out)

    def destroy(self) -> None:
        self.state.destroy()
        for b in (self.scratch, self.hidden, self.logits_host, self.boundary_in, self.boundary_out):
            if b is not None:
                b.destroy()
        self.io.destroy()
        for b in self.weight_buffers:
            b.destroy()


class _Part:
    """A part of a staged step the engine runs on its own (a grammar's step: drafts, then the rest)."""

    def __init__(self, run):
        self.run = run


class StagedStep:
    """One step kind recorded on every stage, replayed in order: the earlier stages' trunk graphs with the
    residual stream copied at each boundary, the last stage's graph, then the earlier stages' rollback.

    `drafts`: the last stage's graph is a speculative step in two submissions (drafts, then verify / accept),
    and the earlier stages verify between them, on the tokens the last stage drafted."""

    def __init__(self, engine: "SplitEngine", rows: int, earlier: list, last, commits: list | None = None,
                 drafts: bool = False, trunk: bool = True):
        self.engine, self.rows, self.earlier, self.last = engine, rows, earlier, last
        self.commits = commits or []
        self.trunk = trunk
        last_recs = last.rec.recs if drafts else None
        if drafts:
            self.recs = (_Part(last_recs[0].run), _Part(lambda: self._rest(last_recs[1].run)))
        else:
            self.recs = (_Part(lambda: self._rest(last.rec.run)),)
        self.rec = self
        per_stage = []
        for i in range(len(engine.stages) - 1):
            parts = ([earlier[i].rec] if trunk else []) + ([self.commits[i].rec] if i < len(self.commits)
                                                             and self.commits[i] is not None else [])
            per_stage.append(_counts_of(parts))
        lc = last.counts
        per_stage.append(lc)
        # the step's state bytes (the whole model's, as the last stage's graph counts them) by each stage's share
        # of the GDN layers
        n_gdn = [len(st.state.gdn_index) for st in engine.stages]
        total = max(sum(n_gdn), 1)
        per_stage = [replace(c, state_bytes=lc.state_bytes * g // total,
                             rollback_bytes_per_seq=lc.rollback_bytes_per_seq * g // total)
                     for c, g in zip(per_stage, n_gdn)]
        self.counts = SplitCounts(sum(c.dispatches for c in per_stage), sum(c.barriers for c in per_stage),
                                  sum(c.submissions for c in per_stage), lc.state_bytes, lc.rollback_bytes_per_seq,
                                  sum(c.host_barriers for c in per_stage), tuple(per_stage))

    def _rest(self, run_last) -> None:
        eng = self.engine
        if self.trunk:
            eng._mirror()
            for i, g in enumerate(self.earlier):
                g.rec.run()
                eng._cross(i, self.rows)
        run_last()
        if self.commits:
            eng._mirror()
            for c in self.commits:
                if c is not None:
                    c.rec.run()

    def run(self) -> None:
        for part in self.recs:
            part.run()

    def __len__(self) -> int:
        return self.counts.submissions

    def destroy(self) -> None:
        for g in self.earlier + [c for c in self.commits if c is not None]:
            g.rec.destroy()
        self.last.rec.destroy()


def _counts_of(recs) -> GraphCounts:
    """Counts of an earlier stage's submissions (Submissions or single recorders)."""
    flat = []
    for r in recs:
        flat.extend(r.recs if isinstance(r, Submissions) else [r])
    return GraphCounts.of(flat)


@dataclass(frozen=True)
class SplitCounts(GraphCounts):
    """A step's counts summed over the stages, and each stage's own (in device order; the last holds the heads).
    State bytes are the whole model's (every stage's GDN layers)."""

    stages: tuple = ()


class SplitEngine(VulkanEngine):
    """The Vulkan engine over a layer split: the single-device engine's step logic, each step a StagedStep."""

    def __init__(self, model_path: str, config: EngineConfig, progress: bool = False):
        if len(config.split_devices) < 2:
            raise ValueError("a layer split needs at least two devices in -dev/--device")
        self.model_path = model_path
        self.gguf = open_gguf(model_path)
        self.cfg = ModelConfig.from_gguf(self.gguf)
        self.table = validate(self.gguf, self.cfg)
        self.devices = _open(config.split_devices)
        self.stages: list[Stage] = []
        try:
            self._load(config)
        except BaseException:
            for st in self.stages:
                st.destroy()
            for d in self.devices:
                d.destroy()
            raise

    def _load(self, config: EngineConfig) -> None:
        self.device = self.devices[-1]   # the heads' device: outputs, logits, the MTP head
        self._own_device = True
        self._staging_before = False
        self.tunings = [load_profile(d.info) for d in self.devices]
        self.tuning = self.tunings[-1]
        config = self._settle(config)
        self.split = layer_split(self.cfg, config, self.devices)
        split_plan, self.fit_message = fit_split(self.gguf, self.cfg, self.table, config, self.devices,
                                                 self.tunings, self.split, self.use_mtp, self.K)
        self.split_plan = split_plan
        self.memory_plan = split_plan.plans[-1]
        if self.memory_plan.n_ctx != config.n_ctx or not config.ctx_fixed:
            self.config = replace(config, n_ctx=self.memory_plan.n_ctx, ctx_fixed=True)
        self.n_ctx = self.memory_plan.n_ctx
        shape = self.shape
        self.ubatch = shape.ubatch
        for layers, dev, plan, tun in zip(self.split, self.devices, split_plan.plans, self.tunings):
            self.stages.append(Stage(layers, dev, plan, tun, self.cfg, self.table, shape, self.K))
        last = self.stages[-1]
        self.weight_plan = last.plan.weight_plan
        self.weights, self.state, self.ops, self.fwd = last.weights, last.state, last.ops, last.fwd
        self.scratch, self.hidden, self.logits_host, self.io, self.ctx = \
            last.scratch, last.hidden, last.logits_host, last.io, last.ctx
        self.boundary_bytes = 0   # residual-stream bytes the host copied between devices
        self._init_runtime(config, shape)

    # --- the stages -------------------------------------------------------------------------------------------
    def _mirror(self) -> None:
        """The step-buffer regions the earlier stages read, copied from the last stage's (the host's writes and
        what the last stage's GPU wrote: drafted tokens, accepted rows)."""
        src = self.io
        for st in self.stages[:-1]:
            for name in MIRRORED:
                st.io.array(name)[:] = src.array(name)

    def _cross(self, i: int, rows: int) -> None:
        """Stage i's residual stream (rows x E f32, after its submission) into stage i + 1's boundary input."""
        n = rows * self.cfg.n_embd
        self.stages[i + 1].boundary_in.words()[:n] = self.stages[i].boundary_out.words()[:n]
        self.boundary_bytes += 4 * n

    def _make(self, step, *args):
        """A step of kind `step` (vkmtp.graph.steps) on every stage that takes part in it."""
        earlier = [st.ctx for st in self.stages[:-1]]
        last = self.stages[-1].ctx
        if step is MtpLagGraph:   # the MTP head only: the last stage
            g = step(last, *args)
            return StagedStep(self, 0, [], g, trunk=False)
        if step is CommitGraph:   # the host's accept decision: every stage rolls its states back
            S, K = args
            commits = [StageCommitGraph(c, S, K + 1) if c.has_states else None for c in earlier]
            return StagedStep(self, 0, [], step(last, S, K), commits, trunk=False)
        if step is PrefillGraph:
            T, _greedy, _mtp, per_submit, _sample, _probs, ckpt = args
            trunk = [StageTrunkGraph(c, T, prefill=True, checkpoint=ckpt, layers_per_submit=per_submit)
                     for c in earlier]
            return StagedStep(self, T, trunk, step(last, *args))
        if step is DecodeGraph:
            S = args[0]
            return StagedStep(self, S, [StageTrunkGraph(c, S) for c in earlier], step(last, *args))
        if step is SpecGraph:
            S, K, greedy = args[0], args[1], args[2]
            sample = args[7]
            rest = list(args)
            rest[8] = True   # the last stage's step in two submissions: the earlier stages verify in between
            trunk = [StageTrunkGraph(c, S * (K + 1), n_snap=K) for c in earlier]
            commits = [StageCommitGraph(c, S, K + 1) if c.has_states else None for c in earlier] \
                if greedy or sample else []
            return StagedStep(self, S * (K + 1), trunk, step(last, *rest), commits, drafts=True)
        raise TypeError(f"no layer-split form of {step.__name__}")

    def _reset_slot(self, index: int) -> None:
        for st in self.stages:
            st.state.reset_slot(index)

    def _slot_views(self, slot: int, n_tokens: int, places: list[tuple[int, int]]) -> dict[str, tuple]:
        out = {}
        for i, st in enumerate(self.stages):
            for name, vs in st.state.slot_views(slot, n_tokens, places).items():
                out[f"stage{i}.{name}"] = (st.device, vs)
        return out

    def _restore_checkpoint(self, slot, place: int) -> None:
        def record():
            recs = []
            for st in self.stages:
                pairs = st.state.checkpoint_pairs(slot.index, place)
                if pairs:
                    rec = st.device.recorder()
                    for live, ckpt in pairs:
                        rec.copy(ckpt, live)
                    recs.append(rec.finish())
            return _Copies(Submissions(recs))
        self._graph(("checkpoint", slot.index, place), record).rec.run()

    def graph_report(self) -> dict:
        """VulkanEngine.graph_report with each stage's own counts under `stages` (device order)."""
        out = super().graph_report()
        names = [st.name for st in self.stages]
        for kind, c in self.last_counts.items():
            if isinstance(c, SplitCounts):
                out[kind]["stages"] = {n: s.to_dict() for n, s in zip(names, c.stages)}
        return out

    def close(self) -> None:
        self._cancel_all()
        self.host_cache.clear()
        for g in self._graphs.values():
            g.rec.destroy()
        self._graphs.clear()
        for st in self.stages:
            st.destroy()
        self.stages = []
        for d in self.devices:
            d.destroy()
        self.devices = []

