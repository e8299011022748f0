"""Small random Qwen3.5 checkpoints in Hugging Face layout (config dict + NumPy state dict with `mtp.*`).

They feed `write_gguf` to make test models whose shapes exercise every code path: both layer kinds, V heads
!= K heads (the grouped -> tiled reorder), GQA, partial RoPE, odd FFN widths, MoE top-k > 1 with a shared
expert, and an MTP block. `align_for_mtp` turns a dense checkpoint into one whose MTP drafts are often
accepted. tools/make_test_model.py adds transformers' reference logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

STATE_DTYPE = np.float32


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a synthetic model (HF names in the comments)."""

    moe: bool = False
    n_vocab: int = 512  # vocab_size
    n_embd: int = 128  # hidden_size
    n_layer: int = 4  # num_hidden_layers
    full_attention_interval: int = 4
    n_head: int = 4  # num_attention_heads
    n_head_kv: int = 2  # num_key_value_heads
    head_dim: int = 64
    partial_rotary_factor: float = 0.25
    mrope_section: tuple[int, int, int] = (3, 3, 2)
    rope_theta: float = 1e7
    linear_k_heads: int = 2  # linear_num_key_heads
    linear_v_heads: int = 6  # linear_num_value_heads
    linear_head_dim: int = 32  # linear_key_head_dim == linear_value_head_dim
    conv_kernel: int = 4
    n_ff: int = 352  # intermediate_size (dense)
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 64  # moe_intermediate_size
    n_ff_shexp: int = 96  # shared_expert_intermediate_size
    tied: bool = False
    mtp_layers: int = 1
    rms_eps: float = 1e-6
    max_position_embeddings: int = 4096


DENSE = TinySpec()
MOE = TinySpec(moe=True, tied=True)
# every matrix row a whole number of 256-value blocks, so K-quant and IQ4_XS files quantize everything
K256_DENSE = TinySpec(n_embd=256, linear_v_heads=4, linear_head_dim=64, n_ff=768)
K256_MOE = TinySpec(
    moe=True, tied=True, n_embd=256, linear_v_heads=4, linear_head_dim=64, n_ff_exp=256, n_ff_shexp=256
)


def hf_config(
    spec: TinySpec, eos_token_id: int | None = None, pad_token_id: int | None = None
) -> dict[str, Any]:
    """config.json of a Qwen3_5ForCausalLM / Qwen3_5MoeForCausalLM with these sizes."""
    cfg: dict[str, Any] = {
        "architectures": ["Qwen3_5MoeForCausalLM" if spec.moe else "Qwen3_5ForCausalLM"],
        "model_type": "qwen3_5_moe_text" if spec.moe else "qwen3_5_text",
        "vocab_size": spec.n_vocab,
        "hidden_size": spec.n_embd,
        "num_hidden_layers": spec.n_layer,
        "num_attention_heads": spec.n_head,
        "num_key_value_heads": spec.n_head_kv,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": spec.rms_eps,
        "tie_word_embeddings": spec.tied,
        "attention_bias": False,
        "linear_conv_kernel_dim": spec.conv_kernel,
        "linear_key_head_dim": spec.linear_head_dim,
        "linear_value_head_dim": spec.linear_head_dim,
        "linear_num_key_heads": spec.linear_k_heads,
        "linear_num_value_heads": spec.linear_v_heads,
        "layer_types": [
            "full_attention" if (i + 1) % spec.full_attention_interval == 0 else "linear_attention"
            for i in range(spec.n_layer)
        ],
        "full_attention_interval": spec.full_attention_interval,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "partial_rotary_factor": spec.partial_rotary_factor,
            "mrope_section": list(spec.mrope_section),
            "mrope_interleaved": True,
        },
        "mtp_num_hidden_layers": spec.mtp_layers,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }
    if spec.moe:
        cfg.update(
            {
                "num_experts": spec.n_expert,
                "num_experts_per_tok": spec.n_expert_used,
                "moe_intermediate_size": spec.n_ff_exp,
                "shared_expert_intermediate_size": spec.n_ff_shexp,
            }
        )
    else:
        cfg["intermediate_size"] = spec.n_ff
    return cfg


