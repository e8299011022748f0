"""The `vkmtp` command line. Flags are named as llama-server names them where the concept is the same."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import os
import sys

from vkmtp.cli.llama_flags import (
    FlagError,
    add_llama_flags,
    argv_with_env,
    chat_template_source,
    check_llama_flags,
    device_list,
    device_selector,
    logical_names,
    read_api_key,
    spec_enabled,
    template_kwargs,
)
from vkmtp.ops.kv_layout import ENGINE_KV_TYPES
from vkmtp.engine.host_cache import DEFAULT_CACHE_RAM_MIB
from vkmtp.engine.prompt_cache import DEFAULT_CTX_CHECKPOINTS

DEFAULT_CTX = 4096   # -c when not given (--fit shrinks it to the device)


def cmd_devices(args: argparse.Namespace) -> int:
    from vkmtp.device import format_devices, list_devices, pick_device

    devices = list_devices()
    chosen = pick_device(devices, device_selector(args.device)) if devices else None
    print(format_devices(devices, chosen.index if chosen else None))
    for d in devices:  # the names llama.cpp gives them, which --device accepts
        print(f"Vulkan{d.index}: {d.name}")
    if chosen:
        print("\n* = used by default (discrete > integrated > cpu; override with --device N or VKMTP_DEVICE)")
    return 0


def cmd_shaders(args: argparse.Namespace) -> int:
    from vkmtp.device import ShaderCompiler
    from vkmtp.ops.variants import all_variants

    comp = ShaderCompiler()
    variants = all_variants()
    for key in variants:
        comp.spirv(key)
    print(f"{len(variants)} shader variants ready in {comp.cache_dir} ({comp.misses} compiled, {comp.hits} cached)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from vkmtp.cli.info import describe_model
    from vkmtp.device import Device
    from vkmtp.tuning.profile import load_profile

    choice = _device_choice(args, args.model)
    split = choice if isinstance(choice, LayerSplitChoice) else None
    # opened once: its tuning profile and its memory budget (a split's last device: the heads' profile)
    device = Device(split.devices[-1] if split else choice)
    try:
        n_max, source = args.spec_draft_n_max, "--spec-draft-n-max"
        if n_max is None:
            n_max, source = _profile_n_max(args.model, device.info)
        print(describe_model(args.model, 4096 if args.ctx_size is None else args.ctx_size, args.parallel,
                             _cache_types(args), not args.no_mtp, n_max, args.ubatch_size,
                             device=None if split else device, fit_margin_mib=args.fit_target,
                             overrides=_tensor_overrides(args), fit=args.fit == "on", n_ckpt=args.ctx_checkpoints,
                             tuning=load_profile(device.info),
                             split=(split.devices, split.shares) if split else None))
    finally:
        device.destroy()
    print(f"draft n-max   {n_max} ({source})")
    return 0


def _profile_n_max(model: str, info) -> tuple[int, str]:
    """The draft depth generation would use without --spec-draft-n-max: the tuning profile of the device
    `info` describes for this model, else the built-in default; and where it came from."""
    from vkmtp.spec import SpecConfig
    from vkmtp.tuning.profile import load_profile

    profile = load_profile(info)
    tuned = profile.mtp_for(model) if profile is not None else None
    if tuned is not None:
        return tuned.n_max, "the tuning profile of this device"
    return SpecConfig().n_max, "built-in default"


class _ShaderProgress:
    """A progress bar (stderr) for shaders compiled on a first run; nothing when every variant is cached."""

    def __init__(self):
        self.bar = None

    def __call__(self, key) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="compiling shaders (first run; cached afterwards)", unit="shader",
                            file=sys.stderr, leave=False)
        self.bar.update(1)

    def __enter__(self):
        from vkmtp.device.compiler import compile_listener

        self._context = compile_listener(self)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        self._context.__exit__(*exc)
        if self.bar is not None:
            self.bar.close()


def cmd_tune(args: argparse.Namespace) -> int:
    from vkmtp.tuning.sweeps import run

    return run(args.device, args.quick, args.model, args.types, args.show, args.plot, tuple(args.skip))


def _model_path(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    from vkmtp.demo_model import default_model_path

    return default_model_path()


def _cache_types(args: argparse.Namespace):
    from vkmtp.graph.memory_plan import CacheTypes

    return CacheTypes(args.cache_type_k, args.cache_type_v, args.cache_type_k_draft, args.cache_type_v_draft)


def _tensor_overrides(args: argparse.Namespace) -> tuple:
    """-ot, then --cpu-moe, then --n-cpu-moe, as llama.cpp orders its tensor buffer-type overrides."""
    from vkmtp.graph.tensor_overrides import (PlacementError, cpu_moe_overrides, n_cpu_moe_overrides,
                                              parse_override_tensor)

    try:
        out = parse_override_tensor(getattr(args, "override_tensor", None))
        if getattr(args, "cpu_moe", False):
            out += cpu_moe_overrides()
        if getattr(args, "n_cpu_moe", None) is not None:
            out += n_cpu_moe_overrides(args.n_cpu_moe)
    except PlacementError as exc:
        raise FlagError(str(exc)) from None
    return out


SPLIT_MODES = ("none", "layer", "row")


@dataclass(frozen=True)
class LayerSplitChoice:
    """A checked layer split: the physical device of each stage, -ts proportions (None: free memory) and the
    blocks each device gets (said on stderr when the model is known)."""

    devices: tuple[int, ...]
    shares: tuple[float, ...] | None
    description: str = ""


def _device_choice(args: argparse.Namespace, model_path: str | None = None) -> int | LayerSplitChoice | None:
    """The physical device the engine runs on, from -dev/--device, -sm/--split-mode, -ts/--tensor-split and
    -mg/--main-gpu in llama.cpp's meanings (None: the default device). Several devices in --device split the
    model by layers unless --split-mode none; that split is checked (devices exist, -ts fits the list, every
    device gets layers) and returned as a LayerSplitChoice (docs/DESIGN.md, "Several devices")."""
    devices = device_list(args.device)
    mode = getattr(args, "split_mode", None)
    ts, mg = getattr(args, "tensor_split", None), getattr(args, "main_gpu", None)
    if mode is not None and mode.lower() not in SPLIT_MODES:
        raise FlagError(f"-sm/--split-mode {mode}: expected none, layer or row")
    mode = mode.lower() if mode else None
    if mode == "row":
        raise FlagError("-sm/--split-mode row: not supported: vkmtp splits a model over devices by layers only "
                        "(--split-mode layer) or runs it on one (--split-mode none)")
    several = devices is not None and len(devices) > 1
    if ts is not None and mode == "none":
        raise FlagError(f"-ts/--tensor-split {ts}: splits layers between devices; --split-mode none runs on one")
    if several or mg is not None:
        known = _device_names()
        for p in devices or ():
            if p >= len(known):
                raise FlagError(f"-dev/--device {args.device}: Vulkan{p} does not exist; `vkmtp devices` lists "
                                f"{', '.join(known) or 'none'}")
    if not several or mode == "none":
        if ts is not None:
            from vkmtp.graph.layer_split import SplitError, parse_tensor_split

            try:
                parse_tensor_split(ts, 1)
            except SplitError as exc:
                raise FlagError(str(exc)) from None
        if mode == "layer":
            print("vkmtp: note: -sm/--split-mode layer: one device in use, every layer is on it", file=sys.stderr)
        if mg is None:
            return devices[0] if devices else None
        pool = devices or tuple(range(len(known)))
        where = "-dev/--device's" if devices else "`vkmtp devices`'"
        if not 0 <= mg < len(pool):
            raise FlagError(f"-mg/--main-gpu {mg}: an index into {where} {len(pool)} devices (0..{len(pool) - 1})")
        return pool[mg]
    if mg is not None:
        raise FlagError(f"-mg/--main-gpu {mg}: picks the device of --split-mode none; a layer split puts the LM "
                        f"head and the MTP head on the last device of -dev/--device")
    return _layer_split(devices, ts, model_path, args.fit_target)


def _device_names() -> list[str]:
    from vkmtp.device import list_devices

    return [f"Vulkan{d.index}" for d in list_devices()]


def _layer_split(devices: tuple[int, ...], ts: str | None, model_path: str | None,
                 margin_mib: int | None) -> LayerSplitChoice:
    """A layer split over `devices`, checked: -ts fits the list and, with the model known, every device but the
    last gets a trunk block (else FlagError naming the flag)."""
    from vkmtp.graph.layer_split import SplitError, parse_tensor_split, proportions_from_free, split_layers

    names = logical_names(devices)
    shares = None
    try:
        if ts is not None:
            shares = parse_tensor_split(ts, len(devices))
            source = f"-ts {ts}"
        else:
            from vkmtp.device import list_devices
            from vkmtp.graph.memory_plan import fit_budget

            infos = list_devices()
            free = proportions_from_free([fit_budget(infos[p], margin_mib) for p in devices], list(devices))
            source = "free memory"
        split = ""
        if model_path is not None:
            from vkmtp.gguf import open_gguf
            from vkmtp.model.config import ModelConfig

            cfg = ModelConfig.from_gguf(open_gguf(model_path))
            ranges = split_layers(cfg.n_layer_all, cfg.n_layer, shares or free, names)
            split = f"by {source}: " + "; ".join(r.describe() for r in ranges)
    except SplitError as exc:
        raise FlagError(str(exc)) from None
    return LayerSplitChoice(tuple(devices), shares, split)


def _engine_config(args: argparse.Namespace, model_path: str | None = None):
    """The engine's settings; with the Vulkan backend and a context not fixed by -c (or -c 0), the context
    --fit picks on the device, said in one line."""
    from vkmtp.engine.api import EngineConfig
    from vkmtp.spec import SpecConfig

    if args.fit == "off" and args.ctx_size == 0:
        raise FlagError("-c 0 (the largest context that fits) needs --fit on")
    given = args.spec_draft_n_max is not None or args.spec_draft_p_min is not None
    default = SpecConfig()
    n_max = default.n_max if args.spec_draft_n_max is None else args.spec_draft_n_max
    p_min = default.p_min if args.spec_draft_p_min is None else args.spec_draft_p_min
    enabled = spec_enabled(args.spec_type, args.no_mtp, args.multi_token_prediction)
    spec = SpecConfig(enabled=enabled, n_max=n_max, n_min=args.spec_draft_n_min, p_min=p_min,
                      adaptive=args.spec_adaptive, draft_vocab=args.spec_draft_vocab, from_profile=not given)
    types = _cache_types(args)
    choice = _device_choice(args, model_path)
    config = EngineConfig(n_ctx=DEFAULT_CTX if args.ctx_size is None else args.ctx_size, n_slots=args.parallel,
                          ubatch=args.ubatch_size, kv_type=types.k, kv_type_v=types.v,
                          draft_kv_type_k=types.draft_k, draft_kv_type_v=types.draft_v,
                          device=None if isinstance(choice, LayerSplitChoice) else choice, spec=spec,
                          fit=args.fit == "on",
                          fit_margin_mib=args.fit_target, max_submit_ms=args.max_submit_ms,
                          ctx_checkpoints=args.ctx_checkpoints, slot_prompt_similarity=args.slot_prompt_similarity,
                          cache_ram_mib=args.cache_ram,
                          ctx_fixed=args.ctx_size not in (None, 0) or args.fit == "off",
                          tensor_overrides=_tensor_overrides(args),
                          split_devices=choice.devices if isinstance(choice, LayerSplitChoice) else (),
                          tensor_split=choice.shares if isinstance(choice, LayerSplitChoice) else None)
    if isinstance(choice, LayerSplitChoice):
        if args.backend != "vulkan":
            print(f"vkmtp: note: -dev/--device {args.device}: the {args.backend} backend runs on the host, not "
                  f"split over devices", file=sys.stderr)
        elif choice.description:
            print(f"vkmtp: layer split {choice.description}", file=sys.stderr)
    if config.tensor_overrides and args.backend != "vulkan":
        print(f"vkmtp: note: {', '.join(dict.fromkeys(str(o) for o in config.tensor_overrides))}: the "
              f"{args.backend} backend keeps every weight in host memory", file=sys.stderr)
    if args.max_submit_ms is not None and args.backend != "vulkan":
        print(f"vkmtp: note: --max-submit-ms {args.max_submit_ms}: the {args.backend} backend submits nothing to "
              f"a GPU queue", file=sys.stderr)
    if model_path is None or (config.ctx_fixed and (not config.fit or config.tensor_overrides
                                                    or args.backend != "vulkan")):
        return config   # nothing for --fit to choose (a MoE model may still need experts in host memory)
    if args.backend != "vulkan":
        # the reference engine has no device budget: -c 0 is the model's trained context
        from dataclasses import replace

        from vkmtp.gguf import open_gguf
        from vkmtp.model.config import ModelConfig

        n_ctx = config.n_ctx or ModelConfig.from_gguf(open_gguf(model_path)).n_ctx_train or DEFAULT_CTX
        return replace(config, n_ctx=n_ctx, ctx_fixed=True)
    from vkmtp.engine.vulkan import fit_config

    config, message = fit_config(model_path, config)
    if message:
        print(f"vkmtp: fit: {message}", file=sys.stderr)
    return config


def _sampling_defaults(args: argparse.Namespace):
    from vkmtp.sampling import SamplingParams

    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                          presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                          seed=None if args.seed < 0 else args.seed)


def _chat_template(args: argparse.Namespace, gguf, tokenizer):
    """The GGUF's chat template, or the one --chat-template / --chat-template-file gives."""
    from vkmtp.text.chat_template import ChatTemplate

    source = chat_template_source(args.chat_template, args.chat_template_file)
    if source is None:
        return ChatTemplate.from_metadata(gguf.metadata, tokenizer)
    return ChatTemplate.for_tokenizer(tokenizer, source)


