"""Timing on the device, shared by `vkmtp tune`, tools/bench_device.py and tools/bench_kernels.py.

GPU timestamps are used only where they can be trusted: when the span they report covers most of the host's
wall time for the same submission. lavapipe writes all of a submission's timestamps at once, which would
report absurd speeds; there (and on any device without timestamp queries) the host clock is used instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from vkmtp.device import Device, Recorder, ShaderKey, View

READ = ShaderKey.make("bench_read.comp")
ALIGN = 256
TRUST_FRACTION = 0.5   # GPU span / host wall time below this: the timestamps are not real


@dataclass(frozen=True)
class Timing:
    seconds: float   # per repetition, fastest run
    clock: str       # "gpu" (timestamps) or "host" (wall clock around the submission)


def timestamps_trusted(gpu_span_ns: float, wall_s: float) -> bool:
    return gpu_span_ns > TRUST_FRACTION * wall_s * 1e9


def time_recorded(device: Device, record, reps: int, runs: int = 3) -> Timing:
    """Seconds per repetition of `record(rec, i)`, recorded for i = 0..reps-1 into one submission that runs
    `runs` times after a warm-up (pipeline builds, first touch); the fastest run counts. Repetitions that
    write distinct outputs (by i) run without barriers between them, as independent work does."""
    probe = device.recorder()
    record(probe, 0)
    ops_per_rep = len(probe.labels)
    probe.destroy()
    n_ts = reps * (ops_per_rep + 1) + 4 if device.info.timestamps else 0
    rec = device.recorder(timestamps=n_ts)
    for i in range(reps):
        record(rec, i)
    rec.run()
    best_gpu, best_host, trusted = float("inf"), float("inf"), bool(n_ts)
    for _ in range(runs):
        t0 = time.perf_counter()
        rec.run()
        wall = time.perf_counter() - t0
        best_host = min(best_host, wall / reps)
        if n_ts:
            ts = rec.timestamps_ns()
            span = float(ts[len(rec.labels)] - ts[0])
            trusted = trusted and timestamps_trusted(span, wall)
            best_gpu = min(best_gpu, span * 1e-9 / reps)
    rec.destroy()
    return Timing(best_gpu, "gpu") if trusted else Timing(best_host, "host")


class Operands:
    """Named arrays (uploaded) and empty regions (int byte sizes) in one device buffer."""

    def __init__(self, device: Device, operands: dict, name: str = "bench-operands"):
        self.device = device
        self.offsets: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        total = 0
        for key, spec in operands.items():
            nbytes = spec if isinstance(spec, int) else np.asarray(spec).nbytes
            total = -(-total // ALIGN) * ALIGN
            self.offsets[key], self.sizes[key] = total, -(-max(nbytes, 4) // 4) * 4
            total += self.sizes[key]
        self.buffer = device.buffer(total, "device", name)
        for key, spec in operands.items():
            if not isinstance(spec, int):
                raw = np.ascontiguousarray(spec).tobytes().ljust(self.sizes[key], b"\0")
                device.upload(self.view(key), np.frombuffer(raw, np.uint8))

    def view(self, key: str) -> View:
        return self.buffer.view(self.offsets[key], self.sizes[key])

    def read(self, key: str, dtype=np.float32) -> np.ndarray:
        return self.device.read(self.view(key), dtype)

    def upload(self, key: str, array: np.ndarray) -> None:
        self.device.upload(self.view(key), np.ascontiguousarray(array))

    def destroy(self) -> None:
        self.buffer.destroy()


def read_bandwidth(dev: Device, nbytes: int, repeats: int = 5) -> dict:
    """Bytes per second a plain streaming-read shader reaches: the ceiling kernels are measured against."""
    nbytes -= nbytes % 16
    data = dev.buffer(nbytes, "device", "bench-data")
    block = 256
    groups = min(dev.info.max_workgroup_count[0], max(1, nbytes // 16 // block // 16))
    out = dev.buffer(groups * 4, "device", "bench-out")
    dev.upload(data.view(), np.random.default_rng(0).integers(0, 2**32, nbytes // 4, dtype=np.uint32))

    def record(rec: Recorder, _: int) -> None:
        rec.dispatch(READ, [data, out], (groups, 1, 1), push=[nbytes // 16], spec=[block],
                     writes=[out.view()])

    timing = time_recorded(dev, record, repeats, runs=2)
    data.destroy()
    out.destroy()
    return {"bytes": nbytes, "best_ns": timing.seconds * 1e9, "gb_per_s": nbytes / timing.seconds / 1e9,
            "clock": timing.clock}
