"""Train vkmtp's embedded demo model: a tiny `qwen35` (Gated DeltaNet + gated attention) with an MTP head.

Why: a newcomer's first `vkmtp` command must show MTP speculative decoding with real acceptance and no
download, so the project ships a small model trained by this reproducible tool on the Python standard
library's own source.

    python tools/train_demo_model.py --seed 0 --minutes 55 --out runs/demo

Dev-only dependencies (the `dev` extra): torch, transformers, safetensors, matplotlib. Runs on CPU; the clock
that drives the learning-rate schedule excludes evaluation time. Every `--eval-minutes` it evaluates on
held-out stdlib modules and writes a Hugging Face checkpoint (`model.safetensors` with `mtp.*` tensors,
`config.json`, `tokenizer.json`) that `vkmtp.convert` turns into a GGUF.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))
sys.path.insert(1, str(TOOLS_DIR.parent))  # this checkout's vkmtp (converter, tokenizer export)
from demo_model_eval import evaluate_heldout, measure_acceptance  # noqa: E402
from demo_model_data import build_corpus  # noqa: E402
from demo_model_io import export_gguf, plot_losses, save_checkpoint  # noqa: E402

from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig  # noqa: E402
from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5DecoderLayer, Qwen3_5RMSNorm  # noqa: E402


def patch_unit_lower_solve() -> None:
    """Replace the tiny batched unit-lower-triangular solves of the GDN torch fallback by matmuls.

    transformers' `torch_chunk_gated_delta_rule` solves (I + N) X = B per 64x64 chunk with
    `torch.linalg.solve_triangular`, which dominates a CPU training step. N (the strictly lower part) is
    nilpotent, so (I + N)^-1 = (I - N)(I + N^2)(I + N^4)... exactly, in log2(chunk) matmul pairs.
    """
    original = torch.linalg.solve_triangular

    def solve(a, b, *, upper, left=True, unitriangular=False, out=None):
        if upper or not left or not unitriangular or out is not None:
            return original(a, b, upper=upper, left=left, unitriangular=unitriangular, out=out)
        minus_n = -a.tril(-1)  # [..., c, c]
        x = b + minus_n @ b  # [..., c, d]
        power = minus_n
        for _ in range(max(1, math.ceil(math.log2(a.shape[-1]))) - 1):
            power = power @ power
            x = x + power @ x
        return x

    torch.linalg.solve_triangular = solve


class MtpHead(nn.Module):
    """Qwen3.5's multi-token-prediction block under HF's `mtp.*` names.

    Entry at position p combines the embedding of token x_p with the main model's post-final-norm hidden state
    at p-1 (embedding half first) and predicts x_{p+1} through the shared lm_head.
    """

    def __init__(self, config: Qwen3_5TextConfig):
        super().__init__()
        n = config.num_hidden_layers
        layer_config = Qwen3_5TextConfig(
            **{
                **config.to_dict(),
                "num_hidden_layers": n + 1,
                "layer_types": list(config.layer_types) + ["full_attention"],
            }
        )
        layer_config._attn_implementation = config._attn_implementation
        e = config.hidden_size
        self.fc = nn.Linear(2 * e, e, bias=False)
        self.pre_fc_norm_embedding = Qwen3_5RMSNorm(e, eps=config.rms_norm_eps)
        self.pre_fc_norm_hidden = Qwen3_5RMSNorm(e, eps=config.rms_norm_eps)
        self.layers = nn.ModuleList([Qwen3_5DecoderLayer(layer_config, n)])
        self.norm = Qwen3_5RMSNorm(e, eps=config.rms_norm_eps)

    def forward(
        self,
        token_embeds: torch.Tensor,
        prev_hidden: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """token_embeds, prev_hidden: [batch, seq, e] -> post-norm MTP hidden [batch, seq, e] (causal)."""
        fused = torch.cat(
            [self.pre_fc_norm_embedding(token_embeds), self.pre_fc_norm_hidden(prev_hidden)], dim=-1
        )
        hidden = self.layers[0](self.fc(fused), position_embeddings=position_embeddings, attention_mask=None)
        return self.norm(hidden)


def model_config(args: argparse.Namespace, vocab_size: int, special_ids: dict[str, int]) -> Qwen3_5TextConfig:
    """The qwen35 hyper-parameters: 3 GDN layers then 1 gated full-attention layer, repeated; partial RoPE."""
    rotary_pairs = args.head_dim // 4 // 2  # partial_rotary_factor 0.25
    config = Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=args.dim,
        num_hidden_layers=args.layers,
        layer_types=[
            "full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(args.layers)
        ],
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        linear_num_key_heads=args.gdn_k_heads,
        linear_num_value_heads=args.gdn_v_heads,
        linear_key_head_dim=args.head_dim,
        linear_value_head_dim=args.head_dim,
        linear_conv_kernel_dim=4,
        intermediate_size=args.ffn,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [rotary_pairs - 2 * (rotary_pairs // 3), rotary_pairs // 3, rotary_pairs // 3],
            "mrope_interleaved": True,
        },
        rms_norm_eps=1e-6,
        use_cache=False,
        bos_token_id=special_ids["<|endoftext|>"],
        eos_token_id=special_ids["<|im_end|>"],
        pad_token_id=special_ids["<|endoftext|>"],
        mtp_num_hidden_layers=1,
        attn_implementation="sdpa",
    )
    return config


def init_mtp(mtp: MtpHead, std: float) -> None:
    """Same scheme as the trunk: normal(0, std) matrices, zero (i.e. unit, Qwen3.5's 1+w) norm weights."""
    for module in mtp.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, Qwen3_5RMSNorm):
            nn.init.zeros_(module.weight)


