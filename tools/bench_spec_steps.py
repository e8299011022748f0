#!/usr/bin/env python3
"""Wall time of one recorded step, replayed: plain decode vs a depth-1 speculative step, per draft vocabulary.

For each --draft-vocab N (0: the whole vocabulary) an engine with MTP at fixed depth 1 prefills a short prompt,
then replays its DecodeGraph and its SpecGraph(1, 1) --reps times each, alternating, and reports the median
ms per submission. spec - decode is what drafting one token costs on top of a plain step (the MTP block,
the draft's LM head over N rows, and verifying one more row). All in one run, one device.

--plain: also the plain decode step recorded without the MTP head's bookkeeping (DecodeGraph with mtp=False,
on the same engine's buffers), replayed in turn with the others: what the loaded head adds to a plain step (the
adaptive default at depth 0), with both graphs' dispatch and barrier counts; and the catch-up over a full lag
ring (MtpLagGraph: the MTP head's KV rows of the positions the plain steps skipped, once per ring of plain steps),
as ms per plain step it serves.

Usage: python tools/bench_spec_steps.py -m MODEL.gguf [--draft-vocab 0 32768] [--reps 5] [--plain]
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
from vkmtp.graph.steps import DecodeGraph, MtpLagGraph  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--draft-vocab", type=int, nargs="+", default=[0, 32768])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--plain", action="store_true",
                    help="also replay the decode step recorded without the MTP head's bookkeeping (what the loaded "
                    "head adds to a plain step)")
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
        if args.plain:   # the same step without the pending hidden / lag ring bookkeeping
            graphs["decode_no_mtp"] = DecodeGraph(eng.ctx, 1, True, False)
            ring = eng.state.lag_rows   # a full ring's catch-up: slot 0's positions 0.., its ring rows in order
            eng._write_padded_records([1] * ring, 0, 0, ring)
            eng.io.write_pairs("pairs_lag", [(r, r) for r in range(ring)])
            graphs["ring_catch_up"] = MtpLagGraph(eng.ctx, ring)
        times = {name: [] for name in graphs}
        for rep in range(args.reps):   # the order reversed every other rep: no graph always follows the same one
            for name in (list(graphs) if rep % 2 == 0 else list(graphs)[::-1]):
                t0 = time.perf_counter()
                graphs[name].rec.run()
                times[name].append(1e3 * (time.perf_counter() - t0))
        row = {"draft_vocab": n or eng.cfg.n_vocab, "decode_ms": statistics.median(times["decode"]),
               "spec_k1_ms": statistics.median(times["spec"])}
        row["draft_extra_ms"] = row["spec_k1_ms"] - row["decode_ms"]
        if args.plain:
            row["decode_no_mtp_ms"] = statistics.median(times["decode_no_mtp"])
            row["plain_speed_vs_no_mtp"] = row["decode_no_mtp_ms"] / row["decode_ms"]
            # other load only adds time: the fastest replays are the steps' own cost
            row["min_ms"] = {name: min(times[name]) for name in ("decode", "decode_no_mtp")}
            row["plain_speed_vs_no_mtp_min"] = row["min_ms"]["decode_no_mtp"] / row["min_ms"]["decode"]
            row["counts"] = {name: [graphs[name].counts.dispatches, graphs[name].counts.barriers]
                             for name in ("decode", "decode_no_mtp")}
            row["ring_rows"] = ring
            row["ring_catch_up_ms"] = statistics.median(times["ring_catch_up"])
            row["ring_catch_up_per_plain_step"] = row["ring_catch_up_ms"] / ring / row["decode_ms"]
        rows.append(row)
        if args.plain:
            graphs["decode_no_mtp"].rec.destroy()
            graphs["ring_catch_up"].rec.destroy()
        eng.close()
    meta = {"model": args.model, "device": device.info.name, "commit": git_commit(), "reps": args.reps}
    device.destroy()
    print(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