class _Init:
    """Draws tensors with fixed recipes: matrices N(0, 1/fan_in), zero-centred norm offsets 0.1 N(0,1)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def matrix(self, *shape: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(STATE_DTYPE)

    def norm_offset(self, n: int) -> np.ndarray:
        return (0.1 * self.rng.standard_normal(n)).astype(STATE_DTYPE)

    def normal(self, *shape: int, scale: float = 1.0, mean: float = 0.0) -> np.ndarray:
        return (mean + scale * self.rng.standard_normal(shape)).astype(STATE_DTYPE)


def _attention(init: _Init, spec: TinySpec, prefix: str) -> dict[str, np.ndarray]:
    e, h, h_kv, d = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim
    return {
        f"{prefix}self_attn.q_proj.weight": init.matrix(2 * h * d, e),
        f"{prefix}self_attn.k_proj.weight": init.matrix(h_kv * d, e),
        f"{prefix}self_attn.v_proj.weight": init.matrix(h_kv * d, e),
        f"{prefix}self_attn.o_proj.weight": init.matrix(e, h * d),
        f"{prefix}self_attn.q_norm.weight": init.norm_offset(d),
        f"{prefix}self_attn.k_norm.weight": init.norm_offset(d),
    }


def _linear_attention(init: _Init, spec: TinySpec, prefix: str) -> dict[str, np.ndarray]:
    e, h_k, h_v, d = spec.n_embd, spec.linear_k_heads, spec.linear_v_heads, spec.linear_head_dim
    conv_dim = 2 * h_k * d + h_v * d
    p = f"{prefix}linear_attn."
    return {
        p + "in_proj_qkv.weight": init.matrix(conv_dim, e),
        p + "in_proj_z.weight": init.matrix(h_v * d, e),
        p + "in_proj_b.weight": init.matrix(h_v, e),
        p + "in_proj_a.weight": init.matrix(h_v, e),
        p + "conv1d.weight": init.normal(conv_dim, 1, spec.conv_kernel, scale=0.3),
        p + "A_log": np.log(init.rng.uniform(1.0, 16.0, h_v)).astype(STATE_DTYPE),
        p + "dt_bias": init.normal(h_v, scale=0.1, mean=1.0),
        p + "norm.weight": init.normal(d, scale=0.1, mean=1.0),  # plain scale, not zero-centred
        p + "out_proj.weight": init.matrix(e, h_v * d),
    }


def _ffn(init: _Init, spec: TinySpec, prefix: str) -> dict[str, np.ndarray]:
    e = spec.n_embd
    p = f"{prefix}mlp."
    if not spec.moe:
        return {
            p + "gate_proj.weight": init.matrix(spec.n_ff, e),
            p + "up_proj.weight": init.matrix(spec.n_ff, e),
            p + "down_proj.weight": init.matrix(e, spec.n_ff),
        }
    out = {p + "gate.weight": init.matrix(spec.n_expert, e)}
    for x in range(spec.n_expert):  # per-expert layout, as save_pretrained writes it
        out[f"{p}experts.{x}.gate_proj.weight"] = init.matrix(spec.n_ff_exp, e)
        out[f"{p}experts.{x}.up_proj.weight"] = init.matrix(spec.n_ff_exp, e)
        out[f"{p}experts.{x}.down_proj.weight"] = init.matrix(e, spec.n_ff_exp)
    out.update(
        {
            p + "shared_expert.gate_proj.weight": init.matrix(spec.n_ff_shexp, e),
            p + "shared_expert.up_proj.weight": init.matrix(spec.n_ff_shexp, e),
            p + "shared_expert.down_proj.weight": init.matrix(e, spec.n_ff_shexp),
            p + "shared_expert_gate.weight": init.matrix(1, e),
        }
    )
    return out


def random_state_dict(spec: TinySpec, seed: int) -> dict[str, np.ndarray]:
    """All tensors of a random checkpoint, HF names and layouts, float32, including the MTP head."""
    init = _Init(seed)
    e = spec.n_embd
    # a tied table doubles as the LM head: keep it small so logits stay O(1), like real tied models
    embed_scale = 0.25 if spec.tied else 1.0
    sd: dict[str, np.ndarray] = {"model.embed_tokens.weight": init.normal(spec.n_vocab, e, scale=embed_scale)}
    for i in range(spec.n_layer):
        prefix = f"model.layers.{i}."
        full = (i + 1) % spec.full_attention_interval == 0
        sd.update(_attention(init, spec, prefix) if full else _linear_attention(init, spec, prefix))
        sd.update(_ffn(init, spec, prefix))
        sd[prefix + "input_layernorm.weight"] = init.norm_offset(e)
        sd[prefix + "post_attention_layernorm.weight"] = init.norm_offset(e)
    sd["model.norm.weight"] = init.norm_offset(e)
    if not spec.tied:
        sd["lm_head.weight"] = init.matrix(spec.n_vocab, e)
    for j in range(spec.mtp_layers):
        prefix = f"mtp.layers.{j}."
        sd.update(_attention(init, spec, prefix))
        sd.update(_ffn(init, spec, prefix))
        sd[prefix + "input_layernorm.weight"] = init.norm_offset(e)
        sd[prefix + "post_attention_layernorm.weight"] = init.norm_offset(e)
    if spec.mtp_layers:
        sd["mtp.fc.weight"] = init.matrix(e, 2 * e)
        sd["mtp.pre_fc_norm_embedding.weight"] = init.norm_offset(e)
        sd["mtp.pre_fc_norm_hidden.weight"] = init.norm_offset(e)
        sd["mtp.norm.weight"] = init.norm_offset(e)
    return sd


def align_for_mtp(
    state: dict[str, np.ndarray],
    spec: TinySpec,
    seed: int,
    head_scale: float = 1.0,
    hidden_mix: float = 0.1,
    block_scale: float = 1.75,
) -> dict[str, np.ndarray]:
    """A copy of a dense, untied checkpoint whose trunk and MTP head both tend to follow a random successor
    map t -> pi(t), so MTP drafts are often, not always, accepted (about 60 % on the fixture).

    The LM head row pi(t) points along token t's embedding; the MTP fusion `fc` passes the embedding half
    through (identity) plus `hidden_mix` of the hidden half; the trunk's residual-branch outputs are scaled
    by `block_scale`, which sets how often the trunk leaves the map (1.5: ~85 % accepted, 2.5: ~30 %).
    """
    if spec.moe or spec.tied:
        raise ValueError("align_for_mtp expects a dense checkpoint with an untied LM head")
    rng = np.random.default_rng(seed)
    out = dict(state)
    e = spec.n_embd
    embed = state["model.embed_tokens.weight"]
    unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
    successor = rng.permutation(spec.n_vocab)
    head = np.zeros_like(state["lm_head.weight"])
    head[successor] = head_scale * np.sqrt(e) * unit
    out["lm_head.weight"] = head.astype(STATE_DTYPE)
    for name in state:  # residual-branch outputs: how far the blocks pull the stream off the embedding
        if name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight")) and name.startswith(
            "model."
        ):
            out[name] = (block_scale * state[name]).astype(STATE_DTYPE)
    fc = np.concatenate([np.eye(e), hidden_mix * rng.standard_normal((e, e)) / np.sqrt(e)], axis=1)
    out["mtp.fc.weight"] = fc.astype(STATE_DTYPE)
    out["mtp.pre_fc_norm_embedding.weight"] = np.zeros(e, STATE_DTYPE)
    out["mtp.norm.weight"] = state["model.norm.weight"].copy()
    return out


def quantization_exact(state: dict[str, np.ndarray], block: int = 32) -> dict[str, np.ndarray]:
    """Round every matrix whose rows are whole Q8_0 blocks to Q8_0-representable values (so a committed
    fixture can store it as Q8_0 without loss); vectors stay as they are."""
    from gguf import GGMLQuantizationType, quants

    out = {}
    for name, value in state.items():
        if value.ndim >= 2 and value.shape[-1] % block == 0:
            packed = quants.quantize(value.astype(np.float32), GGMLQuantizationType.Q8_0)
            out[name] = quants.dequantize(packed, GGMLQuantizationType.Q8_0).astype(STATE_DTYPE)
        else:
            out[name] = value
    return out


def save_state(path: str, state: dict[str, np.ndarray]) -> None:
    """Store a (quantization_exact) state dict compactly: matrices as Q8_0 blocks, the rest as float32.

    Lossless for the output of `quantization_exact`; `load_state` restores float32 arrays.
    """
    from gguf import GGMLQuantizationType, quants

    arrays: dict[str, np.ndarray] = {}
    for i, (name, value) in enumerate(state.items()):
        if value.ndim >= 2 and value.shape[-1] % 32 == 0:
            arrays[f"q8_0/{i}"] = quants.quantize(value.astype(np.float32), GGMLQuantizationType.Q8_0)
        else:
            arrays[f"f32/{i}"] = value.astype(np.float32)
        arrays[f"shape/{i}"] = np.asarray(value.shape, dtype=np.int64)
    arrays["names"] = np.asarray(list(state), dtype=np.str_)
    np.savez(path, **arrays)


def load_state(path: str) -> dict[str, np.ndarray]:
    """Inverse of `save_state`."""
    from gguf import GGMLQuantizationType, quants

    with np.load(path) as data:
        names = [str(n) for n in data["names"]]
        out = {}
        for i, name in enumerate(names):
            shape = tuple(int(s) for s in data[f"shape/{i}"])
            if f"q8_0/{i}" in data:
                value = quants.dequantize(data[f"q8_0/{i}"], GGMLQuantizationType.Q8_0)
            else:
                value = data[f"f32/{i}"]
            out[name] = np.asarray(value, dtype=STATE_DTYPE).reshape(shape)
    return out
