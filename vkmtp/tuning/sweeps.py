"""`vkmtp tune`: measure the kernel knobs on this device and save them as its tuning profile (vkmtp.tuning.profile).

Sweeps mat-vec workgroup shapes per quant type at 1..8 columns, GDN lanes per column and reduction variant,
flash-attention split counts and chunk sizes, the prefill mat-mat's two paths per quant type (f32 activations
or Q8_1 activations with integer dot products, at the model's own weight shapes with -m MODEL, else 0.8B/27B FFN
shapes), and (with -m MODEL) the MTP draft n_max / p_min by running the engine on a few prompts. Every
candidate is first checked against the NumPy reference (vkmtp.tuning.kernel_cases; for MTP: greedy output
identical to decoding without MTP) and dropped if it errors or disagrees; survivors are timed with GPU
timestamps where trusted, else the host clock (vkmtp.tuning.timing).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

from vkmtp.tuning.timing import time_recorded
from vkmtp.device import Device
from vkmtp.tuning.kernel_cases import (PREFILL_FFN_SHAPES, AttnCase, GdnCase, MatMulCase, MatVecCase,
                                       PrefillAttnCase, model_prefill_shapes)
from vkmtp.ops.flash_attn import FlashAttn
from vkmtp.ops.gdn import GatedDeltaNet, available_variants
from vkmtp.ops.matmul import INT8_TYPES, MatMul
from vkmtp.ops.matvec import MAX_COLS, MatVec, MatVecTuning, check_tuning
from vkmtp.ops.quant_types import SUPPORTED_TYPES
from vkmtp.tuning.profile import MtpTuning, TuningProfile, load_profile, profile_path, save_profile

# the types Qwen3.5 GGUFs are published in (llama-quantize mixes); `--types all` sweeps every supported one
COMMON_TYPES = ("Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "IQ4_XS", "F16", "BF16")
QUICK_TYPES = ("Q4_K", "Q8_0")
NO_MATPLOTLIB = "--plot needs matplotlib (the 'dev' extra: pip install 'vkmtp[dev]')"
# The int8 prefill mat-mat moves logits (Q8_1 activations: about 2 % of their scale on the engine's fixtures,
# docs/PERFORMANCE.md), so it must buy a clear speed-up: f32 time / int8 time at least this.
INT8_MARGIN = 1.15
PROMPTS = ("The history of the printing press begins", "def fibonacci(n):\n    ",
           "Explain why the sky is blue in three sentences.", "1, 2, 3, 5, 8, 13,")


class Sweep:
    """Sizes and candidate lists of one tuning run (`quick` shrinks everything for tests and lavapipe)."""

    def __init__(self, quick: bool):
        self.quick = quick
        self.reps, self.runs = (2, 2) if quick else (10, 3)
        self.matvec_shape = (128, 512) if quick else (4096, 4096)          # rows, K of the timed weight
        self.matvec_check_shape = (37, 512)                                 # rows that fill no workgroup
        self.matvec_cols = (1, 4, 8) if quick else tuple(range(1, MAX_COLS + 1))
        self.matvec_rows = (1, 2, 4) if quick else (1, 2, 4, 8, 16)
        self.matvec_blocks = (32,) if quick else (32, 64, 128, 256)
        self.gdn_shape = (2, 4, 128) if quick else (16, 48, 128)            # H_k, H_v, d (27B: 16, 48, 128)
        self.gdn_tokens = (1,) if quick else (1, 4)
        self.attn_heads = (8, 2, 128) if quick else (24, 4, 256)            # H, H_kv, D (27B)
        self.attn_contexts = (256,) if quick else (1024, 8192)
        self.attn_splits = (1, 2, 4, 8) if quick else (1, 2, 4, 8, 16, 32, 64)
        self.attn_chunks = (64, 128) if quick else (64, 128, 256)
        self.matmul_tokens = 64 if quick else 512                           # one prompt chunk
        self.matmul_presets = ("0.8b",) if quick else ("0.8b", "27b")       # PREFILL_FFN_SHAPES without -m
        self.prefill_attn_tokens = 64 if quick else 512                     # a prompt chunk (attn_heads)
        self.mtp_n_max = (1, 2) if quick else (1, 2, 3, 4, 5)
        self.mtp_p_min = (0.0,) if quick else (0.0, 0.3, 0.6)
        self.mtp_tokens = 8 if quick else 96


def us(timing) -> float:
    return round(timing.seconds * 1e6, 1)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fastest(results: dict, cases=()):
    """Free the sweep's cases; the key of `results` (key -> times) with the smallest summed time, None if empty."""
    for c in cases:
        c.destroy()
    return min(results, key=lambda k: sum(results[k])) if results else None


