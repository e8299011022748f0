"""The tensors a Qwen3.5 GGUF must hold: names and NumPy-order shapes per block kind, and a validator.

One table serves the NumPy reference and the GPU engine's weight placement. Each leaf is a `TensorSpec`; the
per-block dataclasses group them by role (docs/MODEL.md, Tensors). Shapes are NumPy order (outermost first): a GGUF
matrix with ggml `ne = {in, out}` is `(out, in)` here, exactly `nn.Linear.weight`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Union

from vkmtp.gguf import GGUFError, GGUFFile, TensorInfo
from vkmtp.model.config import LayerKind, ModelConfig


@dataclass(frozen=True)
class TensorSpec:
    """One expected tensor. `alt_shapes` lists other layouts llama.cpp accepts for the same data."""

    name: str
    shape: tuple[int, ...]
    alt_shapes: tuple[tuple[int, ...], ...] = ()

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return tuple(shape) == self.shape or tuple(shape) in self.alt_shapes


@dataclass(frozen=True)
class AttentionTensors:
    """Gated full attention; `q` packs query and output gate per head: rows [h*2D, h*2D+D) = q_h."""

    q: TensorSpec  # [2*n_head*head_dim, n_embd]
    k: TensorSpec  # [n_head_kv*head_dim, n_embd]
    v: TensorSpec  # [n_head_kv*head_dim, n_embd]
    q_norm: TensorSpec  # [head_dim]
    k_norm: TensorSpec  # [head_dim]
    output: TensorSpec  # [n_embd, n_head*head_dim]


@dataclass(frozen=True)
class DeltaNetTensors:
    """Gated DeltaNet; V-head-indexed tensors are in tiled order (value head h uses K head h % H_k)."""

    qkv: TensorSpec  # [conv_dim, n_embd]  rows: q (H_k*d_k) | k (H_k*d_k) | v (H_v*d_v)
    gate: TensorSpec  # [H_v*d_v, n_embd]   z of the gated norm
    conv1d: TensorSpec  # [conv_dim, K_c]
    dt_bias: TensorSpec  # [H_v]
    a: TensorSpec  # [H_v]  already -exp(A_log)
    beta: TensorSpec  # [H_v, n_embd]
    alpha: TensorSpec  # [H_v, n_embd]
    norm: TensorSpec  # [d_v]  plain weight (no +1 baked in)
    out: TensorSpec  # [n_embd, H_v*d_v]


@dataclass(frozen=True)
class DenseFfnTensors:
    gate: TensorSpec  # [n_ff, n_embd]
    up: TensorSpec  # [n_ff, n_embd]
    down: TensorSpec  # [n_embd, n_ff]


@dataclass(frozen=True)
class MoeFfnTensors:
    """Routed experts stacked on the outer axis plus one sigmoid-gated shared expert."""

    gate_inp: TensorSpec  # [n_expert, n_embd]            router
    gate_exps: TensorSpec  # [n_expert, n_ff_exp, n_embd]
    up_exps: TensorSpec  # [n_expert, n_ff_exp, n_embd]
    down_exps: TensorSpec  # [n_expert, n_embd, n_ff_exp]
    gate_inp_shexp: TensorSpec  # [n_embd] or [1, n_embd]    shared-expert gate
    gate_shexp: TensorSpec  # [n_ff_shexp, n_embd]
    up_shexp: TensorSpec  # [n_ff_shexp, n_embd]
    down_shexp: TensorSpec  # [n_embd, n_ff_shexp]


Mixer = Union[AttentionTensors, DeltaNetTensors]
Ffn = Union[DenseFfnTensors, MoeFfnTensors]


@dataclass(frozen=True)
class BlockTensors:
    """One decoder block: norm -> mixer -> residual -> norm -> FFN -> residual."""

    index: int
    kind: LayerKind
    attn_norm: TensorSpec  # [n_embd]
    mixer: Mixer
    ffn_norm: TensorSpec  # [n_embd]  GGUF post_attention_norm (the pre-FFN norm)
    ffn: Ffn


@dataclass(frozen=True)
class MtpTensors:
    """The NextN head at blk.{n_layer} (docs/MODEL.md, MTP head). Optional tensors are resolved to their fallbacks, so every
    field names a tensor that exists in the file."""

    block: BlockTensors
    eh_proj: TensorSpec  # [n_embd, 2*n_embd]  input [enorm(emb); hnorm(h)]
    enorm: TensorSpec  # [n_embd]
    hnorm: TensorSpec  # [n_embd]
    shared_head_norm: TensorSpec  # [n_embd]  falls back to output_norm
    embed_tokens: TensorSpec  # [n_vocab, n_embd]  falls back to token_embd
    head: TensorSpec  # [n_vocab, n_embd]  falls back to output (or token_embd when tied)


@dataclass(frozen=True)
class ModelTensors:
    token_embd: TensorSpec  # [n_vocab, n_embd]
    output_norm: TensorSpec  # [n_embd]
    output: TensorSpec  # [n_vocab, n_embd]; is token_embd when the head is tied
    blocks: tuple[BlockTensors, ...]  # trunk blocks 0 .. n_layer-1
    mtp: MtpTensors | None  # None when the file has no MTP block

    def specs(self) -> Iterator[TensorSpec]:
        """Every distinct tensor the model reads (fallback aliases appear once)."""
        seen: set[str] = set()
        for spec in walk_specs(self):
            if spec.name not in seen:
                seen.add(spec.name)
                yield spec


def walk_specs(obj) -> Iterator[TensorSpec]:
    """Every TensorSpec inside a table or any part of it (blocks, MTP tensors), in field order."""
    if isinstance(obj, TensorSpec):
        yield obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from walk_specs(getattr(obj, f.name))
    elif isinstance(obj, tuple):
        for item in obj:
            yield from walk_specs(item)


# ---- the table ------------------------------------------------------------------------------------


def attention_tensors(cfg: ModelConfig, i: int) -> AttentionTensors:
    e, d = cfg.n_embd, cfg.head_dim
    return AttentionTensors(
        q=TensorSpec(f"blk.{i}.attn_q.weight", (2 * cfg.n_head * d, e)),
        k=TensorSpec(f"blk.{i}.attn_k.weight", (cfg.n_head_kv * d, e)),
        v=TensorSpec(f"blk.{i}.attn_v.weight", (cfg.n_head_kv * d, e)),
        q_norm=TensorSpec(f"blk.{i}.attn_q_norm.weight", (d,)),
        k_norm=TensorSpec(f"blk.{i}.attn_k_norm.weight", (d,)),
        output=TensorSpec(f"blk.{i}.attn_output.weight", (e, cfg.n_head * d)),
    )


def delta_net_tensors(cfg: ModelConfig, i: int) -> DeltaNetTensors:
    e, hv = cfg.n_embd, cfg.ssm_dt_rank
    return DeltaNetTensors(
        qkv=TensorSpec(f"blk.{i}.attn_qkv.weight", (cfg.ssm_conv_dim, e)),
        gate=TensorSpec(f"blk.{i}.attn_gate.weight", (cfg.ssm_d_inner, e)),
        conv1d=TensorSpec(f"blk.{i}.ssm_conv1d.weight", (cfg.ssm_conv_dim, cfg.ssm_conv_kernel)),
        dt_bias=TensorSpec(f"blk.{i}.ssm_dt.bias", (hv,)),
        a=TensorSpec(f"blk.{i}.ssm_a", (hv,)),
        beta=TensorSpec(f"blk.{i}.ssm_beta.weight", (hv, e)),
        alpha=TensorSpec(f"blk.{i}.ssm_alpha.weight", (hv, e)),
        norm=TensorSpec(f"blk.{i}.ssm_norm.weight", (cfg.ssm_head_v_dim,)),
        out=TensorSpec(f"blk.{i}.ssm_out.weight", (e, cfg.ssm_d_inner)),
    )


def ffn_tensors(cfg: ModelConfig, i: int) -> Ffn:
    e = cfg.n_embd
    if not cfg.is_moe:
        return DenseFfnTensors(
            gate=TensorSpec(f"blk.{i}.ffn_gate.weight", (cfg.n_ff, e)),
            up=TensorSpec(f"blk.{i}.ffn_up.weight", (cfg.n_ff, e)),
            down=TensorSpec(f"blk.{i}.ffn_down.weight", (e, cfg.n_ff)),
        )
    ne, fe, fs = cfg.n_expert, cfg.n_ff_exp, cfg.n_ff_shexp
    return MoeFfnTensors(
        gate_inp=TensorSpec(f"blk.{i}.ffn_gate_inp.weight", (ne, e)),
        gate_exps=TensorSpec(f"blk.{i}.ffn_gate_exps.weight", (ne, fe, e)),
        up_exps=TensorSpec(f"blk.{i}.ffn_up_exps.weight", (ne, fe, e)),
        down_exps=TensorSpec(f"blk.{i}.ffn_down_exps.weight", (ne, e, fe)),
        # the converter writes HF's [1, E]; llama-quantize drops the unit axis
        gate_inp_shexp=TensorSpec(f"blk.{i}.ffn_gate_inp_shexp.weight", (e,), alt_shapes=((1, e),)),
        gate_shexp=TensorSpec(f"blk.{i}.ffn_gate_shexp.weight", (fs, e)),
        up_shexp=TensorSpec(f"blk.{i}.ffn_up_shexp.weight", (fs, e)),
        down_shexp=TensorSpec(f"blk.{i}.ffn_down_shexp.weight", (e, fs)),
    )


def block_tensors(cfg: ModelConfig, i: int) -> BlockTensors:
    kind = cfg.layer_kinds[i]
    mixer = delta_net_tensors(cfg, i) if kind is LayerKind.RECURRENT else attention_tensors(cfg, i)
    return BlockTensors(
        index=i,
        kind=kind,
        attn_norm=TensorSpec(f"blk.{i}.attn_norm.weight", (cfg.n_embd,)),
        mixer=mixer,
        ffn_norm=TensorSpec(f"blk.{i}.post_attention_norm.weight", (cfg.n_embd,)),
        ffn=ffn_tensors(cfg, i),
    )


def expected_tensors(cfg: ModelConfig, present: set[str] | None = None) -> ModelTensors:
    """The table for `cfg`. With `present` (names in the file) optional tensors resolve to what exists:
    `output` -> `token_embd` when absent (tied), NextN fallbacks, and no MTP block when none of its tensors
    are there. Without `present`, every optional tensor is assumed absent except the MTP block."""
    e, v = cfg.n_embd, cfg.n_vocab
    has = (lambda name: name in present) if present is not None else (lambda name: False)
    token_embd = TensorSpec("token_embd.weight", (v, e))
    output_norm = TensorSpec("output_norm.weight", (e,))
    output = TensorSpec("output.weight", (v, e)) if has("output.weight") else token_embd
    blocks = tuple(block_tensors(cfg, i) for i in range(cfg.n_layer))
    mtp = None
    if cfg.has_mtp:
        n = cfg.mtp_layer
        prefix = f"blk.{n}."
        if present is None or any(name.startswith(prefix) for name in present):
            nextn = f"blk.{n}.nextn."
            mtp = MtpTensors(
                block=block_tensors(cfg, n),
                eh_proj=TensorSpec(nextn + "eh_proj.weight", (e, 2 * e)),
                enorm=TensorSpec(nextn + "enorm.weight", (e,)),
                hnorm=TensorSpec(nextn + "hnorm.weight", (e,)),
                shared_head_norm=(
                    TensorSpec(nextn + "shared_head_norm.weight", (e,))
                    if has(nextn + "shared_head_norm.weight")
                    else output_norm
                ),
                embed_tokens=(
                    TensorSpec(nextn + "embed_tokens.weight", (v, e))
                    if has(nextn + "embed_tokens.weight")
                    else token_embd
                ),
                head=(
                    TensorSpec(nextn + "shared_head_head.weight", (v, e))
                    if has(nextn + "shared_head_head.weight")
                    else output
                ),
            )
    return ModelTensors(token_embd=token_embd, output_norm=output_norm, output=output, blocks=blocks, mtp=mtp)


def projection_groups(table: ModelTensors) -> list[tuple[str, ...]]:
    """Per block, the matrices that read the same normed input, in the order a fused output lays out their rows:
    attention q | k | v; GDN qkv | gate (z) | beta | alpha; dense FFN (or MoE shared expert) gate | up; MoE
    router | shared-expert gate (one row)."""
    blocks = list(table.blocks) + ([table.mtp.block] if table.mtp is not None else [])
    out = []
    for blk in blocks:
        m, f = blk.mixer, blk.ffn
        if isinstance(m, AttentionTensors):
            out.append((m.q.name, m.k.name, m.v.name))
        else:
            out.append((m.qkv.name, m.gate.name, m.beta.name, m.alpha.name))
        if isinstance(f, DenseFfnTensors):
            out.append((f.gate.name, f.up.name))
        else:
            out.append((f.gate_shexp.name, f.up_shexp.name))
            out.append((f.gate_inp.name, f.gate_inp_shexp.name))
    return out


def fused_groups(table: ModelTensors, types: dict[str, int], names: set[str] | None = None) -> list[tuple[str, ...]]:
    """The runs of `projection_groups` that can be one matrix: consecutive members of one quant type (the rows of a
    quantized matrix are independent, so concatenating them changes no result bit), all in `names` when given.
    Members of another type stay separate tensors (e.g. a Q6_K attn_v next to Q4_K q and k gives q+k and v)."""
    out = []
    for group in projection_groups(table):
        run: list[str] = []
        for name in (*group, None):
            if name is not None and (names is None or name in names) and run \
                    and types[name] == types[run[-1]]:
                run.append(name)
                continue
            if len(run) > 1:
                out.append(tuple(run))
            run = [name] if name is not None and (names is None or name in names) else []
    return out


def validate(gguf_file: GGUFFile, cfg: ModelConfig) -> ModelTensors:
    """Check that `gguf_file` holds exactly the tensors `cfg` needs, with matching shapes.

    Returns the resolved table. Raises GGUFError naming the first missing tensor, every wrong shape
    (expected vs found, NumPy order) and any tensor the model would not use.
    """
    found: dict[str, TensorInfo] = gguf_file.tensors
    table = expected_tensors(cfg, set(found))
    problems = []
    for spec in table.specs():
        info = found.get(spec.name)
        if info is None:
            problems.append(f"missing tensor '{spec.name}' (expected shape {list(spec.shape)})")
        elif not spec.accepts(info.shape):
            wanted = " or ".join(str(list(s)) for s in (spec.shape, *spec.alt_shapes))
            problems.append(
                f"tensor '{spec.name}' has shape {list(info.shape)}, expected {wanted} " "(NumPy order)"
            )
    used = {spec.name for spec in table.specs()}
    extra = sorted(set(found) - used)
    if extra:
        shown = ", ".join(extra[:8]) + (f" and {len(extra) - 8} more" if len(extra) > 8 else "")
        problems.append(
            f"{len(extra)} unexpected tensor(s) for {cfg.arch} with {cfg.n_layer} trunk + "
            f"{cfg.n_nextn} MTP blocks: {shown}"
        )
    if problems:
        raise GGUFError(gguf_file.path, "; ".join(problems))
    return table
