"""The Vulkan engine: a GGUF model on the GPU, with MTP speculative decoding, several sequences at once.

Load: the memory plan is checked before any allocation; weights are uploaded once in their quantized GGUF
layout. Admission, the step skeleton, stop rules and timings are vkmtp/engine/base.py's, shared with the
reference engine. Step: prompt chunks (PrefillGraph), then per step all generating sequences together — a
speculative step of vkmtp/spec/step.py (SpecGraph: drafts, verify, accept and rollback on the GPU, one
submission) or a plain decode step. The host writes token records (and, for sampled sequences, each row's
sampling inputs: `_write_sample_rows`) and reads only token ids: the argmax or the GPU's sample
(shaders/sample.comp, the host sampler's chain in the same arithmetic). A grammar's mask of allowed tokens is
a step input too; with MTP its speculative step is two submissions (drafts, then the host cuts them at the
first forbidden token and writes each verified row's mask, then the rest). Only a sequence with more bias
entries or a longer penalty window than the step buffer holds (`gpu_sampleable`) takes its logits to the
host, where the reference engine's rule (`vkmtp.spec.verifier.verify`) decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from vkmtp.device import Device
from vkmtp.engine.api import EngineConfig, Sequence
from vkmtp.engine.base import Run, Slot, SlotEngine
from vkmtp.engine.host_cache import HostPromptCache, SlotImage, cache_ram_bytes
from vkmtp.engine.prompt_cache import Checkpoints, next_chunk, plan_reuse
from vkmtp.graph.graph_counts import GraphCounts
from vkmtp.graph.steps import CommitGraph, DecodeGraph, GraphContext, MtpLagGraph, PrefillGraph, SpecGraph
from vkmtp.graph.step_io import MAX_BIAS, StepIO
from vkmtp.graph.token_probs import ROW_WORDS, read_row
from vkmtp.engine.token_probs import TokenProbs, from_top_pairs, post_sampling
from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.graph.device_state import DeviceState
from vkmtp.graph.forward import Forward, Ops
from vkmtp.graph.memory_plan import (FIT_CTX, MIN_CTX, EngineShape, MemoryPlan, engine_shape, fit_budget,
                                     fit_context, fit_expert_layers, plan_memory, weight_names)
from vkmtp.graph.tensor_overrides import HOST, expert_blocks, n_cpu_moe_overrides
from vkmtp.model.weights import validate
from vkmtp.ops.sample import MAX_WINDOW, PARAM_WORDS, row_params
from vkmtp.sampling import Sampler
from vkmtp.spec.adaptive import AdaptiveDepth, SlotAcceptance
from vkmtp.spec.step import keep_drafts
from vkmtp.spec.verifier import verify
from vkmtp.tuning.profile import TuningProfile, load_profile

PREFILL_BUCKETS = (8, 32, 128)   # prompt chunks are padded (to the sink slot) up to one of these or ubatch


@dataclass(eq=False)
class _Run(Run):
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    acceptance: SlotAcceptance | None = None           # the adaptive policy's estimate for this sequence


@dataclass(eq=False)
class _Slot(Slot):
    tokens: list[int] = field(default_factory=list)   # tokens whose KV / state are in the slot
    mtp_lag: int = 0   # trailing tokens whose MTP-head KV is not written yet (their inputs are in the lag ring)
    checkpoints: Checkpoints = field(default_factory=lambda: Checkpoints(0))   # prompt-cache state copies


class VulkanEngine(SlotEngine):
    backend = "vulkan"

    def __init__(self, model_path: str, config: EngineConfig, progress: bool = False, device: Device | None = None,
                 tuning: TuningProfile | None = None):
        """tuning: a profile to use instead of the device's saved one (benchmarks and tests of a kernel path)."""
        self.model_path = model_path
        self.gguf = open_gguf(model_path)
        self.cfg = ModelConfig.from_gguf(self.gguf)
        self.table = validate(self.gguf, self.cfg)
        self.device = device or Device(config.device)
        self._own_device = device is None
        self._staging_before = self.device.has_staging   # a shared device's staging buffer is not ours to free
        # the device's tuning profile (vkmtp tune); None: built-in defaults (none saved, VKMTP_TUNING=off)
        self.tuning = tuning if tuning is not None else load_profile(self.device.info)
        config = self._settle(config)
        S = config.n_slots
        self.memory_plan = self._plan_and_fit(config)
        plan = self.memory_plan
        self.n_ctx = plan.n_ctx
        shape = self.shape
        self.ubatch = shape.ubatch
        self.weight_plan = plan.weight_plan
        bar = _progress_bar(self.weight_plan.bytes_total) if progress and not self.device.info.uma else None
        self.weights = self.weight_plan.allocate(self.device, progress=bar.update if bar else None)
        if bar:
            bar.close()
        self.state = DeviceState(self.device, self.cfg, plan.layouts, S, shape.n_snap, shape.n_ckpt)
        self.ops = Ops(self.device, self.cfg, plan.layouts, self.tuning)
        self.fwd = Forward(self.device, self.cfg, self.table, self.weights, self.state, self.ops)
        self.scratch = self.device.buffer(plan.size_of("scratch"), "device", "scratch", role="scratch")
        self.hidden = self.device.buffer(plan.size_of("hidden"), "device", "hidden", role="scratch")
        self.logits_host = self.device.buffer(plan.size_of("logits"), "host", "logits", role="outputs")
        self.io = StepIO(self.device, shape.max_rows, S, self.K, self.cfg.n_vocab)
        self.ctx = GraphContext(self.device, self.fwd, self.io, self.scratch, self.hidden, self.logits_host,
                                shape.max_rows)
        self._init_runtime(config, shape)

    def _init_runtime(self, config: EngineConfig, shape: EngineShape) -> None:
        """What runs the steps, once the model is on its device(s): recorded graphs, slots, prompt caches, the
        adaptive depth policy and the counters."""
        S = config.n_slots
        spec = config.spec
        self._graphs: dict[tuple, object] = {}
        # bounded submissions: the longest one queue submission may run (--max-submit-ms, else the device's)
        self.max_submit_ms = config.max_submit_ms if config.max_submit_ms is not None \
            else self.device.caps.max_submit_ms
        if self.max_submit_ms <= 0:
            raise ValueError(f"--max-submit-ms {self.max_submit_ms}: must be > 0")
        self._prefill_split: dict[int, int] = {}   # chunk bucket T -> trunk layers per submission
        self.prefill_submissions: list[int] = []   # queue submissions of each prompt chunk run, in order
        self.slots = [_Slot(i, checkpoints=Checkpoints(shape.n_ckpt)) for i in range(S)]
        self.host_cache = HostPromptCache(cache_ram_bytes(config.cache_ram_mib))
        self._synth_rng = np.random.default_rng(1234)
        # adaptive depth (the default): 0 or n_min..n_max per step; n_min == n_max (or adaptive off) is fixed
        self.adaptive = AdaptiveDepth(self.K, spec.n_min) \
            if self.use_mtp and spec.adaptive and spec.n_min < spec.n_max else None
        self._built = False   # the current step recorded a graph (its time is not the step's cost)
        self.host_bytes_written = 0   # host -> device bytes of step inputs (records, row pairs, uniforms)
        self.host_bytes_read = 0      # device -> host bytes of step outputs (token ids, counts, logits)
        # the recorder's counts of the last replayed step of each kind, and recurrent-state bytes written by the
        # speculative steps (vkmtp.graph.graph_counts)
        self.last_counts: dict[str, GraphCounts] = {}
        self.spec_steps = 0
        self.spec_state_bytes = 0
        self._bias_written: dict[int, _Run] = {}   # batch position -> the run whose bias pairs sample_bias holds
        self.gpu_sampling = True   # False: every sampled sequence takes the host path (tools/bench_engine.py)

    # --- memory -----------------------------------------------------------------------------------------------
    def _settle(self, config: EngineConfig) -> EngineConfig:
        """The settings in force: the tuning profile's MTP defaults applied, whether the MTP head runs and its
        maximum depth, the slot count checked. Sets self.config, self.use_mtp and self.K."""
        config = _with_profile(config, self.tuning, self.model_path)
        self.config = config
        self.use_mtp = config.spec.enabled and self.table.mtp is not None
        self.K = config.spec.n_max if self.use_mtp else 0
        if config.n_slots < 1:
            raise ValueError(f"--parallel {config.n_slots}: at least one slot")
        return config

    def _plan_and_fit(self, config: EngineConfig) -> MemoryPlan:
        plan, self.fit_message = fit_plan(self.gguf, self.cfg, self.table, config, self.device, self.tuning,
                                          self.use_mtp, self.K)
        if plan.n_ctx != config.n_ctx or not config.ctx_fixed:
            self.config = replace(config, n_ctx=plan.n_ctx, ctx_fixed=True)
        return plan

    @property
    def shape(self) -> EngineShape:
        c = self.config
        return engine_shape(self.n_ctx, c.n_slots, c.cache_types, self.use_mtp, self.K, c.ubatch,
                            _n_checkpoints(c))

    @property
    def n_vocab(self) -> int:
        return self.cfg.n_vocab

    def _reusable(self, slot: _Slot, prompt: list[int]) -> int:
        """Prompt tokens the slot's live memory or one of its checkpoints gives (vkmtp.engine.prompt_cache)."""
        return plan_reuse(slot.tokens, slot.checkpoints, prompt).n

    def _reset_slot(self, index: int) -> None:
        """Zero a slot's recurrent states (and pending hidden): a new sequence starts from nothing."""
        self.state.reset_slot(index)

    def _open(self, slot: _Slot, seq: Sequence, prompt: list[int], sampler: Sampler, cached: int) -> _Run:
        reuse = plan_reuse(slot.tokens, slot.checkpoints, prompt) if cached else None
        if reuse is None or reuse.n != cached:
            self._reset_slot(slot.index)
            slot.tokens = []
            slot.mtp_lag = 0
            slot.checkpoints.clear()
        elif reuse.place is not None:   # back to a checkpoint: its states; KV rows past it are overwritten later
            self._restore_checkpoint(slot, reuse.place)
            slot.tokens = prompt[:cached]
            slot.mtp_lag = 0   # checkpoints are taken after prompt chunks, when the MTP head is up to date
        slot.checkpoints.truncate(cached)
        return _Run(seq, prompt, sampler, pending=prompt[cached:],
                    acceptance=self.adaptive.new_slot() if self.adaptive else None)

    def _release(self, slot: _Slot, run: _Run, reason: str) -> None:
        if reason == "cancelled" and slot.tokens and len(slot.tokens) < len(run.prompt):
            slot.tokens = []   # a half-prefilled prompt is not a reusable prefix (its checkpoints stay)

    # --- slot images (host-RAM prompt cache, slot files) --------------------------------------------------------
    def _held(self, slot: _Slot) -> int:
        return max([len(slot.tokens), *slot.checkpoints.entries])

    def _take_image(self, slot: _Slot) -> SlotImage:
        """The slot's prompt cache downloaded: KV rows of its tokens, live states, used checkpoints."""
        positions = sorted(slot.checkpoints.entries)
        views = self._slot_views(slot.index, len(slot.tokens),
                                 [(p, slot.checkpoints.entries[p]) for p in positions])
        arrays = {name: np.frombuffer(b"".join(dev.download(v) for v in vs), np.uint8)
                  for name, (dev, vs) in views.items()}
        self.host_bytes_read += sum(a.nbytes for a in arrays.values())
        if slot.tokens:
            arrays["mtp_lag_n"] = np.array([slot.mtp_lag], np.int32)
        return SlotImage(list(slot.tokens), list(slot.checkpoints.tokens), positions, arrays)

    def _load_image(self, slot: _Slot, image: SlotImage) -> None:
        if image.n_tokens >= self.n_ctx:
            raise ValueError(f"the slot image holds {image.n_tokens} tokens; the context holds {self.n_ctx} per slot")
        self._erase(slot)
        cap = slot.checkpoints.capacity
        kept = image.checkpoints[-cap:] if cap else []
        places = list(enumerate(kept))
        views = self._slot_views(slot.index, len(image.tokens), [(p, i) for i, p in places])
        for name, (dev, vs) in views.items():
            data = image.arrays.get(name)
            size = sum(v.nbytes for v in vs)
            if data is None or data.nbytes != size:
                raise ValueError(f"the slot image's {name} is not the {size} bytes this engine keeps there")
            offset = 0
            for v in vs:
                dev.upload(v, data[offset: offset + v.nbytes])
                offset += v.nbytes
            self.host_bytes_written += size
        lag = image.arrays.get("mtp_lag_n", np.zeros(1, np.int32)) if image.tokens and self.use_mtp else [0]
        if not 0 <= int(lag[0]) <= min(self.state.lag_rows, len(image.tokens)):
            raise ValueError(f"the slot image's MTP lag {int(lag[0])} is outside 0..{self.state.lag_rows}")
        slot.tokens = list(image.tokens)
        slot.mtp_lag = int(lag[0])
        for place, p in places:
            slot.checkpoints.entries[p] = place
        slot.checkpoints.tokens = list(image.history) if kept else []

    def _slot_views(self, slot: int, n_tokens: int, places: list[tuple[int, int]]) -> dict[str, tuple]:
        """A slot image's named device ranges (DeviceState.slot_views), each with the device that holds it."""
        return {name: (self.device, vs) for name, vs in self.state.slot_views(slot, n_tokens, places).items()}

    def _erase(self, slot: _Slot) -> None:
        self._reset_slot(slot.index)
        slot.tokens = []
        slot.mtp_lag = 0
        slot.checkpoints.clear()

    def _restore_checkpoint(self, slot: _Slot, place: int) -> None:
        """Restore (place -> live) a checkpoint of the slot's states: GPU copies in one recorded submission, no
        host round trip (checkpoints are taken inside the prompt chunk's own submission: PrefillGraph)."""
        def record():
            rec = self.device.recorder()
            for live, ckpt in self.state.checkpoint_pairs(slot.index, place):
                rec.copy(ckpt, live)
            return _Copies(rec.finish())
        self._graph(("checkpoint", slot.index, place), record).rec.run()

    def close(self) -> None:
        self._cancel_all()
        self.host_cache.clear()
        for g in self._graphs.values():
            g.rec.destroy()
        self._graphs.clear()
        self.state.destroy()
        for b in (self.scratch, self.hidden, self.logits_host):
            b.destroy()
        self.io.destroy()
        for b in getattr(self.weight_plan, "buffers", []):
            b.destroy()
        # bindings to this engine's buffers went with them (Device._release); the compiled pipelines stay with a
        # shared device (a server's EngineFactory keeps it across sleeps), as do buffers of other engines on it
        if self._own_device:
            self.device.destroy()
        elif not self._staging_before:
            self.device.release_staging()

    # --- prefill ----------------------------------------------------------------------------------------------
    def _graph(self, key: tuple, make):
        g = self._graphs.get(key)
        if g is None:
            g = make()
            self._graphs[key] = g
            self._built = True
        return g

    def _make(self, step, *args):
        """Record a step of kind `step` (a vkmtp.graph.steps class) on this engine's device."""
        return step(self.ctx, *args)

    def _prefill(self, slot: _Slot) -> int | None:
        run = slot.run
        self._catch_up_mtp(slot)   # a reused prefix's MTP KV must be complete before the chunk's rows follow it
        n_done = len(run.prompt) - len(run.pending)
        n = next_chunk(n_done, len(run.prompt), self.ubatch, slot.checkpoints.capacity > 0)
        chunk = run.pending[:n]
        T = next((b for b in PREFILL_BUCKETS if b >= n and b <= self.ubatch), self.ubatch)
        greedy = run.sampler.params.plain_argmax
        sample = self.gpu_sampling and not greedy and self._gpu_samples(run, 0)
        if sample:
            self._write_sample_rows([run], 1, drafts=False)
        self._write_padded_records(chunk, len(slot.tokens), slot.index, T)
        self.io.write_pairs("pairs_out", [(n - 1, 0)])
        self.io.write_pairs("pairs_shift", [(slot.index, 0)])
        self.io.write_pairs("pairs_in", [(n - 1, slot.index)])
        # a checkpoint after this chunk is copied inside its submission (the storage place is chosen now)
        place = slot.checkpoints.add(slot.tokens + chunk) if run.seq.request.cache_prompt else None
        if place is not None:
            self.io.write_pairs("pairs_ckpt", [(slot.index, slot.index * self.state.n_ckpt + place)])
        split = self._prefill_split.get(T)
        probs = self._wants_probs([slot])
        ckpt = place is not None
        graph = self._graph(("prefill", T, greedy, self.use_mtp, split, sample, probs, ckpt),
                            lambda: self._make(PrefillGraph, T, greedy, self.use_mtp, split, sample, probs, ckpt))
        t0 = time.perf_counter()
        graph.rec.run()
        self.last_counts["prefill"] = graph.counts
        self._bound_prefill(T, split, len(graph.rec), time.perf_counter() - t0)
        slot.tokens.extend(chunk)
        run.pending = run.pending[n:]
        if run.pending:
            return None
        if greedy or sample:
            token = int(self.io.array("ids")[0])
            run.step_probs = self._step_probs(run, [token], [0])
            return token
        logits = self._logits(0)
        token = run.sampler.sample(logits)
        run.step_probs = self._step_probs(run, [token], [0], [logits])
        return token

    def _write_padded_records(self, tokens: list[int], pos0: int, slot: int, T: int) -> None:
        """Records of a T-row batch: `tokens` of `slot` at positions pos0.., then sink padding at positions
        0.. (a prompt chunk, an MTP catch-up)."""
        n = len(tokens)
        recs = self.io.records()
        recs[:T] = 0
        recs[:n, 0] = tokens
        recs[:n, 1] = np.arange(pos0, pos0 + n)
        recs[:n, 2] = slot
        recs[n:T, 1] = np.arange(T - n)
        recs[n:T, 2] = self.state.sink

    def _bound_prefill(self, T: int, split: int | None, n_submits: int, seconds: float) -> None:
        """Bounded submissions: when a chunk of T tokens took longer per submission than --max-submit-ms, later
        chunks of T tokens run fewer trunk layers per submission (judged from this measured time: the trunk's
        layers dominate a prompt chunk). The same dispatches run, so the tokens are the same."""
        self.prefill_submissions.append(n_submits)
        n_layers = len(self.table.blocks)
        current = split or n_layers
        per_layer_ms = 1e3 * seconds / n_layers
        if 1e3 * seconds / n_submits <= self.max_submit_ms or current <= 1:
            return
        self._prefill_split[T] = max(1, min(current - 1, int(self.max_submit_ms // max(per_layer_ms, 1e-9))))

    # --- generation ---------------------------------------------------------------------------------------------
    def _generate(self, active: list[_Slot]) -> list[list[int]]:
        S = len(active)
        greedy = all(s.run.sampler.params.plain_argmax for s in active)
        K = self._depth(active)
        sample = self.gpu_sampling and not greedy and all(self._gpu_samples(s.run, K) for s in active)
        # A sequence with no budget left for drafts still rides along in a batched speculative step (its drafts are
        # not counted); alone it takes the cheaper plain step. Both give the same tokens and statistics.
        spec = self.use_mtp and K > 0 and all(len(s.tokens) + K + 1 <= self.n_ctx for s in active) \
            and (S > 1 or self._draft_budget(active[0].run, len(active[0].tokens)) > 0)
        self._step_accepts: list[tuple[int, int]] = []
        self._built = False
        if spec:   # the MTP head drafts: first it catches up over what plain steps skipped
            for slot in active:
                self._catch_up_mtp(slot)
        # the policy compares steady-state step costs: a catch-up is owed work of the plain steps before it
        # (a steady speculative step runs the head over its own position inside its submission)
        t_step = time.perf_counter()
        outs = self._spec_step(active, greedy, K, sample) if spec else self._decode_step(active, greedy, sample)
        self._depths = [K if spec else 0] * S
        if self.adaptive:
            seconds = None if self._built else time.perf_counter() - t_step
            per_slot = [(s.run.acceptance, n, m) for s, (n, m) in zip(active, self._step_accepts) if n > 0]
            self.adaptive.observe(S, K if spec else 0, seconds, per_slot)
        return outs

    def _depth(self, active: list[_Slot]) -> int:
        """This step's draft depth. Sequences batched in one step share it: at most the smallest request
        n_max, at least the largest request n_min when drafting; a request with n_min == n_max (or the engine
        without the adaptive policy) fixes it, otherwise the policy chooses (0: a plain step)."""
        specs = [s.run.spec for s in active]
        hi = min(sp.n_max for sp in specs) if self.use_mtp else 0
        if self.adaptive is None or any(sp.n_min >= sp.n_max for sp in specs):
            return hi
        K = self.adaptive.choose([s.run.acceptance for s in active])
        return 0 if K == 0 else min(max(K, max(sp.n_min for sp in specs)), hi)

    def _write_records(self, active: list[_Slot], rows: int) -> None:
        recs = self.io.records()
        self.host_bytes_written += 16 * rows * len(active)
        for s, slot in enumerate(active):
            n_past = len(slot.tokens)
            block = recs[s * rows: (s + 1) * rows]
            block[:, 0] = 0
            block[0, 0] = slot.run.id_last
            block[:, 1] = np.arange(n_past, n_past + rows)
            block[:, 2] = slot.index
            block[:, 3] = 0

    def _decode_step(self, active: list[_Slot], greedy: bool, sample: bool = False) -> list[list[int]]:
        """A plain step. With MTP loaded it lags: the MTP head's input is kept and the head runs only when it
        drafts again (or when a slot's lag ring is full)."""
        S = len(active)
        if self.use_mtp:
            for slot in active:
                if slot.mtp_lag >= self.state.lag_rows:
                    self._catch_up_mtp(slot)
            rows = self.state.lag_rows
            self.io.write_pairs("pairs_lag", [(sl.index, sl.index * rows + sl.mtp_lag) for sl in active])
        self._write_records(active, 1)
        if sample:
            self._write_sample_rows([sl.run for sl in active], 1, drafts=False)
        self.io.write_pairs("pairs_in", [(s, sl.index) for s, sl in enumerate(active)])
        self.host_bytes_written += (2 if self.use_mtp else 1) * 8 * S
        probs = self._wants_probs(active)
        graph = self._graph(("decode", S, greedy, self.use_mtp, sample, probs),
                            lambda: self._make(DecodeGraph, S, greedy, self.use_mtp, sample, probs))
        graph.rec.run()
        self.last_counts["decode"] = graph.counts
        outs = []
        for s, slot in enumerate(active):
            slot.tokens.append(slot.run.id_last)
            slot.mtp_lag += self.use_mtp
            if greedy or sample:
                token = int(self.io.array("ids")[s])
                slot.run.step_probs = self._step_probs(slot.run, [token], [s])
            else:
                logits = self._logits(s)
                token = slot.run.sampler.sample(logits)
                slot.run.step_probs = self._step_probs(slot.run, [token], [s], [logits])
            self.host_bytes_read += 4
            outs.append([token])
        return outs

    def _catch_up_mtp(self, slot: _Slot) -> None:
        """Write the MTP KV of the slot's lagging positions (one submission; nothing when there are none)."""
        n = slot.mtp_lag
        if not n:
            return
        rows = self.state.lag_rows
        T = min(1 << (n - 1).bit_length(), rows)
        first = len(slot.tokens) - n
        self._write_padded_records(slot.tokens[first:], first, slot.index, T)
        base = slot.index * rows
        self.io.write_pairs("pairs_lag", [(base + min(r, n - 1), r) for r in range(T)])
        self.host_bytes_written += 16 * T + 8 * T
        graph = self._graph(("mtp_lag", T), lambda: self._make(MtpLagGraph, T))
        graph.rec.run()
        self.last_counts["mtp_catch_up"] = graph.counts
        slot.mtp_lag = 0

    def _spec_step(self, active: list[_Slot], greedy: bool, K: int, sample: bool = False) -> list[list[int]]:
        S = len(active)
        V = K + 1
        # the step's cuts: the strictest p-min and n-min of its sequences (one recorded graph per setting)
        spec_cfg = replace(self.config.spec, p_min=max(sl.run.spec.p_min for sl in active),
                           n_min=min(K, max(sl.run.spec.n_min for sl in active)))
        self._write_records(active, V)
        drec = self.io.records("draft_records")[: K * S].reshape(K, S, 4)
        self.host_bytes_written += 16 * K * S + 2 * 8 * S
        for s, slot in enumerate(active):
            n_past = len(slot.tokens)
            drec[:, s, 0] = 0
            drec[0, s, 0] = slot.run.id_last
            drec[:, s, 1] = np.arange(n_past, n_past + K)
            drec[:, s, 2] = slot.index
            drec[:, s, 3] = 0
        self.io.write_pairs("pairs_in", [(sl.index, s) for s, sl in enumerate(active)])
        self.io.write_pairs("pairs_shift", [(sl.index, s * V) for s, sl in enumerate(active)])
        if not greedy:   # sampled sequences draft with the noise of their own next positions
            noise = self.io.array("draft_noise")[: 4 * S].reshape(S, 4)
            for s, slot in enumerate(active):
                sp = slot.run.sampler
                on = not sp.params.greedy
                inv_t = np.float32(1.0 / sp.params.temperature if on else 1.0)
                noise[s] = (sp.key, sp.pos, np.array([inv_t], np.float32).view(np.uint32)[0], int(on))
            self.host_bytes_written += 16 * S
        split = sample and any(_grammar(sl.run.sampler) for sl in active)
        if sample and not split:   # each verified row's chain at its own position, after the drafts before it
            self._write_sample_rows([sl.run for sl in active], V, drafts=True)
        rate = spec_cfg.synthetic_accept or 0.0
        if rate > 0:
            self.io.array("uniforms", np.float32)[: S * K] = self._synth_rng.random(S * K)
            self.host_bytes_written += 4 * S * K
        probs = self._wants_probs(active)
        graph = self._graph(("spec", S, K, greedy, spec_cfg.p_min, rate, spec_cfg.n_min, spec_cfg.draft_vocab,
                             sample, split, probs),
                            lambda: self._make(SpecGraph, S, K, greedy, spec_cfg.p_min, rate, spec_cfg.n_min,
                                               spec_cfg.draft_vocab, sample, split, probs))
        if split:
            drafts_part, rest = graph.rec.recs
            drafts_part.run()
            self._write_sample_rows([sl.run for sl in active], V, drafts=True, cuts=self._cut_drafts(active, K))
            rest.run()
        else:
            graph.rec.run()
        self.last_counts["speculative"] = graph.counts
        self.spec_steps += 1
        outs = []
        if greedy or sample:   # accepted on the GPU: token ids and counts only
            accept = self.io.array("accept")
            # the conv rollback copies a state for each sequence that kept fewer than K drafts (snapshot m < K)
            self.spec_state_bytes += graph.counts.state_bytes_written(sum(int(accept[s]) < K for s in range(S)))
            n_valid = self.io.array("n_valid")
            out_ids = self.io.array("out_ids")[: S * V].reshape(S, V)
            for s, slot in enumerate(active):
                m = int(accept[s])
                self.host_bytes_read += 4 * (m + 3)
                tokens = [int(t) for t in out_ids[s, : m + 1]]
                slot.run.step_probs = self._step_probs(slot.run, tokens, [s * V + j for j in range(m + 1)])
                outs.append(self._advance(slot, s, m, tokens, int(n_valid[s]), K))
            return outs
        # a chain the GPU cannot run (a grammar): the accept rule of the reference engine on the host, then the
        # commit
        recs = self.io.records()
        valid = self.io.array("valid")[: S * K].reshape(S, K)
        select, hidden_select = [], []
        for s, slot in enumerate(active):
            run = slot.run
            n_valid = int(valid[s].astype(bool).sum())
            budget = self._draft_budget(run, len(slot.tokens))
            drafts = keep_drafts([int(t) for t in recs[s * V + 1: s * V + 1 + n_valid, 0]], spec_cfg, budget)
            drafts = run.sampler.allowed_drafts(drafts)   # a draft the grammar forbids ends the draft
            logits = np.stack([self._logits(s * V + j) for j in range(len(drafts) + 1)])
            out, m = verify(drafts, logits, run.sampler)
            run.step_probs = self._step_probs(run, out, [s * V + j for j in range(len(out))],
                                              logits[: len(out)])
            select.append((slot.index, m))
            hidden_select.append((s * V + m, slot.index))
            outs.append(self._advance(slot, s, m, out, len(drafts), K))
        self.io.write_pairs("select", select)
        self.io.write_pairs("hidden_select", hidden_select)
        commit = self._graph(("commit", S, K), lambda: self._make(CommitGraph, S, K))
        commit.rec.run()
        self.last_counts["commit"] = commit.counts
        self.spec_state_bytes += graph.counts.state_bytes + \
            commit.counts.state_bytes_written(sum(m < K for _, m in select))
        return outs

    def _advance(self, slot: _Slot, s: int, m: int, out: list[int], n_valid: int, K: int) -> list[int]:
        """Bookkeeping after sequence s's verify accepted m of its n_valid drafts: tokens now in memory, stats."""
        V = K + 1
        recs = self.io.records()
        drafts = [int(t) for t in recs[s * V + 1: s * V + 1 + m, 0]]
        self._step_accepts.append((n_valid, m))
        self.host_bytes_read += 4 * m
        budget = self._draft_budget(slot.run, len(slot.tokens))
        slot.tokens.extend([slot.run.id_last] + drafts)
        self._count_drafts(slot.run, n_valid, m, budget)
        return out

    # --- GPU sampling inputs (shaders/sample.comp) ------------------------------------------------------------
    def _cut_drafts(self, active: list[_Slot], K: int) -> list[list[int]]:
        """(a grammar's speculative step, between its two submissions) Each sequence's drafts up to the first one
        its grammar forbids: the later ones lose their valid flag, so the GPU's accept stops there."""
        V = K + 1
        recs = self.io.records()
        valid = self.io.array("valid")[: len(active) * K].reshape(len(active), K)
        cuts = []
        for s, slot in enumerate(active):
            n_valid = int(valid[s].astype(bool).sum())
            drafts = [int(t) for t in recs[s * V + 1: s * V + 1 + n_valid, 0]]
            cut = slot.run.sampler.allowed_drafts(drafts)
            valid[s, len(cut):] = 0
            cuts.append(cut)
            self.host_bytes_read += 4 * (K + n_valid)
            self.host_bytes_written += 4 * K
        return cuts

    def _write_sample_rows(self, runs: list[_Run], rows: int, drafts: bool,
                           cuts: list[list[int]] | None = None) -> None:
        """Row parameters of `rows` rows per sequence (vkmtp.ops.sample.row_params): row j at position pos + j,
        its penalty window the last repeat_last_n tokens of the sampler's history + drafts[:j] (the drafts are
        the token records s*rows + 1.. the GPU writes during the step, when `drafts`), as Sampler.rows has it;
        each sequence's history and bias pairs go to its part of sample_history / sample_bias. A sequence behind
        a grammar gets the mask of row j after drafts[:j] for j <= len(cuts[s]) (row 0 only without cuts);
        rows past its cut are never accepted."""
        params = self.io.array("sample_params").reshape(-1, PARAM_WORDS)
        masks = self.io.array("sample_mask")
        mask0 = self.io.offsets["sample_mask"][0]
        mask_words = -(-self.cfg.n_vocab // 32)
        hist_words = self.io.array("sample_history")
        bias_words = self.io.array("sample_bias")
        hist0, bias0 = self.io.offsets["sample_history"][0], self.io.offsets["sample_bias"][0]
        for s, run in enumerate(runs):
            sp, p = run.sampler, run.sampler.params
            penalised = (p.repeat_penalty, p.frequency_penalty, p.presence_penalty) != (1.0, 0.0, 0.0)
            hist = list(sp.history) if penalised else []
            hist_words[s * MAX_WINDOW: s * MAX_WINDOW + len(hist)] = hist
            bias_ids = getattr(sp, "bias_ids", None)
            n_bias = 0 if bias_ids is None else len(bias_ids)
            if n_bias and self._bias_written.get(s) is not run:
                pairs = bias_words[2 * MAX_BIAS * s: 2 * MAX_BIAS * s + 2 * n_bias].reshape(n_bias, 2)
                pairs[:, 0] = bias_ids
                pairs[:, 1] = np.asarray(sp.bias_values, np.float32).view(np.uint32)
                self._bias_written[s] = run
                self.host_bytes_written += 8 * n_bias
            maxlen = sp.history.maxlen
            grammar = _grammar(sp)
            cut = cuts[s] if cuts is not None else []
            for j in range(rows):
                mask = None
                if grammar and j <= len(cut):
                    allowed = sp.allowed(cut[:j])
                    if allowed.any():   # a stopped matcher allows nothing: the row stays as it is
                        r = s * rows + j
                        padded = np.zeros(32 * mask_words, bool)
                        padded[: allowed.size] = allowed
                        masks[r * mask_words: (r + 1) * mask_words] = np.packbits(padded, bitorder="little") \
                            .view(np.uint32)
                        mask = mask0 + r * mask_words
                        self.host_bytes_written += 4 * mask_words
                n_draft = j if penalised and drafts else 0
                drop = max(0, len(hist) + n_draft - maxlen) if maxlen is not None else 0
                h0 = min(drop, len(hist))
                params[s * rows + j] = row_params(
                    sp.key, sp.pos + j, sp.inv_t, p.top_k, p.top_p, p.min_p, p.repeat_penalty,
                    p.frequency_penalty, p.presence_penalty, hist=(hist0 + s * MAX_WINDOW + h0, len(hist) - h0),
                    drafts=(s * rows + 1 + drop - h0, n_draft - (drop - h0)),
                    bias=(bias0 + 2 * MAX_BIAS * s, n_bias), mask=mask)
            self.host_bytes_written += 4 * (rows * PARAM_WORDS + len(hist))

    def graph_report(self) -> dict:
        """Per kind of recorded step (decode, speculative, prefill chunk, and the sampling commit): dispatches,
        barriers and queue submissions of the last one replayed, counted by the recorder; with the mean
        recurrent-state bytes the speculative steps wrote (rollback copies only where a draft was rejected)."""
        out = {kind: c.to_dict() for kind, c in self.last_counts.items()}
        if self.spec_steps:
            out["speculative"]["state_bytes_written_per_step"] = self.spec_state_bytes / self.spec_steps
        return out

    # --- token probabilities (vkmtp.graph.token_probs) ------------------------------------------------------------
    @staticmethod
    def _wants_probs(slots: list[_Slot]) -> bool:
        """Record the step's variant with token probabilities: some sequence in it asked for them."""
        return any(sl.run.seq.request.probs is not None for sl in slots)

    @staticmethod
    def _gpu_samples(run: _Run, ahead: int) -> bool:
        """Whether shaders/sample.comp draws this sequence's tokens: not when it asked for probabilities (the
        sampler shapes its logits rows in place, and the raw rows are what log-probabilities are of, and what the
        post-sampling chain is computed from on the host): such a sequence samples on the host."""
        return gpu_sampleable(run.sampler, ahead) and run.seq.request.probs is None

    def _step_probs(self, run: _Run, tokens: list[int], rows: list[int], host_rows=None) -> list[TokenProbs] | None:
        """The probabilities of `tokens`, tokens[j] chosen from the step's logits row rows[j]: log p from the GPU's
        top-n pairs and log-sum-exp (the host reads ROW_WORDS words per row); post-sampling p from the sampler
        chain, which runs where the logits are (`host_rows`, sampled steps) or is the argmax (greedy, p = 1)."""
        want = run.seq.request.probs
        if want is None:
            return None
        if want.post_sampling:
            if host_rows is not None:
                return self._host_probs(run, tokens, host_rows)
            return [post_sampling(t, np.array([t]), np.array([1.0]), want.n_top) for t in tokens]
        out = []
        for j, (token, row) in enumerate(zip(tokens, rows)):
            values, ids, lse, chosen = read_row(self.io, row)
            self.host_bytes_read += 4 * ROW_WORDS
            if host_rows is not None:   # sampled: the host chose the token from the logits it holds
                chosen = float(host_rows[j][token])
            out.append(from_top_pairs(token, values, ids, lse, chosen, want.n_top))
        return out

    def _logits(self, row: int) -> np.ndarray:
        v = self.cfg.n_vocab
        self.host_bytes_read += 4 * v
        return self.logits_host.words()[row * v: (row + 1) * v].view(np.float32).copy()


def _grammar(sampler: Sampler) -> bool:
    return getattr(sampler, "matcher", None) is not None


def gpu_sampleable(sampler: Sampler, ahead: int) -> bool:
    """Whether shaders/sample.comp can run this sequence's chain for a step `ahead` drafts deep: at most
    MAX_BIAS bias entries, a penalty window of at most MAX_WINDOW tokens (a grammar's mask is a step input)."""
    bias = getattr(sampler, "bias_ids", None)
    if bias is not None and len(bias) > MAX_BIAS:
        return False
    p = sampler.params
    if (p.repeat_penalty, p.frequency_penalty, p.presence_penalty) != (1.0, 0.0, 0.0):
        window = len(sampler.history) + ahead
        if sampler.history.maxlen is not None:
            window = min(window, sampler.history.maxlen)
        return window <= MAX_WINDOW
    return True


@dataclass(eq=False)
class _Copies:
    """A recorded submission of buffer copies (a checkpoint taken or restored)."""

    rec: object


def _n_checkpoints(config: EngineConfig) -> int:
    if config.ctx_checkpoints < 0:
        raise ValueError(f"--ctx-checkpoints {config.ctx_checkpoints}: must be >= 0")
    return config.ctx_checkpoints


def fit_plan(gguf, cfg: ModelConfig, table, config: EngineConfig, device: Device, tuning, use_mtp: bool,
             K: int) -> tuple[MemoryPlan, str | None]:
    """The memory plan for `config`, checked against the device's budget before anything is allocated, and the
    line saying what --fit chose (None when it chose nothing).

    A fixed context (-c N) must fit as it is. Otherwise (--fit on, -c not given or 0) the context is the largest
    that fits, up to config.n_ctx (-c not given: the default) or the model's trained context (-c 0). With --fit
    on, a MoE model and no placement flag (-ot, --cpu-moe, --n-cpu-moe), the routed experts of the fewest first
    layers move to host memory when the plan would not fit otherwise at the fixed context, or at
    min(target, FIT_CTX) (llama.cpp's --fit keeps 4096 tokens of context before it moves weights)."""
    info = device.info
    budget = fit_budget(info, config.fit_margin_mib)
    overrides = tuple(config.tensor_overrides)

    def plan_for(n_ctx: int, n_cpu: int = 0) -> MemoryPlan:
        shape = engine_shape(n_ctx, config.n_slots, config.cache_types, use_mtp, K, config.ubatch,
                             _n_checkpoints(config))
        return plan_memory(gguf, cfg, table, shape, device, tuning, overrides or n_cpu_moe_overrides(n_cpu))

    names = weight_names(table, use_mtp)
    blocks = expert_blocks(names)
    may_move = config.fit and not overrides and bool(blocks)
    n_blocks = blocks[-1] + 1 if blocks else 0

    def experts_for(n_ctx: int) -> int:
        if not may_move:
            return 0
        n = fit_expert_layers(lambda n_cpu: plan_for(n_ctx, n_cpu), budget, n_blocks)
        return n_blocks if n is None else n

    if config.ctx_fixed or not config.fit:
        if config.n_ctx < 16:
            raise ValueError(f"--ctx-size {config.n_ctx} is too small" + (" (-c 0 needs --fit on)"
                                                                          if config.n_ctx == 0 else ""))
        n_cpu = experts_for(config.n_ctx)
        plan = plan_for(config.n_ctx, n_cpu)
        plan.check(budget, info.name)
        return plan, _moved_message(plan, n_cpu, n_blocks, budget, info.name)
    trained = cfg.n_ctx_train or 4096
    target = config.n_ctx or trained
    smallest = min(MIN_CTX, target)
    n_cpu = experts_for(min(target, FIT_CTX))
    n_ctx = fit_context(lambda n: plan_for(n, n_cpu), budget, target, n_ctx_min=smallest)
    if n_ctx is None:
        plan_for(smallest, n_cpu).check(budget, info.name)   # raises: not even the smallest context fits
    plan = plan_for(n_ctx, n_cpu)
    plan.check(budget, info.name)
    why = "the model's trained context" if n_ctx == trained else \
        "the default" if n_ctx == target and config.n_ctx else "the largest that fits"
    message = (f"context {n_ctx} tokens per slot ({why}; plan {plan.device_total / 2**20:.0f} MiB of "
               f"{budget / 2**20:.0f} MiB on {info.name})")
    moved = _moved_message(plan, n_cpu, n_blocks, budget, info.name)
    return plan, message + ("; " + moved if moved else "")


def _moved_message(plan: MemoryPlan, n_cpu: int, n_blocks: int, budget: int, device_name: str) -> str | None:
    if not n_cpu:
        return None
    return (f"moved the routed experts of {n_cpu} of {n_blocks} layers to host memory (--n-cpu-moe {n_cpu}, "
            f"{plan.host_weights / 2**20:.0f} MiB read by the GPU over the bus) so that "
            f"{plan.device_total / 2**20:.0f} MiB fit the {budget / 2**20:.0f} MiB of {device_name}")


def fit_config(model_path: str, config: EngineConfig) -> tuple[EngineConfig, str | None]:
    """`config` with what --fit picks on its device fixed: the context (n_ctx > 0, ctx_fixed) and, for a MoE
    model without placement flags, the expert layers moved to host memory (as --n-cpu-moe overrides); and the
    line saying so. Opens the device for the plan only. What the CLI and the server do before building engines."""
    if config.split_devices:   # a layer split: every stage's plan (vkmtp.engine.split)
        from vkmtp.engine.split import fit_split_config

        return fit_split_config(model_path, config)
    gguf = open_gguf(model_path)
    cfg = ModelConfig.from_gguf(gguf)
    if config.ctx_fixed and (not config.fit or config.tensor_overrides or not cfg.is_moe):
        return config, None
    table = validate(gguf, cfg)
    device = Device(config.device)
    try:
        tuning = load_profile(device.info)
        spec = _with_profile(config, tuning, model_path).spec
        use_mtp = spec.enabled and table.mtp is not None
        plan, message = fit_plan(gguf, cfg, table, config, device, tuning, use_mtp, spec.n_max if use_mtp else 0)
    finally:
        device.destroy()
    n_cpu = len(expert_blocks(n for n, loc in plan.weight_plan.locations.items() if loc == HOST)) \
        if not config.tensor_overrides else 0
    overrides = n_cpu_moe_overrides(n_cpu) if n_cpu else config.tensor_overrides
    return replace(config, n_ctx=plan.n_ctx, ctx_fixed=True, tensor_overrides=overrides), message


def _with_profile(config: EngineConfig, tuning, model_path: str) -> EngineConfig:
    """The MTP depth and p-min the device's tuning profile measured for this model, unless the user set them."""
    tuned = tuning.mtp_for(model_path) if tuning is not None else None
    if config.spec.from_profile and tuned is not None:
        return replace(config, spec=replace(config.spec, n_max=tuned.n_max, p_min=tuned.p_min))
    return config


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="uploading weights")
