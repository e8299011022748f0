#!/usr/bin/env python3
"""Cost of token probabilities: the GPU reduction per logits row, and decode tok/s with and without logprobs.

Kernel: one submission over --rows rows of a --vocab wide logits buffer (already on the device): the greedy
step's argmax alone, and argmax + TokenProbs (top-20 pairs, log-sum-exp, chosen logit; vkmtp.ops.token_probs);
for comparison the host computing the same from a row it would first have to read (NumPy log-softmax + top-20).
Engine: the demo model (or -m MODEL), greedy, --tokens per request, MTP off and on, requests alternating
without and with logprobs (top 20) in --rounds rounds; decode tok/s = generated tokens / decode time.

Usage: python tools/bench_token_probs.py [--vocab 248320] [--rows 4] [--reps 7] [-m MODEL] [--tokens 32]
       [--rounds 3] [--kernels-only]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import git_commit, median_ms  # noqa: E402

from vkmtp.demo_model import default_model_path  # noqa: E402
from vkmtp.device import Device  # noqa: E402
from vkmtp.engine.api import EngineConfig, Request  # noqa: E402
from vkmtp.engine.token_probs import ProbsRequest, from_logits  # noqa: E402
from vkmtp.engine.vulkan import VulkanEngine  # noqa: E402
from vkmtp.ops.argmax import Argmax  # noqa: E402
from vkmtp.ops.strided import Strided  # noqa: E402
from vkmtp.ops.token_probs import MAX_TOP, TokenProbs  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402


def kernels(device: Device, V: int, R: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    logits = (3.0 * rng.standard_normal((R, V))).astype(np.float32)
    x = device.buffer(4 * R * V, "device", "x")
    device.upload(x.view(), logits.ravel().view(np.uint32))
    am, tp = Argmax(device), TokenProbs(device)
    scratch = max(am.scratch_bytes(R, V), tp.scratch_bytes(R, V))
    out = device.buffer(4 * R * (1 + 2 + 2 * MAX_TOP) + scratch, "host", "out")
    ids, lse = out.view(0, 4 * R), out.view(4 * R, 8 * R)
    vals, tids = out.view(12 * R, 4 * MAX_TOP * R), out.view((12 + 4 * MAX_TOP) * R, 4 * MAX_TOP * R)
    sc = out.view((12 + 8 * MAX_TOP) * R, scratch)
    graphs = {}
    for probs in (False, True):
        rec = device.recorder()
        am.record(rec, Strided.rows(x.view(), V), ids, R, V, sc)
        if probs:
            tp.record(rec, Strided.rows(x.view(), V), R, V, lse, sc, values=vals, ids=tids, chosen=ids)
        graphs[probs] = rec.finish()
        graphs[probs].run()
    plain = median_ms(graphs[False].run, reps)
    with_probs = median_ms(graphs[True].run, reps)
    host = median_ms(lambda: [from_logits(0, row, MAX_TOP) for row in logits], reps)
    print(f"kernels: vocabulary {V}, {R} row(s), medians of {reps}")
    print(f"  argmax alone (a greedy step's output)          {plain / R:9.2f} ms per row")
    print(f"  argmax + token probabilities (top-20, lse)     {with_probs / R:9.2f} ms per row "
          f"(+{(with_probs - plain) / R:.2f})")
    print(f"  host NumPy, same result from a row on the host {host / R:9.2f} ms per row (row read not counted)")
    x.destroy()
    out.destroy()


def engine_rounds(device: Device, model: str, tokens: int, rounds: int) -> None:
    prompt = [11, 402, 77, 1290, 35, 260, 9, 3001, 512, 64, 18, 777]
    greedy = SamplingParams.greedy_params()
    print(f"engine: {Path(model).name}, greedy, {tokens} tokens per request, {rounds} rounds alternating")
    for mtp in (False, True):
        eng = VulkanEngine(model, EngineConfig(n_ctx=512, ubatch=32, spec=SpecConfig(enabled=mtp, n_max=3,
                                                                                         adaptive=False)),
                           device=device)
        try:
            totals = {False: [0, 0.0], True: [0, 0.0]}
            outputs = {}
            for r in range(rounds + 1):   # round 0 records the graphs (not counted)
                for probs in (False, True):
                    seq = eng.submit(Request(prompt, greedy, max_tokens=tokens,
                                             probs=ProbsRequest(MAX_TOP) if probs else None))
                    while not seq.done:
                        eng.step()
                    outputs[probs] = list(seq.generated)
                    if r:
                        totals[probs][0] += seq.timings.predicted_n
                        totals[probs][1] += seq.timings.predicted_ms
            rate = {p: 1e3 * n / ms for p, (n, ms) in totals.items()}
            print(f"  MTP {'on ' if mtp else 'off'}: decode {rate[False]:8.1f} tok/s without, {rate[True]:8.1f} "
                  f"with logprobs (top 20): {rate[True] / rate[False]:.3f}x; same tokens: "
                  f"{'yes' if outputs[False] == outputs[True] else 'NO'}")
        finally:
            eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=248320)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernels-only", action="store_true", help="skip the engine rounds")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = Device(args.device)
    print(f"{device.info.name}, commit {git_commit()}")
    try:
        kernels(device, args.vocab, args.rows, args.reps)
        if not args.kernels_only:
            engine_rounds(device, args.model or default_model_path(), args.tokens, args.rounds)
    finally:
        device.destroy()


if __name__ == "__main__":
    main()
