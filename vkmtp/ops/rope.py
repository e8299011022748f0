"""Per-head RMSNorm + partial NEOX RoPE, to f32 or straight into the KV cache (shaders/rope.comp).

Qwen3.5 full attention: q_h <- RoPE(RMSNorm(q_h; q_norm)) in place inside attn_q's packed q+gate output, and
k_h <- RoPE(RMSNorm(k_h; k_norm)) written directly into K-cache row seq * n_ctx + pos (llama.cpp fuses the
same RMS_NORM, MUL, ROPE, SET_ROWS chain). Mirrors vkmtp.ref.ops.rope.rope.
"""

from __future__ import annotations

import math

from vkmtp.device import WORD, ShaderKey, View
from vkmtp.ops._select import check_block_size, use_subgroup
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.kv_parts import KvOperand
from vkmtp.ops.set_rows import check_tokens
from vkmtp.ops.strided import Strided


def imrope_is_neox(n_rot: int, sections: tuple[int, ...]) -> bool:
    """True when IMROPE with text positions (pos, pos, pos, 0) equals plain NEOX RoPE over n_rot dims.

    Rotary pair j (sector s = j mod sum(sections)) rotates with component t if s % 3 == 0 and
    s < 3 * sections[0], h if s % 3 == 1 and s < 3 * sections[1], w if s % 3 == 2 and s < 3 * sections[2],
    else with the 4th component, which is 0 for text. Qwen3.5's [11, 11, 10, 0] with n_rot 64 covers every
    pair with t/h/w, so every pair rotates with pos.
    """
    sec = tuple(sections) + (0,) * (3 - len(sections))
    total = sum(sections)
    for j in range(n_rot // 2):
        s = j % total if total else j
        if not s < 3 * sec[s % 3]:
            return False
    return True


class Rope:
    """Rotate dims [0, n_rot) of each head (pairs j, j + n_rot/2) by pos * freq_base^(-2j/n_rot).

    Args:
        head_dim: values per head (64, 128, 256 ...).
        n_rot: rotated dims (even, <= head_dim; 0 = no rotation). Qwen3.5: 64.
        freq_base: rope.freq_base (Qwen3.5: 1e7).
        eps: RMSNorm epsilon when a norm weight is passed to record*.
        subgroup: subgroup reduction for the norm (None: where the device reports it).
        sections: rope.dimension_sections of an IMROPE model; refused unless they reduce to NEOX for text.
    """

    def __init__(self, device, head_dim: int, n_rot: int, freq_base: float = 1e7, eps: float = 1e-6,
                 block_size: int = 64, subgroup: bool | None = None, sections: tuple[int, ...] | None = None):
        if n_rot % 2 or not 0 <= n_rot <= head_dim:
            raise ValueError(f"n_rot {n_rot} must be even and within head_dim {head_dim}")
        if sections is not None and not imrope_is_neox(n_rot, sections):
            raise ValueError(f"rope sections {tuple(sections)} leave rotary pairs on the 4th position "
                             f"component (angle 0 for text); this kernel rotates all {n_rot // 2} pairs "
                             f"with pos")
        if freq_base <= 0:
            raise ValueError(f"rope freq_base {freq_base} must be positive")
        self.device = device
        self.head_dim = head_dim
        self.n_rot = n_rot
        self.log2_base = math.log2(freq_base)
        self.eps = float(eps)
        self.block_size = check_block_size(block_size, device)
        self.subgroup = use_subgroup(device, subgroup)

    def record(self, rec, tokens: View, x: Strided, y: Strided, n_tok: int, n_head: int,
               norm_weight: View | None = None) -> None:
        """x [n_tok, n_head, head_dim] -> y (f32, same shape; y may be x: in place)."""
        y.check("rope y", n_tok, n_head, self.head_dim)
        self._dispatch(rec, tokens, x, n_tok, n_head, norm_weight, None, [y.view],
                       [y.offset, y.tok_stride, y.head_stride, 0], 0)

    def record_to_cache(self, rec, tokens: View, x: Strided, cache, layout: KvLayout, n_tok: int,
                        norm_weight: View | None = None) -> None:
        """x [n_tok, n_head_kv, head_dim] -> cache rows seq * n_ctx + pos (f16 or Q8_0). cache: a View, or a
        list of Views (the cache's parts, vkmtp.ops.kv_parts)."""
        if layout.head_dim != self.head_dim:
            raise ValueError(f"cache head_dim {layout.head_dim} != rope head_dim {self.head_dim}")
        kv = KvOperand.of(cache, layout, "rope cache")
        self._dispatch(rec, tokens, x, n_tok, layout.n_head_kv, norm_weight, layout.store_define, list(kv.views),
                       [kv.word_offset, layout.row_words, layout.head_words, layout.n_ctx], kv.rows_per_part,
                       kv.defines)

    def record_qk(self, rec, tokens: View, q: Strided, q_norm: View, k: Strided, k_norm: View, cache,
                  layout: KvLayout, n_tok: int, n_head: int, v: Strided | None = None,
                  v_cache: View | None = None, v_layout: KvLayout | None = None) -> None:
        """record(q -> q in place, q_norm) and record_to_cache(k, k_norm) in ONE dispatch, each head with the
        arithmetic of its own dispatch (the same bits). q and k: views of one buffer with one token stride.
        v, v_cache, v_layout: also store v into the V cache as SetRows does (same bytes): one buffer, the K
        cache's layout (`fuses_v` says whether a V cache qualifies)."""
        if layout.head_dim != self.head_dim:
            raise ValueError(f"cache head_dim {layout.head_dim} != rope head_dim {self.head_dim}")
        q.check("rope q", n_tok, n_head, self.head_dim)
        k.check("rope k", n_tok, layout.n_head_kv, self.head_dim)
        if q.buffer is not k.buffer or q.tok_stride != k.tok_stride:
            raise ValueError("rope q+k: q and k must share a buffer and a token stride")
        for name, w in (("q", q_norm), ("k", k_norm)):
            if w.nbytes < self.head_dim * WORD:
                raise ValueError(f"rope {name} norm weight of {w.nbytes} B is shorter than head_dim")
        kv = KvOperand.of(cache, layout, "rope cache")
        records = check_tokens(tokens, n_tok)
        defines = dict(kv.defines, NORM=1, ROPE_QK=1, Q_OUT_BINDING=3 + kv.n_parts, W_K_BINDING=4 + kv.n_parts)
        defines[layout.store_define] = 1
        if self.subgroup:
            defines["USE_SUBGROUP"] = 1
        buffers = [tokens.buffer, q.buffer, q_norm.buffer, *kv.buffers, q.buffer, k_norm.buffer]
        reads, writes = [records, q.view, k.view, q_norm, k_norm], [*kv.views, q.view]
        v_push, n_v = [layout.n_head_kv, 0, 0, 0], 0
        if v is not None:
            if not self.fuses_v(v_cache, v_layout, layout):
                raise ValueError("rope q+k+v: the V cache must be one buffer with the K cache's layout")
            v.check("rope v", n_tok, layout.n_head_kv, self.head_dim)
            if v.buffer is not q.buffer or v.tok_stride != q.tok_stride:
                raise ValueError("rope q+k+v: v must share q's buffer and token stride")
            defines.update(ROPE_QKV=1, V_OUT_BINDING=5 + kv.n_parts)
            v_push, n_v = [layout.n_head_kv, v.offset, v.head_stride, v_cache.word_offset], layout.n_head_kv
            buffers.append(v_cache.buffer)
            reads.append(v.view)
            writes.append(v_cache.sub(0, layout.nbytes))
        push = [tokens.word_offset, *q.push(), q_norm.word_offset, kv.word_offset, layout.row_words,
                layout.head_words, layout.n_ctx, self.n_rot, float(self.log2_base), self.eps, kv.rows_per_part,
                n_head, k.offset, k.head_stride, k_norm.word_offset, q.offset, q.tok_stride, q.head_stride, *v_push]
        rec.dispatch(ShaderKey.make("rope.comp", **defines), buffers, (n_head + layout.n_head_kv + n_v, n_tok, 1),
                     push=push, spec=[self.block_size, self.head_dim], reads=reads, writes=writes)

    @staticmethod
    def fuses_v(v_cache, v_layout: KvLayout | None, k_layout: KvLayout) -> bool:
        """record_qk can store V too: a V cache in one buffer (a View, not parts) with the K cache's layout."""
        return isinstance(v_cache, View) and v_layout == k_layout and v_cache.nbytes >= k_layout.nbytes

    def _dispatch(self, rec, tokens, x, n_tok, n_head, norm_weight, store_define, outs, out_push, rows_per_part,
                  kv_defines=None) -> None:
        x.check("rope x", n_tok, n_head, self.head_dim)
        records = check_tokens(tokens, n_tok)
        defines = dict(kv_defines or {})
        if store_define:
            defines[store_define] = 1
        if norm_weight is not None:
            if norm_weight.nbytes < self.head_dim * WORD:
                raise ValueError(f"rope norm weight of {norm_weight.nbytes} B is shorter than head_dim")
            defines["NORM"] = 1
            if self.subgroup:
                defines["USE_SUBGROUP"] = 1
        w = norm_weight or x.view
        push = [tokens.word_offset, *x.push(), w.word_offset, *out_push, self.n_rot, float(self.log2_base),
                self.eps, rows_per_part]
        rec.dispatch(ShaderKey.make("rope.comp", **defines),
                     [tokens.buffer, x.buffer, w.buffer, *(o.buffer for o in outs)], (n_head, n_tok, 1), push=push,
                     spec=[self.block_size, self.head_dim],
                     reads=[records, x.view] + ([norm_weight] if norm_weight is not None else []),
                     writes=outs)


def shader_variants() -> list[ShaderKey]:
    keys = []
    for store in ("", "OUT_F16", "OUT_Q8_0"):
        extra = {store: 1} if store else {}
        keys += [ShaderKey.make("rope.comp", **extra), ShaderKey.make("rope.comp", NORM=1, **extra),
                 ShaderKey.make("rope.comp", NORM=1, USE_SUBGROUP=1, **extra)]
        if store:
            for sub in ({}, {"USE_SUBGROUP": 1}):
                keys += [ShaderKey.make("rope.comp", NORM=1, ROPE_QK=1, Q_OUT_BINDING=4, W_K_BINDING=5, **sub, **extra),
                         ShaderKey.make("rope.comp", NORM=1, ROPE_QK=1, Q_OUT_BINDING=4, W_K_BINDING=5, ROPE_QKV=1,
                                        V_OUT_BINDING=6, **sub, **extra)]
    return keys
