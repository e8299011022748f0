"""HF Qwen3.5 tensors -> GGUF tensors: renaming and value transforms of llama.cpp's converter (docs/MODEL.md, Converter).

Works on NumPy arrays (float32 math), in HF's PyTorch layout on input and NumPy order on output (which is
the same thing: GGUF `ne` is the reversed NumPy shape).
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from vkmtp.convert.hf_config import ConversionError, HFConfig

_LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "linear_attn.in_proj_qkv.weight": "attn_qkv.weight",
    "linear_attn.in_proj_z.weight": "attn_gate.weight",
    "linear_attn.in_proj_b.weight": "ssm_beta.weight",
    "linear_attn.in_proj_a.weight": "ssm_alpha.weight",
    "linear_attn.conv1d.weight": "ssm_conv1d.weight",
    "linear_attn.A_log": "ssm_a",
    "linear_attn.dt_bias": "ssm_dt.bias",
    "linear_attn.norm.weight": "ssm_norm.weight",
    "linear_attn.out_proj.weight": "ssm_out.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.experts.gate_proj.weight": "ffn_gate_exps.weight",
    "mlp.experts.up_proj.weight": "ffn_up_exps.weight",
    "mlp.experts.down_proj.weight": "ffn_down_exps.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    "eh_proj.weight": "nextn.eh_proj.weight",
    "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight",
    "shared_head.norm.weight": "nextn.shared_head_norm.weight",
}
_GLOBAL_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_MTP_TOP = {
    "fc": "eh_proj",
    "pre_fc_norm_embedding": "enorm",
    "pre_fc_norm_hidden": "hnorm",
    "norm": "shared_head.norm",
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT_RE = re.compile(r"^mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def count_mtp_layers(names: list[str]) -> int:
    ids = {int(m.group(1)) for n in names if (m := re.match(r"^(?:model\.)?mtp\.layers\.(\d+)\.", n))}
    return max(ids) + 1 if ids else 0


def canonical_hf_name(name: str, n_layer: int, keep_mtp: bool) -> str | None:
    """Strip `language_model.`, drop vision tensors, move `mtp.*` to `model.layers.{n_layer + j}.*`.
    Returns None for tensors the converter drops."""
    name = name.replace("language_model.", "")
    if name.startswith(("model.visual.", "visual.")):
        return None
    if name.startswith("model.mtp."):
        name = name[len("model.") :]
    if not name.startswith("mtp."):
        return name
    if not keep_mtp:
        return None
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[1] == "layers" and parts[2].isdecimal():
        return f"model.layers.{n_layer + int(parts[2])}.{parts[3]}"
    if len(parts) == 3 and parts[1] in _MTP_TOP:
        return f"model.layers.{n_layer}.{_MTP_TOP[parts[1]]}.{parts[2]}"
    raise ConversionError(f"unknown MTP tensor '{name}'")


def gguf_name(hf_name: str) -> str:
    """Map a canonical HF name (after `canonical_hf_name`) to its GGUF name."""
    if hf_name in _GLOBAL_MAP:
        return _GLOBAL_MAP[hf_name]
    m = _LAYER_RE.match(hf_name)
    if m and m.group(2) in _LAYER_MAP:
        return f"blk.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    raise ConversionError(f"cannot map tensor '{hf_name}' to a GGUF name")


def reorder_v_heads(x: np.ndarray, axis: int, n_k_heads: int, n_v_per_k: int, head_dim: int) -> np.ndarray:
    """Grouped -> tiled V heads: new head j' = m * H_k + g holds old head j = g * r + m, along `axis`."""
    shape = list(x.shape)
    split = shape[:axis] + [n_k_heads, n_v_per_k, head_dim] + shape[axis + 1 :]
    return np.swapaxes(x.reshape(split), axis, axis + 1).reshape(shape)


