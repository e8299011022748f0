"""GGUF metadata for a converted Qwen3.5 model: the `{arch}.*` keys of llama.cpp's converter (docs/MODEL.md, Metadata)."""

from __future__ import annotations

from typing import Any

from vkmtp.convert.hf_config import (
    DEFAULT_MROPE_SECTION,
    DEFAULT_PARTIAL_ROTARY_FACTOR,
    ConversionError,
    HFConfig,
)


def model_metadata(cfg: HFConfig) -> dict[str, Any]:
    """`{arch}.*` key -> value (Python int/float/list). Integers are written as uint32, floats as float32."""
    a = cfg.arch
    md: dict[str, Any] = {
        f"{a}.block_count": cfg.block_count,
        f"{a}.context_length": int(cfg.require("max_position_embeddings")),
        f"{a}.embedding_length": int(cfg.require("hidden_size")),
        f"{a}.attention.head_count": int(cfg.require("num_attention_heads")),
        f"{a}.attention.head_count_kv": int(
            cfg.get("num_key_value_heads", cfg.require("num_attention_heads"))
        ),
        f"{a}.rope.freq_base": float(cfg.rope_param("rope_theta", 10000.0)),
        f"{a}.attention.layer_norm_rms_epsilon": float(cfg.require("rms_norm_eps")),
        f"{a}.attention.key_length": cfg.head_dim,
        f"{a}.attention.value_length": cfg.head_dim,
    }
    if cfg.get("intermediate_size") is not None:
        md[f"{a}.feed_forward_length"] = int(cfg.get("intermediate_size"))
    if cfg.arch == "qwen35moe":
        md[f"{a}.expert_count"] = int(cfg.require("num_experts"))
        md[f"{a}.expert_used_count"] = int(cfg.require("num_experts_per_tok"))
        md[f"{a}.expert_feed_forward_length"] = int(cfg.require("moe_intermediate_size"))
        md[f"{a}.expert_shared_feed_forward_length"] = int(cfg.require("shared_expert_intermediate_size"))
    d_v = int(cfg.require("linear_value_head_dim"))
    h_v = int(cfg.require("linear_num_value_heads"))
    md.update(
        {
            f"{a}.ssm.conv_kernel": int(cfg.require("linear_conv_kernel_dim")),
            f"{a}.ssm.state_size": int(cfg.require("linear_key_head_dim")),
            f"{a}.ssm.group_count": int(cfg.require("linear_num_key_heads")),
            f"{a}.ssm.time_step_rank": h_v,
            f"{a}.ssm.inner_size": d_v * h_v,
            f"{a}.full_attention_interval": int(cfg.get("full_attention_interval", 4)),
            f"{a}.rope.dimension_count": int(
                cfg.head_dim * cfg.rope_param("partial_rotary_factor", DEFAULT_PARTIAL_ROTARY_FACTOR)
            ),
            f"{a}.rope.dimension_sections": rope_sections(cfg),
            # newer converters write the per-block mixer flags (MTP blocks are attention blocks)
            f"{a}.attention.recurrent_layers": [t == "linear_attention" for t in cfg.layer_types]
            + [False] * cfg.n_mtp,
        }
    )
    unknown = {t for t in cfg.layer_types} - {"linear_attention", "full_attention"}
    if unknown:
        raise ConversionError(f"HF config layer_types has unknown entries {sorted(unknown)}")
    if cfg.n_mtp > 0:
        md[f"{a}.nextn_predict_layers"] = cfg.n_mtp
    return md


def rope_sections(cfg: HFConfig) -> list[int]:
    """`mrope_section` padded to 4 ints; Qwen3.5's default [11, 11, 10, 0] when the config has none."""
    section = cfg.rope_param("mrope_section")
    if section is None:
        return list(DEFAULT_MROPE_SECTION)
    section = [int(s) for s in section]
    if len(section) > 4:
        raise ConversionError(f"mrope_section {section} has more than 4 entries")
    return section + [0] * (4 - len(section))
