"""The scheduler: ONE thread owns the engine; HTTP handlers talk to it through jobs and asyncio queues.

The worker loop: take cancellations, admit waiting jobs into free slots, call `engine.step()` while any
slot is busy, turn each step's new ids into text (stop strings are matched here, so a matching sequence is
cancelled in the same step and its slot is free at once) and hand the pieces to the job's asyncio queue on
the event loop's thread. Waiting jobs are bounded; a full queue is a 503. An exception inside the engine fails the
affected requests with a 500 and the loop goes on: the worker never dies.

Sleep: with `sleep_idle_seconds`, an idle engine is closed (its device memory freed) and rebuilt by the factory
when the next job arrives; an EngineFactory keeps the Vulkan device and its compiled pipelines across sleeps
(vkmtp/engine/factory.py). Monitoring endpoints read only this object, so they never wake it.

Engine calls (`call`): work on the engine that is not a generation (slot save/restore/erase) runs in the same
thread, between steps, and its result comes back as an awaitable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import logging
import threading
import time
from collections import deque
from copy import copy
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from vkmtp.server import logs
from vkmtp.server.errors import SERVER, UNAVAILABLE, ApiError, bad_request, loading, prompt_too_long
from vkmtp.server.metrics import StatsBook
from vkmtp.server.text import TextStream
from vkmtp.engine.api import Engine, EngineConfig, PromptTooLongError, Request, Sequence, Timings
from vkmtp.engine.token_probs import TokenProbs
from vkmtp.engine.probes import engine_allocated_bytes, release_free_heap

log = logging.getLogger("vkmtp.server")

LOADING, READY, FAILED = "loading", "ready", "failed"
_task_ids = itertools.count(0)


@dataclass
class Chunk:
    """New text (possibly empty while a stop string may be forming) and the ids that produced it."""

    text: str
    ids: list[int]
    probs: list[TokenProbs] | None = None   # one per id, when the request asked for token probabilities


@dataclass
class Outcome:
    """The end of a job: the last text delta plus everything a final response reports."""

    text: str
    ids: list[int]  # ids of the last delta
    content: str  # the whole generated text
    tokens: list[int]  # every generated id kept (up to the stop string)
    stop_type: str  # llama-server: "eos" | "word" | "limit"
    stopping_word: str
    timings: Timings
    n_prompt: int
    n_cached: int
    id_slot: int
    last_probs: list[TokenProbs] | None = None   # token probabilities of `ids` (when asked for)
    probs: list[TokenProbs] | None = None        # token probabilities of `tokens` (when asked for)

    @property
    def finish_reason(self) -> str:
        return "length" if self.stop_type == "limit" else "stop"


@dataclass(eq=False)
class Job:
    """One request's generation, shared by its HTTP handler (event loop) and the worker thread."""

    request: Request
    text: TextStream
    loop: asyncio.AbstractEventLoop
    id_task: int = field(default_factory=lambda: next(_task_ids))
    seq: Sequence | None = None
    kept: list[int] = field(default_factory=list)
    kept_probs: list[TokenProbs] = field(default_factory=list)   # when the request asked for probabilities
    cancelled: bool = False
    finished: bool = False
    time_limit_ms: int = 0  # t_max_predict_ms: stop this long after the first generated token (0: never)
    t_first_token: float | None = None

    def __post_init__(self):
        self._updates: asyncio.Queue = asyncio.Queue()

    def send(self, item: Chunk | Outcome | ApiError) -> None:
        """Called by the worker: queue an update on the job's event loop (no-op if the loop is gone)."""
        if isinstance(item, (Outcome, ApiError)):
            self.finished = True
        try:
            self.loop.call_soon_threadsafe(self._updates.put_nowait, item)
        except RuntimeError:  # the event loop closed (server shutting down)
            pass

    async def updates(self) -> AsyncIterator[Chunk | Outcome]:
        """Chunks, then one Outcome; raises the ApiError if the job failed."""
        while True:
            item = await self._updates.get()
            if isinstance(item, ApiError):
                raise item
            yield item
            if isinstance(item, Outcome):
                return

    async def result(self) -> Outcome:
        async for item in self.updates():
            if isinstance(item, Outcome):
                return item
        raise ApiError(500, "the request ended without a result", SERVER)


