"""Decode speed of the demo model with and without a JSON schema constraint, MTP off and on (Vulkan engine).

Each configuration generates the same number of tokens greedily (end-of-generation ids do not stop it, so a
finished grammar keeps paying its per-token mask) from the same prompt, a few times; the best run's tokens per
second are reported, with the device->host bytes per token (a constrained sequence reads its logits rows).

  python tools/bench_constrained.py [--tokens 64] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vkmtp.constrain.grammar import from_json_schema   # noqa: E402
from vkmtp.constrain.sampler import LogitShape   # noqa: E402
from vkmtp.constrain.vocab import ll_tokenizer   # noqa: E402
from vkmtp.demo_model import default_model_path   # noqa: E402
from vkmtp.engine.api import EngineConfig, Request   # noqa: E402
from vkmtp.engine.vulkan import VulkanEngine   # noqa: E402
from vkmtp.gguf import open_gguf   # noqa: E402
from vkmtp.sampling import SamplingParams   # noqa: E402
from vkmtp.spec import SpecConfig   # noqa: E402
from vkmtp.text.tokenizer import Tokenizer   # noqa: E402

SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}}
PROMPT = "<|im_start|>user\nList some people as JSON.<|im_end|>\n<|im_start|>assistant\n"


def run(engine: VulkanEngine, request: Request) -> tuple[int, float, int]:
    read0 = engine.host_bytes_read
    t0 = time.perf_counter()
    n = sum(len(ev.new_ids) for ev in engine.generate(request))
    return n, time.perf_counter() - t0, engine.host_bytes_read - read0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    path = default_model_path()
    tok = Tokenizer.from_gguf(open_gguf(path))
    prompt = tok.encode(PROMPT, parse_special=True)
    grammar = from_json_schema(SCHEMA, "bench")
    vocab = ll_tokenizer(tok, len(tok.tokens), tok.eog_ids)
    results = []
    for mtp in (False, True):
        engine = VulkanEngine(path, EngineConfig(n_ctx=512, spec=SpecConfig(enabled=mtp, n_max=3, adaptive=False)))
        try:
            for constrained in (False, True):
                shape = LogitShape(grammar, vocab) if constrained else None
                request = lambda: Request(prompt, SamplingParams.greedy_params(), max_tokens=args.tokens,  # noqa
                                          stop_ids=frozenset(), shape=shape)
                run(engine, request())   # warm-up: records the graphs
                best = None
                for _ in range(args.runs):
                    n, seconds, read = run(engine, request())
                    if best is None or n / seconds > best[0] / best[1]:
                        best = (n, seconds, read)
                n, seconds, read = best
                row = {"mtp": mtp, "json_schema": constrained, "tokens": n, "tok_s": round(n / seconds, 2),
                       "host_bytes_read_per_token": round(read / n)}
                print(json.dumps(row), flush=True)
                results.append(row)
        finally:
            engine.close()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
