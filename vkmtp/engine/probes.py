"""Small memory probes used by the server's /metrics and by the sleep/wake leak test, for any engine.

`engine_allocated_bytes` reads the engine's own accounting: the Vulkan engine's `device.allocated_bytes`
(device buffers it created and has not freed) or an engine-level `allocated_bytes` (the reference engine's
weights, states and cached prefixes). `process_rss_bytes` reads the resident set size from /proc.
"""

from __future__ import annotations

import os

from vkmtp.engine.api import Engine


def engine_allocated_bytes(engine: Engine | None) -> int:
    """Bytes the engine says it holds; 0 for None (a sleeping server) and for engines that do not count."""
    if engine is None:
        return 0
    device = getattr(engine, "device", None)
    if device is not None and hasattr(device, "allocated_bytes"):
        return int(device.allocated_bytes)
    return int(getattr(engine, "allocated_bytes", 0))


def process_rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (default: this one), from /proc/<pid>/statm (Linux)."""
    path = f"/proc/{pid or 'self'}/statm"
    with open(path, encoding="ascii") as fh:
        resident_pages = int(fh.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (getrusage; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def engine_peak_bytes(engine: Engine | None) -> int:
    """The most device bytes the engine's device has held at once (0 where it does not count)."""
    device = getattr(engine, "device", None) if engine is not None else None
    return int(getattr(device, "peak_allocated", 0) or engine_allocated_bytes(engine))


def memory_report(engine: Engine | None, load_peak_rss: int | None = None) -> dict:
    """Peak host RSS and device bytes, for `vkmtp generate --json`."""
    plan = getattr(engine, "memory_plan", None)
    rss = process_rss_bytes()
    out = {"peak_rss_bytes": max(peak_rss_bytes(), rss), "rss_bytes": rss,
           "device_bytes": engine_allocated_bytes(engine), "device_peak_bytes": engine_peak_bytes(engine),
           "planned_bytes": plan.total if plan is not None else None}
    if load_peak_rss is not None:
        out["load_peak_rss_bytes"] = load_peak_rss
    return out
