"""The NumPy reference model behind the engine contract: what `--backend reference` and the server tests run.

Each slot owns a trunk state and (with MTP) an MTP state. Admission, the step skeleton, stop rules and
timings are vkmtp/engine/base.py's, shared with the Vulkan engine. A step gives each slot one prefill chunk
of at most `ubatch` prompt tokens, or one decode step: a plain single-token forward, or one step of the
speculative loop of vkmtp/spec/step.py run on the host (vkmtp/ref/generate.py `speculative_step`), with the
accept rule the Vulkan engine runs — so, on the same seed, this engine's tokens are the oracle of the Vulkan
engine's, greedy or sampled. Slots run one after another (the reference has no batched kernels).

Prompt cache: a GDN state cannot be cut back to an earlier position, so a slot remembers whole states: the
state at the end of its last sequence (its live memory) and checkpoints taken after prompt chunks, by the policy
of vkmtp/engine/prompt_cache.py that the Vulkan engine follows too (so both reuse the same tokens). The remaining
prompt tokens are evaluated on top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vkmtp.engine.api import EngineConfig, Sequence
from vkmtp.engine.base import Run, Slot, SlotEngine
from vkmtp.engine.host_cache import HostPromptCache, SlotImage, cache_ram_bytes
from vkmtp.engine.prompt_cache import Checkpoints, next_chunk, plan_reuse
from vkmtp.ops.kv_layout import kv_type
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import mtp_catch_up, speculative_step
from vkmtp.ref.state import DeltaNetState, KVCache, ModelState, MtpState, StateSnapshot
from vkmtp.sampling import Sampler


@dataclass
class _CachedPrefix:
    """Memory after `tokens`: trunk (+ MTP) state, the last token's logits and post-norm hidden."""

    tokens: tuple[int, ...]
    state: StateSnapshot
    mtp: KVCache | None
    logits: np.ndarray  # [n_vocab] predicts the token after `tokens`
    hidden: np.ndarray  # [n_embd]  h of the last token (the MTP head's pending_h)

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + self.hidden.nbytes + _memory_bytes(self.state, self.mtp)


@dataclass(eq=False)
class _Run(Run):
    """The working memory of one sequence in its slot."""

    state: ModelState | None = None
    mtp: MtpState | None = None
    n_prompt_done: int = 0  # prompt tokens in `state`
    logits: np.ndarray | None = None  # [n_vocab] after the last evaluated token
    hidden: np.ndarray | None = None  # [n_embd]


@dataclass(eq=False)
class _Slot(Slot):
    live: _CachedPrefix | None = None                 # memory at the end of the slot's last sequence
    checkpoints: Checkpoints | None = None
    saved: dict[int, _CachedPrefix] | None = None     # checkpoint storage place -> memory

    @property
    def live_tokens(self) -> list[int]:
        return list(self.live.tokens) if self.live is not None else []

    @property
    def cache(self) -> list[_CachedPrefix]:
        return [e for e in [self.live, *(self.saved or {}).values()] if e is not None]


