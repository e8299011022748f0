"""Prometheus metrics under llama-server's names (`llamacpp:*`), plus the device memory the engine holds.

The scheduler thread updates `ServerStats` when a request finishes and after every engine step (as
llama-server does on slot release and per decode); `/metrics` renders a consistent copy taken under the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vkmtp.spec import SpecStats


@dataclass
class ServerStats:
    prompt_tokens: int = 0
    prompt_tokens_cached: int = 0   # prompt tokens taken from a slot's cached memory instead of evaluated
    prompt_seconds: float = 0.0
    tokens_predicted: int = 0
    tokens_predicted_seconds: float = 0.0
    n_decode: int = 0  # engine steps
    n_busy_slots_total: int = 0  # busy slots summed over engine steps
    n_tokens_max: int = 0  # largest context use seen (prompt + generated)
    requests_processing: int = 0
    requests_deferred: int = 0
    engine_bytes: int = 0
    engine_peak_bytes: int = 0  # the most the engine held since its last load or wake
    host_cache_bytes: int = 0   # slot images in the host-RAM prompt cache (--cache-ram)
    host_cache_images: int = 0
    host_cache_restores: int = 0   # images given back to a slot
    spec: SpecStats = field(default_factory=SpecStats)
    graph: dict = field(default_factory=dict)  # the engine's recorded-step counts (VulkanEngine.graph_report)


class StatsBook:
    """Thread-safe holder of the counters."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stats = ServerStats()

    def request_done(
        self,
        prompt_n: int,
        prompt_ms: float,
        predicted_n: int,
        predicted_ms: float,
        n_context: int,
        spec: SpecStats,
        cache_n: int = 0,
    ) -> None:
        with self._lock:
            s = self._stats
            s.prompt_tokens += prompt_n
            s.prompt_tokens_cached += cache_n
            s.prompt_seconds += prompt_ms / 1e3
            s.tokens_predicted += predicted_n
            s.tokens_predicted_seconds += predicted_ms / 1e3
            s.n_tokens_max = max(s.n_tokens_max, n_context)
            s.spec.merge(spec)

    def step_done(self, n_busy: int) -> None:
        with self._lock:
            self._stats.n_decode += 1
            self._stats.n_busy_slots_total += n_busy

    def set_graph(self, graph: dict) -> None:
        with self._lock:
            self._stats.graph = graph

    def set_load(self, processing: int, deferred: int) -> None:
        with self._lock:
            self._stats.requests_processing = processing
            self._stats.requests_deferred = deferred

    def set_engine_bytes(self, n_bytes: int) -> None:
        with self._lock:
            self._stats.engine_bytes = n_bytes
            self._stats.engine_peak_bytes = max(self._stats.engine_peak_bytes, n_bytes)

    def set_host_cache(self, n_bytes: int, n_images: int, n_restores: int) -> None:
        with self._lock:
            s = self._stats
            s.host_cache_bytes, s.host_cache_images, s.host_cache_restores = n_bytes, n_images, n_restores

    def engine_loaded(self, n_bytes: int) -> None:
        """A (re)built engine starts a new peak. The peak is kept while the engine sleeps, so what one awake
        period held can be read after it, however soon the engine fell asleep again."""
        with self._lock:
            self._stats.engine_bytes = n_bytes
            self._stats.engine_peak_bytes = n_bytes

    def snapshot(self) -> ServerStats:
        with self._lock:
            s = self._stats
            spec = SpecStats()
            spec.merge(s.spec)
            return replace(s, spec=spec, graph={k: dict(v) for k, v in s.graph.items()})