def pair_labels(results: dict) -> dict[str, list]:
    """{(a, b): times} as {'a/b': times}, for the profile's measurements."""
    return {f"{k[0]}/{k[1]}": v for k, v in results.items()}


def matvec_candidates(device: Device, sweep: Sweep) -> list[MatVecTuning]:
    info = device.info
    # one subgroup per workgroup is a candidate too (a CPU driver's best: docs/PERFORMANCE.md)
    blocks = sorted({max(b, info.subgroup_size) for b in sweep.matvec_blocks} | {info.subgroup_size})
    out = [device.caps.matvec]
    for block in blocks:
        for rows in sweep.matvec_rows:
            for sub in ((False, True) if info.has_subgroup_arithmetic else (False,)):
                t = MatVecTuning(block, rows, sub)
                try:
                    check_tuning(info, t)
                except ValueError:
                    continue
                if t not in out:
                    out.append(t)
    return out


def label(t: MatVecTuning) -> str:
    return f"b{t.block_size}/r{t.rows_per_group}/{'sg' if t.use_subgroup else 'sh'}"


def sweep_matvec(device: Device, type_names: list[str], sweep: Sweep) -> tuple[dict, dict]:
    """Best tuning per type: smallest summed time over the column counts. Returns (choices, measurements)."""
    ids = {name: t for t, name in SUPPORTED_TYPES.items()}
    chosen, measured = {}, {}
    for name in type_names:
        t = ids[name]
        check = MatVecCase(device, t, *sweep.matvec_check_shape, seed=1)
        timed = MatVecCase(device, t, *sweep.matvec_shape, seed=2)
        results = {}
        for cand in matvec_candidates(device, sweep):
            mv = MatVec(device, cand)
            problem = check.check(mv)
            if problem:
                log(f"  matvec {name} {label(cand)}: discarded ({problem})")
                continue
            times = [time_recorded(device, timed.recorder(mv, n), sweep.reps, sweep.runs)
                     for n in sweep.matvec_cols]
            results[cand] = [us(x) for x in times]
            clock = times[0].clock
        best = fastest(results, (check, timed))
        if best is None:
            log(f"  matvec {name}: no candidate passed the check; keeping the default")
            continue
        default = device.caps.matvec
        chosen[name] = best
        measured[name] = {"cols": list(sweep.matvec_cols), "clock": clock, "best": label(best),
                          "best_us": results[best], "default_us": results.get(default),
                          "candidates": {label(c): v for c, v in results.items()}}
        speedup = sum(results[default]) / sum(results[best]) if default in results else float("nan")
        log(f"matvec {name:6} best {label(best):14} "
            + " ".join(f"{n}:{us:.1f}" for n, us in zip(sweep.matvec_cols, results[best]))
            + f" us ({clock} clock; {speedup:.2f}x the default)")
    return chosen, measured