class ReferenceEngine(SlotEngine):
    """The engine contract over `vkmtp.ref.ReferenceModel` (slow, exact: the oracle for the Vulkan engine)."""

    backend = "reference"

    def __init__(self, model: str | os.PathLike | ReferenceModel, config: EngineConfig = EngineConfig()):
        """model: a GGUF path or an already opened ReferenceModel."""
        if config.n_slots < 1 or config.n_ctx < 2 or config.ubatch < 1:
            raise ValueError(
                f"invalid engine config: n_slots={config.n_slots}, n_ctx={config.n_ctx}, "
                f"ubatch={config.ubatch}"
            )
        types = config.cache_types
        for name, flag in ((types.k, "--cache-type-k"), (types.v, "--cache-type-v"),
                           (types.mtp_k, "--cache-type-k-draft"), (types.mtp_v, "--cache-type-v-draft")):
            kv_type(name, flag)
        if types.k != types.v or types.mtp_k != types.mtp_v:
            raise ValueError(f"the reference engine keeps K and V in one type (-ctk {types.k} -ctv {types.v}, "
                             f"-ctkd {types.mtp_k} -ctvd {types.mtp_v}); the Vulkan engine takes them apart")
        self.kv_type = types.k
        # the MTP head's cache: -ctkd (default: the trunk's type, as on the GPU)
        self.mtp_kv_type = types.mtp_k
        self.model = model if isinstance(model, ReferenceModel) else ReferenceModel.from_gguf(model)
        self.config = config
        self.use_mtp = config.spec.enabled and self.model.has_mtp
        if config.ctx_checkpoints < 0:
            raise ValueError(f"--ctx-checkpoints {config.ctx_checkpoints}: must be >= 0")
        self.slots = [_Slot(i, checkpoints=Checkpoints(config.ctx_checkpoints), saved={})
                      for i in range(config.n_slots)]
        self.host_cache = HostPromptCache(cache_ram_bytes(config.cache_ram_mib))
        self.closed = False

    @property
    def n_vocab(self) -> int:
        return self.model.cfg.n_vocab

    # ---- memory --------------------------------------------------------------------------------------------
    def _reusable(self, slot: _Slot, prompt: list[int]) -> int:
        return plan_reuse(slot.live_tokens, slot.checkpoints, prompt).n

    def _open(self, slot: _Slot, seq: Sequence, prompt: list[int], sampler: Sampler, cached: int) -> _Run:
        run = _Run(seq, prompt, sampler, state=self.model.new_state(self.kv_type),
                   mtp=self.model.new_mtp_state(self.mtp_kv_type) if self.use_mtp else None)
        reuse = plan_reuse(slot.live_tokens, slot.checkpoints, prompt) if cached else None
        if reuse is None or reuse.n != cached:
            slot.checkpoints.clear()
            slot.saved = {}
            slot.live = None
            return run
        prefix = slot.live if reuse.place is None else slot.saved[reuse.place]
        run.state.restore(prefix.state)
        if run.mtp is not None:
            run.mtp.restore(prefix.mtp)
        if run.state.n_past > cached:   # the live memory never exceeds `cached`; a checkpoint is exact
            raise AssertionError("a prompt-cache entry holds more tokens than reused")
        run.n_prompt_done = cached
        run.logits, run.hidden = prefix.logits, prefix.hidden
        slot.checkpoints.truncate(cached)
        slot.saved = {i: e for i, e in slot.saved.items() if i in slot.checkpoints.entries.values()}
        slot.live = None
        return run

    # ---- slot images (host-RAM prompt cache, slot files) ----------------------------------------------------
    def _held(self, slot: _Slot) -> int:
        return max([len(slot.live_tokens), *slot.checkpoints.entries])

    def _take_image(self, slot: _Slot) -> SlotImage:
        """The slot's prefixes as named arrays (shared, not copied: a cached prefix is never written)."""
        arrays: dict[str, np.ndarray] = {}
        if slot.live is not None:
            arrays |= _prefix_arrays("live.", slot.live)
        positions = sorted(slot.checkpoints.entries)
        for p in positions:
            arrays |= _prefix_arrays(f"ckpt{p}.", slot.saved[slot.checkpoints.entries[p]])
        return SlotImage(slot.live_tokens, list(slot.checkpoints.tokens), positions, arrays)

    def _load_image(self, slot: _Slot, image: SlotImage) -> None:
        self._erase(slot)
        cfg = self.model.cfg
        if image.tokens:
            slot.live = _prefix_from_arrays(cfg, image.arrays, "live.", image.tokens, self.kv_type, self.mtp_kv_type)
        kept = image.checkpoints[-slot.checkpoints.capacity:] if slot.checkpoints.capacity else []
        for place, p in enumerate(kept):
            slot.checkpoints.entries[p] = place
            slot.saved[place] = _prefix_from_arrays(cfg, image.arrays, f"ckpt{p}.", image.history[:p], self.kv_type,
                                                    self.mtp_kv_type)
        slot.checkpoints.tokens = list(image.history) if kept else []

    def _erase(self, slot: _Slot) -> None:
        slot.live = None
        slot.checkpoints.clear()
        slot.saved = {}

    def _release(self, slot: _Slot, run: _Run, reason: str) -> None:
        n_done = run.n_prompt_done
        if reason == "cancelled" and n_done < len(run.prompt):
            return   # a half-prefilled prompt is not a reusable prefix (its checkpoints stay)
        if run.logits is not None and run.state.n_past > 0:
            tokens = tuple(run.prompt[:n_done] + run.seq.generated)[: run.state.n_past]
            slot.live = self._entry(tokens, run)

    @staticmethod
    def _entry(tokens: tuple[int, ...], run: _Run) -> _CachedPrefix:
        return _CachedPrefix(tokens, run.state.snapshot(), run.mtp.snapshot() if run.mtp is not None else None,
                             run.logits.copy(), run.hidden.copy())

    # ---- stepping ------------------------------------------------------------------------------------------
    def _prefill(self, slot: _Slot) -> int | None:
        run = slot.run
        if run.n_prompt_done < len(run.prompt):
            n = next_chunk(run.n_prompt_done, len(run.prompt), self.config.ubatch,
                           slot.checkpoints.capacity > 0)
            chunk = run.prompt[run.n_prompt_done : run.n_prompt_done + n]
            logits, hidden = self.model.forward(chunk, run.state)
            if run.mtp is not None:  # MTP entry p is built from (x_p, h_{p-1}); h_{-1} = 0
                prev = run.hidden if run.hidden is not None else np.zeros(hidden.shape[1], hidden.dtype)
                mtp_catch_up(self.model, chunk, hidden, prev, run.mtp)
            run.n_prompt_done += len(chunk)
            run.logits, run.hidden = logits[-1], hidden[-1]
            tokens = run.prompt[: run.n_prompt_done]
            place = slot.checkpoints.add(tokens) if run.seq.request.cache_prompt else None
            if place is not None:
                slot.saved = {i: e for i, e in slot.saved.items() if i in slot.checkpoints.entries.values()}
                slot.saved[place] = self._entry(tuple(tokens), run)
            if run.n_prompt_done < len(run.prompt):
                return None
        token = run.sampler.sample(run.logits)
        run.step_probs = self._host_probs(run, [token], [run.logits])
        return token

    def _generate(self, slots: list[_Slot]) -> list[list[int]]:
        if self.use_mtp:   # the reference always drafts n_max (budget permitting): it is the oracle, not tuned
            self._depths = [self._draft_budget(s.run, s.run.state.n_past) for s in slots]
        return [self._speculative_step(s.run) if self.use_mtp else self._decode_step(s.run) for s in slots]

    def _decode_step(self, run: _Run) -> list[int]:
        logits, hidden = self.model.forward([run.id_last], run.state)
        run.logits, run.hidden = logits[-1], hidden[-1]
        token = run.sampler.sample(run.logits)
        run.step_probs = self._host_probs(run, [token], [run.logits])
        return [token]

    def _speculative_step(self, run: _Run) -> list[int]:
        """One step of the speculative loop (vkmtp/spec/step.py) on the host."""
        budget = self._draft_budget(run, run.state.n_past)
        step = speculative_step(self.model, run.state, run.mtp, run.sampler, run.id_last, run.hidden, budget,
                                run.spec, lambda tokens: self._n_taken(run, tokens))
        self._count_drafts(run, step.n_drafted, step.n_accepted, budget)
        run.logits, run.hidden = step.logits, step.pending_h
        run.step_probs = self._host_probs(run, step.tokens, step.rows)
        return step.tokens

    def close(self) -> None:
        self._cancel_all()
        for slot in self.slots:
            slot.live, slot.saved = None, {}
        self.host_cache.clear()
        self.model = None

    # ---- accounting ----------------------------------------------------------------------------------------
    @property
    def allocated_bytes(self) -> int:
        """Bytes of weights (dequantized so far), live states and cached prefixes this engine holds."""
        if self.model is None:
            return 0
        total = sum(a.nbytes for a in getattr(self.model.weights, "_cache", {}).values())
        for slot in self.slots:
            total += sum(entry.nbytes for entry in slot.cache or [])
            if slot.run is not None:
                total += _memory_bytes(slot.run.state, slot.run.mtp.kv if slot.run.mtp else None)
        return total


