#!/usr/bin/env python3
"""Make small random Qwen3.5 / Qwen3.6 test models (dense, MoE, MTP-aligned) and their reference data.

    # GGUFs of any type (no torch needed):
    python tools/make_test_model.py --out models/ --variants dense,moe,aligned --types f32,q8_0,q4_0
    # bigger random weights whose rows all fit K-quant blocks:
    python tools/make_test_model.py --out models/ --preset k256 --types q4_k,q6_k,iq4_xs
    # also write HF checkpoints (config.json, model.safetensors, tokenizer.json) for other converters:
    python tools/make_test_model.py --out models/ --save-hf
    # regenerate the committed test fixtures with transformers (needs the `dev` extra: torch, transformers):
    python tools/make_test_model.py --fixtures tests/data/tiny_qwen35

Weights come from `vkmtp.convert.synthetic` (fixed seeds, rounded to Q8_0-representable values so the
fixture stores them compactly and losslessly). The reference logits come from transformers' own
Qwen3_5ForCausalLM / Qwen3_5MoeForCausalLM; the MTP head, which transformers does not implement, is a small
torch module below that follows docs/MODEL.md (MTP head) on top of transformers' decoder layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vkmtp.convert import synthetic, write_gguf  # noqa: E402
from tests.fixtures import (  # noqa: E402
    FIXTURE_DIR,
    FIXTURE_VERSION,
    PROMPT,
    SEEDS,
    VARIANTS,
    load_fixture_meta,
    make_tokenizer_json,
    tokenizer_meta,
    variant_state,
)

N_DECODE = 4  # decode steps after the prompt in the reference data
N_DRAFT = 3  # chained MTP draft steps (llama.cpp's default n_max)


# ---- transformers side ----------------------------------------------------------------------------


def _torch_config(hf_cfg: dict):
    from transformers import Qwen3_5TextConfig
    from transformers.models.qwen3_5_moe import Qwen3_5MoeTextConfig

    cls = Qwen3_5MoeTextConfig if hf_cfg["architectures"][0].startswith("Qwen3_5Moe") else Qwen3_5TextConfig
    skip = ("architectures", "model_type", "mtp_num_hidden_layers", "full_attention_interval")
    return cls(**{k: v for k, v in hf_cfg.items() if k not in skip})


def _fused_experts(state: dict, prefix: str, n_expert: int) -> dict:
    """Per-expert HF tensors -> transformers 5's in-memory `gate_up_proj` / `down_proj` stacks."""
    import torch

    out = {}
    gate = [state.pop(f"{prefix}experts.{e}.gate_proj.weight") for e in range(n_expert)]
    up = [state.pop(f"{prefix}experts.{e}.up_proj.weight") for e in range(n_expert)]
    down = [state.pop(f"{prefix}experts.{e}.down_proj.weight") for e in range(n_expert)]
    out[f"{prefix}experts.gate_up_proj"] = torch.stack([torch.cat([g, u]) for g, u in zip(gate, up)])
    out[f"{prefix}experts.down_proj"] = torch.stack(down)
    return out


def torch_model(hf_cfg: dict, state: dict[str, np.ndarray]):
    """transformers' ForCausalLM with exactly these weights (strict load), float32, eval mode."""
    import torch
    from transformers import Qwen3_5ForCausalLM
    from transformers.models.qwen3_5_moe import Qwen3_5MoeForCausalLM

    cfg = _torch_config(hf_cfg)
    moe = "num_experts" in hf_cfg
    model = (Qwen3_5MoeForCausalLM if moe else Qwen3_5ForCausalLM)(cfg).eval()
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items() if not k.startswith("mtp.")}
    if moe:
        for i in range(cfg.num_hidden_layers):
            tensors.update(_fused_experts(tensors, f"model.layers.{i}.mlp.", cfg.num_experts))
    if cfg.tie_word_embeddings:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    model.load_state_dict(tensors, strict=True)
    return model


