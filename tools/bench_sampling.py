#!/usr/bin/env python3
"""Cost of choosing one sampled token from a row of logits: host chain vs the GPU's Gumbel-max draw.

Host: vkmtp.sampling.Sampler.sample on a [n_vocab] f32 row (penalties -> top-k -> top-p -> min-p ->
temperature -> Gumbel-max), with the default chain (top-k 40: a selection of the 40 largest) and with top-k off
(top-p over the whole row: a full sort). GPU: what runs on the device for a sampled MTP draft today -- Gumbel
noise on the row (shaders/gumbel.comp) and the row's argmax (shaders/argmax.comp) -- one submission, timed
from submit to completion; and the whole chain of a verified or decoded row (shaders/sample.comp, one
workgroup per row) for the same three settings. Medians over --reps.

Usage: python tools/bench_sampling.py [--vocab 248320] [--reps 9] [--rows 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import git_commit, median_ms  # noqa: E402

from vkmtp.device import Device  # noqa: E402
from vkmtp.ops.argmax import Argmax  # noqa: E402
from vkmtp.ops.gumbel import GumbelNoise  # noqa: E402
from vkmtp.ops.sample import PARAM_WORDS, Sample, row_params  # noqa: E402
from vkmtp.ops.strided import Strided  # noqa: E402
from vkmtp.sampling import Sampler, SamplingParams, seed_key  # noqa: E402


def full_sort_sample(sampler: Sampler, row: np.ndarray) -> int:
    """The chain as it was before the top-k selection: a stable sort of the whole row first."""
    from vkmtp import sampling

    saved = sampling.top_k_ids
    sampling.top_k_ids = lambda logits, k: np.argsort(-logits, kind="stable")[:k]
    try:
        return sampler.sample(row)
    finally:
        sampling.top_k_ids = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=248320)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    V, R = args.vocab, args.rows
    rng = np.random.default_rng(0)
    logits = (3.0 * rng.standard_normal((R, V))).astype(np.float32)
    default = Sampler(SamplingParams(seed=1))
    history = [int(t) for t in rng.integers(0, V, 64)]
    penalised = Sampler(SamplingParams(seed=1, repeat_penalty=1.1, presence_penalty=0.2))
    no_top_k = Sampler(SamplingParams(seed=1, top_k=0))
    for t in history:
        penalised.accept(t)
    same = all(default.sample(r) == full_sort_sample(default, r) for r in logits)
    rows = [
        ("host, default chain (top-k 40), full sort", lambda: [full_sort_sample(default, r) for r in logits]),
        ("host, default chain (top-k 40), selection", lambda: [default.sample(r) for r in logits]),
        ("host, + penalties over 64 tokens", lambda: [penalised.sample(r) for r in logits]),
        ("host, top-k off (top-p over the row)", lambda: [no_top_k.sample(r) for r in logits]),
    ]
    device = Device(args.device)
    x = device.buffer(4 * R * V, "host", "x")
    prm = device.buffer(16 * R, "host", "prm")
    am = Argmax(device)
    out = device.buffer(4 * R + am.scratch_bytes(R, V), "host", "ids")
    p = np.zeros((R, 4), np.uint32)
    p[:, 0], p[:, 1], p[:, 2], p[:, 3] = seed_key(1), 7, np.float32(1 / 0.8).view(np.uint32), 1
    prm.words()[:] = p.ravel()
    rec = device.recorder()
    GumbelNoise(device).record(rec, x.view(), V, V, R, prm.view(), 0)
    am.record(rec, Strided.rows(x.view(), V), out.view(0, 4 * R), R, V, out.view(4 * R, am.scratch_bytes(R, V)))
    graph = rec.finish()

    def gpu() -> None:
        x.words()[:] = logits.ravel().view(np.uint32)   # the row as the LM head would leave it (not timed apart)
        graph.run()

    gpu()
    write_ms = median_ms(lambda: x.words().__setitem__(slice(None), logits.ravel().view(np.uint32)), args.reps)
    rows.append(("GPU, Gumbel noise + argmax (one submission)", gpu))
    step = device.buffer(4 * (R * PARAM_WORDS + R + 64 + 64), "host", "step")
    hist0 = R * PARAM_WORDS + R + 64
    step.words()[hist0: hist0 + 64] = history
    chains = []
    for name, sp, hist in (("GPU chain (sample.comp), default chain", default, 0),
                           ("GPU chain, + penalties over 64 tokens", penalised, 64),
                           ("GPU chain, top-k off (top-p over the row)", no_top_k, 0)):
        pr = sp.params
        rec = device.recorder()
        Sample(device).record(rec, x.view(), V, V, R, step.view(0, 4 * R * PARAM_WORDS),
                              step.view(4 * R * PARAM_WORDS, 4 * R), step.view(4 * (R * PARAM_WORDS + R), 4 * 64))
        params = row_params(sp.key, 7, sp.inv_t, pr.top_k, pr.top_p, pr.min_p, pr.repeat_penalty,
                            pr.frequency_penalty, pr.presence_penalty, hist=(hist0, hist))
        chains.append((name, rec.finish(), params))

    def chain(g, params):
        def run() -> None:
            step.words()[: R * PARAM_WORDS] = np.tile(params, R)
            x.words()[:] = logits.ravel().view(np.uint32)
            g.run()
        return run

    rows += [(name, chain(g, params)) for name, g, params in chains]
    print(f"{device.info.name}, commit {git_commit()}; vocabulary {V}, {R} row(s), medians of {args.reps}; "
          f"selection == full sort: {'yes' if same else 'NO'}")
    for name, fn in rows:
        ms = median_ms(fn, args.reps)
        if name.startswith("GPU"):
            ms -= write_ms
        print(f"{name:<48}{ms / R:>9.2f} ms per row")
    for _, g, _ in chains:
        g.destroy()
    for b in (x, prm, out, step):
        b.destroy()
    device.destroy()


if __name__ == "__main__":
    main()
