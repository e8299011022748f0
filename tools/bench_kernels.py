#!/usr/bin/env python3
"""Time each kernel family on the device and state it as a fraction of the measured read bandwidth.

    PYTHONPATH=. python tools/bench_kernels.py                     # real sizes (Qwen3.6-27B rows) on a GPU
    PYTHONPATH=. python tools/bench_kernels.py --small --plot docs/bench_kernels_lavapipe.png
    PYTHONPATH=. python tools/bench_kernels.py --prefill-model syn-0.8b.gguf --prefill-tokens 512   # both paths
    PYTHONPATH=. python tools/bench_kernels.py --matvec-27b --lm-rows 8192   # mat-vec at 27B shapes only
    PYTHONPATH=. python tools/bench_kernels.py --matvec-27b --before ../main  # ... that checkout, then this one
    PYTHONPATH=. python tools/bench_kernels.py --prefill-attn 0.8b,27b --prefill-tokens 512,2048  # f32 vs f16 math

Families: mat-vec per type at 1..8 columns (also time(k) / time(1): what verifying k MTP tokens costs over
decoding one), mat-mat per type for a prompt chunk, flash attention at a few context lengths, the GDN update,
RMS norm and get_rows. With --prefill-model, only the prefill mat-mats of that GGUF's trunk (every 2-D
`blk.*` weight, by type and shape, random rows of the same type): tokens/s of those products per prompt chunk on
the f32 kernel and on the int8 kernel (Q8_1 activations; OpSDot where the device enabled integer dot products),
then the prefill attention of its attention layers over that chunk with 32-bit word loads and with f16 loads
(16-bit storage), and the sum of both per path: the VKMTP_FEATURES=none path and the feature path.
With --prefill-attn, only the prefill attention of a first prompt chunk at the named models' attention shapes,
with f32 math and with f16 math (shaderFloat16), in interleaved rounds (each configuration checked first).
"bytes" is what a kernel must at least read (weights, KV rows, states); GB/s over
tools/bench_device.py's streaming-read bandwidth (vkmtp.tuning.timing.read_bandwidth) shows how far each kernel is
from the memory bound, which decode speed is. Timing: GPU timestamps where trusted, else the host clock.
Uses the tuning profile of the device when there is one (VKMTP_TUNING=off for the defaults).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from vkmtp.tuning.timing import Operands, read_bandwidth, time_recorded
from vkmtp.device import Device
from vkmtp.gguf import row_bytes
from vkmtp.tuning.kernel_cases import AttnCase, GdnCase, MatVecCase
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.gdn import GatedDeltaNet
from vkmtp.ops.get_rows import GetRows
from vkmtp.ops.matmul import MatMul
from vkmtp.ops.matvec import MAX_COLS, MatVec
from vkmtp.ops.quant_types import SUPPORTED_TYPES
from vkmtp.ops.rms_norm import RmsNorm
from vkmtp.ops.strided import Strided
from vkmtp.ref.random_quant import random_rows
from vkmtp.tuning.profile import TuningProfile, load_profile

TYPE_IDS = {name: t for t, name in SUPPORTED_TYPES.items()}


class Sizes:
    def __init__(self, small: bool):
        self.rows, self.k = (256, 1024) if small else (5120, 5120)    # 27B: E = 5120
        self.mm_tokens = 32 if small else 256
        self.contexts = (128, 512) if small else (1024, 8192, 32768)
        self.heads = (8, 2, 128) if small else (24, 4, 256)
        self.gdn = (4, 8, 128) if small else (16, 48, 128)
        self.norm = (8, 1024) if small else (256, 5120)                # tokens, width
        self.vocab = 4096 if small else 248320
        self.reps = 3 if small else 20


class Table:
    def __init__(self, read_gbps: float):
        self.read_gbps = read_gbps
        self.rows: list[tuple[str, float, float]] = []
        print(f"{'kernel':34} {'us':>10} {'MB':>8} {'GB/s':>8} {'of read':>8} {'t/t1':>6}  clock")

    def add(self, name: str, timing, nbytes: int, ratio: float | None = None) -> None:
        gbps = nbytes / timing.seconds / 1e9
        frac = gbps / self.read_gbps
        self.rows.append((name, frac, timing.seconds))
        r = f"{ratio:6.2f}" if ratio is not None else " " * 6
        print(f"{name:34} {timing.seconds * 1e6:10.1f} {nbytes / 1e6:8.2f} {gbps:8.2f} {frac:8.1%} {r}  "
              f"{timing.clock}", flush=True)


def bench_matvec(dev, table, sizes, types, profile) -> None:
    mv = MatVec(dev, per_type=profile.matvec_by_type())
    for name in types:
        case = MatVecCase(dev, TYPE_IDS[name], sizes.rows, sizes.k)
        t1 = None
        for n in range(1, MAX_COLS + 1):
            t = time_recorded(dev, case.recorder(mv, n), sizes.reps)
            t1 = t1 or t.seconds
            table.add(f"matvec {name} {sizes.rows}x{sizes.k} n={n}", t, case.bytes_read, t.seconds / t1)
        case.destroy()


MV_27B_SHAPES = (("ffn_up/gate", 17408, 5120), ("ffn_down", 5120, 17408), ("lm_head", 248320, 5120))


def cpu_time_recorded(dev, record, reps: int, runs: int = 3):
    """Like time_recorded, but the process's CPU time per repetition (fastest of `runs`): on a CPU driver
    (lavapipe runs the shaders on this process's threads) the work done, whatever else the machine runs."""
    import time

    from vkmtp.tuning.timing import Timing
    rec = dev.recorder()
    for i in range(reps):
        record(rec, i)
    rec.run()
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        rec.run()
        best = min(best, (time.process_time() - t0) / reps)
    rec.destroy()
    return Timing(best, "cpu")


def bench_matvec_27b(dev, table, types, profile, lm_rows: int, cols: tuple[int, ...], reps: int,
                     cpu_clock: bool = False) -> None:
    """Mat-vec at the 27B FFN and LM-head shapes (LM head: its first lm_rows rows), plus the SPIR-V instructions
    per weight of each variant's inner loop (vkmtp.tuning.spirv_count). cpu_clock: time by cpu_time_recorded."""
    timer = cpu_time_recorded if cpu_clock else time_recorded
    from vkmtp.ops.matvec import variant_key
    from vkmtp.tuning.spirv_count import per_weight

    mv = MatVec(dev, per_type=profile.matvec_by_type())
    for name in types:
        t = mv.tuning_for(TYPE_IDS[name])
        for n in cols:
            key = variant_key("matvec.comp", TYPE_IDS[name], t, False)
            ipw = per_weight(dev.compiler, key, t.block_size, t.rows_per_group, n, dev.info.subgroup_size)
            print(f"spirv matvec {name} n={n}: {ipw:.2f} inner-loop instructions per weight "
                  f"(block {t.block_size}, {t.rows_per_group} rows/group)", flush=True)
        for label, rows, k in MV_27B_SHAPES:
            rows = min(rows, lm_rows) if label == "lm_head" else rows
            case = MatVecCase(dev, TYPE_IDS[name], rows, k)
            t1 = None
            for n in cols:
                tm = timer(dev, case.recorder(mv, n), reps)
                t1 = t1 or tm.seconds
                table.add(f"matvec {name} {label} {rows}x{k} n={n}", tm, case.bytes_read, tm.seconds / t1)
            case.destroy()


def bench_matmul(dev, table, sizes, types) -> None:
    mm, n, rng = MatMul(dev), sizes.mm_tokens, np.random.default_rng(0)
    for name in types:
        t = TYPE_IDS[name]
        w = random_rows(t, sizes.rows, sizes.k, rng)
        ops = Operands(dev, {"w": w, "x": rng.standard_normal((n, sizes.k)).astype(np.float32),
                             "y": n * sizes.rows * 4})

        def record(rec, _):
            mm.record(rec, ops.view("w"), t, sizes.rows, sizes.k, ops.view("x"), ops.view("y"), n)
        table.add(f"matmul {name} {sizes.rows}x{sizes.k} n={n}", time_recorded(dev, record, sizes.reps),
                  w.nbytes + 4 * n * (sizes.k + sizes.rows))
        ops.destroy()


def bench_prefill_paths(dev, path: str, n_tok: int, reps: int) -> None:
    """Prefill mat-mat tokens/s of a GGUF's trunk on both matmul paths (printed, one line per path)."""
    from collections import Counter

    from vkmtp.gguf import open_gguf
    from vkmtp.ops.matmul import INT8_TYPES

    with open_gguf(path) as f:
        shapes = Counter((info.ggml_type, info.shape[0], info.shape[1]) for name, info in f.tensors.items()
                         if name.startswith("blk.") and len(info.shape) == 2 and info.shape[1] % 32 == 0
                         and "conv1d" not in name
                         and int(info.ggml_type) in SUPPORTED_TYPES)
    rng = np.random.default_rng(0)
    paths = {"f32": MatMul(dev, int8=False), "int8": MatMul(dev, int8=True)}
    totals = {name: 0.0 for name in paths}
    print(f"prefill mat-mats of {path}: {sum(shapes.values())} weights, {len(shapes)} shapes, chunk of {n_tok}")
    for (t, rows, k), count in sorted(shapes.items()):
        ops = Operands(dev, {"w": random_rows(t, rows, k, rng),
                             "x": rng.standard_normal((n_tok, k)).astype(np.float32), "y": n_tok * rows * 4})
        line = f"  {SUPPORTED_TYPES[t]:6s} {rows:6d} x {k:6d} x{count:3d}"
        for name, mm in paths.items():
            def record(rec, _, mm=mm):
                mm.record(rec, ops.view("w"), t, rows, k, ops.view("x"), ops.view("y"), n_tok)
            sec = time_recorded(dev, record, reps).seconds
            totals[name] += count * sec
            line += f"  {name} {1e3 * sec:9.2f} ms" + ("" if name == "f32" or int(t) in INT8_TYPES else " (f32)")
        print(line)
        ops.destroy()
    dot = "OpSDot" if paths["int8"].int_dot else "packed fallback"
    for name, total in totals.items():
        print(f"prefill mat-mat {name:4s}: {n_tok / total:10.1f} tok/s ({1e3 * total:.1f} ms per chunk)"
              + (f" [{dot}]" if name == "int8" else ""))
    print(f"int8 / f32 speed: {totals['f32'] / totals['int8']:.2f}x")
    attn = bench_prefill_attention(dev, path, n_tok, reps)
    if attn is not None:
        words, f16 = attn
        print(f"prefill mat-mat + attention, VKMTP_FEATURES=none path (f32 mat-mat, word loads): "
              f"{n_tok / (totals['f32'] + words):8.2f} tok/s")
        print(f"prefill mat-mat + attention, features path (int8 mat-mat, f16 loads)        : "
              f"{n_tok / (totals['int8'] + f16):8.2f} tok/s  ({(totals['f32'] + words) / (totals['int8'] + f16):.2f}x)")


def bench_prefill_attention(dev, path: str, n_tok: int, reps: int) -> tuple[float, float] | None:
    """Prefill attention of a GGUF's attention layers over a first chunk of n_tok tokens (causal, f16 KV):
    seconds per chunk with 32-bit word loads and with f16 loads (16-bit storage); None without attention."""
    from vkmtp.gguf import open_gguf
    from vkmtp.model.config import ModelConfig

    with open_gguf(path) as f:
        cfg = ModelConfig.from_gguf(f)
        n_attn = sum(1 for name in f.tensors if name.startswith("blk.") and name.endswith(".attn_q.weight")
                     and not name.startswith(f"blk.{cfg.mtp_layer}."))
    if not n_attn:
        return None
    h, h_kv, d = cfg.n_head, cfg.n_head_kv, cfg.head_dim
    case = AttnCase(dev, h, h_kv, d, n_tok, n_tok=n_tok)
    q_tile = min(4, FlashAttn.max_q_tile(dev, h, h_kv, d))   # the engine's prefill q_tile (vkmtp.graph.forward)
    times = {}
    for f16 in ([False, True] if dev.caps.f16_storage else [False]):
        # the feature path also takes the device's prefill attention math (f16 where DeviceCaps.attn_f16_math)
        fa = FlashAttn(dev, h, case.layout, q_tile=q_tile, f16_loads=f16, f16_math=f16 and dev.caps.attn_f16_math)
        problem = case.check(fa)
        if problem:
            raise SystemExit(f"prefill attention (f16 loads {f16}) is wrong: {problem}")
        times[f16] = n_attn * time_recorded(dev, case.recorder(fa), reps).seconds
        print(f"prefill attention {h}/{h_kv} x {d}, {n_attn} layers, {'f16 loads ' if f16 else 'word loads'}"
              f"{', f16 math' if fa.f16_math else ''}: "
              f"{1e3 * times[f16]:9.1f} ms per chunk")
    case.ops.destroy()
    if True not in times:
        print("prefill attention: the device enabled no 16-bit storage (only word loads)")
    return times[False], times.get(True, times[False])


ATTN_SHAPES = {"0.8b": (8, 2, 256), "9b": (16, 4, 256), "27b": (24, 4, 256), "35b-a3b": (16, 2, 256)}


def bench_prefill_attn_math(dev, shapes: list[str], token_counts: list[int], rounds: int) -> None:
    """Prefill attention (one layer, a first chunk of n tokens, the engine's q_tile and f16 loads setting)
    with f32 math and with f16 math: the fastest of `rounds` interleaved runs of each, and their ratio, by the
    wall clock and by this process's CPU time (a CPU driver runs its work on this process's threads: CPU time is
    what a loaded shared machine disturbs least)."""
    import time

    from vkmtp.tuning.kernel_cases import PrefillAttnCase

    maths = [False, True] if dev.caps.f16_math else [False]
    if not dev.caps.f16_math:
        print("prefill attention: the device enabled no shaderFloat16 (only f32 math)")
    for name in shapes:
        h, h_kv, d = ATTN_SHAPES[name]
        q_tile = min(4, FlashAttn.max_q_tile(dev, h, h_kv, d))   # the engine's prefill q_tile
        for n_tok in token_counts:
            case = PrefillAttnCase(dev, h, h_kv, d, n_tok)
            recs = {}
            for f16 in maths:
                fa = FlashAttn(dev, h, case.layout, q_tile=q_tile, f16_math=f16)
                problem = case.check(fa)
                if problem:
                    raise SystemExit(f"prefill attention (f16 math {f16}) is wrong: {problem}")
                rec = dev.recorder()
                case.recorder(fa)(rec, 0)
                rec.finish()
                recs[f16] = rec
            best = {f16: float("inf") for f16 in maths}
            cpu = {f16: float("inf") for f16 in maths}
            for _ in range(rounds):
                for f16, rec in recs.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    rec.run()
                    best[f16] = min(best[f16], time.perf_counter() - t0)
                    cpu[f16] = min(cpu[f16], time.process_time() - c0)
            for rec in recs.values():
                rec.destroy()
            case.destroy()
            line = f"prefill attention {name:7s} {h}/{h_kv} x {d}, {n_tok:5d} tokens, q_tile {q_tile}: " \
                   f"f32 math {1e3 * best[False]:9.1f} ms (CPU {1e3 * cpu[False]:9.1f} ms)"
            if True in best:
                line += f", f16 math {1e3 * best[True]:9.1f} ms (CPU {1e3 * cpu[True]:9.1f} ms), " \
                        f"f16 speed {best[False] / best[True]:.2f}x (CPU time {cpu[False] / cpu[True]:.2f}x)"
            print(line, flush=True)


def bench_attn(dev, table, sizes, profile) -> None:
    h, h_kv, d = sizes.heads
    for ctx in sizes.contexts:
        case = AttnCase(dev, h, h_kv, d, ctx)
        fa = FlashAttn(dev, h, case.layout, n_splits=profile.attn_n_splits, chunk=profile.attn_chunk)
        table.add(f"flash_attn {h}/{h_kv}x{d} ctx={ctx} s={fa.n_splits}",
                  time_recorded(dev, case.recorder(fa), sizes.reps), case.bytes_read)
        case.destroy()


LONG_CONTEXTS = (4096, 32768, 131072)
LONG_COLUMNS = (1, 4)


def bench_attn_long(dev, table, reps: int, heads=(24, 4, 256)) -> None:
    """Decode / verify attention at long context (Qwen3.6-27B's 24/4 heads of 256, f16 KV): 1 and 4 query
    columns ending at the last position. K and V are cut into parts of at most maxStorageBufferRange (as the
    engine's caches are) and filled with a repeated block of random rows (the kernel's cost does not depend on
    the values). Only the API of FlashAttn(..., n_splits=None) is used, so an older tree runs it too (--before)."""
    from vkmtp.ops.kv_layout import KvLayout
    from vkmtp.ref.ops.set_rows import encode_rows
    from vkmtp.tuning.kernel_cases import token_records

    h, h_kv, d = heads
    rng = np.random.default_rng(0)
    block = encode_rows(rng.standard_normal((4096, h_kv * d)).astype(np.float32), "f16")
    for ctx in LONG_CONTEXTS:
        layout = KvLayout("f16", h_kv, d, ctx)
        rows = min(ctx, dev.info.max_storage_buffer_range // layout.row_bytes)
        caches = []
        for name in ("k", "v"):
            parts = []
            for r0 in range(0, ctx, rows):
                n = min(rows, ctx - r0)
                buf = dev.buffer(n * layout.row_bytes, "device", f"bench-{name}{len(parts)}")
                for b0 in range(0, n, len(block)):
                    m = min(len(block), n - b0)
                    dev.upload(buf.view(b0 * layout.row_bytes, m * layout.row_bytes), block[:m].reshape(-1))
                parts.append(buf)
            caches.append(parts)
        for n_tok in LONG_COLUMNS:
            fa = FlashAttn(dev, h, layout)
            ops = Operands(dev, {"rec": token_records(range(ctx - n_tok, ctx), [0] * n_tok),
                                 "qg": rng.standard_normal((n_tok, h, 2, d)).astype(np.float32),
                                 "out": n_tok * h * d * 4, "scratch": fa.scratch_bytes(n_tok)})
            qv = ops.view("qg")
            q = Strided(qv, h * 2 * d, 2 * d)
            gate = Strided(qv.sub(d * 4, qv.nbytes - d * 4), h * 2 * d, 2 * d)
            k, v = ([b.view() for b in parts] if len(parts) > 1 else parts[0].view() for parts in caches)

            def record(rec, _i, fa=fa, ops=ops, q=q, gate=gate, k=k, v=v, n_tok=n_tok):
                fa.record(rec, ops.view("rec"), q, k, v, Strided.heads(ops.view("out"), h, d), n_tok,
                          ops.view("scratch"), gate=gate)
            table.add(f"flash_attn {h}/{h_kv}x{d} ctx={ctx} cols={n_tok} s={fa.n_splits}",
                      time_recorded(dev, record, reps), 2 * ctx * layout.row_bytes)
            ops.destroy()
        for buf in (b for parts in caches for b in parts):
            buf.destroy()


def run_before(args, flags: list[str]) -> int:
    """This script with `flags` on `--before TREE`'s vkmtp: a subprocess of that tree's venv (tools/setup.sh),
    else of this venv with the tree first on PYTHONPATH and its shaders/ compiled (--shader-dir: the package
    vkmtp.shaders would still resolve to this venv's install); 0 when there is no --before."""
    import os
    import subprocess
    if not args.before:
        return 0
    print(f"== before: {args.before}", flush=True)
    python = os.path.join(args.before, ".venv", "bin", "python")
    envs = dict(os.environ)
    if not os.path.exists(python):
        python = sys.executable
        envs["PYTHONPATH"] = os.pathsep.join([os.path.abspath(args.before), envs.get("PYTHONPATH", "")])
        flags = [*flags, "--shader-dir", os.path.join(os.path.abspath(args.before), "shaders")]
    rc = subprocess.run([python, os.path.abspath(__file__), *flags], env=envs,
                        cwd=os.path.abspath(args.before)).returncode
    print("== after: this tree", flush=True)
    return rc


def bench_attn_before_after(args) -> int:
    """--attn-long: bench_attn_long on `--before TREE` (this script in a subprocess of that tree's venv, so its
    vkmtp) and then on this tree, back to back on one device."""
    rc = run_before(args, ["--attn-long", "--reps", str(args.reps), "--mib", str(args.mib)])
    if rc:
        return rc
    import vkmtp
    print(f"vkmtp from {vkmtp.__file__}")
    dev = Device(args.device)
    read = read_bandwidth(dev, min(dev.info.max_storage_buffer_range, args.mib << 20))
    print(f"device {dev.info.name}; streaming read {read['gb_per_s']:.2f} GB/s")
    table = Table(read["gb_per_s"])
    bench_attn_long(dev, table, args.reps)
    dev.destroy()
    return 0


def bench_gdn(dev, table, sizes, profile) -> None:
    h_k, h_v, d = sizes.gdn
    op = GatedDeltaNet(dev, d, lanes_per_column=profile.gdn_lanes_per_column, variant=profile.gdn_variant)
    for n in (1, 4):
        case = GdnCase(dev, h_k, h_v, d, n)
        table.add(f"gdn {h_k}/{h_v}x{d} n={n} L={op.lanes_per_column}",
                  time_recorded(dev, case.recorder(op), sizes.reps), case.bytes_read)
        case.destroy()


def bench_small_ops(dev, table, sizes) -> None:
    n, width = sizes.norm
    rng = np.random.default_rng(1)
    ops = Operands(dev, {"x": rng.standard_normal((n, width)).astype(np.float32),
                         "w": np.ones(width, np.float32), "y": n * width * 4})
    norm = RmsNorm(dev, eps=1e-6)

    def record_norm(rec, _):
        x, y = Strided.rows(ops.view("x"), width), Strided.rows(ops.view("y"), width)
        norm.record(rec, x, ops.view("w"), y, n, width)
    table.add(f"rms_norm {n}x{width}", time_recorded(dev, record_norm, sizes.reps), 2 * n * width * 4)
    ops.destroy()
    t = TYPE_IDS["Q8_0"]
    records = np.zeros((n, 4), np.uint32)
    records[:, 0] = rng.integers(0, sizes.vocab, n)
    ops = Operands(dev, {"table": random_rows(t, sizes.vocab, width, rng), "rec": records,
                         "out": n * width * 4})
    rows = GetRows(dev)

    def record_rows(rec, _):
        rows.record(rec, ops.view("table"), t, sizes.vocab, width, ops.view("rec"), ops.view("out"), n)
    table.add(f"get_rows Q8_0 {n} of {sizes.vocab}x{width}", time_recorded(dev, record_rows, sizes.reps),
              n * (row_bytes(t, width) + width * 4))
    ops.destroy()


def plot(table: Table, out: str, title: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib (the 'dev' extra: pip install 'vkmtp[dev]')")
    names = [r[0] for r in table.rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(names) + 1.2), dpi=90)
    ax.barh(range(len(names)), [100 * r[1] for r in table.rows], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("% of measured streaming-read bandwidth")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--small", action="store_true", help="small sizes (CPU drivers such as lavapipe)")
    ap.add_argument("--types", default="Q4_K,Q6_K,Q8_0", help="mat-vec / mat-mat types")
    ap.add_argument("--mib", type=int, default=256, help="bytes read by the bandwidth reference pass")
    ap.add_argument("--plot", default=None, metavar="PNG", help="bar chart of the bandwidth fractions")
    ap.add_argument("--matvec-27b", action="store_true",
                    help="only the mat-vec at the 27B FFN / LM-head shapes (types default Q4_K,Q6_K,Q8_0,IQ4_XS)")
    ap.add_argument("--shader-dir", default=None, metavar="DIR",
                    help="compile the shaders from DIR (e.g. an older tree's shaders/: before -> after in one run)")
    ap.add_argument("--lm-rows", type=int, default=248320, help="rows of the LM-head shape timed (a slice)")
    ap.add_argument("--cols", default="1,4", help="columns for --matvec-27b")
    ap.add_argument("--cpu-clock", action="store_true",
                    help="with --matvec-27b: time by this process's CPU time (a CPU driver on a shared machine)")
    ap.add_argument("--prefill-model", default=None, metavar="GGUF",
                    help="only time the trunk's prefill mat-mats of this GGUF on both paths (f32 and int8)")
    ap.add_argument("--prefill-tokens", default="512",
                    help="prompt chunk for --prefill-model; comma list of chunks for --prefill-attn")
    ap.add_argument("--prefill-attn", default=None, metavar="SHAPES",
                    help=f"only prefill attention, f32 vs f16 math, at these models' shapes "
                         f"({','.join(ATTN_SHAPES)}); --reps interleaved rounds")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per case for --prefill-model and --matvec-27b (fastest)")
    ap.add_argument("--attn-long", action="store_true",
                    help="only decode/verify flash attention at 4k/32k/128k context, 1 and 4 columns")
    ap.add_argument("--before", default=None, metavar="TREE",
                    help="with --attn-long or --matvec-27b: first run the same cases on another checkout's vkmtp "
                         "(before -> after in one command)")
    args = ap.parse_args(argv)
    if args.attn_long:
        return bench_attn_before_after(args)
    try:
        tokens = [int(n) for n in args.prefill_tokens.split(",")]
    except ValueError:
        sys.exit(f"--prefill-tokens {args.prefill_tokens!r}: expected a comma list of token counts")
    if len(tokens) > 1 and not args.prefill_attn:
        sys.exit("--prefill-tokens takes one count except with --prefill-attn")
    shapes = [s.strip().lower() for s in (args.prefill_attn or "").split(",") if s.strip()]
    bad = [s for s in shapes if s not in ATTN_SHAPES]
    if bad:
        sys.exit(f"--prefill-attn: unknown shape(s) {', '.join(bad)}; choose from {', '.join(ATTN_SHAPES)}")
    if args.before and not args.matvec_27b:
        sys.exit("--before is only supported with --attn-long and --matvec-27b")
    if args.matvec_27b and args.types == ap.get_default("types"):
        args.types = "Q4_K,Q6_K,Q8_0,IQ4_XS"
    types = [s.strip().upper() for s in args.types.split(",")]
    bad = [t for t in types if t not in TYPE_IDS]
    if bad:
        sys.exit(f"unknown type(s) {', '.join(bad)}; choose from {', '.join(TYPE_IDS)}")
    if args.matvec_27b and args.before:
        # the other tree's vkmtp whole (shaders, wrapper, tuning defaults), then this tree's: before -> after
        rc = run_before(args, ["--matvec-27b", "--types", ",".join(types), "--lm-rows", str(args.lm_rows),
                               "--cols", args.cols, "--reps", str(args.reps), "--mib", str(args.mib)]
                        + (["--cpu-clock"] if args.cpu_clock else []))
        if rc:
            return rc
    if args.shader_dir:
        from vkmtp.device.compiler import ShaderCompiler
        dev = Device(args.device, compiler=ShaderCompiler(args.shader_dir))
    else:
        dev = Device(args.device)
    info = dev.info
    if args.prefill_attn:
        print(f"device {info.name} ({info.driver_name} {info.driver_info}); features: "
              f"{', '.join(sorted(info.enabled_features)) or 'none'}")
        bench_prefill_attn_math(dev, shapes, tokens, args.reps)
        dev.destroy()
        return 0
    if args.prefill_model:
        print(f"device {info.name} ({info.driver_name} {info.driver_info}); features: "
              f"{', '.join(sorted(info.enabled_features)) or 'none'}")
        bench_prefill_paths(dev, args.prefill_model, tokens[0], args.reps)
        dev.destroy()
        return 0
    profile = load_profile(info) or TuningProfile()
    if args.matvec_27b:
        import vkmtp
        print(f"vkmtp from {vkmtp.__file__}")
    sizes = Sizes(args.small)
    read = read_bandwidth(dev, min(info.max_storage_buffer_range, args.mib << 20))
    print(f"device {info.name} ({info.driver_name} {info.driver_info}); streaming read "
          f"{read['gb_per_s']:.2f} GB/s ({read['clock']} clock); tuning profile: "
          f"{'yes' if profile.device else 'none (defaults)'}")
    table = Table(read["gb_per_s"])
    if args.matvec_27b:
        bench_matvec_27b(dev, table, types, profile, args.lm_rows, tuple(int(c) for c in args.cols.split(",")),
                         args.reps, cpu_clock=args.cpu_clock)
        dev.destroy()
        return 0
    bench_matvec(dev, table, sizes, types, profile)
    bench_matmul(dev, table, sizes, types)
    bench_attn(dev, table, sizes, profile)
    bench_gdn(dev, table, sizes, profile)
    bench_small_ops(dev, table, sizes)
    dev.destroy()
    if args.plot:
        plot(table, args.plot, f"{info.name}: kernels vs streaming read ({read['gb_per_s']:.2f} GB/s)")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
