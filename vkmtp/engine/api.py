"""What an engine offers the CLI and the server, whatever runs the model (Vulkan or the NumPy reference).

An engine owns the device (or the reference model) and `n_slots` sequence slots. The caller submits requests
and calls `step()` repeatedly; each call advances every active sequence by one prefill chunk or one decode /
speculative step — batched across slots where the backend can — and reports the new tokens. One thread owns
an engine; the server runs it in its scheduler thread and nowhere else.
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator

from vkmtp.constrain.sampler import LogitShape
from vkmtp.engine.token_probs import ProbsRequest, TokenProbs
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig, SpecOverride, SpecStats


class PromptTooLongError(ValueError):
    """The prompt (plus at least one generated token) does not fit the context."""


class NoFreeSlotError(RuntimeError):
    """Every slot is busy; the caller queues the request."""


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 4096            # -c / --ctx-size, per slot
    n_slots: int = 1             # -np / --parallel
    ubatch: int = 256            # -ub: prefill chunk
    kv_type: str = "f16"         # --cache-type-k (f16 | q8_0)
    device: int | str | None = None
    spec: SpecConfig = field(default_factory=SpecConfig)
    kv_type_v: str | None = None         # --cache-type-v (None: kv_type)
    draft_kv_type_k: str | None = None   # --cache-type-k-draft: the MTP head's K cache (None: the trunk's K type)
    draft_kv_type_v: str | None = None   # --cache-type-v-draft (None: the trunk's V type)
    fit: bool = True                     # --fit on|off: shrink the context to the device when it was not fixed
    fit_margin_mib: int | None = None    # --fit-target / --fit-margin: MiB of the budget left free (None: default)
    ctx_fixed: bool = True               # -c was given (n_ctx > 0): --fit only checks; n_ctx 0: largest that fits
    max_submit_ms: float | None = None   # --max-submit-ms: longest queue submission (None: the device's default)
    ctx_checkpoints: int = 8             # --ctx-checkpoints (DEFAULT_CTX_CHECKPOINTS)
    slot_prompt_similarity: float = 0.1  # --slot-prompt-similarity: reused fraction that picks a slot (0: LRU)
    cache_ram_mib: int = 8192            # --cache-ram: host-RAM prompt cache in MiB (-1: no limit, 0: off)
    # -ot / --cpu-moe / --n-cpu-moe as vkmtp.graph.tensor_overrides.TensorOverride, in llama.cpp's order;
    # empty: every weight on the device, unless --fit moves expert layers to host memory
    tensor_overrides: tuple = ()
    # -dev A,B (--split-mode layer): the physical device of each stage of a layer split, in order (a device
    # listed twice is opened twice); empty: one device (`device`). tensor_split: -ts proportions (None: free memory)
    split_devices: tuple = ()
    tensor_split: tuple | None = None

    @property
    def cache_types(self):
        from vkmtp.graph.memory_plan import CacheTypes

        return CacheTypes(self.kv_type, self.kv_type_v or self.kv_type, self.draft_kv_type_k,
                          self.draft_kv_type_v)


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int = 256        # n_predict; -1 = until the context is full
    stop_ids: frozenset[int] = frozenset()   # end-of-generation ids (empty with ignore_eos)
    cache_prompt: bool = True    # reuse the slot's cached prefix (llama-server's cache_prompt)
    slot: int = -1               # run in this slot (llama-server's id_slot); -1: the engine chooses
    spec: SpecOverride | None = None   # the request's speculative.n_max / n_min / p_min; None: the engine's
    shape: LogitShape | None = None    # grammar and logit bias (vkmtp.constrain.sampler); None: raw logits
    probs: ProbsRequest | None = None  # token probabilities of each generated token (None: none)
    id: str = ""


@dataclass
class Timings:
    """llama-server's `timings` object (draft fields only when drafting happened)."""

    cache_n: int = 0
    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0
    draft_n: int = 0
    draft_n_accepted: int = 0

    def to_json(self) -> dict:
        out = {
            "cache_n": self.cache_n, "prompt_n": self.prompt_n, "prompt_ms": self.prompt_ms,
            "prompt_per_token_ms": self.prompt_ms / self.prompt_n if self.prompt_n else 0.0,
            "prompt_per_second": 1e3 * self.prompt_n / self.prompt_ms if self.prompt_ms else 0.0,
            "predicted_n": self.predicted_n, "predicted_ms": self.predicted_ms,
            "predicted_per_token_ms": self.predicted_ms / self.predicted_n if self.predicted_n else 0.0,
            "predicted_per_second": 1e3 * self.predicted_n / self.predicted_ms if self.predicted_ms else 0.0,
        }
        if self.draft_n > 0:
            out["draft_n"] = self.draft_n
            out["draft_n_accepted"] = self.draft_n_accepted
        return out


_ids = itertools.count(1)


@dataclass(eq=False)
class Sequence:
    """One request in a slot: what it generated so far and how it went."""

    request: Request
    slot: int
    id: int = field(default_factory=lambda: next(_ids))
    generated: list[int] = field(default_factory=list)
    probs: list[TokenProbs] = field(default_factory=list)   # one per generated token when the request asks
    timings: Timings = field(default_factory=Timings)
    spec: SpecStats = field(default_factory=SpecStats)
    done: bool = False
    stop_reason: str | None = None    # "eos" | "limit" | "context" | "cancelled"
    t_start: float = field(default_factory=time.perf_counter)


@dataclass
class Event:
    seq: Sequence
    new_ids: list[int]
    done: bool
    probs: list[TokenProbs] | None = None   # one per new id, when the request asked for probabilities


class Engine(ABC):
    """The stepping contract; vkmtp.engine.base.SlotEngine implements it for both engines."""

    config: EngineConfig

    @property
    @abstractmethod
    def n_vocab(self) -> int: ...

    @abstractmethod
    def submit(self, request: Request) -> Sequence:
        """Admit a request into a free slot (reusing its cached prefix where it matches).
        Raises PromptTooLongError, NoFreeSlotError, ValueError (bad token ids)."""

    @abstractmethod
    def step(self) -> list[Event]:
        """Advance every active sequence once; finished sequences free their slot."""

    @abstractmethod
    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence now (client went away, stop string matched); its slot is free at once."""

    @abstractmethod
    def has_work(self) -> bool: ...

    def generate(self, request: Request) -> Iterator[Event]:
        """Submit one request and step until it is done (the CLI's path)."""
        seq = self.submit(request)
        while not seq.done:
            for ev in self.step():
                if ev.seq is seq:
                    yield ev

    def close(self) -> None:
        """Free everything the engine holds (device memory, pipelines)."""