def _prefix_arrays(name: str, prefix: _CachedPrefix) -> dict[str, np.ndarray]:
    """A cached prefix as named arrays (a slot image's part): KV per attention layer, GDN states, MTP KV, logits."""
    out = {f"{name}logits": prefix.logits, f"{name}hidden": prefix.hidden}
    for layer, cache in prefix.state.kv.items():
        out[f"{name}k{layer}"], out[f"{name}v{layer}"] = cache.k, cache.v
    for layer, rec in prefix.state.recurrent.items():
        out[f"{name}conv{layer}"], out[f"{name}ssm{layer}"] = rec.conv, rec.ssm
    if prefix.mtp is not None:
        out[f"{name}mtp_k"], out[f"{name}mtp_v"] = prefix.mtp.k, prefix.mtp.v
    return out


def _prefix_from_arrays(cfg, arrays: dict[str, np.ndarray], name: str, tokens: list[int], kv_type: str,
                        mtp_kv_type: str) -> _CachedPrefix:
    """The inverse of _prefix_arrays, checked against the model (a slot file may be damaged)."""
    def get(key: str, shape: tuple | None = None) -> np.ndarray:
        a = arrays.get(name + key)
        if a is None or (shape is not None and a.shape != shape):
            raise ValueError(f"the slot image has no {name + key}" + (f" of shape {shape}" if shape else ""))
        return a

    n = len(tokens)
    kv_shape = (n, cfg.n_head_kv, cfg.head_dim)
    quant = kv_type if kv_type == "q8_0" else None
    kv = {i: KVCache(get(f"k{i}", kv_shape), get(f"v{i}", kv_shape), quant) for i in cfg.attention_layers}
    conv_shape = (cfg.ssm_conv_kernel - 1, cfg.ssm_conv_dim)
    ssm_shape = (cfg.ssm_dt_rank, cfg.ssm_head_v_dim, cfg.ssm_d_state)
    rec = {i: DeltaNetState(get(f"conv{i}", conv_shape), get(f"ssm{i}", ssm_shape)) for i in cfg.recurrent_layers}
    mtp = None
    if name + "mtp_k" in arrays:
        mtp = KVCache(get("mtp_k"), get("mtp_v"), mtp_kv_type if mtp_kv_type == "q8_0" else None)
    return _CachedPrefix(tuple(tokens), StateSnapshot(n, kv, rec), mtp, get("logits", (cfg.n_vocab,)),
                         get("hidden", (cfg.n_embd,)))


def _memory_bytes(state: ModelState | StateSnapshot, mtp: KVCache | None) -> int:
    """Bytes of a trunk memory (live or snapshot) and of an MTP cache."""
    arrays = [
        *(c.k for c in state.kv.values()),
        *(c.v for c in state.kv.values()),
        *(s.conv for s in state.recurrent.values()),
        *(s.ssm for s in state.recurrent.values()),
    ]
    if mtp is not None:
        arrays += [mtp.k, mtp.v]
    return sum(a.nbytes for a in arrays)