def sweep_gdn(device: Device, sweep: Sweep) -> tuple[int | None, str | None, dict]:
    h_k, h_v, d = sweep.gdn_shape
    cases = [GdnCase(device, h_k, h_v, d, n, seed=n) for n in sweep.gdn_tokens]
    results = {}
    lanes = 1
    while lanes <= min(d, device.info.max_workgroup_invocations):
        for variant in available_variants(device):
            try:
                op = GatedDeltaNet(device, d, lanes_per_column=lanes, variant=variant)
            except ValueError as exc:
                log(f"  gdn lanes {lanes} {variant}: illegal here ({exc})")
                continue
            problem = next((p for p in (c.check(op) for c in cases) if p), None)
            if problem:
                log(f"  gdn lanes {lanes} {variant}: discarded ({problem})")
                continue
            results[(lanes, variant)] = [us(time_recorded(device, c.recorder(op), sweep.reps, sweep.runs))
                                         for c in cases]
        lanes *= 2
    best = fastest(results, cases)
    if best is None:
        return None, None, {}
    log(f"gdn    best lanes_per_column {best[0]} {best[1]}: "
        + " ".join(f"{n} tok {us:.1f} us" for n, us in zip(sweep.gdn_tokens, results[best])))
    return best[0], best[1], {"shape": [h_k, h_v, d], "tokens": list(sweep.gdn_tokens),
                              "candidates": pair_labels(results)}


def sweep_attn(device: Device, sweep: Sweep) -> tuple[int | None, int | None, dict]:
    h, h_kv, d = sweep.attn_heads
    cases = [AttnCase(device, h, h_kv, d, ctx, seed=ctx) for ctx in sweep.attn_contexts]
    results = {}
    for n_splits in sweep.attn_splits:
        for chunk in sweep.attn_chunks:
            try:
                fa = FlashAttn(device, h, cases[0].layout, n_splits=n_splits, chunk=chunk)
            except ValueError as exc:
                log(f"  attn splits {n_splits} chunk {chunk}: illegal here ({exc})")
                continue
            per_case = []
            for c in cases:
                fa_c = FlashAttn(device, h, c.layout, n_splits=n_splits, chunk=chunk)
                problem = c.check(fa_c)
                if problem:
                    log(f"  attn splits {n_splits} chunk {chunk}: discarded ({problem})")
                    break
                per_case.append(us(time_recorded(device, c.recorder(fa_c), sweep.reps, sweep.runs)))
            else:
                results[(n_splits, chunk)] = per_case
            del fa
    best = fastest(results, cases)
    if best is None:
        return None, None, {}
    log(f"attn   best n_splits {best[0]} chunk {best[1]}: "
        + " ".join(f"ctx {n} {us:.1f} us" for n, us in zip(sweep.attn_contexts, results[best])))
    return best[0], best[1], {"heads": [h, h_kv, d], "contexts": list(sweep.attn_contexts),
                              "candidates": pair_labels(results)}


def choose_int8(totals: dict[str, dict[str, float | None]], margin: float = INT8_MARGIN) -> dict[str, bool]:
    """{type: {'f32': seconds, 'int8': seconds or None}} -> {type: take the int8 path}: only where int8 was
    measured (it passed its check) and the f32 path takes at least `margin` times as long."""
    return {name: t.get("int8") is not None and t.get("f32") is not None and t["f32"] >= margin * t["int8"]
            for name, t in totals.items()}


