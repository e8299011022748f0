#!/usr/bin/env python3
"""Decode speed of a model split by layers over two devices against one device, measured in one run.

Builds the single-device engine and the split engine (`-dev A,B -ts ...`: on a machine with one GPU the same
device opened twice, which measures only what the split adds -- one host wait and one residual-stream copy per
boundary per step, and the extra submissions), warms each up (graphs recorded), then alternates rounds of a
greedy generation on each (rounds interleaved, the order alternating, so that other load on the machine
hits both alike) and reports
the fastest round of each (other load only adds time), their ratio, and whether the tokens are equal. MTP off,
and MTP at a fixed depth (--no-spec-adaptive), each in the same run.

Usage: python tools/bench_split.py [-m MODEL.gguf] [--dev 0,0] [--ts 1,1] [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

from vkmtp.engine.api import EngineConfig, Request
from vkmtp.engine.split import SplitEngine
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.sampling import SamplingParams
from vkmtp.spec import SpecConfig

PROMPT = [5, 17, 99, 3, 250, 11, 42, 7, 8, 9, 10, 12, 13, 14, 15, 16]


def _run(eng, n: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    out = []
    for ev in eng.generate(Request(PROMPT, SamplingParams.greedy_params(), max_tokens=n, stop_ids=frozenset())):
        out += ev.new_ids
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--dev", default="0,0", help="physical devices of the split (default 0,0)")
    ap.add_argument("--ts", default="1,1", help="-ts proportions (default 1,1)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-max", type=int, default=3)
    args = ap.parse_args()
    if args.model is None:
        from vkmtp.demo_model import default_model_path

        args.model = default_model_path()
    devices = tuple(int(d) for d in args.dev.split(","))
    shares = tuple(float(x) for x in args.ts.split(","))
    print(f"model {args.model}, split -dev {args.dev} -ts {args.ts}, {args.tokens} tokens, best of {args.rounds}")
    for mtp in (False, True):
        spec = SpecConfig(enabled=mtp, n_max=args.n_max, adaptive=False)
        base = EngineConfig(n_ctx=512, spec=spec)
        engines = {"one device": VulkanEngine(args.model, base),
                   "split": SplitEngine(args.model, EngineConfig(n_ctx=512, spec=spec, split_devices=devices,
                                                                 tensor_split=shares))}
        try:
            best = {k: float("inf") for k in engines}
            tokens = {}
            for k, eng in engines.items():   # warm-up: every graph recorded
                _run(eng, args.tokens)
            for r in range(args.rounds):   # the order alternates: neither always runs first
                for k, eng in (list(engines.items()) if r % 2 == 0 else list(engines.items())[::-1]):
                    seconds, out = _run(eng, args.tokens)
                    best[k] = min(best[k], seconds)
                    tokens[k] = out
            split = engines["split"]
            layout = "; ".join(st.layers.describe() for st in split.stages)
            per_step = split.boundary_bytes
        finally:
            for eng in engines.values():
                eng.close()
        label = f"MTP n-max {args.n_max}" if mtp else "no MTP"
        one, two = best["one device"], best["split"]
        print(f"{label:>12}: one device {args.tokens / one:7.1f} tok/s, split ({layout}) "
              f"{args.tokens / two:7.1f} tok/s, ratio split/one {one / two:.3f}, tokens equal "
              f"{tokens['one device'] == tokens['split']}, boundary bytes copied in all {per_step}")


if __name__ == "__main__":
    main()
