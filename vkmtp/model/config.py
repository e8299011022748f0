"""Hyperparameters of a Qwen3.5 / Qwen3.6 GGUF (`qwen35` dense, `qwen35moe`), read as llama.cpp reads them.

Keys, defaults and the layer-type rule are llama.cpp's (docs/MODEL.md, Metadata and Layer types). Every count here is a plain
integer; tensor shapes built from them are listed in `vkmtp.model.weights`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vkmtp.gguf import GGUFError, GGUFFile

ARCHITECTURES = ("qwen35", "qwen35moe")
DEFAULT_FULL_ATTENTION_INTERVAL = 4
DEFAULT_ROPE_FREQ_BASE = 10000.0


class LayerKind(str, enum.Enum):
    """What mixes tokens in a block: a Gated DeltaNet (recurrent state) or gated full attention (KV cache)."""

    RECURRENT = "recurrent"
    ATTENTION = "attention"


@dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs to know about a model, in llama.cpp's terms.

    `n_layer` is the trunk depth; the MTP (NextN) blocks, if any, are blocks `n_layer .. n_layer_all-1`.
    """

    arch: str
    n_layer_all: int  # {arch}.block_count: trunk + MTP blocks
    n_nextn: int  # {arch}.nextn_predict_layers
    n_ctx_train: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int  # attention.key_length == value_length
    rms_eps: float
    rope_freq_base: float
    n_rot: int  # rotated dims per head (partial RoPE)
    rope_sections: tuple[int, int, int, int]
    ssm_conv_kernel: int  # K_c
    ssm_d_state: int  # d_k == d_v
    ssm_n_group: int  # H_k, GDN key heads
    ssm_dt_rank: int  # H_v, GDN value heads
    ssm_d_inner: int  # H_v * d_v
    full_attention_interval: int
    layer_kinds: tuple[LayerKind, ...]  # one per block incl. MTP blocks
    n_ff: int = 0  # dense FFN width (0 for MoE)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    tied_lm_head: bool = False  # no output.weight: the LM head is token_embd
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.source or "<config>"
        if self.n_nextn < 0 or self.n_nextn >= self.n_layer_all:
            raise GGUFError(
                where,
                f"nextn_predict_layers={self.n_nextn} must be >= 0 and < " f"block_count={self.n_layer_all}",
            )
        if len(self.layer_kinds) != self.n_layer_all:
            raise GGUFError(where, f"{len(self.layer_kinds)} layer kinds for block_count={self.n_layer_all}")
        if self.n_head % max(self.n_head_kv, 1) or self.n_head_kv <= 0:
            raise GGUFError(
                where,
                f"attention.head_count={self.n_head} is not a multiple of " f"head_count_kv={self.n_head_kv}",
            )
        if self.n_rot % 2 or not 0 < self.n_rot <= self.head_dim:
            raise GGUFError(
                where, f"rope.dimension_count={self.n_rot} must be even and in (0, {self.head_dim}]"
            )
        if self.ssm_dt_rank % self.ssm_n_group:
            raise GGUFError(
                where,
                f"ssm.time_step_rank={self.ssm_dt_rank} (V heads) is not a multiple of "
                f"ssm.group_count={self.ssm_n_group} (K heads)",
            )
        if self.ssm_d_inner != self.ssm_dt_rank * self.ssm_d_state:
            raise GGUFError(
                where,
                f"ssm.inner_size={self.ssm_d_inner} != time_step_rank*state_size="
                f"{self.ssm_dt_rank * self.ssm_d_state} (V head dim must equal K head dim)",
            )
        if self.is_moe and not (0 < self.n_expert_used <= self.n_expert):
            raise GGUFError(
                where,
                f"expert_used_count={self.n_expert_used} must be in 1..expert_count=" f"{self.n_expert}",
            )
        if not self.is_moe and self.n_ff <= 0:
            raise GGUFError(where, "dense model without feed_forward_length")

    # ---- derived values ----------------------------------------------------------------------------
    @property
    def n_layer(self) -> int:
        """Trunk depth (block_count minus the MTP blocks)."""
        return self.n_layer_all - self.n_nextn

    @property
    def is_moe(self) -> bool:
        return self.arch == "qwen35moe"

    @property
    def has_mtp(self) -> bool:
        """The metadata announces an MTP block (its tensors may still be absent; see weights.validate)."""
        return self.n_nextn > 0

    @property
    def mtp_layer(self) -> int:
        """Block index of the (single) MTP block, `blk.{n_layer}`."""
        return self.n_layer

    @property
    def n_gqa(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_head_kv

    @property
    def ssm_head_v_dim(self) -> int:
        return self.ssm_d_inner // self.ssm_dt_rank

    @property
    def ssm_key_dim(self) -> int:
        """H_k * d_k: width of the q part (and of the k part) of attn_qkv."""
        return self.ssm_n_group * self.ssm_d_state

    @property
    def ssm_conv_dim(self) -> int:
        """Channels of the causal conv: q, k (H_k * d_k each) and v (H_v * d_v)."""
        return 2 * self.ssm_key_dim + self.ssm_d_inner

    @property
    def is_recurrent(self) -> tuple[bool, ...]:
        return tuple(k is LayerKind.RECURRENT for k in self.layer_kinds)

    @property
    def trunk_kinds(self) -> tuple[LayerKind, ...]:
        return self.layer_kinds[: self.n_layer]

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """Trunk blocks with a KV cache."""
        return tuple(i for i, k in enumerate(self.trunk_kinds) if k is LayerKind.ATTENTION)

    @property
    def recurrent_layers(self) -> tuple[int, ...]:
        """Trunk blocks with conv + delta-rule state."""
        return tuple(i for i, k in enumerate(self.trunk_kinds) if k is LayerKind.RECURRENT)

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, gguf_file: GGUFFile) -> "ModelConfig":
        """Read the config from an open GGUF (metadata plus the embedding/output tensor infos)."""
        tensors = gguf_file.tensors
        n_vocab = 0
        if "token_embd.weight" in tensors:
            n_vocab = int(tensors["token_embd.weight"].ne[1])
        return cls.from_metadata(
            gguf_file.metadata,
            n_vocab=n_vocab,
            tied_lm_head="output.weight" not in tensors,
            source=gguf_file.path,
        )

    @classmethod
    def from_metadata(
        cls,
        metadata: dict[str, Any],
        n_vocab: int = 0,
        tied_lm_head: bool = False,
        source: str = "<metadata>",
    ) -> "ModelConfig":
        """Read the config from GGUF metadata; `n_vocab` 0: take it from the tokenizer/vocab_size keys."""
        reader = _MetadataReader(metadata, source)
        arch = reader.arch
        n_layer_all = reader.uint("block_count")
        n_nextn = reader.uint("nextn_predict_layers", 0)
        n_embd = reader.uint("embedding_length")
        n_head = reader.per_layer_uint("attention.head_count")
        n_head_kv = reader.per_layer_uint("attention.head_count_kv", n_head)
        head_dim = reader.uint("attention.key_length", n_embd // n_head)
        value_dim = reader.uint("attention.value_length", n_embd // n_head)
        if head_dim != value_dim:
            raise GGUFError(source, f"attention.key_length={head_dim} != value_length={value_dim}")
        interval = reader.uint("full_attention_interval", DEFAULT_FULL_ATTENTION_INTERVAL)
        if interval <= 0:
            raise GGUFError(source, f"{arch}.full_attention_interval must be > 0, found {interval}")
        n_layer = n_layer_all - n_nextn
        layer_kinds = reader.layer_kinds(n_layer_all, n_layer, interval)
        sections = reader.int_array("rope.dimension_sections")
        if len(sections) > 4 or any(s < 0 for s in sections):
            raise GGUFError(
                source,
                f"{arch}.rope.dimension_sections must be up to 4 non-negative ints, " f"found {sections}",
            )
        sections = tuple(sections) + (0,) * (4 - len(sections))
        if not n_vocab:
            n_vocab = reader.vocab_size()
        is_moe = arch == "qwen35moe"
        n_ff = reader.per_layer_uint("feed_forward_length", 0)
        n_expert = reader.uint("expert_count") if is_moe else 0
        n_expert_used = reader.uint("expert_used_count") if is_moe else 0
        n_ff_exp = n_ff_shexp = 0
        if is_moe:
            n_ff_exp = reader.uint("expert_feed_forward_length", n_ff // max(n_expert_used, 1))
            n_ff_shexp = reader.uint("expert_shared_feed_forward_length", n_ff)
            n_ff = 0
        return cls(
            arch=arch,
            n_layer_all=n_layer_all,
            n_nextn=n_nextn,
            n_ctx_train=reader.uint("context_length"),
            n_embd=n_embd,
            n_vocab=n_vocab,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rms_eps=reader.float("attention.layer_norm_rms_epsilon"),
            rope_freq_base=reader.float("rope.freq_base", DEFAULT_ROPE_FREQ_BASE),
            n_rot=reader.uint("rope.dimension_count", head_dim),
            rope_sections=sections,
            ssm_conv_kernel=reader.uint("ssm.conv_kernel"),
            ssm_d_state=reader.uint("ssm.state_size"),
            ssm_n_group=reader.uint("ssm.group_count"),
            ssm_dt_rank=reader.uint("ssm.time_step_rank"),
            ssm_d_inner=reader.uint("ssm.inner_size"),
            full_attention_interval=interval,
            layer_kinds=layer_kinds,
            n_ff=n_ff,
            n_expert=n_expert,
            n_expert_used=n_expert_used,
            n_ff_exp=n_ff_exp,
            n_ff_shexp=n_ff_shexp,
            tied_lm_head=tied_lm_head,
            source=source,
        )


_MISSING = object()


class _MetadataReader:
    """Typed access to `{arch}.*` keys with llama.cpp's defaults and errors that name the key."""

    def __init__(self, metadata: dict[str, Any], source: str):
        self.metadata = metadata
        self.source = source
        arch = metadata.get("general.architecture")
        if arch is None:
            raise GGUFError(source, "missing general.architecture")
        if arch not in ARCHITECTURES:
            raise GGUFError(
                source, f"unsupported architecture '{arch}' (supported: {', '.join(ARCHITECTURES)})"
            )
        self.arch = str(arch)

    def _get(self, key: str, default: Any) -> Any:
        full = f"{self.arch}.{key}"
        if full in self.metadata:
            return self.metadata[full]
        if default is _MISSING:
            raise GGUFError(self.source, f"missing required metadata key '{full}'")
        return default

    def _int(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GGUFError(self.source, f"{self.arch}.{key} must be a non-negative integer, found {value!r}")
        return value

    def uint(self, key: str, default: Any = _MISSING) -> int:
        return self._int(key, self._get(key, default))

    def per_layer_uint(self, key: str, default: Any = _MISSING) -> int:
        """A count that llama.cpp allows per layer; Qwen3.5 uses one value, zeros mark layers without it."""
        value = self._get(key, default)
        if isinstance(value, list):
            nonzero = {self._int(key, v) for v in value if v}
            if len(nonzero) > 1:
                raise GGUFError(
                    self.source,
                    f"{self.arch}.{key}: per-layer values {sorted(nonzero)} differ; "
                    "only one value for all layers is supported",
                )
            return nonzero.pop() if nonzero else 0
        return self._int(key, value)

    def float(self, key: str, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GGUFError(self.source, f"{self.arch}.{key} must be a number, found {value!r}")
        return float(value)

    def int_array(self, key: str) -> list[int]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise GGUFError(self.source, f"{self.arch}.{key} must be an integer array, found {value!r}")
        return list(value)

    def layer_kinds(self, n_layer_all: int, n_layer: int, interval: int) -> tuple[LayerKind, ...]:
        """Layer types (docs/MODEL.md): explicit `attention.recurrent_layers` flags win; otherwise every `interval`-th trunk block is
        full attention and all MTP blocks are attention blocks."""
        flags = self._get("attention.recurrent_layers", None)
        if flags is None:
            flags = [i < n_layer and (i + 1) % interval != 0 for i in range(n_layer_all)]
        elif not isinstance(flags, list) or len(flags) != n_layer_all:
            raise GGUFError(
                self.source,
                f"{self.arch}.attention.recurrent_layers must be an array of "
                f"block_count={n_layer_all} flags, found {flags!r}",
            )
        elif any(f not in (0, 1) for f in flags):  # True/False compare equal to 1/0
            raise GGUFError(self.source, f"{self.arch}.attention.recurrent_layers holds non-boolean values")
        kinds = tuple(LayerKind.RECURRENT if f else LayerKind.ATTENTION for f in flags)
        if any(k is LayerKind.RECURRENT for k in kinds[n_layer:]):
            raise GGUFError(
                self.source,
                f"{self.arch}.attention.recurrent_layers marks an MTP block "
                f"(index >= {n_layer}) as recurrent; MTP blocks are attention blocks",
            )
        return kinds

    def vocab_size(self) -> int:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list) and tokens:
            return len(tokens)
        value = self._get("vocab_size", None)
        if value is None:
            raise GGUFError(
                self.source,
                "cannot tell the vocabulary size: no token_embd.weight, no "
                f"tokenizer.ggml.tokens and no {self.arch}.vocab_size",
            )
        return self._int("vocab_size", value)
