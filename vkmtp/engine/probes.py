"""Small memory probes used by the server's /metrics and by the sleep/wake leak test, for any engine.

`engine_allocated_bytes` reads the engine's own accounting: the Vulkan engine's `device.allocated_bytes`
(device buffers it created and has not freed) or an engine-level `allocated_bytes` (the reference engine's
weights, states and cached prefixes). `process_rss_bytes` reads the resident set size from /proc.
`heap_in_use_bytes` and `release_free_heap` ask the C allocator (glibc) what is live and give back what is
free: after a sleeping engine's Vulkan device is destroyed, the driver's freed memory (lavapipe: tens of MiB of
compiled pipelines) otherwise stays in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from vkmtp.engine.api import Engine


def engine_allocated_bytes(engine: Engine | None) -> int:
    """Bytes the engine says it holds; 0 for None (a sleeping server) and for engines that do not count."""
    if engine is None:
        return 0
    devices = getattr(engine, "devices", None)   # a layer split: every stage's device (vkmtp.engine.split)
    if devices:
        return sum(int(d.allocated_bytes) for d in devices)
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
    """The most device bytes the engine's device has held at once (0 where it does not count); a layer split:
    the sum of its devices' peaks."""
    devices = getattr(engine, "devices", None) if engine is not None else None
    if devices:
        return sum(int(d.peak_allocated) for d in devices)
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def heap_in_use_bytes() -> int | None:
    """Bytes the C allocator has handed out and not had back (glibc mallinfo2: small blocks + mmapped ones),
    across all arenas; None where the allocator cannot say (not glibc, or glibc < 2.33)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def release_free_heap() -> bool:
    """Return the C allocator's free pages to the system (glibc malloc_trim); False where there is none."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
