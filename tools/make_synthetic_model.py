#!/usr/bin/env python3
"""Write a random Qwen3.5/3.6 GGUF with the REAL tensor shapes of a released model, for benchmarks and for
testing the loader, placement and kernels at full size without downloading anything.

    PYTHONPATH=. python tools/make_synthetic_model.py --preset 27b --type q4_k_m /data/syn-27b-q4km.gguf
    PYTHONPATH=. python tools/make_synthetic_model.py --preset 35b-a3b --layers 4 --type q8_0 out.gguf

Weights are random but valid blocks (vkmtp.ref.random_quant: finite f16 scales, |w| about 0.02), streamed
to disk in chunks of rows as the file is written: memory stays far below one tensor (a 27B Q4_K_M file is
about 16 GB). The file has the MTP block, a byte-level BPE tokenizer of the real vocabulary size (bytes,
then byte pairs, then triples, with their merges) and a ChatML template, so `vkmtp info`, the tokenizer and
the engine all accept it. The text it generates is noise; the speed is that of the real model.
Quant mixes: q8_0, q4_k, f16 (every matrix), q4_k_m (Q4_K, with Q6_K for the LM head and, in llama-quantize's
"more bits" layers, attn_v and ffn_down). Norms, biases, ssm_a, conv and router weights are F32 as usual.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace

import gguf
import numpy as np

from gguf import TokenType

from vkmtp.convert.writer import tensor_type
from vkmtp.gguf import GGMLType, add_streamed_tensor, row_bytes
from vkmtp.model.config import ModelConfig
from vkmtp.model.weights import expected_tensors
from vkmtp.ref.random_quant import random_rows
from vkmtp.text.chat_template import CHATML_TEMPLATE
from vkmtp.text.tokenizer import bytes_to_byte_level

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

REAL_VOCAB = 248320


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of a released model (llama.cpp's reading of the 27B and 35B-A3B GGUFs; model cards for others)."""

    moe: bool
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    gdn_v_heads: int
    gdn_k_heads: int
    n_ff: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    tied: bool = False
    n_vocab: int = REAL_VOCAB
    head_dim: int = 256
    gdn_head_dim: int = 128


PRESETS = {
    # Qwen3.5-0.8B: E 1024, 24 layers, attention 8/2 x 256, FFN 3584, tied (model card); GDN heads 16/16
    # are our reading of its config, not confirmed by a published GGUF
    "0.8b": Shape(False, 24, 1024, 8, 2, 16, 16, n_ff=3584, tied=True),
    "9b": Shape(False, 32, 4096, 16, 4, 32, 16, n_ff=12288),          # Qwen3.5-9B model card
    "27b": Shape(False, 64, 5120, 24, 4, 48, 16, n_ff=17408),
    "35b-a3b": Shape(True, 40, 2048, 16, 2, 32, 16, n_expert=256, n_expert_used=8, n_ff_exp=512,
                     n_ff_shexp=512),
}
FILE_TYPES = {"q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M, "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_S,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16}
BASE_TYPES = {"q4_k_m": GGMLType.Q4_K, "q4_k": GGMLType.Q4_K, "q8_0": GGMLType.Q8_0, "f16": GGMLType.F16}


def metadata(s: Shape) -> dict:
    """The `{arch}.*` keys llama.cpp's converter writes for these sizes (one MTP block)."""
    a = "qwen35moe" if s.moe else "qwen35"
    md = {
        "general.architecture": a, f"{a}.block_count": s.n_layer + 1, f"{a}.nextn_predict_layers": 1,
        f"{a}.context_length": 262144, f"{a}.embedding_length": s.n_embd,
        f"{a}.attention.head_count": s.n_head,
        f"{a}.attention.head_count_kv": s.n_head_kv, f"{a}.attention.key_length": s.head_dim,
        f"{a}.attention.value_length": s.head_dim, f"{a}.rope.freq_base": 1e7,
        f"{a}.attention.layer_norm_rms_epsilon": 1e-6, f"{a}.rope.dimension_count": s.head_dim // 4,
        f"{a}.rope.dimension_sections": [11, 11, 10, 0], f"{a}.full_attention_interval": 4,
        f"{a}.ssm.conv_kernel": 4, f"{a}.ssm.state_size": s.gdn_head_dim,
        f"{a}.ssm.group_count": s.gdn_k_heads,
        f"{a}.ssm.time_step_rank": s.gdn_v_heads, f"{a}.ssm.inner_size": s.gdn_v_heads * s.gdn_head_dim,
    }
    if s.moe:
        md.update({f"{a}.expert_count": s.n_expert, f"{a}.expert_used_count": s.n_expert_used,
                   f"{a}.expert_feed_forward_length": s.n_ff_exp,
                   f"{a}.expert_shared_feed_forward_length": s.n_ff_shexp})
    else:
        md[f"{a}.feed_forward_length"] = s.n_ff
    return md


