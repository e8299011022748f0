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
