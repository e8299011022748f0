#!/usr/bin/env python3
"""Dispatches and barriers per recorded step, counted by the real recorder: decode (1 sequence), speculative
step (depth --depth) and a 64-token prompt chunk, for a GGUF file; plus the recurrent-state bytes a speculative
step writes. Run it from two trees to compare (PYTHONPATH=<tree>).

    python tools/graph_counts.py MODEL.gguf [--depth 3] [--no-mtp] [--json]
"""

from __future__ import annotations

import argparse
import json

from vkmtp.engine.api import EngineConfig
from vkmtp.engine.vulkan import VulkanEngine
from vkmtp.graph.steps import DecodeGraph, PrefillGraph, SpecGraph
from vkmtp.spec import SpecConfig


def count(model: str, depth: int, mtp: bool = True) -> dict:
    spec = SpecConfig(n_max=depth) if mtp else SpecConfig(enabled=False)
    eng = VulkanEngine(model, EngineConfig(n_ctx=256, spec=spec))
    try:
        graphs = {"decode": lambda: DecodeGraph(eng.ctx, 1, True, eng.use_mtp),
                  "prefill_64": lambda: PrefillGraph(eng.ctx, 64, True, eng.use_mtp)}
        if eng.use_mtp:
            graphs[f"speculative_depth_{depth}"] = lambda: SpecGraph(eng.ctx, 1, depth, True, 0.0, 0.0)
        out = {}
        for name, make in graphs.items():
            g = make()
            recs = getattr(g.rec, "recs", [g.rec])
            out[name] = {"dispatches": sum(r.n_dispatches for r in recs),
                         "barriers": sum(r.n_barriers for r in recs), "submissions": len(recs),
                         "host_barriers": sum(getattr(r, "n_host_barriers", r.n_barriers) for r in recs)}
            counts = getattr(g, "counts", None)
            if counts is not None and name.startswith("speculative"):
                out[name]["state_bytes"] = counts.state_bytes
                out[name]["rollback_bytes_per_seq"] = counts.rollback_bytes_per_seq
            g.rec.destroy()
        return out
    finally:
        eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--no-mtp", action="store_true", help="without the MTP head (no catch-up in decode)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = count(args.model, args.depth, not args.no_mtp)
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for name, c in out.items():
        print(f"{name:<24} " + ", ".join(f"{k} {v}" for k, v in c.items()))


if __name__ == "__main__":
    main()