def _reorder_linear_attn(name: str, x: np.ndarray, cfg: HFConfig) -> np.ndarray:
    h_k = cfg.require("linear_num_key_heads")
    h_v = cfg.require("linear_num_value_heads")
    if h_k == h_v:
        return x
    if h_v % h_k:
        raise ConversionError(f"linear_num_value_heads={h_v} is not a multiple of linear_num_key_heads={h_k}")
    r = h_v // h_k
    d_k = cfg.require("linear_key_head_dim")
    d_v = cfg.require("linear_value_head_dim")
    qk = 2 * h_k * d_k
    if name.endswith("in_proj_qkv.weight") or name.endswith("conv1d.weight"):
        return np.concatenate([x[:qk], reorder_v_heads(x[qk:], 0, h_k, r, d_v)])
    if name.endswith("in_proj_z.weight"):
        return reorder_v_heads(x, 0, h_k, r, d_v)
    if name.endswith(("in_proj_a.weight", "in_proj_b.weight", ".A_log", ".dt_bias")):
        return reorder_v_heads(x, 0, h_k, r, 1)
    if name.endswith("out_proj.weight"):
        return reorder_v_heads(x, 1, h_k, r, d_v)
    return x


def transform(hf_name: str, x: np.ndarray, cfg: HFConfig) -> np.ndarray:
    """Value changes of one tensor (canonical HF name): V-head reorder, conv squeeze, -exp(A_log), +1."""
    x = np.asarray(x, dtype=np.float32)
    if "conv1d" in hf_name:
        x = x.reshape(x.shape[0], x.shape[-1])  # [C, 1, K_c] -> [C, K_c]
    if "linear_attn." in hf_name:
        x = _reorder_linear_attn(hf_name, x, cfg)
    if hf_name.endswith(".A_log"):
        x = -np.exp(x)
    elif hf_name.endswith("norm.weight") and not hf_name.endswith("linear_attn.norm.weight"):
        x = x + np.float32(1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def _stack_experts(
    layers: dict[int, dict[str, dict[int, np.ndarray]]], cfg: HFConfig
) -> dict[str, np.ndarray]:
    n_expert = cfg.require("num_experts")
    out = {}
    for layer, by_proj in sorted(layers.items()):
        for proj, experts in by_proj.items():
            if sorted(experts) != list(range(n_expert)):
                raise ConversionError(
                    f"layer {layer}: {proj} has experts {sorted(experts)}, expected 0.." f"{n_expert - 1}"
                )
            out[f"model.layers.{layer}.mlp.experts.{proj}.weight"] = np.stack(
                [experts[e] for e in range(n_expert)]
            )
    return out


def convert_tensors(state_dict: Mapping[str, np.ndarray], cfg: HFConfig) -> dict[str, np.ndarray]:
    """All GGUF tensors (name -> float32 array, NumPy order) for an HF state dict.

    Accepts per-expert (`mlp.experts.{e}.gate_proj.weight`) and fused (`mlp.experts.gate_up_proj`,
    `mlp.experts.down_proj`) MoE layouts. A tied LM head (`tie_word_embeddings`) writes no output.weight.
    """
    tied = bool(cfg.get("tie_word_embeddings", False))
    canonical: dict[str, np.ndarray] = {}
    experts: dict[int, dict[str, dict[int, np.ndarray]]] = {}
    for name, value in state_dict.items():
        hf_name = canonical_hf_name(name, cfg.n_layer, keep_mtp=cfg.n_mtp > 0)
        if hf_name is None or (tied and hf_name == "lm_head.weight"):
            continue
        value = np.asarray(value, dtype=np.float32)
        m = _LAYER_RE.match(hf_name)
        rest = m.group(2) if m else ""
        if m and (em := _EXPERT_RE.match(rest)):
            experts.setdefault(int(m.group(1)), {}).setdefault(em.group(2), {})[int(em.group(1))] = value
        elif rest in ("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight"):
            if value.ndim != 3 or value.shape[1] % 2:
                raise ConversionError(
                    f"'{name}' has shape {list(value.shape)}, expected [n_expert, 2*n_ff, n_embd]"
                )
            n_ff = value.shape[1] // 2
            base = f"model.layers.{m.group(1)}.mlp.experts"
            canonical[f"{base}.gate_proj.weight"] = value[:, :n_ff]
            canonical[f"{base}.up_proj.weight"] = value[:, n_ff:]
        elif rest == "mlp.experts.down_proj":
            canonical[hf_name + ".weight"] = value
        else:
            canonical[hf_name] = value
    if experts:
        canonical.update(_stack_experts(experts, cfg))
    out = {}
    for hf_name, value in canonical.items():
        out[gguf_name(hf_name)] = transform(hf_name, value, cfg)
    return out
