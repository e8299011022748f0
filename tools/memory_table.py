#!/usr/bin/env python3
"""Planned vs allocated device bytes and peak host RSS over models x contexts x slots (the numbers of `vkmtp
generate --json`'s "memory"), printed as the markdown table of docs/PERFORMANCE.md.

    .venv/bin/python tools/memory_table.py -m models/vkmtp-demo-qwen35-mtp-5M-Q8_0.gguf syn-0.8b.gguf \\
        --contexts 4096 32768 262144 --slots 1 4

Each cell is its own process (one after the other: the peak RSS is that run's alone) that loads the engine with
-c N per slot and -np S slots (`vkmtp generate` runs one slot), generates a few greedy tokens from a short prompt
with the default settings otherwise (MTP on, f16 KV) and reports vkmtp.engine.probes.memory_report, what
`vkmtp generate --json` prints. `vkmtp info` is asked
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


def measure(model: str, n_ctx: int, n_slots: int, prompt: str, n_predict: int) -> dict:
    """One cell, in this process: load, generate, report."""
    from vkmtp.engine.api import EngineConfig, Request
    from vkmtp.engine.factory import load_engine
    from vkmtp.engine.probes import memory_report, peak_rss_bytes
    from vkmtp.gguf import open_gguf
    from vkmtp.sampling import SamplingParams
    from vkmtp.text.tokenizer import Tokenizer

    ids = Tokenizer.from_gguf(open_gguf(model)).encode(prompt, add_special=True)
    engine = load_engine(model, EngineConfig(n_ctx=n_ctx, n_slots=n_slots))
    try:
        load_rss = peak_rss_bytes()
        for _ in engine.generate(Request(ids, SamplingParams.greedy_params(), max_tokens=n_predict)):
            pass
        mem = memory_report(engine, load_rss)
        return {"n_ctx": engine.config.n_ctx, "planned": mem["planned_bytes"], "allocated": mem["device_bytes"],
                "peak_rss": mem["peak_rss_bytes"], "load_peak_rss": mem["load_peak_rss_bytes"]}
    finally:
        engine.close()


def run(model: str, n_ctx: int, n_slots: int, prompt: str, n_predict: int) -> dict:
    cmd = [sys.executable, __file__, "--one", model, str(n_ctx), str(n_slots), "-p", prompt, "-n", str(n_predict)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {**json.loads(done.stdout.splitlines()[-1]), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--models", nargs="+", required=True)
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768, 262144])
    p.add_argument("--slots", type=int, nargs="+", default=[1, 4])
    p.add_argument("-p", "--prompt", default="The quick brown fox jumps over the lazy dog.")
    p.add_argument("-n", "--n-predict", type=int, default=4)
    p.add_argument("--max-gib", type=float, default=8.0, help="skip runs whose plan is larger (RSS on UMA)")
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--one":   # one cell (a child process of this tool)
        one = argparse.ArgumentParser()
        one.add_argument("model")
        one.add_argument("n_ctx", type=int)
        one.add_argument("n_slots", type=int)
        one.add_argument("-p", "--prompt")
        one.add_argument("-n", "--n-predict", type=int)
        a = one.parse_args(sys.argv[2:])
        print(json.dumps(measure(a.model, a.n_ctx, a.n_slots, a.prompt, a.n_predict)))
        return 0
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
                r = run(model, n_ctx, n_slots, args.prompt, args.n_predict)
                print(f"| {name} | {r['n_ctx']} | {n_slots} | {r['planned']:,} | {r['allocated']:,} | "
                      f"{'yes' if r['planned'] == r['allocated'] else 'NO'} | {r['peak_rss'] / MiB:.1f} MiB | "
                      f"{r['seconds']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
