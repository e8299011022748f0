"""Quick torch-side evaluation of the demo model during training: held-out loss and simulated MTP acceptance.

Why here and not only in vkmtp: the trainer needs feedback every few minutes without exporting a GGUF. The
final, shipped numbers are re-measured with vkmtp's NumPy reference; these follow the same rules (llama.cpp's
chained drafts, greedy verify, accepted / drafted).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from demo_model_data import Corpus, heldout_prompts


def evaluate_heldout(
    model, mtp, heldout: np.ndarray, ctx: int, rotary: Callable, n_windows: int = 64
) -> dict[str, float]:
    """Main CE, MTP CE (t+2 given true t+1) and teacher-forced draft agreement on fixed held-out windows."""
    starts = np.linspace(0, heldout.size - ctx - 2, n_windows).astype(np.int64)
    sums = {"main": 0.0, "mtp": 0.0, "agree": 0.0, "main_acc": 0.0}
    count = 0
    for batch in np.array_split(starts, max(1, n_windows // 16)):
        window = torch.from_numpy(np.stack([heldout[s : s + ctx + 1] for s in batch]).astype(np.int64))
        inputs, targets = window[:, :-1], window[:, 1:]
        hidden = model.model(input_ids=inputs).last_hidden_state  # [b, t, e]
        logits = model.lm_head(hidden)  # [b, t, v]
        prev = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
        mtp_logits = model.lm_head(mtp(model.model.embed_tokens(inputs), prev, rotary(model, inputs)))
        vocab = logits.shape[-1]
        # position 0 has no previous hidden; skip it for the MTP statistics
        sums["main"] += F.cross_entropy(
            logits.reshape(-1, vocab), targets.reshape(-1), reduction="sum"
        ).item()
        sums["mtp"] += (
            F.cross_entropy(
                mtp_logits[:, 1:].reshape(-1, vocab), targets[:, 1:].reshape(-1), reduction="sum"
            ).item()
            * ctx
            / (ctx - 1)
        )
        main_top = logits.argmax(-1)
        sums["agree"] += (
            mtp_logits[:, 1:].argmax(-1) == main_top[:, 1:]
        ).float().mean().item() * targets.numel()
        sums["main_acc"] += (main_top == targets).float().sum().item()
        count += targets.numel()
    return {
        "heldout_main": round(sums["main"] / count, 4),
        "heldout_mtp": round(sums["mtp"] / count, 4),
        "heldout_ppl": round(float(np.exp(sums["main"] / count)), 2),
        "tf_agreement": round(sums["agree"] / count, 4),
        "main_top1": round(sums["main_acc"] / count, 4),
    }


def greedy_generate(model, prompt: list[int], n_generate: int) -> list[int]:
    """Greedy continuation by full recomputation (tiny model, short text: simpler than a recurrent cache)."""
    ids = list(prompt)
    for _ in range(n_generate):
        logits = model(input_ids=torch.tensor([ids]), logits_to_keep=1, use_cache=False).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids


def chained_drafts(
    model, mtp, rotary: Callable, ids: torch.Tensor, hidden: torch.Tensor, p: int, n_draft: int
) -> list[int]:
    """Drafts d1..dn for the committed prefix ids[:p+1] (t_p sampled, not yet seen by the main model).

    MTP entry q holds (x_q, h_{q-1}); chained step i feeds (d_i, hm_{i-1}), hm = the post-norm MTP output.
    """
    embeds = model.model.embed_tokens(ids[: p + 1])[None]  # [1, p+1, e]
    prev = torch.cat([torch.zeros_like(hidden[:1]), hidden[:p]], dim=0)[None]  # [1, p+1, e]
    drafts: list[int] = []
    for _ in range(n_draft):
        out = mtp(embeds, prev, rotary(model, embeds[..., 0]))[:, -1:]  # [1, 1, e]
        token = int(model.lm_head(out)[0, -1].argmax())
        drafts.append(token)
        embeds = torch.cat([embeds, model.model.embed_tokens(torch.tensor([[token]]))], dim=1)
        prev = torch.cat([prev, out], dim=1)
    return drafts


def simulate_speculation(
    model, mtp, rotary: Callable, seq: list[int], n_prompt: int, n_max: int
) -> tuple[int, int, list[int], list[int]]:
    """Replay greedy speculative decoding over a greedy sequence; (accepted, drafted, tries[i], hits[i]).

    Greedy verification reproduces the greedy sequence exactly, so the continuation is known in advance and
    the acceptance of each draft chain is its longest prefix agreeing with it.
    """
    ids = torch.tensor(seq)
    hidden = model.model(input_ids=ids[None]).last_hidden_state[0]  # [L, e] post-norm
    accepted = drafted = 0
    tries, hits = [0] * n_max, [0] * n_max
    p = n_prompt  # t_p = first generated token, sampled from h_{p-1}
    while p < len(seq) - 1:
        n = min(n_max, len(seq) - 1 - p)
        drafts = chained_drafts(model, mtp, rotary, ids, hidden, p, n)
        k = 0
        while k < n and drafts[k] == seq[p + 1 + k]:
            k += 1
        for i in range(min(k + 1, n)):
            tries[i] += 1
            hits[i] += int(i < k)
        accepted += k
        drafted += n
        p += k + 1  # accepted drafts plus the main model's own next token
    return accepted, drafted, tries, hits


def repeat_rate(seq: list[int], n_prompt: int, n: int = 4) -> float:
    """Share of generated n-grams already seen earlier in the sequence (a loop detector)."""
    seen, repeats, total = set(), 0, 0
    for end in range(n, len(seq) + 1):
        gram = tuple(seq[end - n : end])
        if end > n_prompt:
            total += 1
            repeats += gram in seen
        seen.add(gram)
    return repeats / max(1, total)


def measure_acceptance(
    model,
    mtp,
    corpus: Corpus,
    rotary: Callable,
    n_prompts: int = 16,
    n_generate: int = 64,
    prompt_tokens: int = 128,
) -> dict:
    """Greedy MTP acceptance at n-max 1/2/3 on held-out prompts, conditional rates, repeat rate, a sample."""
    prompts = heldout_prompts(
        corpus.heldout_texts,
        lambda text: corpus.tokenizer.encode(text, add_special_tokens=False).ids,
        n_prompts,
        prompt_tokens,
    )
    sequences = [greedy_generate(model, prompt, n_generate) for prompt in prompts]
    record: dict = {"accept_prompts": n_prompts, "accept_generated": n_generate}
    for n_max in (1, 2, 3):
        acc = dra = 0
        tries, hits = [0] * n_max, [0] * n_max
        for seq in sequences:
            a, d, t, h = simulate_speculation(model, mtp, rotary, seq, prompt_tokens, n_max)
            acc, dra = acc + a, dra + d
            tries = [x + y for x, y in zip(tries, t)]
            hits = [x + y for x, y in zip(hits, h)]
        record[f"accept_n{n_max}"] = round(acc / max(1, dra), 4)
        if n_max == 3:
            record["p_draft_given_prev"] = [round(h / max(1, t), 4) for h, t in zip(hits, tries)]
    record["repeat_rate_4gram"] = round(float(np.mean([repeat_rate(s, prompt_tokens) for s in sequences])), 4)
    sample = greedy_generate(
        model, corpus.tokenizer.encode("def parse_args(", add_special_tokens=False).ids, 48
    )
    record["sample_parse_args"] = corpus.tokenizer.decode(sample)
    return record