class Scheduler:
    """Owns the engine in one worker thread; see the module docstring."""

    def __init__(
        self,
        factory: Callable[[], Engine],
        n_slots: int,
        stats: StatsBook,
        *,
        max_queue: int = 64,
        sleep_idle_seconds: float | None = None,
        on_load_error: Callable[[str], None] | None = None,
    ):
        """on_load_error(message) is called from the worker thread if the first load fails (the CLI exits
        then, as llama-server does); without it the server stays up and /health reports the failure."""
        self.factory = factory
        self.on_load_error = on_load_error
        self.n_slots = n_slots
        self.stats = stats
        self.max_queue = max_queue
        self.sleep_idle_seconds = sleep_idle_seconds
        self.state = LOADING
        self.load_error = ""
        self.sleeping = False
        self.n_sleeps = 0
        self._engine: Engine | None = None
        self.engine_config: EngineConfig | None = None  # the settings the engine resolved at its last load
        self._cv = threading.Condition()
        self._pending: deque[Job] = deque()
        self._cancels: list[Job] = []
        self._active: dict[int, Job] = {}  # seq.id -> job
        self._calls: deque[tuple[Callable[[Engine], object], concurrent.futures.Future]] = deque()
        self._stopping = False
        self._last_activity = time.monotonic()
        self._thread = threading.Thread(target=self._main, name="vkmtp-engine", daemon=True)

    # ---- called from the event loop ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        if self.state == LOADING:
            raise loading()
        if self.state == FAILED:
            raise ApiError(503, f"the model failed to load: {self.load_error}", UNAVAILABLE)
        with self._cv:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", UNAVAILABLE)
            if len(self._pending) + len(self._active) >= self.n_slots + self.max_queue:
                raise ApiError(
                    503,
                    f"server busy: {self.n_slots} slots in use and {len(self._pending)} requests "
                    f"waiting (limit {self.max_queue}); retry later",
                    UNAVAILABLE,
                    headers={"Retry-After": "1"},
                )
            self._pending.append(job)
            self._cv.notify()

    async def call(self, fn: Callable[[Engine], object]):
        """Run fn(engine) in the engine's thread between steps (waking a sleeping engine); its result."""
        if self.state == LOADING:
            raise loading()
        if self.state == FAILED:
            raise ApiError(503, f"the model failed to load: {self.load_error}", UNAVAILABLE)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._stopping:
                raise ApiError(503, "the server is shutting down", UNAVAILABLE)
            self._calls.append((fn, future))
            self._cv.notify()
        return await asyncio.wrap_future(future)

    def _run_calls(self) -> None:
        while True:
            with self._cv:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            if self._engine is None and not self._wake():
                future.set_exception(ApiError(503, "could not wake the model", UNAVAILABLE))
                continue
            self._last_activity = time.monotonic()
            try:
                future.set_result(fn(self._engine))
            except Exception as exc:   # the caller turns it into its answer
                future.set_exception(exc)
            self._report_host_cache()

    def cancel(self, job: Job) -> None:
        """The client went away: stop the job and free its slot (the worker does it before its next step)."""
        with self._cv:
            if job.cancelled or job.finished:
                return
            job.cancelled = True
            self._cancels.append(job)
            self._cv.notify()

    def active_jobs(self) -> dict[int, Job]:
        """slot index -> job, for /slots."""
        with self._cv:
            return {job.seq.slot: job for job in self._active.values() if job.seq is not None}

    # ---- the worker thread ---------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            t0 = time.monotonic()
            self._engine = self.factory()
            logs.log_engine(self._engine, time.monotonic() - t0)
            self.engine_config = self._engine.config
            self.state = READY
            self.stats.engine_loaded(engine_allocated_bytes(self._engine))
        except Exception as exc:  # the server stays up and answers 503 with the reason
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.state = FAILED
            log.debug("loading the model failed", exc_info=True)  # the traceback, for --verbose
            if self.on_load_error is not None:  # `vkmtp serve` stops and prints the reason once
                self.on_load_error(self.load_error)
            else:
                log.error("loading the model failed: %s", self.load_error)
            return
        self._last_activity = time.monotonic()
        while True:
            with self._cv:
                while not (self._stopping or self._pending or self._cancels or self._active or self._calls):
                    timeout = self._time_to_sleep()
                    if timeout is not None and timeout <= 0:
                        break
                    self._cv.wait(timeout)
                if self._stopping:
                    break
                cancels, self._cancels = self._cancels, []
            try:
                self._iterate(cancels)
            except Exception as exc:  # a bug must not kill the worker: fail what was running, go on
                log.exception("engine step failed")
                self._fail_active(ApiError(500, f"the engine failed: {type(exc).__name__}: {exc}", SERVER))
        self._shutdown()

    def _time_to_sleep(self) -> float | None:
        if self.sleep_idle_seconds is None or self._engine is None:
            return None
        return self.sleep_idle_seconds - (time.monotonic() - self._last_activity)

    def _iterate(self, cancels: list[Job]) -> None:
        for job in cancels:
            self._drop(job)
        self._run_calls()
        if not self._pending and not self._active:
            remaining = self._time_to_sleep()
            if remaining is not None and remaining <= 0:
                self._sleep()
            self._update_load()
            return
        self._last_activity = time.monotonic()
        if self._pending and self._engine is None and not self._wake():
            return
        self._admit()
        if self._active:
            n_busy = len(self._active)
            events = self._engine.step()
            self.stats.step_done(n_busy)
            if hasattr(self._engine, "graph_report"):
                self.stats.set_graph(self._engine.graph_report())
            # before any client hears of this step, so what a response reports includes it
            self.stats.set_engine_bytes(engine_allocated_bytes(self._engine))
            self._report_host_cache()
            for event in events:
                job = self._active.get(event.seq.id)
                if job is not None:
                    self._deliver(job, event.new_ids, event.done, event.probs)
        self._update_load()

    def _admit(self) -> None:
        while len(self._active) < self.n_slots:
            job = self._next_admissible()
            if job is None:
                return
            try:
                seq = self._engine.submit(job.request)
            except PromptTooLongError:
                job.send(prompt_too_long(len(job.request.prompt_ids), self._engine.config.n_ctx))
                continue
            except ValueError as exc:
                job.send(bad_request(str(exc)))
                continue
            except Exception as exc:  # refused for another reason: the job must still get an answer
                log.exception("engine.submit failed")
                job.send(ApiError(500, f"the engine failed: {type(exc).__name__}: {exc}", SERVER))
                continue
            job.seq = seq
            with self._cv:
                self._active[seq.id] = job

    def _report_host_cache(self) -> None:
        cache = getattr(self._engine, "host_cache", None)
        if cache is not None:
            self.stats.set_host_cache(cache.nbytes, len(cache.images), cache.n_restored)

    def _next_admissible(self) -> Job | None:
        """The first waiting job that can start now: one that asked for a slot (id_slot) waits for that slot,
        without holding up the jobs behind it."""
        busy = {job.seq.slot for job in self._active.values() if job.seq is not None}
        with self._cv:
            for job in list(self._pending):
                if job.cancelled:
                    self._pending.remove(job)
                elif job.request.slot < 0 or job.request.slot not in busy:
                    self._pending.remove(job)
                    return job
        return None

    def _deliver(self, job: Job, new_ids: list[int], done: bool, probs: list[TokenProbs] | None = None) -> None:
        kept = []
        for token in new_ids:
            kept.append(token)
            if job.text.push(token):
                self._keep(job, kept, probs)
                if not done:
                    self._engine.cancel(job.seq)
                self._finish(job, kept, "word")
                return
        self._keep(job, kept, probs)
        if kept and job.t_first_token is None:
            job.t_first_token = time.monotonic()
        if not done and job.time_limit_ms and job.t_first_token is not None and (
            1e3 * (time.monotonic() - job.t_first_token) >= job.time_limit_ms
        ):
            self._engine.cancel(job.seq)  # t_max_predict_ms ran out
            done = True
        if done:
            self._finish(job, kept, "eos" if job.seq.stop_reason == "eos" else "limit")
        else:
            delta = job.text.take()
            if delta or kept:
                job.send(Chunk(delta, kept, self._probs_of(job, kept)))

    @staticmethod
    def _keep(job: Job, kept: list[int], probs: list[TokenProbs] | None) -> None:
        job.kept.extend(kept)
        if probs is not None:
            job.kept_probs.extend(probs[: len(kept)])

    @staticmethod
    def _probs_of(job: Job, ids: list[int]) -> list[TokenProbs] | None:
        """The token probabilities of the last `ids` kept (None when the request asked for none)."""
        if job.request.probs is None:
            return None
        return job.kept_probs[len(job.kept_probs) - len(ids):] if ids else []

    def _finish(self, job: Job, last_ids: list[int], stop_type: str) -> None:
        seq = job.seq
        job.text.finish()
        timings = copy(seq.timings)
        timings.predicted_n = len(job.kept)
        self._record(job)
        logs.log_request(job.id_task, seq.slot, timings, stop_type)
        job.send(
            Outcome(
                job.text.take(final=True),
                last_ids,
                job.text.text,
                list(job.kept),
                stop_type,
                job.text.stop_word or "",
                timings,
                len(job.request.prompt_ids),
                timings.cache_n,
                seq.slot,
                self._probs_of(job, last_ids),
                list(job.kept_probs) if job.request.probs is not None else None,
            )
        )

    def _record(self, job: Job) -> None:
        """Counts a finished or dropped job, before its client hears of the end: /metrics read after a response
        already shows it."""
        seq = job.seq
        with self._cv:
            self._active.pop(seq.id, None)
            self.stats.set_load(len(self._active), len(self._pending))
        t = seq.timings
        self.stats.request_done(
            t.prompt_n,
            t.prompt_ms,
            len(job.kept),
            t.predicted_ms,
            len(job.request.prompt_ids) + len(seq.generated),
            seq.spec,
            t.cache_n,
        )

    def _drop(self, job: Job) -> None:
        """A cancelled job: out of the queue, or out of its slot."""
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                return
        if job.seq is not None and job.seq.id in self._active:
            self._engine.cancel(job.seq)
            self._record(job)
        job.finished = True

    def _fail_active(self, error: ApiError) -> None:
        for job in list(self._active.values()):
            try:
                self._engine.cancel(job.seq)
            except Exception:
                log.exception("cancelling a failed sequence")
            with self._cv:
                self._active.pop(job.seq.id, None)
            job.send(error)

    def _sleep(self) -> None:
        engine, self._engine = self._engine, None
        engine.close()
        del engine
        gc.collect()
        release_free_heap()   # the freed device's memory goes back to the system, not only to malloc
        self.stats.set_engine_bytes(0)
        self.n_sleeps += 1
        self.sleeping = True
        log.info("idle for %.1f s: engine closed (sleeping)", self.sleep_idle_seconds)

    def _wake(self) -> bool:
        try:
            self._engine = self.factory()
        except Exception as exc:
            log.exception("rebuilding the engine failed")
            error = ApiError(503, f"could not wake the model: {type(exc).__name__}: {exc}", UNAVAILABLE)
            with self._cv:
                waiting, self._pending = list(self._pending), deque()
            for job in waiting:
                job.send(error)
            return False
        self.sleeping = False
        self.stats.engine_loaded(engine_allocated_bytes(self._engine))
        log.info("engine rebuilt (awake)")
        return True

    def _update_load(self) -> None:
        self.stats.set_load(len(self._active), len(self._pending))
        self.stats.set_engine_bytes(engine_allocated_bytes(self._engine))

    def _shutdown(self) -> None:
        error = ApiError(503, "the server is shutting down", UNAVAILABLE)
        with self._cv:
            waiting, self._pending = list(self._pending), deque()
            calls, self._calls = list(self._calls), deque()
        for job in waiting:
            job.send(error)
        for _, future in calls:
            future.set_exception(error)
        if self._engine is not None:
            self._fail_active(error)
            self._engine.close()
            self._engine = None
        close_factory = getattr(self.factory, "close", None)   # an EngineFactory's kept device
        if close_factory is not None:
            close_factory()
