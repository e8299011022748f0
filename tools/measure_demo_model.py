"""Measure a demo-model GGUF with vkmtp's NumPy reference: held-out perplexity and MTP acceptance.

Why a separate tool: the numbers in models/README.md must come from the shipped file and vkmtp's own
speculative loop (llama.cpp's draft-mtp rules), not from the torch model it was exported from. No torch.

    python tools/measure_demo_model.py models/vkmtp-demo-qwen35-mtp-5M-Q8_0.gguf --json measured.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))
sys.path.insert(1, str(TOOLS_DIR.parent))

from demo_model_data import heldout_prompts, read_heldout  # noqa: E402
from demo_model_eval import repeat_rate  # noqa: E402
from vkmtp.ref import ReferenceModel  # noqa: E402
from vkmtp.ref.generate import generate, generate_mtp  # noqa: E402
from vkmtp.spec import SpecConfig  # noqa: E402
from vkmtp.spec.stats import SpecStats  # noqa: E402
from vkmtp.text.tokenizer import Tokenizer  # noqa: E402
from vkmtp.gguf import open_gguf  # noqa: E402
from vkmtp.sampling import SamplingParams  # noqa: E402

# llama.cpp's default chain plus a mild repetition penalty: what a demo user would sample with
SAMPLED = SamplingParams(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.15, seed=0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def heldout_windows(model: ReferenceModel, ids: np.ndarray, n_windows: int, ctx: int) -> dict[str, float]:
    """Main CE (perplexity), MTP CE for t+2 given the true t+1, and teacher-forced draft agreement."""
    starts = np.linspace(0, ids.size - ctx - 2, n_windows).astype(np.int64)
    nll_main = nll_mtp = agree = 0.0
    n_main = n_mtp = 0
    for start in starts:
        window = ids[start : start + ctx + 1]
        inputs, targets = window[:-1], window[1:]
        logits, hidden = model.forward(inputs, model.new_state())  # [ctx, v], [ctx, e]
        prev = np.concatenate([np.zeros_like(hidden[:1]), hidden[:-1]])  # h_{q-1}, h_{-1} = 0
        mtp_logits, _ = model.mtp_forward(inputs, prev, model.new_mtp_state())
        rows = np.arange(ctx)
        nll_main -= log_softmax(logits)[rows, targets].sum()
        # MTP entry q predicts x_{q+1} from (x_q, h_{q-1}); entry 0 has no hidden, so it is left out
        nll_mtp -= log_softmax(mtp_logits[1:])[rows[:-1], targets[1:]].sum()
        agree += (mtp_logits[1:].argmax(-1) == logits[1:].argmax(-1)).sum()
        n_main += ctx
        n_mtp += ctx - 1
    nll_main, nll_mtp, agree = float(nll_main), float(nll_mtp), float(agree)
    return {
        "heldout_main": round(nll_main / n_main, 4),
        "heldout_ppl": round(float(np.exp(nll_main / n_main)), 2),
        "heldout_mtp": round(nll_mtp / n_mtp, 4),
        "tf_agreement": round(agree / n_mtp, 4),
        "windows": n_windows,
        "ctx": ctx,
    }


def acceptance(model: ReferenceModel, prompts: list[list[int]], n_generate: int) -> dict:
    """Greedy draft-mtp at n-max 1/2/3 (p_min 0: always draft n): accepted / drafted, per-position rates."""
    result: dict = {}
    sequences = []
    for n_max in (1, 2, 3):
        total = SpecStats()
        for prompt in prompts:
            run = generate_mtp(model, prompt, n_generate, spec=SpecConfig(n_max=n_max, p_min=0.0))
            total.merge(run.stats)
            if n_max == 3:
                sequences.append(list(prompt) + run.tokens)
        result[f"n{n_max}"] = {
            "acceptance": round(total.acceptance or 0.0, 4),
            "mean_accept_len": round(total.mean_accepted_length or 1.0, 3),
            "drafted": total.draft_n,
            "accepted": total.draft_n_accepted,
            "per_position": [
                round(a / d, 4) for a, d in zip(total.accepted_per_pos, total.drafted_per_pos) if d
            ],
        }
    n_prompt = len(prompts[0])
    result["repeat_rate_4gram"] = round(float(np.mean([repeat_rate(s, n_prompt) for s in sequences])), 4)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt")
    parser.add_argument("--windows", type=int, default=16, help="held-out windows for perplexity")
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model = ReferenceModel.from_gguf(args.gguf)
    tokenizer = Tokenizer.from_gguf(open_gguf(args.gguf))
    texts = read_heldout()

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special=False)

    separator = tokenizer.token_to_id("<|endoftext|>")
    ids = np.asarray([t for rel in sorted(texts) for t in encode(texts[rel]) + [separator]], dtype=np.int64)
    report = {"gguf": Path(args.gguf).name, "heldout_tokens": int(ids.size)}
    report.update(heldout_windows(model, ids, args.windows, args.ctx))
    prompts = heldout_prompts(texts, encode, args.prompts, args.prompt_tokens)
    report["acceptance"] = acceptance(model, prompts, args.tokens)
    report["acceptance"]["prompts"] = args.prompts
    report["acceptance"]["generated_per_prompt"] = args.tokens
    sample_prompt = encode("def parse_args(")
    report["sample_parse_args_greedy"] = tokenizer.decode(
        sample_prompt + generate(model, sample_prompt, 48).tokens
    )
    sampled = generate_mtp(model, sample_prompt, 48, params=SAMPLED)
    report["sample_parse_args_sampled"] = tokenizer.decode(sample_prompt + sampled.tokens)
    report["sample_sampled_params"] = repr(SAMPLED)
    report["sample_sampled_acceptance"] = round(sampled.stats.acceptance or 0.0, 4)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
