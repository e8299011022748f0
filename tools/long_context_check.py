#!/usr/bin/env python3
"""Long context end to end: `vkmtp generate` at a long -c gives the tokens of a short -c (issue 15's done-when).

    .venv/bin/python tools/long_context_check.py -m syn-0.8b.gguf --contexts 4096 262144 --prompt-tokens 520

Each context runs as its own `vkmtp generate --json` process (one after the other, so the peak RSS reported is
that run's alone) with the same prompt of at least --prompt-tokens tokens, MTP drafting at a fixed depth (a
random-weight model's drafts are never accepted, so the adaptive default would stop drafting and the head's
long-context path would go untested), greedy. Prints one line per run (tokens, planned and allocated bytes,
peak RSS, seconds) and whether every run's tokens equal the first's; exits 1 when they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly pack boxes of liquor "
         "and zebras graze near twelve crooked fences beyond misty valleys").split()


def prompt_text(model: str, n_tokens: int) -> str:
    """Plain words, as few as make at least n_tokens tokens with the model's own tokenizer."""
    from vkmtp.gguf import open_gguf
    from vkmtp.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_gguf(open_gguf(model))
    words = [WORDS[(i * 7 + i // len(WORDS)) % len(WORDS)] for i in range(n_tokens)]
    lo, hi = 1, n_tokens   # every word is at least one token
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.encode(" ".join(words[:mid]), add_special=True, parse_special=True)) >= n_tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


def run(vkmtp: str, model: str, n_ctx: int, prompt_file: str, n_predict: int, n_draft: int, extra: list[str]) -> dict:
    cmd = [vkmtp, "generate", "-m", model, "-f", prompt_file, "-n", str(n_predict), "--temp", "0", "--ignore-eos",
           "-c", str(n_ctx), "--json", "--spec-draft-n-min", str(n_draft), "--spec-draft-n-max", str(n_draft),
           *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    got = json.loads(done.stdout)
    mem = got["memory"]
    return {"n_ctx": got["n_ctx"], "prompt_tokens": len(got["prompt_tokens"]), "tokens": got["tokens"],
            "planned_bytes": mem["planned_bytes"], "allocated_bytes": mem["device_bytes"],
            "peak_rss_mib": round(mem["peak_rss_bytes"] / 2**20, 1), "seconds": round(seconds, 1),
            "prefill_submissions": got["submissions"]["prefill_submissions"],
            "drafted": (got["speculative"] or {}).get("draft_n"), "cmd": " ".join(cmd[1:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-m", "--model", required=True)
    p.add_argument("--contexts", type=int, nargs="+", default=[4096, 262144])
    p.add_argument("--prompt-tokens", type=int, default=520, help="at least this many prompt tokens")
    p.add_argument("-n", "--n-predict", type=int, default=8)
    p.add_argument("--n-draft", type=int, default=2, help="fixed draft depth")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `vkmtp generate` flags")
    args = p.parse_args(argv)
    vkmtp = os.path.join(os.path.dirname(sys.executable), "vkmtp")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt_text(args.model, args.prompt_tokens))
        prompt_file = f.name
    try:
        runs = []
        for n_ctx in args.contexts:
            r = run(vkmtp, args.model, n_ctx, prompt_file, args.n_predict, args.n_draft, args.extra)
            if r["prompt_tokens"] < args.prompt_tokens:
                sys.exit(f"the prompt has {r['prompt_tokens']} tokens, fewer than {args.prompt_tokens}")
            runs.append(r)
            print(json.dumps(r), flush=True)
    finally:
        os.unlink(prompt_file)
    same = all(r["tokens"] == runs[0]["tokens"] for r in runs)
    print(f"same tokens at -c {' / '.join(str(r['n_ctx']) for r in runs)}: {same}", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
