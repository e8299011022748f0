#!/usr/bin/env python3
"""Physical limits of a Vulkan device as vkmtp sees it through Kompute: the numbers speed is stated against.

Measures (1) memory read bandwidth of a compute shader (vkmtp.tuning.timing: GPU timestamps where trusted), (2) the
cost of one dispatch inside a recorded sequence, (3) one submit-and-wait round trip. Prints a table, or JSON with --json.
Usage: python tools/bench_device.py [--device N] [--mib 1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from vkmtp.tuning.timing import read_bandwidth
from vkmtp.device import Device, ShaderKey

SCALE_ADD = ShaderKey.make("scale_add.comp")


def dispatch_cost(dev: Device, n: int = 1000) -> dict:
    buf = dev.buffer(64 * 4 * 2, "device", "bench-dispatch")
    a, b = buf.view(0, 256), buf.view(256, 256)

    def record(count: int):
        rec = dev.recorder()
        for _ in range(count):
            rec.dispatch(SCALE_ADD, [buf, buf], (1, 1, 1), push=[0, 64, 64, 1.0, 1.0], spec=[64],
                         reads=[a], writes=[b])  # same output each time: ordered by barriers, as a model is
        rec.finish()
        return rec

    small, big = record(1), record(n)
    small.run()
    big.run()
    times = {}
    for name, rec in (("one", small), ("many", big)):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            rec.run()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    buf.destroy()
    return {"dispatches": n, "us_per_dispatch": (times["many"] - times["one"]) / (n - 1) * 1e6}


def round_trip(dev: Device, n: int = 200) -> dict:
    buf = dev.buffer(256, "host", "bench-rt")
    rec = dev.recorder()
    rec.dispatch(SCALE_ADD, [buf, buf], (1, 1, 1), push=[0, 32, 32, 1.0, 1.0], spec=[32],
                 reads=[buf.view(0, 128)], writes=[buf.view(128, 128)])
    rec.finish()
    rec.run()
    t0 = time.perf_counter()
    for _ in range(n):
        rec.run()
    per = (time.perf_counter() - t0) / n
    buf.destroy()
    return {"submits": n, "us_per_submit_and_wait": per * 1e6}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        return ""


def median_ms(fn, reps: int) -> float:
    """Median host wall time of `reps` calls of fn, in ms (the other tools' host-side timings use it too)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(statistics.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--mib", type=int, default=1024, help="bytes read per pass (capped by the device)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dev = Device(args.device)
    cap = min(dev.info.max_storage_buffer_range, args.mib << 20, dev.info.available_bytes // 4)
    result = {
        "device": dev.info.name, "driver": f"{dev.info.driver_name} {dev.info.driver_info}".strip(),
        "subgroup_size": dev.info.subgroup_size, "host": platform.node(), "commit": git_commit(),
        "read": read_bandwidth(dev, cap), "dispatch": dispatch_cost(dev), "round_trip": round_trip(dev),
    }
    dev.destroy()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    print(f"device      {r['device']} ({r['driver']}), subgroup {r['subgroup_size']}, commit {r['commit']}")
    rd = r["read"]
    how = "GPU timestamps" if rd["clock"] == "gpu" else "host clock (timestamps not trusted)"
    print(f"read        {rd['gb_per_s']:.1f} GB/s  (5 passes per submission, fastest of 2, {how}, "
          f"{rd['bytes'] >> 20} MiB per pass)")
    print(f"dispatch    {r['dispatch']['us_per_dispatch']:.2f} us per dependent dispatch in a recorded sequence")
    print(f"round trip  {r['round_trip']['us_per_submit_and_wait']:.1f} us per submit-and-wait")


if __name__ == "__main__":
    main()