def vocabulary(n_vocab: int) -> tuple[list[str], list[int], list[str]]:
    """Byte-level BPE of exactly n_vocab ids: 256 bytes, byte pairs, byte triples (each with the merge that
    makes it), then the ChatML special tokens."""
    n_plain = n_vocab - len(SPECIAL_TOKENS)
    if n_plain < 256:
        raise ValueError(f"--vocab {n_vocab} is too small: 256 byte tokens + {len(SPECIAL_TOKENS)} specials")
    alphabet = [bytes_to_byte_level(bytes([b])) for b in range(256)]
    tokens, merges = list(alphabet), []
    for first in alphabet:                      # pairs, then triples built on the pairs
        for second in alphabet:
            if len(tokens) == n_plain:
                break
            tokens.append(first + second)
            merges.append(f"{first} {second}")
    pair = 256
    while len(tokens) < n_plain:
        for third in alphabet:
            if len(tokens) == n_plain:
                break
            tokens.append(tokens[pair] + third)
            merges.append(f"{tokens[pair]} {third}")
        pair += 1
    types = [int(TokenType.NORMAL)] * len(tokens) + [int(TokenType.CONTROL)] * len(SPECIAL_TOKENS)
    return tokens + list(SPECIAL_TOKENS), types, merges


def more_bits(layer: int, n_layer: int) -> bool:
    """llama-quantize's layer choice for the extra-precise tensors of the _M mixes."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def quant_type(name: str, shape: tuple[int, ...], mix: str, n_layer: int, tied: bool) -> GGMLType:
    t = tensor_type(name, shape, BASE_TYPES[mix])
    if mix == "q4_k_m" and t == GGMLType.Q4_K:
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            t = GGMLType.Q6_K
        elif any(k in name for k in ("attn_v.", "ffn_down")) and more_bits(layer, n_layer):
            t = GGMLType.Q6_K
    if t != GGMLType.F32 and shape[-1] % 256 and t in (GGMLType.Q4_K, GGMLType.Q6_K):
        t = GGMLType.Q8_0 if shape[-1] % 32 == 0 else GGMLType.F16
    return t


def f32_values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Plausible small tensors: norms near 1, ssm_a negative (it is -exp(A_log)), the rest small."""
    if name.endswith("ssm_a"):
        return -np.exp(rng.uniform(-2.0, 1.0, shape)).astype(np.float32)
    if name.endswith("norm.weight"):
        return (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)