def sweep_matmul(device: Device, shapes: dict[str, list[tuple[int, int, int]]], sweep: Sweep,
                 margin: float = INT8_MARGIN) -> tuple[dict[str, bool], dict]:
    """Prompt-chunk time per quant type on both mat-mat paths, summed over `shapes` ({type name: [(rows, K,
    count)]}, each shape timed once and counted `count` times); returns ({type name: int8 chosen},
    measurements). A path whose check fails is not timed (int8: never chosen; f32: the type is left out)."""
    ids = {name: t for t, name in SUPPORTED_TYPES.items()}
    n_tok = sweep.matmul_tokens
    paths = {"f32": MatMul(device, int8=False), "int8": MatMul(device, int8=True)}
    totals, measured, clock = {}, {}, "host"
    for name, type_shapes in shapes.items():
        t = ids[name]
        total: dict[str, float | None] = {"f32": 0.0, "int8": 0.0}
        for i, (rows, k, count) in enumerate(type_shapes):
            case = MatMulCase(device, t, rows, k, n_tok, seed=i)
            for path, mm in paths.items():
                if total[path] is None:
                    continue
                problem = case.check(mm)
                if problem:
                    log(f"  matmul {name} {rows}x{k} {path}: discarded ({problem})")
                    total[path] = None
                    continue
                timing = time_recorded(device, case.recorder(mm), sweep.reps, sweep.runs)
                total[path] += count * timing.seconds
                clock = timing.clock
            case.destroy()
        if total["f32"] is None:
            log(f"  matmul {name}: the f32 path failed its check; no choice made")
            continue
        totals[name] = total
    chosen = choose_int8(totals, margin)
    for name, total in totals.items():
        speedup = total["f32"] / total["int8"] if total["int8"] else None
        measured[name] = {"f32_ms": round(1e3 * total["f32"], 3),
                          "int8_ms": None if total["int8"] is None else round(1e3 * total["int8"], 3),
                          "int8_speedup": None if speedup is None else round(speedup, 3), "int8": chosen[name],
                          "tokens": n_tok, "shapes": [list(s) for s in shapes[name]]}
        ratio = "int8 failed its check" if speedup is None else f"int8 {speedup:.2f}x the f32 speed"
        log(f"matmul {name:6} prefill {'int8' if chosen[name] else 'f32 '}: f32 {1e3 * total['f32']:.1f} ms, "
            + ("" if total["int8"] is None else f"int8 {1e3 * total['int8']:.1f} ms ")
            + f"per {n_tok}-token chunk ({ratio}; {clock} clock)")
    return chosen, {"tokens": n_tok, "margin": margin, "clock": clock,
                    "dot": "OpSDot" if paths["int8"].int_dot else "packed", "types": measured}


def matmul_shapes(model: str | None, types: str | None, sweep: Sweep) -> dict[str, list[tuple[int, int, int]]]:
    """{type name: [(rows, K, count)]} to time: a model's own quantized 2-D block weights (restricted to
    --types when given), else the FFN shapes of PREFILL_FFN_SHAPES for each quantized type of --types."""
    if model:
        by_type = {SUPPORTED_TYPES[t]: s for t, s in model_prefill_shapes(model).items()}
        if types:
            wanted = set(pick_type_names(types, sweep.quick))
            by_type = {name: s for name, s in by_type.items() if name in wanted}
        return by_type
    shapes = [s for preset in sweep.matmul_presets for s in PREFILL_FFN_SHAPES[preset]]
    int8_names = {SUPPORTED_TYPES[t] for t in INT8_TYPES}
    return {name: shapes for name in pick_type_names(types, sweep.quick) if name in int8_names}


def sweep_attn_f16(device: Device, sweep: Sweep) -> tuple[bool | None, dict]:
    """Prefill attention (a first chunk of sweep.prefill_attn_tokens, the engine's q_tile) with f32 and with
    float16 math; True when f16 math was faster. None (the default stays) without shaderFloat16."""
    if not device.caps.f16_math:
        log("attn   f16 math: the device enabled no shaderFloat16; f32 prefill attention")
        return None, {}
    h, h_kv, d = sweep.attn_heads
    n_tok = sweep.prefill_attn_tokens
    case = PrefillAttnCase(device, h, h_kv, d, n_tok)
    q_tile = min(4, FlashAttn.max_q_tile(device, h, h_kv, d))   # as vkmtp.graph.forward
    results = {}
    for f16 in (False, True):
        fa = FlashAttn(device, h, case.layout, q_tile=q_tile, f16_math=f16)
        problem = case.check(fa)
        if problem:
            log(f"  attn f16 math {f16}: discarded ({problem})")
            continue
        results[f16] = us(time_recorded(device, case.recorder(fa), 1, sweep.runs))
    case.destroy()
    if False not in results:
        return None, {}
    best = results.get(True, float("inf")) < results[False]
    log(f"attn   prefill {n_tok} tok: f32 math {results[False]:.1f} us, f16 math {results.get(True)} us: "
        f"{'f16' if best else 'f32'} math")
    return best, {"heads": [h, h_kv, d], "tokens": n_tok, "f32_us": results[False], "f16_us": results.get(True)}


