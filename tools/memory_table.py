#!/usr/bin/env python3
"""Planned vs allocated device bytes and peak host RSS over models x contexts x slots, as `vkmtp generate --json`
reports them, printed as the markdown table of docs/PERFORMANCE.md.

    .venv/bin/python tools/memory_table.py -m models/vkmtp-demo-qwen35-mtp-5M-Q8_0.gguf syn-0.8b.gguf \\
        --contexts 4096 32768 262144 --slots 1 4

Each cell is its own `vkmtp generate` process (one after the other: the peak RSS is that run's alone) with a
short prompt, a few greedy tokens and the default settings otherwise (MTP on, f16 KV). `vkmtp info` is asked
first whether the settings fit this device; a run that does not fit, or whose plan is above --max-gib (a shared
machine's RAM is not all ours on a UMA/CPU device), is listed with its plan and not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MiB = 2**20


def plan_bytes(vkmtp: str, model: str, n_ctx: int, n_slots: int) -> tuple[int | None, bool]:
    """The memory plan's total and whether it fits, from `vkmtp info` (before anything is allocated)."""
    out = subprocess.run([vkmtp, "info", model, "-c", str(n_ctx), "-np", str(n_slots)], capture_output=True,
                         text=True).stdout
    total, fits = None, "does not fit" not in out
    for line in out.splitlines():
        if line.strip().startswith("total"):
            value, unit = line.split()[-2:]
            total = int(float(value) * {"GiB": 2**30, "MiB": MiB}.get(unit, 1))
    return total, fits


def run(vkmtp: str, model: str, n_ctx: int, n_slots: int, prompt: str, n_predict: int) -> dict:
    cmd = [vkmtp, "generate", "-m", model, "-p", prompt, "-n", str(n_predict), "--temp", "0", "--ignore-eos",
           "-c", str(n_ctx), "-np", str(n_slots), "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    got = json.loads(done.stdout)
    mem = got["memory"]
    return {"n_ctx": got["n_ctx"], "planned": mem["planned_bytes"], "allocated": mem["device_bytes"],
            "peak_rss": mem["peak_rss_bytes"], "load_peak_rss": mem.get("load_peak_rss_bytes"),
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--models", nargs="+", required=True)
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768, 262144])
    p.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    p.add_argument("-p", "--prompt", default="The quick brown fox jumps over the lazy dog.")
    p.add_argument("-n", "--n-predict", type=int, default=4)
    p.add_argument("--max-gib", type=float, default=8.0, help="skip runs whose plan is larger (RSS on UMA)")
    args = p.parse_args(argv)
    vkmtp = os.path.join(os.path.dirname(sys.executable), "vkmtp")
    print("| model | -c | -np | planned bytes | allocated bytes | equal | peak RSS | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models:
        name = os.path.basename(model)
        for n_ctx in args.contexts:
            for n_slots in args.slots:
                total, fits = plan_bytes(vkmtp, model, n_ctx, n_slots)
                if not fits or total is None or total > args.max_gib * 2**30:
                    why = "does not fit" if not fits else f"plan above --max-gib {args.max_gib}"
                    shown = f"{total / 2**30:.2f} GiB (vkmtp info)" if total else "?"
                    print(f"| {name} | {n_ctx} | {n_slots} | {shown} | not run: {why} | - | - | - |", flush=True)
                    continue
                r = run(vkmtp, model, n_ctx, n_slots, args.prompt, args.n_predict)
                print(f"| {name} | {r['n_ctx']} | {n_slots} | {r['planned']:,} | {r['allocated']:,} | "
                      f"{'yes' if r['planned'] == r['allocated'] else 'NO'} | {r['peak_rss'] / MiB:.1f} MiB | "
                      f"{r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
