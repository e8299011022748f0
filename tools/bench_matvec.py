"""Time the quantized mat-vec per weight type and column count (GPU timestamps), print a table.

    PYTHONPATH=. python tools/bench_matvec.py --rows 2048 --k 2048 --reps 5
    PYTHONPATH=. python tools/bench_matvec.py --types q4_k,q8_0 --variant shared

For each type and 1..8 columns: microseconds per dispatch, achieved weight bandwidth (weight bytes / time) and
time(k cols) / time(1 col). Decode reads every active weight once per token, so GB/s here bounds tokens/s; the
ratio column shows what verifying k speculative tokens costs over plain decoding (1.0 would be free).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np

from vkmtp.device import Device
from vkmtp.gguf import GGMLType, row_bytes
from vkmtp.ops.matvec import MAX_COLS, MatVec, MatVecTuning
from vkmtp.ops.quant_types import SUPPORTED_TYPES
from vkmtp.ops.quant_types import upload_weight
from vkmtp.ref.random_quant import random_rows


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2048, help="output rows M (default 2048)")
    ap.add_argument("--k", type=int, default=2048, help="row length K (default 2048)")
    ap.add_argument("--reps", type=int, default=5, help="dispatches recorded per point (default 5)")
    ap.add_argument("--runs", type=int, default=3,
                    help="submissions per point; the fastest counts (default 3: shared machines are noisy)")
    ap.add_argument("--types", default="all", help="comma-separated types, e.g. q4_k,q8_0 (default all)")
    ap.add_argument("--cols", default="1-8", help="column counts: '1-8' or '1,2,4'")
    ap.add_argument("--variant", choices=["auto", "subgroup", "shared"], default="auto")
    ap.add_argument("--block-size", type=int, default=0, help="threads per workgroup (default: tuning table)")
    ap.add_argument("--rows-per-group", type=int, default=0,
                    help="rows per workgroup (default: tuning table)")
    ap.add_argument("--device", default=None, help="Vulkan device index")
    return ap.parse_args(argv)


def column_counts(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(c) for c in spec.split(",")]


def pick_types(spec: str) -> list[int]:
    if spec == "all":
        return list(SUPPORTED_TYPES)
    names = {v.lower(): k for k, v in SUPPORTED_TYPES.items()}
    try:
        return [names[s.strip().lower()] for s in spec.split(",")]
    except KeyError as exc:
        sys.exit(f"unknown type {exc}; choose from {', '.join(names)}")


def time_point(device: Device, mv: MatVec, weight, ggml_type: int, n_rows: int, n_k: int, x, y_buf,
               n_cols: int, reps: int, runs: int) -> float:
    """Seconds per dispatch: `reps` independent dispatches (distinct outputs, so no barriers between them),
    submitted `runs` times after a warm-up; the fastest submission counts."""
    rec = device.recorder(timestamps=reps + 2)
    for r in range(reps):
        y = y_buf.view(r * MAX_COLS * n_rows * 4, n_cols * n_rows * 4)
        mv.record(rec, weight, ggml_type, n_rows, n_k, x, y, n_cols)
    rec.run()  # warm-up: pipeline build on lazy drivers, caches
    best = float("inf")
    for _ in range(runs):
        rec.run()
        ts = rec.timestamps_ns()
        best = min(best, (ts[reps] - ts[0]) * 1e-9 / reps)
    rec.destroy()
    return best


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> None:
    args = parse_args(argv)
    device = Device(args.device)
    info = device.info
    if not info.timestamps:
        sys.exit(f"{info.name} has no timestamp queries on its compute queue")
    tuning = device.caps.matvec
    use_subgroup = tuning.use_subgroup if args.variant == "auto" else args.variant == "subgroup"
    tuning = MatVecTuning(args.block_size or tuning.block_size, args.rows_per_group or tuning.rows_per_group,
                          use_subgroup)
    mv = MatVec(device, tuning)
    cols = column_counts(args.cols)
    print(f"device: {info.name} ({info.driver_name} {info.driver_info}), subgroup {info.subgroup_size}; "
          f"commit {git_commit()}")
    print(f"matvec {args.rows} x {args.k}, block_size {tuning.block_size}, "
          f"rows/group {tuning.rows_per_group}, "
          f"{'subgroup' if use_subgroup else 'shared-memory'} reduction, {args.reps} dispatches per point, "
          f"fastest of {args.runs} submissions")
    print(f"{'type':8} {'cols':>4} {'us':>10} {'GB/s':>8} {'t/t1':>6}")
    rng = np.random.default_rng(0)
    x_buf = device.buffer(MAX_COLS * args.k * 4, "device", "bench_x")
    device.upload(x_buf.view(), rng.standard_normal(MAX_COLS * args.k).astype(np.float32))
    y_buf = device.buffer(args.reps * MAX_COLS * args.rows * 4, "device", "bench_y")
    for t in pick_types(args.types):
        nbytes = args.rows * row_bytes(t, args.k)
        w_buf = device.buffer(nbytes, "device", "bench_w")
        upload_weight(device, w_buf.view(), t, args.k, random_rows(t, args.rows, args.k, rng))
        t1 = None
        for n in cols:
            x = x_buf.view(0, n * args.k * 4)
            sec = time_point(device, mv, w_buf.view(0, nbytes), t, args.rows, args.k, x, y_buf, n, args.reps,
                             args.runs)
            t1 = sec if n == 1 or t1 is None else t1
            gbps = nbytes / sec / 1e9
            print(f"{GGMLType(t).name:8} {n:>4} {sec * 1e6:>10.1f} {gbps:>8.2f} {sec / t1:>6.2f}", flush=True)
        w_buf.destroy()
    device.destroy()


if __name__ == "__main__":
    main()
