"""The Vulkan engine: a GGUF model on the GPU, with MTP speculative decoding, several sequences at once.

Load: the memory plan is checked before any allocation; weights are uploaded once in their quantized GGUF
layout. Step: prompt chunks (PrefillGraph), then per step all generating sequences together — a speculative
step (SpecGraph: drafts, verify, accept and rollback on the GPU, one submission) or a plain decode step. The
host writes token records and reads only token ids (greedy) or, for temperature > 0, the logits it samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from vkmtp.device import Device
from vkmtp.engine.api import (
    Engine, EngineConfig, Event, NoFreeSlotError, PromptTooLongError, Request, Sequence,
)
from vkmtp.graph.steps import CommitGraph, DecodeGraph, GraphContext, PrefillGraph, SpecGraph
from vkmtp.graph.step_io import StepIO
from vkmtp.gguf import open_gguf
from vkmtp.model.config import ModelConfig
from vkmtp.graph.device_state import DeviceState
from vkmtp.graph.forward import Forward, Ops, scratch_bytes_for
from vkmtp.graph.memory_plan import mtp_only_specs, plan_memory
from vkmtp.graph.placement import WeightPlan
from vkmtp.model.weights import validate
from vkmtp.sampling import Sampler
from vkmtp.spec.adaptive import AdaptiveDepth
from vkmtp.spec.verifier import verify_sampled
from vkmtp.tuning.profile import load_profile

PREFILL_BUCKETS = (8, 32, 128)   # prompt chunks are padded (to the sink slot) up to one of these or ubatch


@dataclass
class Slot:
    index: int
    tokens: list[int] = field(default_factory=list)   # tokens whose KV / state are in the slot
    seq: Sequence | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to prefill
    id_last: int = -1                                 # sampled, not yet processed
    sampler: Sampler | None = None


class VulkanEngine(Engine):
    def __init__(self, model_path: str, config: EngineConfig, progress: bool = False, device: Device | None = None):
        self.model_path = model_path
        self.gguf = open_gguf(model_path)
        self.cfg = ModelConfig.from_gguf(self.gguf)
        self.table = validate(self.gguf, self.cfg)
        self.device = device or Device(config.device)
        self._own_device = device is None
        # the device's tuning profile (vkmtp tune); None: built-in defaults (none saved, VKMTP_TUNING=off)
        self.tuning = load_profile(self.device.info)
        tuned = self.tuning.mtp_for(model_path) if self.tuning is not None else None
        if config.spec.from_profile and tuned is not None:
            config = replace(config, spec=replace(config.spec, n_max=tuned.n_max, p_min=tuned.p_min))
        self.config = config
        spec = config.spec
        self.use_mtp = spec.enabled and self.table.mtp is not None
        self.K = spec.n_max if self.use_mtp else 0
        self.n_ctx = config.n_ctx
        if self.n_ctx < 16:
            raise ValueError(f"--ctx-size {self.n_ctx} is too small")
        self.ubatch = max(8, min(config.ubatch, self.n_ctx))
        S = config.n_slots
        self.memory_plan = plan_memory(self.gguf, self.cfg, self.table, self.n_ctx, S, config.kv_type,
                                       self.use_mtp, max(self.K, 1), self.ubatch)
        self.memory_plan.check(self.device.info.available_bytes, self.device.info.name)

        mtp_only = {s.name for s in mtp_only_specs(self.table)}
        names = [s.name for s in self.table.specs() if self.use_mtp or s.name not in mtp_only]
        max_buffer = min(self.device.info.max_storage_buffer_range, 1 << 30)
        self.weight_plan = WeightPlan(self.gguf, names, max_buffer)
        bar = _progress_bar(self.weight_plan.bytes_total) if progress and not self.device.info.uma else None
        self.weights = self.weight_plan.allocate(self.device, progress=bar.update if bar else None)
        if bar:
            bar.close()
        self.state = DeviceState(self.device, self.cfg, self.n_ctx, S, config.kv_type, self.use_mtp,
                                 self.K + 1 if self.use_mtp else 0)
        self.ops = Ops(self.device, self.cfg, self.state, self.tuning)
        self.fwd = Forward(self.device, self.cfg, self.table, self.weights, self.state, self.ops)
        max_rows = max(self.ubatch, S * (self.K + 1))
        n_out = S * (self.K + 1)   # rows that need logits: a verify batch (a prompt chunk needs one)
        self.scratch = self.device.buffer(scratch_bytes_for(self.cfg, max_rows, n_out, self.ops), "device",
                                          "scratch")
        self.hidden = self.device.buffer(4 * 4 * max_rows * self.cfg.n_embd, "device", "hidden")
        self.logits_host = self.device.buffer(4 * max(S * (self.K + 1), 1) * self.cfg.n_vocab, "host", "logits")
        self.io = StepIO(self.device, self.ubatch, S, self.K)
        self.ctx = GraphContext(self.device, self.fwd, self.io, self.scratch, self.hidden, self.logits_host,
                                max_rows)
        self._graphs: dict[tuple, object] = {}
        self.slots = [Slot(i) for i in range(S)]
        self._synth_rng = np.random.default_rng(1234)
        self.adaptive = AdaptiveDepth(self.K) if self.use_mtp and spec.adaptive else None
        self.host_bytes_written = 0   # host -> device bytes of step inputs (records, row pairs, uniforms)
        self.host_bytes_read = 0      # device -> host bytes of step outputs (token ids, counts, logits)

    # --- contract ----------------------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self.cfg.n_vocab

    def has_work(self) -> bool:
        return any(s.seq is not None for s in self.slots)

    def submit(self, request: Request) -> Sequence:
        prompt = [int(t) for t in request.prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty")
        bad = [t for t in prompt if not 0 <= t < self.cfg.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the vocabulary (0..{self.cfg.n_vocab - 1})")
        if len(prompt) + 1 > self.n_ctx:
            raise PromptTooLongError(f"the prompt has {len(prompt)} tokens; the context holds {self.n_ctx} "
                                     f"(prompt + at least one generated token)")
        free = [s for s in self.slots if s.seq is None]
        if not free:
            raise NoFreeSlotError("all slots are busy")

        def reuse(slot: Slot) -> int:
            n = len(slot.tokens)
            return n if request.cache_prompt and 0 < n < len(prompt) and prompt[:n] == slot.tokens else 0

        slot = max(free, key=reuse)
        cached = reuse(slot)
        if not cached:
            self.state.reset_slot(slot.index)
            slot.tokens = []
        seq = Sequence(request, slot.index)
        seq.timings.cache_n = cached
        slot.seq = seq
        slot.pending = prompt[cached:]
        slot.sampler = Sampler(request.params)
        for t in prompt:
            slot.sampler.accept(t)
        slot.id_last = -1
        return seq

    def cancel(self, seq: Sequence) -> None:
        for slot in self.slots:
            if slot.seq is seq:
                self._finish(slot, "cancelled")

    def step(self) -> list[Event]:
        events: list[Event] = []
        for slot in self.slots:
            if slot.seq is not None and slot.pending:
                ev = self._prefill_chunk(slot)
                if ev:
                    events.append(ev)
        active = [s for s in self.slots if s.seq is not None and not s.pending and not s.seq.done]
        if active:
            events.extend(self._generate_step(active))
        return events

    def close(self) -> None:
        for g in self._graphs.values():
            g.rec.destroy()
        self._graphs.clear()
        self.state.destroy()
        for b in (self.scratch, self.hidden, self.logits_host):
            b.destroy()
        self.io.destroy()
        for b in getattr(self.weight_plan, "buffers", []):
            b.destroy()
        # pipelines bound to this engine's buffers went with them (Device._release); others on a shared
        # device belong to someone else
        if self._own_device:
            self.device.destroy()

    # --- prefill ----------------------------------------------------------------------------------------------
    def _graph(self, key: tuple, make):
        g = self._graphs.get(key)
        if g is None:
            g = make()
            self._graphs[key] = g
        return g

    def _prefill_chunk(self, slot: Slot) -> Event | None:
        seq = slot.seq
        t0 = time.perf_counter()
        chunk = slot.pending[: self.ubatch]
        n = len(chunk)
        T = next((b for b in PREFILL_BUCKETS if b >= n and b <= self.ubatch), self.ubatch)
        greedy = _argmax_on_gpu(slot.sampler.params)
        recs = self.io.records()
        pos0 = len(slot.tokens)
        recs[:T] = 0
        recs[:n, 0] = chunk
        recs[:n, 1] = np.arange(pos0, pos0 + n)
        recs[:n, 2] = slot.index
        recs[n:T, 1] = np.arange(T - n)
        recs[n:T, 2] = self.state.sink
        self.io.write_pairs("pairs_out", [(n - 1, 0)])
        self.io.write_pairs("pairs_shift", [(slot.index, 0)])
        self.io.write_pairs("pairs_in", [(n - 1, slot.index)])
        graph = self._graph(("prefill", T, greedy, self.use_mtp),
                            lambda: PrefillGraph(self.ctx, T, greedy, self.use_mtp))
        graph.rec.run()
        slot.tokens.extend(chunk)
        slot.pending = slot.pending[n:]
        seq.timings.prompt_n += n
        seq.timings.prompt_ms += 1e3 * (time.perf_counter() - t0)
        if slot.pending:
            return None
        token = int(self.io.array("ids")[0]) if greedy else slot.sampler.sample(self._logits(0))
        return self._emit(slot, [token], t_start=time.perf_counter())

    # --- generation ---------------------------------------------------------------------------------------------
    def _generate_step(self, active: list[Slot]) -> list[Event]:
        t0 = time.perf_counter()
        S = len(active)
        greedy = all(_argmax_on_gpu(s.sampler.params) for s in active)
        K = self.adaptive.choose() if self.adaptive else self.K
        # A sequence with no budget left for drafts still rides along in a batched speculative step (its drafts are
        # not counted); alone it takes the cheaper plain step. Both give the same tokens and statistics.
        spec = self.use_mtp and K > 0 and all(len(s.tokens) + K + 1 <= self.n_ctx for s in active) \
            and (S > 1 or self._remaining(active[0]) > 1)
        self._step_accepts: list[tuple[int, int]] = []
        if spec:
            outs = self._spec_step(active, greedy, K)
        else:
            outs = self._decode_step(active, greedy)
        dt = 1e3 * (time.perf_counter() - t0)
        if self.adaptive:
            self.adaptive.observe(K if spec else 0, dt / 1e3, self._step_accepts)
        events = []
        for slot, out in zip(active, outs):
            slot.seq.timings.predicted_ms += dt
            events.append(self._emit(slot, out))
        return events

    @staticmethod
    def _remaining(slot: Slot) -> int:
        req = slot.seq.request
        return req.max_tokens - len(slot.seq.generated) if req.max_tokens >= 0 else 1 << 30

    def _write_records(self, active: list[Slot], rows: int) -> None:
        recs = self.io.records()
        self.host_bytes_written += 16 * rows * len(active)
        for s, slot in enumerate(active):
            n_past = len(slot.tokens)
            block = recs[s * rows: (s + 1) * rows]
            block[:, 0] = 0
            block[0, 0] = slot.id_last
            block[:, 1] = np.arange(n_past, n_past + rows)
            block[:, 2] = slot.index
            block[:, 3] = 0

    def _decode_step(self, active: list[Slot], greedy: bool) -> list[list[int]]:
        S = len(active)
        self._write_records(active, 1)
        self.io.write_pairs("pairs_shift", [(sl.index, s) for s, sl in enumerate(active)])
        self.io.write_pairs("pairs_in", [(s, sl.index) for s, sl in enumerate(active)])
        self.host_bytes_written += 2 * 8 * S
        graph = self._graph(("decode", S, greedy, self.use_mtp),
                            lambda: DecodeGraph(self.ctx, S, greedy, self.use_mtp))
        graph.rec.run()
        outs = []
        for s, slot in enumerate(active):
            slot.tokens.append(slot.id_last)
            token = int(self.io.array("ids")[s]) if greedy else slot.sampler.sample(self._logits(s))
            self.host_bytes_read += 4
            outs.append([token])
        return outs

    def _spec_step(self, active: list[Slot], greedy: bool, K: int) -> list[list[int]]:
        S = len(active)
        V = K + 1
        spec_cfg = self.config.spec
        self._write_records(active, V)
        drec = self.io.records("draft_records")[: K * S].reshape(K, S, 4)
        self.host_bytes_written += 16 * K * S + 2 * 8 * S
        for s, slot in enumerate(active):
            n_past = len(slot.tokens)
            drec[:, s, 0] = 0
            drec[0, s, 0] = slot.id_last
            drec[:, s, 1] = np.arange(n_past, n_past + K)
            drec[:, s, 2] = slot.index
            drec[:, s, 3] = 0
        self.io.write_pairs("pairs_in", [(sl.index, s) for s, sl in enumerate(active)])
        self.io.write_pairs("pairs_shift", [(sl.index, s * V) for s, sl in enumerate(active)])
        rate = spec_cfg.synthetic_accept or 0.0
        if rate > 0:
            self.io.array("uniforms", np.float32)[: S * K] = self._synth_rng.random(S * K)
            self.host_bytes_written += 4 * S * K
        graph = self._graph(("spec", S, K, greedy, spec_cfg.p_min, rate, spec_cfg.n_min),
                            lambda: SpecGraph(self.ctx, S, K, greedy, spec_cfg.p_min, rate, spec_cfg.n_min))
        graph.rec.run()
        outs = []
        if greedy:
            accept = self.io.array("accept")
            n_valid = self.io.array("n_valid")
            out_ids = self.io.array("out_ids")[: S * V].reshape(S, V)
            for s, slot in enumerate(active):
                m = int(accept[s])
                self.host_bytes_read += 4 * (m + 3)
                outs.append(self._advance(slot, s, m, [int(t) for t in out_ids[s, : m + 1]], int(n_valid[s]), K))
            return outs
        # temperature > 0: speculative rejection sampling on the host, then commit on the GPU
        recs = self.io.records()
        valid = self.io.array("valid")[: S * K].reshape(S, K)
        select, hidden_select = [], []
        for s, slot in enumerate(active):
            drafts = [int(t) for t in recs[s * V + 1: s * V + V, 0]]
            n_valid = int(valid[s].astype(bool).sum())
            if n_valid < spec_cfg.n_min:
                n_valid = 0
            probs = self._row_probs(slot, drafts[:n_valid], s * V, n_valid + 1)
            out, m = verify_sampled(np.array(drafts[:n_valid], dtype=np.int64), probs, slot.sampler.rng)
            select.append((slot.index, m))
            hidden_select.append((s * V + m, slot.index))
            outs.append(self._advance(slot, s, m, out, n_valid, K))
        self.io.write_pairs("select", select)
        self.io.write_pairs("hidden_select", hidden_select)
        commit = self._graph(("commit", S, K), lambda: CommitGraph(self.ctx, S, K))
        commit.rec.run()
        return outs

    def _advance(self, slot: Slot, s: int, m: int, out: list[int], n_valid: int, K: int) -> list[int]:
        """Bookkeeping after sequence s's verify accepted m of its n_valid drafts: tokens now in memory, stats.

        Counted as llama-server counts: drafts beyond the request's remaining budget (llama.cpp drafts at most
        n_remaining - 1) are not counted as drafted, nor accepted."""
        V = K + 1
        recs = self.io.records()
        drafts = [int(t) for t in recs[s * V + 1: s * V + 1 + m, 0]]
        self._step_accepts.append((n_valid, m))
        self.host_bytes_read += 4 * m
        slot.tokens.extend([slot.id_last] + drafts)
        req = slot.seq.request
        budget = n_valid
        if req.max_tokens >= 0:
            budget = min(budget, max(req.max_tokens - len(slot.seq.generated) - 1, 0))
        n_drafted, n_accepted = min(n_valid, budget), min(m, budget)
        if n_drafted:   # a step whose drafts all fall past the budget is a plain decode for llama-server
            slot.seq.spec.record(n_drafted, n_accepted)
        slot.seq.timings.draft_n += n_drafted
        slot.seq.timings.draft_n_accepted += n_accepted
        return out

    def _logits(self, row: int) -> np.ndarray:
        v = self.cfg.n_vocab
        self.host_bytes_read += 4 * v
        return self.logits_host.words()[row * v: (row + 1) * v].view(np.float32).copy()

    def _row_probs(self, slot: Slot, drafts: list[int], first_row: int, n_rows: int) -> np.ndarray:
        """Target distributions [n_rows, V] of the verified rows, each after the drafts before it."""
        v = self.cfg.n_vocab
        out = np.zeros((n_rows, v))
        history = list(slot.sampler.history)
        for j in range(n_rows):
            sampler = slot.sampler
            saved = sampler.history
            sampler.history = type(saved)(history + drafts[:j], maxlen=saved.maxlen)
            ids, probs = sampler.distribution(self._logits(first_row + j))
            sampler.history = saved
            out[j, ids] = probs
        return out

    # --- output -------------------------------------------------------------------------------------------------
    def _emit(self, slot: Slot, tokens: list[int], t_start: float | None = None) -> Event:
        seq = slot.seq
        req = seq.request
        new: list[int] = []
        for t in tokens:
            if t in req.stop_ids:
                seq.stop_reason = "eos"
                break
            new.append(t)
            if req.max_tokens >= 0 and len(seq.generated) + len(new) >= req.max_tokens:
                seq.stop_reason = "limit"
                break
        seq.generated.extend(new)
        seq.timings.predicted_n = len(seq.generated)
        for t in new:
            slot.sampler.accept(t)
        if seq.stop_reason is None and len(slot.tokens) + 1 >= self.n_ctx:
            seq.stop_reason = "context"
        slot.id_last = tokens[-1]
        if seq.stop_reason is not None:
            self._finish(slot, seq.stop_reason)
        return Event(seq, new, seq.done)

    def _finish(self, slot: Slot, reason: str) -> None:
        seq = slot.seq
        if seq is None:
            return
        seq.done = True
        seq.stop_reason = seq.stop_reason or reason
        slot.seq = None
        slot.pending = []
        if reason == "cancelled" and slot.tokens and len(slot.tokens) < len(seq.request.prompt_ids):
            slot.tokens = []   # a half-prefilled prompt is not a reusable prefix


def _argmax_on_gpu(params) -> bool:
    """Greedy without penalties: the GPU's argmax is the token. Penalties change logits first (host path)."""
    return params.greedy and params.repeat_penalty == 1.0 and params.presence_penalty == 0.0 \
        and params.frequency_penalty == 0.0


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="uploading weights")