class _Collector:
    def __init__(self, book: StatsBook):
        self.book = book

    def collect(self):
        s = self.book.snapshot()
        counters = [
            ("prompt_tokens", "Number of prompt tokens processed.", s.prompt_tokens),
            ("prompt_seconds", "Prompt process time.", s.prompt_seconds),
            ("tokens_predicted", "Number of generation tokens processed.", s.tokens_predicted),
            ("tokens_predicted_seconds", "Predict process time.", s.tokens_predicted_seconds),
            ("n_decode", "Number of engine steps (llama_decode calls).", s.n_decode),
            ("spec_decode_num_draft_tokens", "Draft tokens proposed.", s.spec.draft_n),
            ("spec_decode_num_accepted_tokens", "Draft tokens accepted.", s.spec.draft_n_accepted),
            ("spec_decode_num_drafts", "Verification steps that carried a draft.", s.spec.steps),
        ]
        vk = [   # over ALL generation steps, plain ones (adaptive depth 0) included
            ("prompt_tokens_cached", "Prompt tokens reused from the prompt cache (not evaluated).",
             s.prompt_tokens_cached),
            ("spec_generation_steps", "Generation steps of finished requests (plain and drafting).", s.spec.gen_steps),
            ("spec_generation_tokens", "Tokens those generation steps gave.", s.spec.gen_tokens),
            ("spec_draft_steps", "Generation steps that drafted (depth > 0).", s.spec.draft_steps),
            ("spec_draft_verify_seconds", "Wall time of the steps that drafted (draft and verify in one "
                                          "submission).", s.spec.draft_verify_ms / 1e3),
            ("spec_plain_decode_seconds", "Wall time of the plain generation steps.", s.spec.decode_ms / 1e3),
        ]
        for name, doc, value in vk:
            yield CounterMetricFamily(f"vkmtp:{name}", doc, value=value)
        for name, doc, value in counters:
            yield CounterMetricFamily(f"llamacpp:{name}", doc, value=value)
        per_pos = CounterMetricFamily(
            "llamacpp:spec_decode_num_accepted_tokens_per_pos",
            "Draft tokens accepted at each draft position.",
            labels=["position"],
        )
        for pos in range(len(s.spec.drafted_per_pos)):
            accepted = s.spec.accepted_per_pos[pos] if pos < len(s.spec.accepted_per_pos) else 0
            per_pos.add_metric([str(pos)], accepted)
        yield per_pos
        gauges = [
            (
                "prompt_tokens_seconds",
                "Average prompt throughput in tokens/s.",
                s.prompt_tokens / s.prompt_seconds if s.prompt_seconds else 0.0,
            ),
            (
                "predicted_tokens_seconds",
                "Average generation throughput in tokens/s.",
                s.tokens_predicted / s.tokens_predicted_seconds if s.tokens_predicted_seconds else 0.0,
            ),
            ("n_tokens_max", "Largest observed n_tokens (prompt + generated).", s.n_tokens_max),
            ("requests_processing", "Number of requests processing.", s.requests_processing),
            ("requests_deferred", "Number of requests deferred.", s.requests_deferred),
            (
                "n_busy_slots_per_decode",
                "Average number of busy slots per engine step.",
                s.n_busy_slots_total / s.n_decode if s.n_decode else 0.0,
            ),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"llamacpp:{name}", doc, value=value)
        for name, doc, field_name in (
                ("graph_dispatches", "Compute dispatches of the last replayed step of each kind.", "dispatches"),
                ("graph_barriers", "Memory barriers of the last replayed step of each kind.", "barriers"),
                ("graph_submissions", "Queue submissions of the last replayed step of each kind.", "submissions")):
            family = GaugeMetricFamily(f"vkmtp:{name}", doc, labels=["step"])
            for kind, counts in sorted(s.graph.items()):
                family.add_metric([kind], counts[field_name])
            yield family
        spec_graph = s.graph.get("speculative", {})
        yield GaugeMetricFamily("vkmtp:spec_state_bytes_per_step",
                                "Recurrent-state bytes written per speculative step (mean).",
                                value=spec_graph.get("state_bytes_written_per_step", 0.0))
        yield GaugeMetricFamily("vkmtp:spec_tokens_per_step", "Tokens per generation step over all steps.",
                                value=s.spec.tokens_per_step or 0.0)
        yield GaugeMetricFamily(
            "vkmtp:engine_allocated_bytes",
            "Memory the engine holds (device memory for Vulkan; 0 while sleeping).",
            value=s.engine_bytes,
        )
        yield GaugeMetricFamily(
            "vkmtp:engine_peak_bytes",
            "The most memory the engine held since it was last loaded or woken (kept while sleeping).",
            value=s.engine_peak_bytes,
        )
        yield GaugeMetricFamily("vkmtp:prompt_cache_ram_bytes",
                                "Bytes of slot images in the host-RAM prompt cache (--cache-ram).",
                                value=s.host_cache_bytes)
        yield GaugeMetricFamily("vkmtp:prompt_cache_ram_images", "Slot images in the host-RAM prompt cache.",
                                value=s.host_cache_images)
        yield CounterMetricFamily("vkmtp:prompt_cache_ram_restores", "Slot images the host-RAM prompt cache gave "
                                  "back to a slot.", value=s.host_cache_restores)
        from vkmtp.engine.probes import peak_rss_bytes, process_rss_bytes

        rss = process_rss_bytes()
        yield GaugeMetricFamily("vkmtp:process_rss_bytes", "Resident set size of the server process.", value=rss)
        yield GaugeMetricFamily("vkmtp:process_peak_rss_bytes",
                                "The largest resident set size the server process has had.",
                                value=max(rss, peak_rss_bytes()))


class Metrics:
    """One registry per server (tests run several servers in one process)."""

    def __init__(self, book: StatsBook):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(book))

    def render(self) -> bytes:
        return generate_latest(self.registry)