def _generate(engine, prompts: list[list[int]], n: int) -> tuple[list[list[int]], float]:
    """Greedy continuations and decode tokens per second (prefill excluded)."""
    from vkmtp.engine.api import Request
    from vkmtp.sampling import SamplingParams

    outs, tokens, ms = [], 0, 0.0
    for ids in prompts:
        req = Request(list(ids), SamplingParams(temperature=0.0), max_tokens=n, cache_prompt=False)
        got, seq = [], None
        for ev in engine.generate(req):
            got += ev.new_ids
            seq = ev.seq
        outs.append(got)
        tokens += seq.timings.predicted_n
        ms += seq.timings.predicted_ms
    return outs, 1e3 * tokens / ms if ms else 0.0


def sweep_mtp(model_path: str, device: Device, sweep: Sweep) -> tuple[MtpTuning | None, dict]:
    """Decode tok/s per (n_max, p_min) on a few prompts; a setting whose greedy output differs from plain
    decoding is discarded (MTP must not change greedy output)."""
    from vkmtp.engine.api import EngineConfig
    from vkmtp.engine.vulkan import VulkanEngine
    from vkmtp.spec import SpecConfig
    from vkmtp.text.tokenizer import Tokenizer

    base = EngineConfig(n_ctx=512, spec=SpecConfig(enabled=False))
    plain = VulkanEngine(model_path, base, device=device)
    tok = Tokenizer.from_gguf(plain.gguf)
    prompts = [tok.encode(p, add_special=True) for p in (PROMPTS[:2] if sweep.quick else PROMPTS)]
    want, plain_tps = _generate(plain, prompts, sweep.mtp_tokens)
    has_mtp = plain.table.mtp is not None
    plain.close()
    log(f"mtp    without MTP: {plain_tps:.1f} tok/s")
    if not has_mtp:
        log("mtp    the model has no MTP block; nothing to tune")
        return None, {"no_mtp_tok_s": plain_tps}
    results = {}
    for n_max in sweep.mtp_n_max:
        engine = VulkanEngine(model_path, replace(base, spec=SpecConfig(n_max=n_max)), device=device)
        for p_min in sweep.mtp_p_min:
            engine.config = replace(engine.config, spec=replace(engine.config.spec, p_min=p_min))
            got, tps = _generate(engine, prompts, sweep.mtp_tokens)
            if got != want:
                log(f"  mtp n_max {n_max} p_min {p_min}: discarded (greedy output differs from plain "
                    f"decoding)")
                continue
            results[(n_max, p_min)] = round(tps, 2)
            log(f"  mtp n_max {n_max} p_min {p_min}: {tps:.1f} tok/s")
        engine.close()
    if not results:
        return None, {"no_mtp_tok_s": plain_tps}
    best = max(results, key=results.get)
    note = "" if results[best] > plain_tps else " (slower than without MTP: consider --no-mtp)"
    log(f"mtp    best n_max {best[0]} p_min {best[1]}: {results[best]:.1f} tok/s{note}")
    return MtpTuning(best[0], best[1]), {"no_mtp_tok_s": plain_tps,
                                         "candidates": {f"{k[0]}/{k[1]}": v for k, v in results.items()}}


def pick_type_names(spec: str | None, quick: bool) -> list[str]:
    if not spec:
        return list(QUICK_TYPES if quick else COMMON_TYPES)
    if spec == "all":
        return list(SUPPORTED_TYPES.values())
    names = [s.strip().upper() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in SUPPORTED_TYPES.values()]
    if bad:
        raise ValueError(f"--types: unknown quant type(s) {', '.join(bad)} "
                         f"(choose from {', '.join(SUPPORTED_TYPES.values())} or 'all')")
    return names