def _prompt_text(args: argparse.Namespace) -> str:
    """-p TEXT or -f FILE (llama-cli's names)."""
    if (args.prompt is None) == (args.file is None):
        raise FlagError("give the prompt with -p TEXT or -f FILE (one of them)")
    if args.file is None:
        return args.prompt
    try:
        with open(args.file, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise FlagError(f"-f {args.file}: {exc.strerror}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from vkmtp.server.config import ServerConfig
    from vkmtp.server.serve import serve

    api_key = read_api_key(args.api_key, args.api_key_file)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"vkmtp: warning: listening on {args.host} without --api-key: anyone who can reach this port "
              f"can use the model", file=sys.stderr)
    config = ServerConfig(engine=_engine_config(args, _model_path(args)), host=args.host, port=args.port, api_key=api_key,
                          max_body_bytes=args.max_body_bytes, max_queue=args.max_queue,
                          n_predict=args.n_predict, cache_prompt=not args.no_cache_prompt,
                          chat_template_kwargs=_thinking_kwargs(args), reasoning_format=args.reasoning_format,
                          sleep_idle_seconds=args.sleep_idle_seconds, sampling=_sampling_defaults(args),
                          no_webui=args.no_webui, slot_save_path=_slot_save_path(args.slot_save_path))
    log_level = "debug" if args.verbose else "critical" if args.log_disable else args.log_level
    serve(config, _model_path(args), args.backend, alias=args.alias, log_level=log_level,
          chat_template=chat_template_source(args.chat_template, args.chat_template_file),
          log_format=args.log_format)
    return 0


def _slot_save_path(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise FlagError(f"--slot-save-path {path}: {exc.strerror}") from None
    return os.path.abspath(path)


def cmd_chat(args: argparse.Namespace) -> int:
    from vkmtp.engine.factory import load_engine
    from vkmtp.gguf import open_gguf
    from vkmtp.cli.chat import chat_loop
    from vkmtp.text.tokenizer import Tokenizer

    path = _model_path(args)
    gguf = open_gguf(path)
    tokenizer = Tokenizer.from_gguf(gguf)
    template = _chat_template(args, gguf, tokenizer)
    engine = load_engine(path, _engine_config(args, path), args.backend, progress=True)
    kwargs = _thinking_kwargs(args)
    if args.no_think:
        kwargs["enable_thinking"] = False
    try:
        print("vkmtp chat: /reset clears the conversation, /exit leaves; Ctrl-C stops a reply", file=sys.stderr)
        chat_loop(engine, tokenizer, template, _sampling_defaults(args), args.n_predict, args.system,
                  template_kwargs=kwargs, ignore_eos=args.ignore_eos)
    finally:
        engine.close()
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate from a prompt, streaming text; --json prints token ids, text, timings and MTP statistics."""
    import json
    import time

    from vkmtp.engine.api import Request
    from vkmtp.engine.factory import load_engine
    from vkmtp.gguf import open_gguf
    from vkmtp.text.tokenizer import StreamDecoder, Tokenizer

    path = _model_path(args)
    gguf = open_gguf(path)
    tokenizer = Tokenizer.from_gguf(gguf)
    prompt = _prompt_text(args)
    if args.chat:
        prompt = _chat_template(args, gguf, tokenizer).render([{"role": "user", "content": prompt}])
    ids = tokenizer.encode(prompt, add_special=True, parse_special=True)
    config = _engine_config(args, path)
    if args.spec_synth_rate is not None:
        from dataclasses import replace

        config = replace(config, spec=replace(config.spec, synthetic_accept=args.spec_synth_rate))
    t0 = time.perf_counter()
    engine = load_engine(path, config, args.backend, progress=not args.json)
    load_s = time.perf_counter() - t0
    from vkmtp.engine.probes import memory_report, peak_rss_bytes

    load_rss = peak_rss_bytes()
    load_device = memory_report(engine)["device_bytes"]
    stream = StreamDecoder(tokenizer)
    out: list[int] = []
    seq = None
    try:
        if not args.json:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        request = Request(ids, _sampling_defaults(args), max_tokens=args.n_predict,
                          stop_ids=frozenset() if args.ignore_eos else tokenizer.eog_ids)
        for ev in engine.generate(request):
            seq = ev.seq
            out += ev.new_ids
            if not args.json:
                sys.stdout.write("".join(stream.push(t) for t in ev.new_ids))
                sys.stdout.flush()
        memory = memory_report(engine, load_rss)
        memory["load_device_bytes"] = load_device
        submits = {"max_submit_ms": getattr(engine, "max_submit_ms", None),
                   "prefill_submissions": list(getattr(engine, "prefill_submissions", []))}
        graph = engine.graph_report() if hasattr(engine, "graph_report") else None
    finally:
        engine.close()
    tail = stream.flush()
    text = tokenizer.decode(out, render_special=False)
    t = seq.timings.to_json()
    if args.json:
        print(json.dumps({"model": path, "backend": args.backend, "prompt_tokens": ids, "tokens": out,
                          "text": text, "stop_reason": seq.stop_reason, "load_seconds": load_s, "timings": t,
                          "speculative": seq.spec.to_dict() if config.spec.enabled else None,
                          "n_ctx": engine.config.n_ctx, "memory": memory, "submissions": submits,
                          "graph": graph}, indent=1))
        return 0
    sys.stdout.write(tail + "\n")
    mtp = f", MTP: {seq.spec.summary()}" if config.spec.enabled and seq.spec.gen_steps else ""
    print(f"\n[{args.backend}] prompt {t['prompt_n']} tokens at {t['prompt_per_second']:.1f} tok/s, "
          f"generated {t['predicted_n']} at {t['predicted_per_second']:.1f} tok/s{mtp}", file=sys.stderr)
    return 0


def _fit_target(value: str) -> int:
    """--fit-target MiB (llama.cpp takes one value per device; vkmtp takes one, for every device of a split)."""
    parts = value.split(",")
    if len(parts) != 1:
        raise argparse.ArgumentTypeError(f"{value!r}: give one margin in MiB (it applies to every device)")
    n = int(parts[0])
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a margin is >= 0 MiB")
    return n


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    """-dev, -sm, -ts, -mg: which device(s) the model runs on (llama.cpp's meanings; docs/DESIGN.md)."""
    p.add_argument("-dev", "--device", default=None,
                   help="Vulkan device: Vulkan0, Vulkan1, ... as `vkmtp devices` lists them, or an index; several "
                        "comma-separated for --split-mode (the same one twice: two logical devices)")
    p.add_argument("-sm", "--split-mode", dest="split_mode", default=None, metavar="{none,layer,row}",
                   help="with several devices in --device: none = run on one of them (--main-gpu picks it); "
                        "layer (the default with several) = each holds a range of layers, the heads on the last; "
                        "row: refused")
    p.add_argument("-ts", "--tensor-split", dest="tensor_split", default=None, metavar="N0,N1,...",
                   help="layer split proportions, one per device in --device (default: their free memory)")
    p.add_argument("-mg", "--main-gpu", dest="main_gpu", type=int, default=None, metavar="INDEX",
                   help="with --split-mode none: the device to run on, an index into --device's list (into "
                        "`vkmtp devices` without --device); default 0")


def _add_memory_flags(p: argparse.ArgumentParser) -> None:
    """What the memory plan depends on: context, cache types, weight placement, prompt-cache checkpoints and
    --fit (llama-server's names; ik_llama.cpp's --fit-margin)."""
    p.add_argument("-c", "--ctx-size", type=int, default=None,
                   help=f"context per slot (default {DEFAULT_CTX}, shrunk by --fit when it does not fit; "
                        f"0: the largest that fits, up to the model's trained context)")
    p.add_argument("-ub", "--ubatch-size", type=int, default=256, help="prefill chunk")
    p.add_argument("-ctk", "--cache-type-k", default="f16", choices=ENGINE_KV_TYPES)
    p.add_argument("-ctv", "--cache-type-v", default="f16", choices=ENGINE_KV_TYPES)
    p.add_argument("-ctkd", "--cache-type-k-draft", "--spec-draft-type-k", dest="cache_type_k_draft",
                   default=None, choices=ENGINE_KV_TYPES, help="the MTP head's K cache (default: -ctk)")
    p.add_argument("-ctvd", "--cache-type-v-draft", "--spec-draft-type-v", dest="cache_type_v_draft",
                   default=None, choices=ENGINE_KV_TYPES, help="the MTP head's V cache (default: -ctv)")
    p.add_argument("-fit", "--fit", nargs="?", const="on", default="on", choices=["on", "off"],
                   help="on (default): check the memory plan against the device budget and, unless -c is "
                        "given, pick the largest context that fits; off: -c as given")
    p.add_argument("-fitt", "--fit-target", "--fit-margin", dest="fit_target", type=_fit_target, default=None,
                   metavar="MiB", help="device memory --fit leaves free (default 256)")
    p.add_argument("-ot", "--override-tensor", dest="override_tensor", action="append", default=None,
                   metavar="REGEX=TYPE", help="weights whose name matches REGEX go to buffer type TYPE: CPU = host "
                                              "memory the GPU reads over the bus (only routed experts, e.g. "
                                              "'exps=CPU'), Vulkan<N> = the device; repeatable, comma-separated")
    p.add_argument("-cmoe", "--cpu-moe", dest="cpu_moe", action="store_true",
                   help="every routed expert stack in host memory, read by the GPU (= -ot exps=CPU)")
    p.add_argument("-ncmoe", "--n-cpu-moe", dest="n_cpu_moe", type=int, default=None, metavar="N",
                   help="the routed experts of the first N layers in host memory, read by the GPU")
    p.add_argument("-ctxcp", "--ctx-checkpoints", "--swa-checkpoints", type=int, default=DEFAULT_CTX_CHECKPOINTS,
                   metavar="N", help=f"recurrent-state checkpoints per slot for prompt reuse (default "
                                     f"{DEFAULT_CTX_CHECKPOINTS}; 0: reuse only a slot's whole memory)")


def _similarity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--slot-prompt-similarity {text}: a fraction from 0 to 1")
    return value


def _cache_ram(text: str) -> int:
    from vkmtp.engine.host_cache import cache_ram_bytes

    try:
        value = int(text)
        cache_ram_bytes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if "--cache-ram" in str(exc) else
                                         f"--cache-ram {text}: MiB as an integer (-1: no limit, 0: off)")
    return value


def _add_model_flags(p: argparse.ArgumentParser, command: str) -> None:
    """Flags shared by serve, chat and generate, named as llama-server names them (docs/SERVER.md has the
    table of every llama-server flag and what vkmtp does with it)."""
    p.add_argument("-m", "--model", default=None, help="GGUF file (default: the demo model in models/)")
    p.add_argument("--backend", default="vulkan", choices=["vulkan", "reference"],
                   help="vulkan (default) or the NumPy reference (slow; for tests and checks)")
    _add_device_flags(p)
    p.add_argument("--list-devices", action="store_true", help="list the Vulkan devices and exit")
    _add_memory_flags(p)
    p.add_argument("--max-submit-ms", type=float, default=None,
                   help="longest queue submission in ms (default: the device's, 500 integrated/CPU, 2000 "
                        "discrete); long prefill chunks are split into several submissions")
    p.add_argument("-sps", "--slot-prompt-similarity", type=_similarity, default=0.1, metavar="F",
                   help="a request goes to the free slot whose cache reuses the most of its prompt when that is at "
                        "least this fraction of it, else to the least recently used slot (default 0.1; 0: always "
                        "the least recently used)")
    p.add_argument("-cram", "--cache-ram", type=_cache_ram, default=DEFAULT_CACHE_RAM_MIB, metavar="MiB",
                   help=f"host-RAM prompt cache: a slot's memory moves there when another conversation takes the "
                        f"slot, and comes back for a prompt that continues it (default {DEFAULT_CACHE_RAM_MIB}; "
                        f"-1: no limit; 0: off)")
    p.add_argument("--no-mtp", action="store_true", help="no MTP speculative decoding")
    p.add_argument("--spec-type", default=None,
                   help="draft-mtp (or its older name mtp): MTP drafting, the default; none: off")
    p.add_argument("-mtp", "--multi-token-prediction", action="store_true",
                   help="MTP drafting (ik_llama.cpp's name; on by default)")
    p.add_argument("--spec-draft-n-max", "--draft-max", "--draft", "--draft-n", dest="spec_draft_n_max",
                   type=int, default=None,
                   help="draft tokens per step (1..7; default: the device profile's for this model, else 3)")
    p.add_argument("--spec-draft-n-min", "--draft-min", dest="spec_draft_n_min", type=int, default=0,
                   help="shorter drafts are dropped")
    p.add_argument("--spec-draft-p-min", "--draft-p-min", dest="spec_draft_p_min", type=float, default=None,
                   help="stop drafting below this probability (default: the device profile's, else 0)")
    p.add_argument("--spec-draft-adaptive", dest="spec_adaptive", action="store_true", default=True,
                   help="choose the draft depth (0 or n-min..n-max) per step from the measured step cost and "
                        "observed acceptance (the default)")
    p.add_argument("--spec-draft-vocab", dest="spec_draft_vocab", type=int, default=0,
                   help="the draft's LM head covers only the N lowest (most frequent) token ids; verification "
                        "always uses the whole vocabulary (default 0: all)")
    p.add_argument("--no-spec-adaptive", dest="spec_adaptive", action="store_false",
                   help="always draft n-max tokens (a fixed depth; also: --spec-draft-n-min N --spec-draft-n-max N)")
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--repeat-last-n", type=int, default=64, help="tokens the penalties look at (0: off, -1: all)")
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("-s", "--seed", type=int, default=-1, help="-1: random")
    p.add_argument("--chat-template", default=None, help="Jinja template (or 'chatml') replacing the GGUF's")
    p.add_argument("--chat-template-file", default=None, help="file with a Jinja template replacing the GGUF's")
    if command != "serve":
        p.add_argument("-np", "--parallel", type=int, default=1, help="slots (one prompt uses one)")
    if command != "generate":
        p.add_argument("--chat-template-kwargs", default=None,
                       help="JSON object passed to the chat template, e.g. '{\"enable_thinking\": false}'")
        p.add_argument("--reasoning-budget", type=_reasoning_budget, default=-1,
                       help="-1: thinking unlimited; 0: no thinking (enable_thinking false)")
    if command == "serve":
        p.add_argument("--reasoning-format", choices=("none", "deepseek", "auto"), default="auto",
                       help="auto/deepseek: <think> text goes to reasoning_content; none: it stays in content")
    add_llama_flags(p, command)


def _reasoning_budget(text: str) -> int:
    value = int(text)
    if value > 0:
        raise argparse.ArgumentTypeError(
            f"{value}: a thinking budget in tokens is not implemented yet; use -1 (unlimited) or 0 (no thinking)")
    if value < -1:
        raise argparse.ArgumentTypeError(f"{value}: use -1 (unlimited) or 0 (no thinking)")
    return value


def _thinking_kwargs(args: argparse.Namespace) -> dict:
    """--chat-template-kwargs, with enable_thinking false under --reasoning-budget 0."""
    kwargs = template_kwargs(args.chat_template_kwargs)
    if args.reasoning_budget == 0:
        kwargs["enable_thinking"] = False
    return kwargs


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkmtp", description="Qwen3.5/3.6 GGUF inference on Vulkan with MTP",
                                 allow_abbrev=False)
    sub = ap.add_subparsers(dest="command", required=True)
    ap.commands = sub.choices  # name -> subparser, for the LLAMA_ARG_* variables

    p = sub.add_parser("devices", help="list Vulkan devices and the one vkmtp would use")
    p.add_argument("--device", default=None, help="device index (default: best found)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("generate", help="generate text from a prompt (MTP on by default)", allow_abbrev=False)
    _add_model_flags(p, "generate")
    p.add_argument("-p", "--prompt", default=None)
    p.add_argument("-f", "--file", default=None, help="read the prompt from this file")
    p.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (-1: until the context)")
    p.add_argument("--chat", action="store_true", help="apply the model's chat template to the prompt")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json", action="store_true", help="print token ids, text and timings as one JSON object")
    p.add_argument("--spec-synth-rate", type=float, default=None,
                   help="BENCHMARK MODE: accept each draft with this probability (output is not the model's)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="architecture, sizes, quant mix, MTP and the memory plan of a GGUF")
    p.add_argument("model", help="path to a .gguf file")
    _add_device_flags(p)
    _add_memory_flags(p)
    p.add_argument("-np", "--parallel", type=int, default=1)
    p.add_argument("--spec-draft-n-max", type=int, default=None,
                   help="default: the device's tuning profile for this model, else the built-in default")
    p.add_argument("--no-mtp", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="llama-server compatible HTTP server (OpenAI API, /completion, ...)",
                       allow_abbrev=False)
    _add_model_flags(p, "serve")
    p.add_argument("-np", "--parallel", type=int, default=1, help="slots (concurrent sequences)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (not on /health, /models)")
    p.add_argument("--api-key-file", default=None, help="read the API key from this file")
    p.add_argument("--no-cache-prompt", action="store_true",
                   help="requests reuse a slot's cached prefix only when they ask for it (cache_prompt: true)")
    p.add_argument("-a", "--alias", default=None, help="model id shown to clients (default: the file name)")
    p.add_argument("-n", "--n-predict", type=int, default=-1, help="cap on tokens per request (-1: context)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot before 503s")
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="larger request bodies get a 413")
    p.add_argument("--sleep-idle-seconds", type=float, default=None,
                   help="free the engine after this many idle seconds; the next request reloads it")
    p.add_argument("--no-webui", action="store_true", help="no chat page at / (the API only)")
    p.add_argument("--slot-save-path", default=None, metavar="DIR",
                   help="directory of slot files: POST /slots/{id}?action=save|restore with a filename in it "
                        "(created if missing; without it save and restore are refused)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-disable", action="store_true", help="log nothing but failures")
    p.add_argument("--log-format", default="text", choices=["text", "json"], help="json: one object per line")
    p.add_argument("-v", "--verbose", "--log-verbose", dest="verbose", action="store_true", help="--log-level debug")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="interactive chat in the terminal (chat template applied, streamed)",
                       allow_abbrev=False)
    _add_model_flags(p, "chat")
    p.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens per reply (-1: until the context)")
    p.add_argument("-sys", "--system-prompt", "--system", dest="system", default=None, help="system prompt")
    p.add_argument("--no-think", action="store_true", help="chat_template_kwargs enable_thinking=false")
    p.add_argument("--ignore-eos", action="store_true", help="replies go on past end-of-generation tokens")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("tune", help="measure kernel settings on this device and save its tuning profile")
    p.add_argument("--device", default=None, help="Vulkan device index (default: best found)")
    p.add_argument("-m", "--model", default=None, help="also tune MTP n-max / p-min for this GGUF")
    p.add_argument("--quick", action="store_true", help="a small sweep (minutes on a CPU driver)")
    p.add_argument("--types", default=None, help="quant types of the mat-vec and prefill mat-mat sweeps, e.g. "
                   "Q4_K,Q6_K, or 'all' (with -m the mat-mat takes the model's own types, restricted to these)")
    p.add_argument("--skip", action="append", default=[], choices=["matvec", "gdn", "attn", "matmul"],
                   help="leave out a sweep (repeatable)")
    p.add_argument("--show", action="store_true", help="print the saved profile and exit")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw mat-vec time vs columns (matplotlib)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("shaders", help="compile every shader variant into the cache")
    p.add_argument("--build-all", action="store_true", required=True)
    p.set_defaults(func=cmd_shaders)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in parser.commands:
            argv = argv_with_env(argv, parser.commands[argv[0]])
        args = parser.parse_args(argv)
        notes = check_llama_flags(args)
    except FlagError as exc:
        print(f"vkmtp: error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"vkmtp: note: {note}", file=sys.stderr)
    if getattr(args, "parallel", 1) != 1 and args.command not in ("serve", "info"):   # info plans -np slots
        print(f"vkmtp: note: -np {args.parallel}: {args.command} runs one sequence in one slot", file=sys.stderr)
        args.parallel = 1
    if getattr(args, "list_devices", False):
        return cmd_devices(args)
    try:
        if args.command in ("generate", "chat") and not getattr(args, "json", False):
            with _ShaderProgress():  # pipelines are built on first use, during the first steps
                return args.func(args)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the user; tracebacks with VKMTP_DEBUG=1
        from vkmtp import env

        if env.debug():
            raise
        print(f"vkmtp: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
