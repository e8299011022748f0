#!/usr/bin/env python3
"""Acceptance of the first draft with temperature > 0: vkmtp's scheme vs Gumbel-max coupling, on one model.

Both schemes give the same tokens with MTP on and off and keep the model's distribution exactly:
- "greedy draft + sample match" (vkmtp's): the draft is the MTP head's argmax d; the row is sampled as plain
  decoding samples it and the draft is accepted when the sample equals it: acceptance p(d).
- "Gumbel-max": each position's sample is argmax_i(log p_i + g_i) with Gumbel noise g keyed by (seed,
  sequence, position), and the draft is argmax_i(log q_i + g_i) with the SAME noise over the draft's own
  distribution q (the same sampler chain on the draft logits); accepted when the two argmaxes agree.
  "Gumbel-max, unfiltered draft" is the draft both engines use: argmax_i(l_i / T + g_i) over the raw draft
  logits l (no top-k / top-p / min-p / penalties, so the GPU needs one elementwise pass before its argmax).

Along a trajectory sampled from the model (reference model, NumPy), at every position the target's chain
distribution p and the MTP head's draft logits (from the true previous hidden state, i.e. the first draft
position) are computed; p(d) is exact, the Gumbel agreement is averaged over --draws noise vectors.

Then, end to end, the reference loop with MTP at n-max 3 (vkmtp.ref.generate.generate_mtp, the scheme both
engines run) against plain sampling on the same seeds: identical tokens, and the acceptance it reached.

Usage: python tools/sampling_acceptance.py [-m MODEL.gguf] [--text "..."] [--tokens 96] [--temp 0.8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vkmtp.demo_model import default_model_path
from vkmtp.gguf import open_gguf
from vkmtp.ref import ReferenceModel
from vkmtp.ref.generate import generate, generate_mtp
from vkmtp.spec import SpecConfig
from vkmtp.sampling import Sampler, SamplingParams
from vkmtp.text.tokenizer import Tokenizer


def dense(ids: np.ndarray, probs: np.ndarray, n_vocab: int) -> np.ndarray:
    out = np.zeros(n_vocab)
    out[ids] = probs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--text", default="def parse_args(argv=None):")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--seeds", type=int, default=4, help="trajectories (seeds 0..N-1)")
    ap.add_argument("--draws", type=int, default=4000, help="Gumbel noise vectors per position")
    args = ap.parse_args()
    path = args.model or default_model_path()
    model = ReferenceModel.from_gguf(path)
    prompt = Tokenizer.from_gguf(open_gguf(path)).encode(args.text, add_special=True)
    V = model.cfg.n_vocab
    rng = np.random.default_rng(12345)
    p_match, gumbel, gumbel_raw = [], [], []
    for seed in range(args.seeds):
        params = SamplingParams(temperature=args.temp, seed=seed)
        tokens = prompt + [int(t) for t in generate(model, prompt, args.tokens, params).tokens]
        state = model.new_state()
        logits, hidden = model.forward(tokens, state)
        # MTP entry p is (x_p, h_{p-1}); its logits draft token p+1, which row p of the trunk verifies
        h_rows = np.concatenate([np.zeros((1, hidden.shape[1]), hidden.dtype), hidden[:-1]])
        mtp_logits, _ = model.mtp_forward(tokens, h_rows, model.new_mtp_state())
        sampler = Sampler(params)
        for t in tokens[:len(prompt) - 1]:
            sampler.accept(t)
        for pos in range(len(prompt) - 1, len(tokens) - 1):
            sampler.accept(tokens[pos])
            p = dense(*sampler.distribution(logits[pos]), V)
            q = dense(*sampler.distribution(mtp_logits[pos]), V)
            p_match.append(p[int(np.argmax(mtp_logits[pos]))])
            g = rng.gumbel(size=(args.draws, V))
            with np.errstate(divide="ignore"):
                lp, lq = np.log(p), np.log(q)
            target = np.argmax(lp + g, axis=1)
            gumbel.append(float(np.mean(target == np.argmax(lq + g, axis=1))))
            gumbel_raw.append(float(np.mean(target == np.argmax(mtp_logits[pos] / args.temp + g, axis=1))))
    same = accepted = drafted = 0
    for seed in range(args.seeds):
        params = SamplingParams(temperature=args.temp, seed=seed)
        plain = [int(t) for t in generate(model, prompt, args.tokens, params).tokens]
        mtp = generate_mtp(model, prompt, args.tokens, params, spec=SpecConfig(n_max=3))
        same += plain == [int(t) for t in mtp.tokens]
        accepted += mtp.stats.draft_n_accepted
        drafted += mtp.stats.draft_n
    out = {"e2e_n_max3_identical_runs": f"{same}/{args.seeds}", "e2e_n_max3_accepted": f"{accepted}/{drafted}",
           "model": path, "temperature": args.temp, "positions": len(p_match),
           "greedy_draft_sample_match": float(np.mean(p_match)), "gumbel_max_coupled": float(np.mean(gumbel)),
           "gumbel_max_unfiltered_draft": float(np.mean(gumbel_raw))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
