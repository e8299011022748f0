"""The `vkmtp` command line. Flags are named as llama-server names them where the concept is the same."""

from __future__ import annotations

import argparse
import sys


def cmd_devices(args: argparse.Namespace) -> int:
    from vkmtp.device import format_devices, list_devices, pick_device

    devices = list_devices()
    chosen = pick_device(devices, args.device) if devices else None
    print(format_devices(devices, chosen.index if chosen else None))
    if chosen:
        print(f"\n* = used by default (discrete > integrated > cpu; override with --device N or VKMTP_DEVICE)")
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
    from vkmtp.model.info import describe_model

    print(describe_model(args.model, args.ctx_size, args.parallel, args.cache_type_k, not args.no_mtp,
                         args.spec_draft_n_max))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vkmtp", description="Qwen3.5/3.6 GGUF inference on Vulkan with MTP")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("devices", help="list Vulkan devices and the one vkmtp would use")
    p.add_argument("--device", default=None, help="device index (default: best found)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("info", help="architecture, sizes, quant mix, MTP and the memory plan of a GGUF")
    p.add_argument("model", help="path to a .gguf file")
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("-np", "--parallel", type=int, default=1)
    p.add_argument("-ctk", "--cache-type-k", default="f16", choices=["f16", "q8_0"])
    p.add_argument("--spec-draft-n-max", type=int, default=3)
    p.add_argument("--no-mtp", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("shaders", help="compile every shader variant into the cache")
    p.add_argument("--build-all", action="store_true", required=True)
    p.set_defaults(func=cmd_shaders)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the user; tracebacks with VKMTP_DEBUG=1
        import os

        if os.environ.get("VKMTP_DEBUG"):
            raise
        print(f"vkmtp: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
