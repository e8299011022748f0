#!/usr/bin/env python3
"""Decode and prompt speed of the Vulkan engine, with and without MTP, measured in one run.

For each configuration: prompt processing tok/s (prompt of --prompt-tokens), decode tok/s over --tokens
generated tokens (greedy), tokens per step over all generation steps, acceptance, whether the tokens equal
the no-MTP run's, and the weight bandwidth that decode speed implies (bytes of weights read per target
forward x forwards per second) as a fraction of the device's measured read bandwidth (tools/bench_device.py).
Configurations: no MTP; the default (adaptive depth, capped at n-max 3); fixed depths n-max 1..3
(--no-spec-adaptive) with the model's own drafts; and, with --synthetic RATE, fixed depths with synthetic
acceptance (benchmark mode, llama.cpp's --spec-synth-*). Each engine first runs a 16-token warm-up request
on the prompt's first chunk (graphs recorded, the adaptive policy's first measurements), as a server would
have. --n-cpu-moe N puts the routed experts of the first N layers in host memory that the GPU reads over the bus
(as `vkmtp --n-cpu-moe N`) in every configuration; the header gives their bytes.

With --temperature T (and --seed) every request samples with llama.cpp's default chain at T instead of
greedy; --host-sampling adds each configuration again with the host sampler (logits copied to the host and
a second submission per speculative step: the path before shaders/sample.comp), for a before/after in one run.

--prefill-paths: only prompt processing, on the two kernel paths in one run (rounds interleaved): the device
created without optional features (VKMTP_FEATURES=none: the f32 prefill mat-mat) and with every feature it
supports plus the int8 prefill mat-mat (Q8_1 activations, integer dot products; a tuning profile's matmul.int8).

--gdn-paths: only prompt processing with the prompt chunks' GDN update on the recurrent kernel (gdn.comp) and on the
chunked one (gdn_chunked.comp; a tuning profile's gdn.chunked), rounds interleaved, one device.

Usage: python tools/bench_engine.py -m MODEL.gguf [--tokens 64] [--prompt-tokens 128] [--text "..."]
       [--synthetic 0.8] [--rounds 5] [--paired | --prefill] [--ubatch N] [--n-cpu-moe N]
       [--temperature 0.8 --seed 1 [--host-sampling]]
       python tools/bench_engine.py -m MODEL.gguf --prefill-paths [--prompt-tokens 128 | --text "..."] [--rounds 3]
       python tools/bench_engine.py -m MODEL.gguf --gdn-paths [--prompt-tokens 512] [--rounds 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import git_commit, read_bandwidth  # noqa: E402

from vkmtp.device import Device  # noqa: E402
from vkmtp.device.info import FEATURE_NAMES  # noqa: E402
from vkmtp.engine.api import EngineConfig, Request  # noqa: E402
from vkmtp.engine.vulkan import VulkanEngine  # noqa: E402
from vkmtp.graph.tensor_overrides import n_cpu_moe_overrides  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402
from vkmtp.tuning.profile import TuningProfile, load_profile  # noqa: E402


def weight_bytes_per_token(engine: VulkanEngine) -> int:
    """Weights one target forward reads: every trunk tensor except the embedding table (one row is read)."""
    table = engine.table
    total = 0
    for spec in table.specs():
        ref = engine.weights.get(spec.name)
        if ref is None or (table.mtp is not None and spec.name.startswith(f"blk.{engine.cfg.mtp_layer}.")):
            continue
        total += ref.row_bytes if spec.name == table.token_embd.name and spec.name != table.output.name \
            else ref.nbytes
    return total


PARAMS = SamplingParams.greedy_params()   # the requests' sampling (--temperature, --seed)
UBATCH = 256   # prompt chunk (-ub) of every engine (--ubatch)


def load_config(device: Device, model: str, spec: SpecConfig, prompt: list[int], n: int, ctx: int,
                n_cpu_moe: int = 0, gpu_sampling: bool = True) -> VulkanEngine:
    eng = VulkanEngine(model, EngineConfig(n_ctx=ctx, ubatch=min(UBATCH, len(prompt)), spec=spec,
                                           tensor_overrides=n_cpu_moe_overrides(n_cpu_moe)), device=device)
    eng.gpu_sampling = gpu_sampling
    # warm-up: records every graph this run needs (pipelines compile on first use)
    for _ in eng.generate(Request(prompt[: eng.ubatch], PARAMS, max_tokens=min(n, 16), cache_prompt=False)):
        pass
    return eng


def run_config(eng: VulkanEngine, spec: SpecConfig, prompt: list[int], n: int) -> dict:
    seq, tokens = None, []
    t0 = time.perf_counter()
    for ev in eng.generate(Request(prompt, PARAMS, max_tokens=n, cache_prompt=False)):
        seq = ev.seq
        tokens += ev.new_ids
    wall = time.perf_counter() - t0
    t = seq.timings
    forwards = seq.spec.steps + (t.predicted_n - 1 - seq.spec.steps - seq.spec.draft_n_accepted)
    out = {"mtp": spec.enabled, "n_max": spec.n_max if spec.enabled else 0, "adaptive": spec.adaptive,
           "draft_vocab": spec.draft_vocab, "gpu_sampling": eng.gpu_sampling, "spec_step_ms": _mean_spec_step_ms(seq),
           "output": tokens, "gen_steps": seq.spec.gen_steps, "depths": seq.spec.depths,
           "synthetic": spec.synthetic_accept, "prompt_tok_s": 1e3 * t.prompt_n / t.prompt_ms,
           "decode_tok_s": 1e3 * (t.predicted_n - 1) / t.predicted_ms if t.predicted_n > 1 else 0.0,
           "tokens": t.predicted_n, "wall_s": wall, "draft_n": t.draft_n, "accepted": t.draft_n_accepted,
           "tokens_per_step": seq.spec.tokens_per_step or 0.0,
           "weight_bytes": weight_bytes_per_token(eng), "target_forwards": forwards}
    out["forwards_per_s"] = forwards / (t.predicted_ms / 1e3) if t.predicted_ms else 0.0
    return out


def paired_decode(engines: list[VulkanEngine], prompt: list[int], n: int, rounds: int) -> list[dict]:
    """Decode speed of several engines measured step against step: their generators advance in turn, one
    generation step each, so every engine's steps see the same load of a shared machine (sequential runs of ~10 s
    each see different load). Prompt processing is not timed. A step that recorded a graph (the first step at a
    new depth, or a first MTP catch-up of some length: pipelines compile then, seconds on lavapipe, once per
    engine as in a server) is not timed and its tokens are not counted, as the adaptive policy does not take it
    as a cost sample; those steps are reported. Per engine: tok/s over all rounds, the tokens of the last round,
    the untimed steps with their seconds, and tokens per process CPU second (paired_prefill says why)."""
    seconds, counts, outputs = [0.0] * len(engines), [0] * len(engines), [[] for _ in engines]
    cpu = [0.0] * len(engines)
    untimed = [[0, 0.0] for _ in engines]
    for _ in range(max(1, rounds)):
        gens = [e.generate(Request(prompt, PARAMS, max_tokens=n, cache_prompt=False)) for e in engines]
        outputs = [[] for _ in engines]
        for i, g in enumerate(gens):   # the prompt and the first token
            outputs[i] += next(g).new_ids
        live = list(range(len(engines)))
        while live:
            for i in list(live):
                graphs = len(engines[i]._graphs)
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    ev = next(gens[i])
                except StopIteration:
                    live.remove(i)
                    continue
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                outputs[i] += ev.new_ids
                if len(engines[i]._graphs) > graphs:
                    untimed[i][0] += 1
                    untimed[i][1] += dt
                    continue
                seconds[i] += dt
                cpu[i] += dc
                counts[i] += len(ev.new_ids)
    return [{"decode_tok_s": c / s, "tok_per_cpu_s": c / cs, "output": o, "untimed_steps": u[0], "untimed_s": u[1]}
            for c, s, cs, o, u in zip(counts, seconds, cpu, outputs, untimed)]


def paired_prefill(engines: list[VulkanEngine], prompt: list[int], rounds: int) -> list[dict]:
    """Prompt processing of several engines measured chunk against chunk: each round submits the prompt (one
    token to generate) to every engine, then their steps -- one prompt chunk each, one queue submission or a
    few (--max-submit-ms) -- run in turn, so every engine's chunks see the same load of a shared machine. The
    warm-up of load_config (the prompt's first chunk) has recorded the chunk graphs a longer prompt uses and
    compiled their pipelines. Per engine: prompt tok/s over all rounds, and the first token of the last round;
    also the process CPU seconds of its chunks (all threads: on a CPU driver such as lavapipe the chunk's work is
    done by this process's threads, so its CPU time is what the chunk costs whatever else the machine runs,
    where a chunk of a minute or more sees the load change within it)."""
    seconds, cpu, firsts = [0.0] * len(engines), [0.0] * len(engines), [[] for _ in engines]
    for _ in range(max(1, rounds)):
        seqs = [e.submit(Request(prompt, PARAMS, max_tokens=1, cache_prompt=False)) for e in engines]
        live = list(range(len(engines)))
        while live:
            for i in list(live):
                t0, c0 = time.perf_counter(), time.process_time()
                events = engines[i].step()
                seconds[i] += time.perf_counter() - t0
                cpu[i] += time.process_time() - c0
                for ev in events:
                    if ev.seq is seqs[i]:
                        firsts[i] = list(ev.new_ids)
                if seqs[i].done:
                    live.remove(i)
    return [{"prompt_tok_s": max(1, rounds) * len(prompt) / s, "cpu_s": c, "first": f}
            for s, c, f in zip(seconds, cpu, firsts)]


def median_row(runs: list[dict]) -> dict:
    """One configuration over several rounds: the run with the median decode speed, and the median prompt speed
    (the machine's load changes between rounds; interleaved rounds see the same load on average)."""
    by_decode = sorted(runs, key=lambda r: r["decode_tok_s"])
    row = dict(by_decode[len(runs) // 2])
    row["prompt_tok_s"] = float(np.median([r["prompt_tok_s"] for r in runs]))
    row["rounds"] = len(runs)
    row["same_over_rounds"] = all(r["output"] == runs[0]["output"] for r in runs)
    return row


def prefill_paths(model: str, device_name: str | None, prompt: list[int], rounds: int) -> None:
    """Prompt tok/s of the engine (no MTP, one chunk of up to 256 tokens) on the word-only path and on the
    feature path with the int8 prefill mat-mat, interleaved over `rounds`; medians printed."""
    ctx = len(prompt) + 16
    spec = SpecConfig(enabled=False)
    paths = {}
    for name, features, int8 in (("none", [], False), ("features", list(FEATURE_NAMES), True)):
        dev = Device(device_name, features=features)
        base = load_profile(dev.info) or TuningProfile()
        eng = VulkanEngine(model, EngineConfig(n_ctx=ctx, ubatch=min(256, len(prompt)), spec=spec), device=dev,
                           tuning=dataclasses.replace(base, matmul_int8=int8))
        greedy = SamplingParams.greedy_params()
        for _ in eng.generate(Request(prompt, greedy, max_tokens=1, cache_prompt=False)):   # warm-up
            pass
        paths[name] = (dev, eng)
    speeds = {name: [] for name in paths}
    firsts = {}
    for _ in range(max(1, rounds)):
        for name, (_, eng) in paths.items():
            row = run_config(eng, spec, prompt, 1)
            speeds[name].append(row["prompt_tok_s"])
            firsts[name] = row["output"][:1]
    none_dev, none_eng = paths["none"]
    feat_dev, feat_eng = paths["features"]
    med = {name: float(np.median(v)) for name, v in speeds.items()}
    print(f"model {model} on {feat_dev.info.name} ({feat_dev.info.driver_info}), commit {git_commit()}; "
          f"{len(prompt)}-token prompt in chunks of {feat_eng.ubatch}, no MTP; medians of {max(1, rounds)} "
          f"interleaved round(s)")
    print(f"features enabled: {', '.join(sorted(feat_dev.info.enabled_features)) or 'none'}")
    dot = "OpSDot" if feat_eng.ops.matmul.int_dot else "packed"
    print(f"prefill VKMTP_FEATURES=none (f32 mat-mat)        : {med['none']:9.2f} tok/s  rounds "
          f"{' '.join(f'{v:.2f}' for v in speeds['none'])}")
    print(f"prefill features on (int8 mat-mat, Q8_1, {dot:6s}) : {med['features']:9.2f} tok/s  rounds "
          f"{' '.join(f'{v:.2f}' for v in speeds['features'])}")
    print(f"features / none: {med['features'] / med['none']:.3f}x; same first token: "
          f"{'yes' if firsts['none'] == firsts['features'] else 'NO'}")
    assert feat_eng.ops.matmul.int8 and not none_eng.ops.matmul.int8
    for dev, eng in paths.values():
        eng.close()
        dev.destroy()


def gdn_paths(model: str, device_name: str | None, prompt: list[int], rounds: int) -> None:
    """Prompt tok/s (no MTP, chunks of up to 256 tokens) with the GDN update of prompt chunks on the recurrent and
    on the chunked kernel, interleaved over `rounds`; medians printed, and whether the first tokens agree."""
    ctx = len(prompt) + 16
    spec = SpecConfig(enabled=False)
    dev = Device(device_name)
    base = load_profile(dev.info) or TuningProfile()
    paths = {}
    for name, chunked in (("recurrent", False), ("chunked", True)):
        eng = VulkanEngine(model, EngineConfig(n_ctx=ctx, ubatch=min(256, len(prompt)), spec=spec), device=dev,
                           tuning=dataclasses.replace(base, gdn_chunked=chunked))
        assert (eng.ops.gdn_prefill is not None) == chunked
        warm = prompt[: eng.ubatch + 1]   # one full chunk and the last token's: the pipelines compile here
        for _ in eng.generate(Request(warm, SamplingParams.greedy_params(), max_tokens=1, cache_prompt=False)):
            pass
        paths[name] = eng
    speeds = {name: [] for name in paths}
    firsts = {}
    for _ in range(max(1, rounds)):
        for name, eng in paths.items():
            row = run_config(eng, spec, prompt, 1)
            speeds[name].append(row["prompt_tok_s"])
            firsts[name] = row["output"][:1]
    med = {name: float(np.median(v)) for name, v in speeds.items()}
    op = paths["chunked"].ops.gdn_prefill
    print(f"model {model} on {dev.info.name} ({dev.info.driver_info}), commit {git_commit()}; {len(prompt)}-token "
          f"prompt in chunks of {paths['chunked'].ubatch}, no MTP; medians of {max(1, rounds)} interleaved round(s)")
    for name in paths:
        label = name if name == "recurrent" else f"chunked (C={op.chunk}, cols={op.columns})"
        print(f"prefill GDN {label:28s}: {med[name]:9.2f} tok/s  rounds {' '.join(f'{v:.2f}' for v in speeds[name])}")
    print(f"chunked / recurrent: {med['chunked'] / med['recurrent']:.3f}x; same first token: "
          f"{'yes' if firsts['recurrent'] == firsts['chunked'] else 'NO'}")
    for eng in paths.values():
        eng.close()
    dev.destroy()


def _mean_spec_step_ms(seq) -> float:
    """Wall ms per generation step that drafted (draft + verify in one submission; 0 when none did)."""
    st = seq.spec
    return st.draft_verify_ms / st.draft_steps if st.draft_steps else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--n-max", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--synthetic", type=float, default=None)
    ap.add_argument("--draft-vocab", type=int, nargs="*", default=[],
                    help="also run fixed n-max 1 with the draft's LM head over the N lowest token ids")
    ap.add_argument("--text", default=None, help="the prompt as text (tokenized with the model's tokenizer; "
                    "default: --prompt-tokens random ids)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure every configuration this many times, interleaved, and report medians")
    ap.add_argument("--paired", action="store_true",
                    help="only no MTP vs the default: decode measured step against step (interleaved), --rounds "
                    "requests each")
    ap.add_argument("--prefill", action="store_true",
                    help="only no MTP vs the default: prompt processing measured chunk against chunk "
                    "(interleaved), --rounds prompts each")
    ap.add_argument("--n-cpu-moe", type=int, default=0, metavar="N",
                    help="routed experts of the first N layers in host memory, read by the GPU (default 0)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sample at this temperature with llama.cpp's default chain (0: greedy)")
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed (with --temperature)")
    ap.add_argument("--host-sampling", action="store_true",
                    help="also run every configuration with the host sampler (the path before GPU sampling)")
    ap.add_argument("--paired-depth", type=int, default=0,
                    help="with --paired: MTP at this fixed depth (--no-spec-adaptive) instead of the default")
    ap.add_argument("--prefill-paths", action="store_true",
                    help="only prompt tok/s with VKMTP_FEATURES=none (f32 mat-mat) vs every feature and the int8 "
                    "prefill mat-mat, --rounds interleaved")
    ap.add_argument("--gdn-paths", action="store_true",
                    help="only prompt tok/s with the prompt chunks' GDN update recurrent vs chunked, --rounds "
                    "interleaved")
    ap.add_argument("--ubatch", type=int, default=None, metavar="N",
                    help="prompt chunk of every engine (-ub; default 256): smaller chunks interleave --prefill's two "
                    "engines more finely, so a shared machine's load reaches both alike")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.ubatch is not None:
        if args.prefill_paths:
            ap.error("--ubatch: --prefill-paths times one chunk of up to 256 tokens per path; not with --ubatch")
        if args.ubatch < 8:
            ap.error(f"--ubatch must be at least 8, the engine's smallest prompt chunk (got {args.ubatch})")
        global UBATCH
        UBATCH = args.ubatch
    if args.prefill_paths and (args.paired or args.json or args.synthetic is not None or args.draft_vocab
                               or args.n_cpu_moe or args.temperature > 0 or args.host_sampling or args.paired_depth):
        ap.error("--prefill-paths times greedy prompts only (--prompt-tokens or --text, --rounds, --device): not "
                 "with --paired, --json, --synthetic, --draft-vocab, --n-cpu-moe, --temperature, --host-sampling "
                 "or --paired-depth")
    if args.gdn_paths and (args.prefill_paths or args.paired or args.json or args.synthetic is not None
                           or args.draft_vocab or args.n_cpu_moe or args.temperature > 0 or args.host_sampling
                           or args.paired_depth):
        ap.error("--gdn-paths times greedy prompts only (--prompt-tokens or --text, --rounds, --device): not with "
                 "--prefill-paths, --paired, --json, --synthetic, --draft-vocab, --n-cpu-moe, --temperature, "
                 "--host-sampling or --paired-depth")
    if args.prefill_paths or args.gdn_paths:
        from vkmtp.gguf import open_gguf
        from vkmtp.model.config import ModelConfig

        if args.text is not None:
            from vkmtp.text.tokenizer import Tokenizer

            prompt = Tokenizer.from_gguf(open_gguf(args.model)).encode(args.text, add_special=True)
        else:
            n_vocab = ModelConfig.from_gguf(open_gguf(args.model)).n_vocab
            prompt = [int(t) for t in np.random.default_rng(0).integers(0, n_vocab, args.prompt_tokens)]
        (gdn_paths if args.gdn_paths else prefill_paths)(args.model, args.device, prompt, args.rounds)
        return
    global PARAMS
    if args.temperature > 0:
        PARAMS = SamplingParams(temperature=args.temperature, seed=args.seed)
    elif args.host_sampling:
        ap.error("--host-sampling compares samplers: it needs --temperature > 0")
    mode = "greedy" if PARAMS.greedy else f"temperature {PARAMS.temperature}, seed {PARAMS.seed}"
    device = Device(args.device)
    bw = read_bandwidth(device, min(device.info.max_storage_buffer_range, 256 << 20))["gb_per_s"] * 1e9
    rng = np.random.default_rng(0)
    from vkmtp.gguf import open_gguf
    from vkmtp.model.config import ModelConfig

    n_vocab = ModelConfig.from_gguf(open_gguf(args.model)).n_vocab
    if args.text is not None:
        from vkmtp.text.tokenizer import Tokenizer

        prompt = Tokenizer.from_gguf(open_gguf(args.model)).encode(args.text, add_special=True)
    else:
        prompt = [int(t) for t in rng.integers(0, n_vocab, args.prompt_tokens)]
    args.prompt_tokens = len(prompt)
    ctx = args.prompt_tokens + args.tokens + 16
    if args.paired:
        samplers = (True, False) if args.host_sampling else (True,)
        mtp = SpecConfig(n_max=args.paired_depth, adaptive=False) if args.paired_depth else SpecConfig()
        engines = [load_config(device, args.model, c, prompt, args.tokens, ctx, args.n_cpu_moe, gpu)
                   for gpu in samplers for c in (SpecConfig(enabled=False), mtp)]
        host = engines[1].memory_plan.host_weights
        results = paired_decode(engines, prompt, args.tokens, args.rounds)
        off, on = results[:2]
        depths = engines[1].adaptive.history if engines[1].adaptive else []
        label = f"MTP n-max {args.paired_depth}" if args.paired_depth else "default (adaptive)"
        for eng in engines:
            eng.close()
        print(f"model {args.model} on {device.info.name}, commit {git_commit()}; {len(prompt)}-token prompt, "
              f"{args.tokens} generated x {max(1, args.rounds)} request(s), {mode}, steps interleaved; "
              f"--n-cpu-moe {args.n_cpu_moe}: {host / 2**20:.1f} MiB of experts in host memory")
        if args.host_sampling:
            h_off, h_on = results[2:]
            print(f"host sampling (before): no MTP {h_off['decode_tok_s']:.2f} tok/s; {label} "
                  f"{h_on['decode_tok_s']:.2f} tok/s; ratio {h_on['decode_tok_s'] / h_off['decode_tok_s']:.3f}; "
                  f"same tokens as GPU sampling: "
                  f"{'yes' if h_off['output'] == off['output'] == h_on['output'] else 'NO'}")
        print(f"{'GPU sampling (after): ' if args.host_sampling else ''}no MTP {off['decode_tok_s']:.2f} tok/s; "
              f"{label} {on['decode_tok_s']:.2f} tok/s; "
              f"ratio {on['decode_tok_s'] / off['decode_tok_s']:.3f}; same tokens: "
              f"{'yes' if on['output'] == off['output'] else 'NO'}" + ("" if args.paired_depth else
              f"; drafting choices of the default: {sum(1 for d in depths if d.depth)} runs of depth > 0 over the "
              f"warm-up and all rounds, last (step, depth) {[(d.step, d.depth) for d in depths[-6:]]}"))
        print(f"tokens per process CPU second: no MTP {off['tok_per_cpu_s']:.2f}; {label} {on['tok_per_cpu_s']:.2f}; "
              f"ratio {on['tok_per_cpu_s'] / off['tok_per_cpu_s']:.3f}")
        print("steps that recorded a graph (not timed): " + "; ".join(
            f"{name} {r['untimed_steps']} ({r['untimed_s']:.2f} s)"
            for name, r in zip(("no MTP", label) + (("no MTP (host)", f"{label} (host)") if args.host_sampling
                                                    else ()), results)))
        device.destroy()
        return
    if args.prefill:
        engines = [load_config(device, args.model, c, prompt, 1, ctx, args.n_cpu_moe)
                   for c in (SpecConfig(enabled=False), SpecConfig())]
        off, on = paired_prefill(engines, prompt, args.rounds)
        subs = [list(e.prefill_submissions) for e in engines]
        for eng in engines:
            eng.close()
        print(f"model {args.model} on {device.info.name}, commit {git_commit()}; {len(prompt)}-token prompt x "
              f"{max(1, args.rounds)} round(s) in chunks of {engines[0].ubatch}, prompt chunks interleaved")
        print(f"prefill no MTP {off['prompt_tok_s']:.2f} tok/s; default (MTP on) {on['prompt_tok_s']:.2f} tok/s; "
              f"ratio {on['prompt_tok_s'] / off['prompt_tok_s']:.3f}; same first token: "
              f"{'yes' if on['first'] == off['first'] else 'NO'}; submissions per chunk (no MTP / MTP): "
              f"{subs[0]} / {subs[1]}")
        print(f"process CPU seconds of the chunks: no MTP {off['cpu_s']:.1f}, MTP on {on['cpu_s']:.1f}; "
              f"speed ratio by CPU time {off['cpu_s'] / on['cpu_s']:.3f}")
        device.destroy()
        return
    configs = [SpecConfig(enabled=False), SpecConfig()] + [SpecConfig(n_max=k, adaptive=False) for k in args.n_max]
    configs += [SpecConfig(n_max=1, adaptive=False, draft_vocab=n) for n in args.draft_vocab]
    if args.synthetic is not None:
        configs += [SpecConfig(n_max=k, adaptive=False, synthetic_accept=args.synthetic) for k in args.n_max]
    gpu = [True] * len(configs)
    if args.host_sampling:
        configs, gpu = configs + configs, gpu + [False] * len(configs)
    engines = [load_config(device, args.model, c, prompt, args.tokens, ctx, args.n_cpu_moe, g)
               for c, g in zip(configs, gpu)]
    host = max(e.memory_plan.host_weights for e in engines)
    runs = [[] for _ in configs]
    for _ in range(max(1, args.rounds)):
        for i, (c, eng) in enumerate(zip(configs, engines)):
            runs[i].append(run_config(eng, c, prompt, args.tokens))
    for eng in engines:
        eng.close()
    rows = [median_row(r) for r in runs]
    base = rows[0]
    for r in rows:
        r["decode_vs_no_mtp"] = r["decode_tok_s"] / base["decode_tok_s"]
        r["prompt_vs_no_mtp"] = r["prompt_tok_s"] / base["prompt_tok_s"]
        r["bandwidth_fraction"] = r["forwards_per_s"] * r["weight_bytes"] / bw
        r["same_tokens"] = r["output"] == base["output"] and r["same_over_rounds"]
    meta = {"model": args.model, "device": device.info.name, "driver": device.info.driver_info,
            "read_gb_s": bw / 1e9, "commit": git_commit(), "n_cpu_moe": args.n_cpu_moe, "host_weight_bytes": host}
    device.destroy()
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=1))
        return
    print(f"model {meta['model']} on {meta['device']} ({meta['driver']}), read bandwidth {bw / 1e9:.2f} GB/s, "
          f"commit {meta['commit']}; {args.prompt_tokens}-token prompt, {args.tokens} generated, {mode}; medians "
          f"of {max(1, args.rounds)} interleaved round(s); --n-cpu-moe {args.n_cpu_moe}: {host / 2**20:.1f} MiB "
          f"of experts in host memory")
    print(f"{'config':<30}{'prompt tok/s':>13}{'vs off':>8}{'decode tok/s':>14}{'vs off':>8}{'tok/step':>10}"
          f"{'accepted':>10}{'BW frac':>9}{'same':>6}{'spec step ms':>13}  depth@step")
    for r in rows:
        name = ("no MTP" if not r["mtp"] else ("default (adaptive)" if r["adaptive"] else f"MTP n-max {r['n_max']}")) \
            + (f" synth {r['synthetic']}" if r["synthetic"] is not None else "") \
            + (f" vocab {r['draft_vocab']}" if r["draft_vocab"] else "") \
            + ("" if r["gpu_sampling"] else " (host)")
        acc = f"{r['accepted']}/{r['draft_n']}" if r["mtp"] else "-"
        print(f"{name:<30}{r['prompt_tok_s']:>13.1f}{r['prompt_vs_no_mtp']:>8.2f}{r['decode_tok_s']:>14.1f}"
              f"{r['decode_vs_no_mtp']:>8.2f}{r['tokens_per_step']:>10.2f}{acc:>10}{r['bandwidth_fraction']:>9.3f}"
              f"{'yes' if r['same_tokens'] else 'NO':>6}{r['spec_step_ms']:>13.1f}  {' '.join(f'{d}@{s}' for s, d in r['depths'][:8])}")


if __name__ == "__main__":
    main()