def forward_losses(
    model: Qwen3_5ForCausalLM, mtp: MtpHead, window: torch.Tensor, distill: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Main next-token CE and MTP CE for a [batch, ctx + 1] window.

    MTP entry q sees (x_q, h_{q-1}) (h_{-1} = 0 as at the start of a sequence) and predicts x_{q+1}; its
    target mixes the one-hot token with `distill` x the main model's own (detached) distribution at q, because
    a draft is accepted exactly when it matches the main model's choice.
    """
    inputs, targets = window[:, :-1], window[:, 1:]
    hidden = model.model(input_ids=inputs).last_hidden_state  # [b, t, e] post-norm
    logits = model.lm_head(hidden)  # [b, t, v]
    vocab = logits.shape[-1]
    loss_main = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
    prev_hidden = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
    mtp_logits = model.lm_head(mtp(model.model.embed_tokens(inputs), prev_hidden, rotary(model, inputs)))
    mtp_logits = mtp_logits.reshape(-1, vocab)
    soft = F.one_hot(targets.reshape(-1), vocab).float() * (1.0 - distill)
    if distill > 0:
        soft = soft + distill * torch.softmax(logits.detach().reshape(-1, vocab), dim=-1)
    loss_mtp = F.cross_entropy(mtp_logits, soft)
    return loss_main, loss_mtp


def rotary(model: Qwen3_5ForCausalLM, ids: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for positions start.. of a [batch, seq] id tensor (text: all M-RoPE sections agree)."""
    positions = torch.arange(start, start + ids.shape[1]).view(1, 1, -1).expand(3, ids.shape[0], -1)
    probe = model.model.embed_tokens.weight[:1]
    return model.model.rotary_emb(probe, positions)


def learning_rate(args: argparse.Namespace, progress: float) -> float:
    """Cosine from lr to lr_min_ratio * lr over the budget (the caller applies the linear warm-up)."""
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * (args.lr_min_ratio + (1.0 - args.lr_min_ratio) * cosine)


def train(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    patch_unit_lower_solve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "train_log.jsonl", "a", buffering=1)

    def log(record: dict) -> None:
        log_file.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    corpus = build_corpus(args.vocab, Path(args.cache) if args.cache else out / "corpus_cache")
    tokenizer_json = corpus.tokenizer.to_str()
    config = model_config(args, corpus.tokenizer.get_vocab_size(), corpus.special_ids)
    model = Qwen3_5ForCausalLM(config)
    mtp = MtpHead(config)
    init_mtp(mtp, config.initializer_range)
    n_main = sum(p.numel() for p in model.parameters())
    n_mtp = sum(p.numel() for p in mtp.parameters())
    log(
        {
            "event": "start",
            "args": vars(args),
            "params_main": n_main,
            "params_mtp": n_mtp,
            "train_tokens": int(corpus.train.size),
            "heldout_tokens": int(corpus.heldout.size),
            "train_files": corpus.n_train_files,
            "heldout_files": corpus.heldout_files,
        }
    )

    params = list(model.parameters()) + list(mtp.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(args.seed)
    budget_s = args.minutes * 60.0
    train_clock = 0.0

    def progress() -> float:
        """Share of the budget used: wall clock of training steps, or steps when --steps is given."""
        return step / args.steps if args.steps else train_clock / budget_s

    next_eval = args.eval_minutes * 60.0
    step = tokens = 0
    while progress() < 1.0:
        t0 = time.perf_counter()
        lr = learning_rate(args, progress()) * min(1.0, (step + 1) / args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, corpus.train.size - args.ctx - 1, size=args.batch)
        window = torch.from_numpy(
            np.stack([corpus.train[s : s + args.ctx + 1] for s in starts]).astype(np.int64)
        )
        model.train()
        mtp.train()
        loss_main, loss_mtp = forward_losses(model, mtp, window, args.distill)
        loss = loss_main + args.mtp_weight * loss_mtp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        tokens += window[:, :-1].numel()
        train_clock += time.perf_counter() - t0
        if step % args.log_every == 0:
            log(
                {
                    "event": "step",
                    "step": step,
                    "tokens": tokens,
                    "train_min": round(train_clock / 60, 3),
                    "lr": lr,
                    "loss_main": round(loss_main.item(), 4),
                    "loss_mtp": round(loss_mtp.item(), 4),
                    "grad_norm": round(float(grad_norm), 3),
                    "step_s": round(time.perf_counter() - t0, 3),
                }
            )
        if train_clock >= next_eval or progress() >= 1.0:
            next_eval += args.eval_minutes * 60.0
            final = progress() >= 1.0
            model.eval()
            mtp.eval()
            with torch.no_grad():
                t_eval = time.perf_counter()
                record = {
                    "event": "eval",
                    "step": step,
                    "tokens": tokens,
                    "train_min": round(train_clock / 60, 3),
                }
                record.update(evaluate_heldout(model, mtp, corpus.heldout, args.ctx, rotary, n_windows=64))
                if final or args.accept_every_eval:
                    record.update(
                        measure_acceptance(
                            model,
                            mtp,
                            corpus,
                            rotary,
                            n_prompts=args.accept_prompts,
                            n_generate=args.accept_tokens,
                        )
                    )
                record["eval_s"] = round(time.perf_counter() - t_eval, 1)
            log(record)
            save_checkpoint(out / "checkpoint", model, mtp, tokenizer_json)
    log({"event": "done", "step": step, "tokens": tokens, "train_min": round(train_clock / 60, 3)})
    log_file.close()
    plot_losses(out / "train_log.jsonl", out / "loss_curve.png")
    if args.gguf:
        export_gguf(out / "checkpoint", Path(args.gguf), args.file_type)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--minutes", type=float, default=55.0, help="training wall clock, excluding evaluation"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="schedule by optimizer steps instead of minutes (bit-reproducible on one machine)",
    )
    parser.add_argument("--gguf", help="after training, export the final checkpoint to this GGUF path")
    parser.add_argument("--out", required=True, help="output folder (log, checkpoint/, loss_curve.png)")
    parser.add_argument("--cache", help="tokenizer/token cache folder (default OUT/corpus_cache)")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--gdn-k-heads", type=int, default=2)
    parser.add_argument("--gdn-v-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=768)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-min-ratio", type=float, default=0.1)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--mtp-weight", type=float, default=0.5)
    parser.add_argument(
        "--distill",
        type=float,
        default=0.5,
        help="share of the main model's distribution " "in the MTP target (0 = plain next-next-token CE)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-minutes", type=float, default=5.0)
    parser.add_argument(
        "--accept-every-eval", action="store_true", help="also measure acceptance at every eval"
    )
    parser.add_argument("--accept-prompts", type=int, default=16, help="held-out prompts for acceptance")
    parser.add_argument("--accept-tokens", type=int, default=64, help="greedy tokens per acceptance prompt")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw loss_curve.png from OUT/train_log.jsonl"
    )
    parser.add_argument("--export", metavar="GGUF", help="only convert OUT/checkpoint to this GGUF path")
    parser.add_argument(
        "--file-type", default="q8_0", help="GGUF file type for --gguf/--export (q8_0, f16, f32)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plot_only:
        plot_losses(Path(args.out) / "train_log.jsonl", Path(args.out) / "loss_curve.png")
        return
    if args.export:
        written = export_gguf(Path(args.out) / "checkpoint", Path(args.export), args.file_type)
        print(f"wrote {args.export}: {len(written)} tensors")
        return
    train(args)


if __name__ == "__main__":
    main()