def plot_matvec(measurements: dict, out: str) -> None:
    """Mat-vec time vs column count per type (best candidate solid, default dashed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(NO_MATPLOTLIB) from None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, m in sorted(measurements.get("matvec", {}).items()):
        line, = ax.plot(m["cols"], m["best_us"], marker="o", label=f"{name} {m['best']}")
        if m.get("default_us"):
            ax.plot(m["cols"], m["default_us"], ls="--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("columns (tokens in the step)")
    ax.set_ylabel("time per mat-vec (us)")
    ax.set_title(f"mat-vec {measurements.get('matvec_shape', '')}: tuned (solid) vs default (dashed)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def run(device_index: str | None, quick: bool, model: str | None, types: str | None, show: bool,
        plot: str | None, skip: tuple[str, ...] = (), device: Device | None = None) -> int:
    """The `vkmtp tune` command; `skip` names sweeps not to run (matvec, gdn, attn, matmul). An open `device`
    is used (and left open) instead of opening `device_index`."""
    own = device is None
    device = device or Device(device_index)
    info = device.info
    try:
        if show:
            path = profile_path(info)
            profile = load_profile(info) if path.exists() else None
            if profile is None:
                print(f"no tuning profile for {info.name} ({path}); the built-in defaults are used")
            else:
                print(f"{path}\n{profile.describe()}")
            if plot and profile is not None:
                plot_matvec(profile.measurements, plot)
            return 0
        if plot:   # fail before an hour of measuring, not after
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise RuntimeError(NO_MATPLOTLIB) from None
        sweep = Sweep(quick)
        log(f"tuning {info.name} ({info.driver_name} {info.driver_info}), subgroup {info.subgroup_size}"
            f"{', quick sweep' if quick else ''}")
        t0 = time.perf_counter()
        profile = load_profile(info) or TuningProfile()
        measured = dict(profile.measurements)
        if "matvec" not in skip:
            chosen, measured["matvec"] = sweep_matvec(device, pick_type_names(types, quick), sweep)
            measured["matvec_shape"] = "x".join(map(str, sweep.matvec_shape))
            profile.matvec.update(chosen)
        if "gdn" not in skip:
            profile.gdn_lanes_per_column, profile.gdn_variant, measured["gdn"] = sweep_gdn(device, sweep)
        if "attn" not in skip:
            profile.attn_n_splits, profile.attn_chunk, measured["flash_attn"] = sweep_attn(device, sweep)
            profile.attn_f16_math, measured["flash_attn_prefill"] = sweep_attn_f16(device, sweep)
        if "matmul" not in skip:
            if not device.caps.int_dot:
                log("matmul prefill: the device enabled no integer dot product; prompt chunks stay on the f32 "
                    "mat-mat (nothing to measure)")
            else:
                shapes = matmul_shapes(model, types, sweep)
                if not shapes:
                    log("matmul prefill: no quantized weight type to measure (float weights take the f32 mat-mat)")
                else:
                    # types measured before keep their choice (a hand-set true / false for all is replaced)
                    chosen, now = sweep_matmul(device, shapes, sweep)
                    now["types"] = {**measured.get("matmul", {}).get("types", {}), **now["types"]}
                    measured["matmul"] = now
                    old = profile.matmul_int8 if isinstance(profile.matmul_int8, dict) else {}
                    profile.matmul_int8 = {**old, **chosen}
        if model:
            best, measured.setdefault("mtp", {})[os.path.basename(model)] = sweep_mtp(model, device, sweep)
            if best is not None:
                profile.mtp[os.path.basename(model)] = best
        measured["quick"] = quick
        profile.measurements = measured
        path = save_profile(profile, info)
        log(f"profile written to {path} ({time.perf_counter() - t0:.0f} s)")
        print(profile.describe())
        if plot:
            plot_matvec(measured, plot)
            log(f"plot written to {plot}")
        return 0
    finally:
        if own:
            device.destroy()
