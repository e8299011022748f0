"""Read a Hugging Face Qwen3.5 / Qwen3.6 config like llama.cpp's converter does (docs/MODEL.md, Converter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

DENSE_ARCHS = ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration")
MOE_ARCHS = ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration")
DEFAULT_MROPE_SECTION = (11, 11, 10, 0)
DEFAULT_PARTIAL_ROTARY_FACTOR = 0.25


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted; the message names the field or tensor."""


@dataclass(frozen=True)
class HFConfig:
    """The flattened text config (`text_config` merged into the top level) plus the derived GGUF arch."""

    params: Mapping[str, Any]
    arch: str  # "qwen35" or "qwen35moe"
    n_layer: int  # trunk layers (num_hidden_layers)
    n_mtp: int  # MTP layers written (0 with mtp=False)

    @property
    def block_count(self) -> int:
        return self.n_layer + self.n_mtp

    def require(self, key: str) -> Any:
        if key not in self.params:
            raise ConversionError(f"HF config lacks '{key}'")
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def rope_parameters(self) -> Mapping[str, Any]:
        """transformers 5 keeps rope_theta/partial_rotary_factor/mrope_section in `rope_parameters`; older
        configs have them at the top level or in `rope_scaling`."""
        merged = dict(self.params.get("rope_scaling") or {})
        merged.update(self.params.get("rope_parameters") or {})
        return merged

    def rope_param(self, key: str, default: Any = None) -> Any:
        return self.rope_parameters.get(key, self.params.get(key, default))

    @property
    def head_dim(self) -> int:
        head_dim = self.get("head_dim")
        return head_dim if head_dim else self.require("hidden_size") // self.require("num_attention_heads")

    @property
    def layer_types(self) -> list[str]:
        """HF's per-layer mixer names; default: full attention every `full_attention_interval` layers."""
        types = self.get("layer_types")
        if types is None:
            interval = self.get("full_attention_interval", 4)
            types = [
                "full_attention" if (i + 1) % interval == 0 else "linear_attention"
                for i in range(self.n_layer)
            ]
        if len(types) != self.n_layer:
            raise ConversionError(
                f"HF config layer_types has {len(types)} entries for " f"num_hidden_layers={self.n_layer}"
            )
        return list(types)


def read_hf_config(
    hf_config: Mapping[str, Any], mtp: bool = True, mtp_tensor_layers: int | None = None
) -> HFConfig:
    """Flatten and classify a config.json dict.

    Args:
        hf_config: the parsed config.json (ForCausalLM or ForConditionalGeneration layout).
        mtp: keep the MTP block (llama.cpp's default); False is `--no-mtp`.
        mtp_tensor_layers: number of `mtp.layers.*` found in the checkpoint, used when the config lacks
            `mtp_num_hidden_layers`.
    """
    params = dict(hf_config)
    params.update(hf_config.get("text_config") or {})
    arch_names = list(hf_config.get("architectures") or [])
    model_type = str(params.get("model_type", ""))
    if any(a in MOE_ARCHS for a in arch_names) or model_type.startswith("qwen3_5_moe"):
        arch = "qwen35moe"
    elif any(a in DENSE_ARCHS for a in arch_names) or model_type.startswith("qwen3_5"):
        arch = "qwen35"
    else:
        raise ConversionError(
            f"not a Qwen3.5/3.6 config: architectures={arch_names}, model_type={model_type!r}"
        )
    if "num_hidden_layers" not in params:
        raise ConversionError("HF config lacks 'num_hidden_layers'")
    n_mtp = 0
    if mtp:
        n_mtp = params.get("mtp_num_hidden_layers", mtp_tensor_layers)
        if n_mtp is None:
            raise ConversionError(
                "cannot tell the number of MTP layers: no 'mtp_num_hidden_layers' in the "
                "config and no mtp.layers.* tensors (convert with mtp=False)"
            )
    return HFConfig(params=params, arch=arch, n_layer=int(params["num_hidden_layers"]), n_mtp=int(n_mtp))