def row_chunks(t: GGMLType, n_rows: int, n_k: int, chunk_bytes: int, rng: np.random.Generator):
    """Random valid rows, a few MiB at a time (the writer pulls them while writing the file)."""
    step = max(1, chunk_bytes // row_bytes(t, n_k))
    for r in range(0, n_rows, step):
        yield random_rows(t, min(step, n_rows - r), n_k, rng)


def write_model(path: str, shape: Shape, mix: str, seed: int = 0, chunk_mib: int = 16,
                name: str = "") -> dict:
    """Write the GGUF; returns {tensor name: ggml type name}."""
    if mix not in FILE_TYPES:
        raise ValueError(f"unknown --type {mix!r} (choose from {', '.join(FILE_TYPES)})")
    md = metadata(shape)
    cfg = ModelConfig.from_metadata(md, n_vocab=shape.n_vocab, tied_lm_head=shape.tied, source=path)
    mtp = cfg.mtp_layer
    present = {f"blk.{mtp}.nextn.eh_proj.weight", f"blk.{mtp}.nextn.shared_head_norm.weight"}
    if not shape.tied:
        present.add("output.weight")
    table = expected_tensors(cfg, present)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, cfg.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or f"vkmtp synthetic {cfg.arch}")
    writer.add_file_type(int(FILE_TYPES[mix]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in md.items():
        if key == "general.architecture":
            continue
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    tokens, types, merges = vocabulary(shape.n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen35")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)
    written = {}
    chunk = chunk_mib << 20
    for spec in table.specs():
        t = quant_type(spec.name, spec.shape, mix, cfg.n_layer, shape.tied)
        if t == GGMLType.F32:
            writer.add_tensor(spec.name, f32_values(spec.name, spec.shape, rng))
        else:
            n_rows = int(np.prod(spec.shape[:-1]))
            rows = row_chunks(t, n_rows, spec.shape[-1], chunk, np.random.default_rng(rng.integers(2**63)))
            add_streamed_tensor(writer, spec.name, spec.shape, t, rows)
        written[spec.name] = t.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the .gguf file to write")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="0.8b")
    ap.add_argument("--type", default="q4_k_m", choices=sorted(FILE_TYPES), help="quant mix (default q4_k_m)")
    ap.add_argument("--layers", type=int, default=0, help="trunk layers (default: the model's; every 4th is "
                                                         "attention, so fewer than 4 means GDN layers only)")
    ap.add_argument("--vocab", type=int, default=0, help=f"vocabulary size (default the real {REAL_VOCAB})")
    ap.add_argument("--experts", type=int, default=0,
                    help="MoE only: fewer routed experts (NOT the real model; each expert keeps its shape)")
    ap.add_argument("--small-widths", action="store_true",
                    help="the preset's layer pattern (layer kinds, MoE or dense, the MTP block) at small widths "
                         "(NOT the real model: for counting dispatches, tools/graph_counts.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-mib", type=int, default=16, help="bytes generated per write (default 16 MiB)")
    return ap.parse_args(argv)


def small_widths(s: Shape) -> Shape:
    """The same layer structure with every width small: E 256, 4/1 attention heads of 64, GDN 4/2 heads of 32,
    FFN 512 (MoE: 16 experts, 4 used, 256 wide, shared expert 256), vocabulary 512."""
    ffn = dict(n_expert=16, n_expert_used=4, n_ff_exp=256, n_ff_shexp=256) if s.moe else dict(n_ff=512)
    return replace(s, n_embd=256, n_head=4, n_head_kv=1, head_dim=64, gdn_v_heads=4, gdn_k_heads=2,
                   gdn_head_dim=32, n_vocab=512, **ffn)


def shape_from_args(args: argparse.Namespace) -> Shape:
    s = PRESETS[args.preset]
    if getattr(args, "small_widths", False):
        s = small_widths(s)
    if args.layers:
        s = replace(s, n_layer=args.layers)
    if args.vocab:
        s = replace(s, n_vocab=args.vocab)
    if args.experts:
        if not s.moe:
            raise ValueError(f"--experts: preset {args.preset} is not a MoE model")
        s = replace(s, n_expert=args.experts, n_expert_used=min(s.n_expert_used, args.experts))
    if s.n_layer < 1:
        raise ValueError("--layers must be >= 1")
    return s


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        shape = shape_from_args(args)
        written = write_model(args.out, shape, args.type, args.seed, args.chunk_mib,
                              name=f"synthetic-{args.preset}")
    except (ValueError, OSError) as exc:
        print(f"make_synthetic_model: error: {exc}", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for t in written.values():
        counts[t] = counts.get(t, 0) + 1
    size = os.path.getsize(args.out)
    print(f"{args.out}: {size / 2**30:.2f} GiB, {len(written)} tensors "
          f"({', '.join(f'{n} {t}' for t, n in sorted(counts.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
