"""Time the prefill matmul (vkmtp.ops.matmul) per weight type and shape with GPU timestamps.

Prints one row per (type, shape, tile): median GPU time of one dispatch, GFLOP/s (2*M*K*N / time) and the
weight bandwidth (weight bytes / time; each workgroup column re-reads W, so this is a lower bound on traffic).

    PYTHONPATH=. python tools/bench_matmul.py                       # default shapes, every supported type
    PYTHONPATH=. python tools/bench_matmul.py --types f16,q4_k --shapes 1024x5120x512 --tiles all
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from vkmtp.device import Device
from vkmtp.gguf import GGMLType, row_bytes
from vkmtp.ops.matmul import MatMul
from vkmtp.ops.quant_types import SUPPORTED_TYPES
from vkmtp.ops.quant_types import upload_weight
from vkmtp.ref.random_quant import random_rows

# M x K x N (rows, inputs, tokens): a 27B attention-out-like 1024-row projection, an FFN-up slice, a short
# chunk, and a 35B-A3B expert (512 rows of 2048) over a 64-token group.
DEFAULT_SHAPES = ["1024x5120x128", "4096x2048x256", "512x2048x64", "2048x1024x32"]


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--shapes: '{text}' is not MxKxN (e.g. 1024x5120x128)") from None
    return m, k, n


def parse_type(text: str) -> GGMLType:
    try:
        t = GGMLType[text.upper()]
    except KeyError:
        raise SystemExit(f"--types: unknown GGUF type '{text}'") from None
    if t not in SUPPORTED_TYPES:
        raise SystemExit(f"--types: matmul does not support {t.name} "
                         f"({', '.join(s.lower() for s in SUPPORTED_TYPES.values())})")
    return t


def bench_one(device: Device, mm: MatMul, t: GGMLType, m: int, k: int, n: int, tile, reps: int,
              rng: np.random.Generator) -> dict:
    w_bytes = m * row_bytes(t, k)
    w = device.buffer(w_bytes, "device", "bench_w")
    x = device.buffer(n * k * 4, "device", "bench_x")
    y = device.buffer(n * m * 4, "device", "bench_y")
    try:
        upload_weight(device, w.view(), t, k, random_rows(t, m, k, rng))
        device.upload(x.view(), rng.standard_normal(n * k).astype(np.float32))
        tile = tile or mm.tile_for(m, n, k)
        rec = device.recorder(timestamps=2 * reps + 2)
        for _ in range(reps):  # each writes y again: the recorder puts a barrier between them
            mm.record(rec, w.view(0, w_bytes), t, m, k, x.view(), y.view(), n, tile=tile)
        rec.finish()
        rec.run()  # warm-up: first submission pays pipeline set-up
        rec.run()
        ts = rec.timestamps_ns()
        times = [ts[i + 1] - ts[i] for i, lab in enumerate(rec.labels) if lab != "barrier"]
        rec.destroy()
    finally:
        for buf in (w, x, y):
            buf.destroy()
    sec = statistics.median(times) * 1e-9
    return {"type": t.name.lower(), "shape": f"{m}x{k}x{n}", "tile": tile.name, "ms": sec * 1e3,
            "gflops": 2.0 * m * k * n / sec * 1e-9, "wgbs": w_bytes / sec * 1e-9}


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(s.lower() for s in SUPPORTED_TYPES.values()))
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma-separated MxKxN")
    ap.add_argument("--tiles", default="auto", help="auto (MatMul.tile_for), all, or a tile name")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    types = [parse_type(s) for s in args.types.split(",") if s]
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    device = Device(args.device)
    mm = MatMul(device)
    if args.tiles == "auto":
        tiles = [None]
    elif args.tiles == "all":
        tiles = list(mm.tiles)
    else:
        tiles = [t for t in mm.tiles if t.name == args.tiles]
        if not tiles:
            raise SystemExit(f"--tiles: '{args.tiles}' is not one of {[t.name for t in mm.tiles]}")
    info = device.info
    print(f"# device: {info.name} ({info.driver_name} {info.driver_info}), subgroup {info.subgroup_size}, "
          f"shared {info.max_shared_memory} B; commit {git_commit()}; median of {args.reps} dispatches")
    print(f"{'type':6} {'MxKxN':>15} {'tile':>7} {'ms':>10} {'GFLOP/s':>9} {'W GB/s':>8}")
    rng = np.random.default_rng(0)
    for t in types:
        for m, k, n in shapes:
            for tile in tiles:
                r = bench_one(device, mm, t, m, k, n, tile, args.reps, rng)
                print(f"{r['type']:6} {r['shape']:>15} {r['tile']:>7} {r['ms']:10.2f} {r['gflops']:9.2f} "
                      f"{r['wgbs']:8.3g}", flush=True)
    device.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