def torch_mtp(hf_cfg: dict, state: dict[str, np.ndarray], trunk):
    """The MTP head (docs/MODEL.md) in torch, reusing transformers' full-attention decoder layer for the block."""
    import copy

    import torch
    from torch import nn
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5DecoderLayer, Qwen3_5RMSNorm
    from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeDecoderLayer

    cfg = copy.deepcopy(trunk.config)
    cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
    cfg._attn_implementation = "eager"
    moe = "num_experts" in hf_cfg
    e = cfg.hidden_size

    class TorchMtp(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = (Qwen3_5MoeDecoderLayer if moe else Qwen3_5DecoderLayer)(cfg, 0)
            self.enorm = Qwen3_5RMSNorm(e, cfg.rms_norm_eps)
            self.hnorm = Qwen3_5RMSNorm(e, cfg.rms_norm_eps)
            self.norm = Qwen3_5RMSNorm(e, cfg.rms_norm_eps)
            self.fc = nn.Linear(2 * e, e, bias=False)

        def forward(self, tokens, hiddens, positions):
            """tokens [L], hiddens [L, E] (h_{p-1}), positions [L] -> logits [L, V], hm [L, E]."""
            emb = trunk.model.embed_tokens(tokens[None])
            u = self.fc(torch.cat([self.enorm(emb), self.hnorm(hiddens[None])], dim=-1))
            pos = positions[None]
            cos_sin = trunk.model.rotary_emb(u, pos)
            n = tokens.shape[0]
            mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
            u = self.block(u, position_embeddings=cos_sin, attention_mask=mask, position_ids=pos)
            hm = self.norm(u)
            return trunk.lm_head(hm)[0], hm[0]

    mtp = TorchMtp().eval()
    tensors = {
        k[len("mtp.layers.0.") :]: torch.from_numpy(v.copy())
        for k, v in state.items()
        if k.startswith("mtp.layers.0.")
    }
    if moe:
        tensors.update(_fused_experts(tensors, "mlp.", cfg.num_experts))
    mtp.block.load_state_dict(tensors, strict=True)
    for ours, theirs in (
        ("enorm", "pre_fc_norm_embedding"),
        ("hnorm", "pre_fc_norm_hidden"),
        ("norm", "norm"),
        ("fc", "fc"),
    ):
        getattr(mtp, ours).weight.data = torch.from_numpy(state[f"mtp.{theirs}.weight"].copy())
    return mtp


def hf_reference(hf_cfg: dict, state: dict[str, np.ndarray], prompt: list[int]) -> dict[str, np.ndarray]:
    """transformers' logits for a prompt (prefill), greedy decode steps with its cache, and the torch MTP
    head's logits over the prompt plus a greedy chained draft after it."""
    import torch

    trunk = torch_model(hf_cfg, state)
    mtp = torch_mtp(hf_cfg, state, trunk)
    ids = torch.tensor(prompt)[None]
    n = len(prompt)
    with torch.no_grad():
        out = trunk(input_ids=ids, use_cache=True)
        prefill_logits = out.logits[0]
        hidden = trunk.model(input_ids=ids).last_hidden_state[0]  # post-norm
        cache, decode_tokens, decode_logits = out.past_key_values, [], []
        token = int(prefill_logits[-1].argmax())
        for _ in range(N_DECODE):
            decode_tokens.append(token)
            step = trunk(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            decode_logits.append(step.logits[0, -1])
            token = int(step.logits[0, -1].argmax())
        # MTP entry p: (x_p, h_{p-1}) at position p, h_{-1} = 0
        h_prev = torch.cat([torch.zeros(1, hidden.shape[1]), hidden[:-1]])
        mtp_logits, _ = mtp(ids[0], h_prev, torch.arange(n))
        # chained draft: d_0 = trunk's next token at position n with h_{n-1}, then MTP's own hm and argmax
        tokens, hs = list(prompt), [h_prev[i] for i in range(n)]
        token, h = int(prefill_logits[-1].argmax()), hidden[-1]
        draft_inputs, draft_logits = [], []
        for _ in range(N_DRAFT):
            tokens.append(token)
            hs.append(h)
            logits, hm = mtp(torch.tensor(tokens), torch.stack(hs), torch.arange(len(tokens)))
            draft_inputs.append(token)
            draft_logits.append(logits[-1])
            token, h = int(logits[-1].argmax()), hm[-1]
    return {
        "prompt_tokens": np.asarray(prompt, np.int64),
        "prefill_logits": prefill_logits.numpy(),
        "prefill_hidden": hidden.numpy(),
        "decode_tokens": np.asarray(decode_tokens, np.int64),
        "decode_logits": torch.stack(decode_logits).numpy(),
        "mtp_prompt_logits": mtp_logits.numpy(),
        "draft_input_tokens": np.asarray(draft_inputs, np.int64),
        "draft_logits": torch.stack(draft_logits).numpy(),
    }


# ---- outputs ---------------------------------------------------------------------------------------


def write_fixtures(fixture_dir: str) -> None:
    """Regenerate the committed fixture set (needs torch + transformers)."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    os.makedirs(fixture_dir, exist_ok=True)
    tokenizer_json = make_tokenizer_json()
    with open(os.path.join(fixture_dir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write(tokenizer_json)
    prompt = Tokenizer.from_str(tokenizer_json).encode(PROMPT).ids
    meta = {
        "format_version": FIXTURE_VERSION,
        "generator": f"python tools/make_test_model.py --fixtures {fixture_dir}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompt": PROMPT,
        "variants": {},
    }
    for variant in ("dense", "moe"):
        spec = VARIANTS[variant]
        state = synthetic.quantization_exact(synthetic.random_state_dict(spec, SEEDS[variant]))
        synthetic.save_state(os.path.join(fixture_dir, f"state-{variant}.npz"), state)
        hf_cfg = synthetic.hf_config(spec)
        reference = hf_reference(hf_cfg, state, prompt)
        np.savez(os.path.join(fixture_dir, f"reference-{variant}.npz"), **reference)
        meta["variants"][variant] = {"seed": SEEDS[variant], "hf_config": hf_cfg}
        print(
            f"{variant}: prompt {len(prompt)} tokens, "
            f"logit |max| {np.abs(reference['prefill_logits']).max():.2f}"
        )
    with open(os.path.join(fixture_dir, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)


def save_hf_checkpoint(out_dir: str, hf_cfg: dict, state: dict[str, np.ndarray], tokenizer_json: str) -> None:
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(hf_cfg, fh, indent=1)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()}, os.path.join(out_dir, "model.safetensors")
    )
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write(tokenizer_json)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {
                "tokenizer_class": "Qwen3_5Tokenizer",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "add_bos_token": False,
            },
            fh,
            indent=1,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="directory for GGUF files")
    parser.add_argument("--variants", default="dense,moe,aligned", help="comma list of dense, moe, aligned")
    parser.add_argument("--types", default="f32", help="comma list of file types (f32, f16, q8_0, q4_0, ...)")
    parser.add_argument("--no-mtp", action="store_true", help="drop the MTP block (llama.cpp --no-mtp)")
    parser.add_argument("--save-hf", action="store_true", help="also write HF checkpoint directories")
    parser.add_argument(
        "--fixtures", help="regenerate the test fixture directory (needs torch, transformers)"
    )
    parser.add_argument(
        "--fixture-dir",
        default=FIXTURE_DIR,
        help="fixture directory the weights are taken from (default: the committed one)",
    )
    parser.add_argument(
        "--preset",
        choices=("fixture", "k256"),
        default="fixture",
        help="fixture: the committed test weights; k256: fresh random weights (--seed) with every row a "
        "multiple of 256 values, for K-quant files",
    )
    parser.add_argument("--seed", type=int, default=10, help="random seed of the k256 preset")
    args = parser.parse_args(argv)
    if args.fixtures:
        write_fixtures(args.fixtures)
    if not args.out:
        return 0
    os.makedirs(args.out, exist_ok=True)
    meta = load_fixture_meta(args.fixture_dir)
    with open(os.path.join(args.fixture_dir, "tokenizer.json"), encoding="utf-8") as fh:
        tokenizer_json = fh.read()
    for variant in args.variants.split(","):
        if args.preset == "fixture":
            hf_cfg, state = variant_state(args.fixture_dir, variant, meta)
            stem = f"tiny-qwen35-{variant}"
        else:
            hf_cfg, state = k256_state(variant, args.seed)
            stem = f"tiny-qwen35-k256-{variant}"
        for file_type in args.types.split(","):
            suffix = "-nomtp" if args.no_mtp else ""
            path = os.path.join(args.out, f"{stem}{suffix}-{file_type.upper()}.gguf")
            write_gguf(
                state,
                hf_cfg,
                path,
                file_type=file_type,
                tokenizer_meta=tokenizer_meta(args.fixture_dir),
                mtp=not args.no_mtp,
                name=stem,
            )
            print(f"wrote {path} ({os.path.getsize(path)} bytes)")
        if args.save_hf:
            save_hf_checkpoint(os.path.join(args.out, f"hf-{stem}"), hf_cfg, state, tokenizer_json)
    return 0


def k256_state(variant: str, seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Fresh random weights of the k256 preset (no transformers reference data)."""
    spec = synthetic.K256_MOE if variant == "moe" else synthetic.K256_DENSE
    state = synthetic.random_state_dict(spec, seed)
    if variant == "aligned":
        # wider rows make the successor map stickier; 3.0 gives about 50 % acceptance at this size
        state = synthetic.align_for_mtp(state, spec, seed + 1, block_scale=3.0)
    elif variant not in ("dense", "moe"):
        raise SystemExit(f"unknown variant '{variant}' (dense, moe, aligned)")
    return synthetic.hf_config(spec), state


if __name__ == "__main__":
    sys.exit(main())
