"""Prompt time of a conversation's second turn with the prompt cache vs its first turn and vs a cold second turn.

Turn 1: a prompt of --prompt-tokens ids, --tokens generated. Turn 2: turn 1's prompt, then an "answer" that is
not what the engine generated (a chat template that drops the thinking), then --new-tokens more: the slot's live
memory is no prefix of it, so the engine restores the checkpoint at the end of turn 1's prompt and evaluates the
rest. Cold: the same turn-2 prompt with cache_prompt off. Then another conversation (--other-tokens) takes the
one slot, which moves the first one's memory to the host-RAM prompt cache (--cache-ram), and turn 3 (turn 2, its
answer and --new-tokens more) brings it back: its prompt time includes the copies from host RAM. Prints one JSON
line (prompt ms, prompt_n, cache_n of each run, and the ratios); the cached and cold turn 2 must give the same
tokens (greedy). The slot is erased before the cold run and turn 1, so neither pays for moving a cache out.

    .venv/bin/python tools/bench_prompt_cache.py -m syn-0.8b.gguf --prompt-tokens 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vkmtp.engine.api import EngineConfig, Request  # noqa: E402
from vkmtp.engine.vulkan import VulkanEngine  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402


def _turn(engine, prompt: list[int], n: int, cache: bool):
    out, seq = [], None
    for ev in engine.generate(Request(prompt, SamplingParams(temperature=0.0), max_tokens=n, cache_prompt=cache)):
        out += ev.new_ids
        seq = ev.seq
    t = seq.timings
    return out, {"prompt_ms": round(t.prompt_ms, 1), "prompt_n": t.prompt_n, "cache_n": t.cache_n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--new-tokens", type=int, default=48, help="turn 2's answer + new user message")
    p.add_argument("--tokens", type=int, default=8, help="tokens generated per turn")
    p.add_argument("--ubatch", type=int, default=256)
    p.add_argument("--ctx-checkpoints", type=int, default=8)
    p.add_argument("--other-tokens", type=int, default=64, help="prompt of the conversation that takes the slot")
    p.add_argument("--cache-ram", type=int, default=8192, help="host-RAM prompt cache in MiB")
    p.add_argument("--no-mtp", action="store_true")
    args = p.parse_args()
    n_ctx = args.prompt_tokens + 2 * (args.new_tokens + args.tokens) + 16
    config = EngineConfig(n_ctx=n_ctx, ubatch=args.ubatch, ctx_checkpoints=args.ctx_checkpoints,
                          spec=SpecConfig(enabled=not args.no_mtp), cache_ram_mib=args.cache_ram)
    engine = VulkanEngine(args.model, config)
    try:
        rng = np.random.default_rng(0)
        vocab = min(engine.n_vocab, 4096)
        turn1 = [int(t) for t in rng.integers(256, vocab, args.prompt_tokens)]
        _turn(engine, turn1[:64], 2, cache=False)   # warm-up: every graph recorded once
        turn2 = turn1 + [int(t) for t in rng.integers(256, vocab, args.new_tokens)]
        engine.erase_slot(0)
        cold_out, cold = _turn(engine, turn2, args.tokens, cache=False)
        engine.erase_slot(0)
        _, first = _turn(engine, turn1, args.tokens, cache=True)
        cached_out, second = _turn(engine, turn2, args.tokens, cache=True)
        _, other = _turn(engine, [int(t) for t in rng.integers(256, vocab, args.other_tokens)], args.tokens, True)
        turn3 = turn2 + cached_out + [int(t) for t in rng.integers(256, vocab, args.new_tokens)]
        _, third = _turn(engine, turn3, args.tokens, cache=True)
        host = {"images": len(engine.host_cache.images), "restored": engine.host_cache.n_restored}
    finally:
        engine.close()
    print(json.dumps({"model": Path(args.model).name, "mtp": not args.no_mtp, "turn1": first, "turn2": second,
                      "turn2_cold": cold, "other": other, "turn3_from_host_ram": third, "host_cache": host,
                      "turn2_vs_turn1": round(second["prompt_ms"] / first["prompt_ms"], 4),
                      "turn2_vs_cold": round(second["prompt_ms"] / cold["prompt_ms"], 4),
                      "turn3_vs_turn1": round(third["prompt_ms"] / first["prompt_ms"], 4),
                      "same_tokens": cached_out == cold_out}))


if __name__ == "__main__":
    main()
