#!/usr/bin/env python3
"""Wall time of one recorded step, replayed: plain decode vs a depth-1 speculative step, per draft vocabulary.

For each --draft-vocab N (0: the whole vocabulary) an engine with MTP at fixed depth 1 prefills a short prompt,
then replays its DecodeGraph and its SpecGraph(1, 1) --reps times each, alternating, and reports the median
ms per submission. spec - decode is what drafting one token costs on top of a plain step (the MTP block,
the draft's LM head over N rows, and verifying one more row). All in one run, one device.

Usage: python tools/bench_spec_steps.py -m MODEL.gguf [--draft-vocab 0 32768] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import git_commit  # noqa: E402

from vkmtp.device import Device  # noqa: E402
from vkmtp.engine.api import EngineConfig, Request  # noqa: E402
from vkmtp.engine.vulkan import VulkanEngine  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--draft-vocab", type=int, nargs="+", default=[0, 32768])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    device = Device(args.device)
    rows = []
    for n in args.draft_vocab:
        spec = SpecConfig(n_max=1, n_min=1, adaptive=False, draft_vocab=n)
        eng = VulkanEngine(args.model, EngineConfig(n_ctx=64, ubatch=8, spec=spec), device=device)
        # 3 tokens: prefill, then a depth-1 step; 2 tokens: the second one's step has no draft budget (decode)
        for n_tokens in (3, 2):
            for _ in eng.generate(Request([1, 2, 3, 4, 5, 6, 7, 8], SamplingParams.greedy_params(),
                                          max_tokens=n_tokens, cache_prompt=False)):
                pass
        graphs = {key[0]: g for key, g in eng._graphs.items() if key[0] in ("decode", "spec")}
        if set(graphs) != {"decode", "spec"}:
            raise SystemExit(f"recorded graphs {sorted(graphs)}: expected a decode and a spec step")
        times = {"decode": [], "spec": []}
        for _ in range(args.reps):
            for name in ("decode", "spec"):
                t0 = time.perf_counter()
                graphs[name].rec.run()
                times[name].append(1e3 * (time.perf_counter() - t0))
        row = {"draft_vocab": n or eng.cfg.n_vocab, "decode_ms": statistics.median(times["decode"]),
               "spec_k1_ms": statistics.median(times["spec"])}
        row["draft_extra_ms"] = row["spec_k1_ms"] - row["decode_ms"]
        rows.append(row)
        eng.close()
    meta = {"model": args.model, "device": device.info.name, "commit": git_commit(), "reps": args.reps}
    device.destroy()
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
