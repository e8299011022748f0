"""Causal GQA flash attention over the KV cache with split-K partials, plus Qwen3.5's sigmoid output gate.

Drives shaders/flash_attn.comp (partials per split) and shaders/flash_attn_reduce.comp (combine, normalize,
gate). Mirrors vkmtp.ref.ops.flash_attn.flash_attn.

Batch invariance: a token's result depends only on its own causal length and on (n_splits, chunk,
block_size), which are fixed per FlashAttn object, never on n_tok. Use ONE object for plain decode and
speculative verify. q_tile > 1 (prefill: K/V reads shared by several tokens) runs the same per-row
arithmetic in another pipeline; on lavapipe it gives identical bits (tested), but a driver is free to compile
the two pipelines differently, so verify batches should use the decode object.
"""

from __future__ import annotations

import math

from vkmtp.device import WORD, DeviceCaps, ShaderKey, View
from vkmtp.ops._select import check_block_size, flag_variants
from vkmtp.ops.kv_layout import KvLayout
from vkmtp.ops.kv_parts import KvOperand
from vkmtp.ops.set_rows import check_tokens
from vkmtp.ops.strided import Strided

MAX_ACC_FLOATS = 128  # output accumulators per invocation that max_q_tile allows (registers, not spills)


class FlashAttn:
    """o[t, h] = softmax(q[t, h] . K[seq_t, 0..pos_t]^T * scale) V[...], times sigmoid(gate[t, h]) if given.

    Args:
        n_head: query heads H; KV head of query head h is h // (H / H_kv).
        k_layout, v_layout: cache layouts (same n_head_kv, head_dim, n_ctx; types may differ).
        n_splits: workgroups per (token, KV head) along the KV range (None: 1 when q_tile > 1, where prefill
            has workgroups enough; else `caps.attn_n_splits`). The scratch grows with it.
        chunk: KV positions per chunk (multiple of block_size); split s takes chunks s, s + n_splits, ...
            (None: `caps.attn_chunk` when q_tile is 1, else 2 * block_size).
        q_tile: tokens per workgroup (1 for decode/verify; 2-4 for prefill, bounded by shared memory).
        block_size: workgroup size = KV positions per tile.
        scale: score scale (None: 1 / sqrt(head_dim)).
        caps: the kernel defaults to use (None: the device's, vkmtp.device.capabilities).
    """

    def __init__(self, device, n_head: int, k_layout: KvLayout, v_layout: KvLayout | None = None,
                 n_splits: int | None = None, chunk: int | None = None, q_tile: int = 1, block_size: int = 64,
                 scale: float | None = None, caps: DeviceCaps | None = None):
        v_layout = v_layout or k_layout
        if (v_layout.n_head_kv, v_layout.head_dim, v_layout.n_ctx, v_layout.n_rows) != \
                (k_layout.n_head_kv, k_layout.head_dim, k_layout.n_ctx, k_layout.n_rows):
            raise ValueError(f"K and V caches differ in shape: {k_layout} vs {v_layout}")
        if n_head % k_layout.n_head_kv:
            raise ValueError(f"n_head {n_head} is not a multiple of n_head_kv {k_layout.n_head_kv}")
        if k_layout.head_dim % 4:
            raise ValueError(f"head_dim {k_layout.head_dim} must be a multiple of 4")
        self.device = device
        self.n_head = n_head
        self.k_layout, self.v_layout = k_layout, v_layout
        self.head_dim = k_layout.head_dim
        self.gqa = n_head // k_layout.n_head_kv
        self.block_size = check_block_size(block_size, device)
        caps = caps or device.caps
        decode = q_tile == 1
        self.n_splits = n_splits or (caps.attn_n_splits if decode else 1)
        self.chunk = chunk or (caps.attn_chunk if decode else None) or 2 * block_size
        self.q_tile = q_tile
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else float(scale)
        if self.chunk % block_size:
            raise ValueError(f"chunk {self.chunk} must be a multiple of block_size {block_size}")
        if not 1 <= self.n_splits <= block_size:
            raise ValueError(f"n_splits {self.n_splits} must be in 1..{block_size} (the reduce's workgroup)")
        rows = self.gqa * q_tile
        if q_tile < 1 or rows > block_size:
            raise ValueError(f"{rows} rows per workgroup (GQA {self.gqa} x q_tile {q_tile}) exceed "
                             f"block_size {block_size}")
        shared = rows * (self.head_dim + block_size) * WORD + 2 * rows * WORD + 2 * q_tile * WORD
        if shared > device.info.max_shared_memory:
            raise ValueError(f"GQA {self.gqa} x q_tile {q_tile} x head_dim {self.head_dim} needs {shared} B "
                             f"of shared memory, the device has {device.info.max_shared_memory} B; "
                             f"lower q_tile")
        defines = {}
        if k_layout.kv_type == "q8_0":
            defines["K_Q8_0"] = 1
        if v_layout.kv_type == "q8_0":
            defines["V_Q8_0"] = 1
        self.defines = defines
        self.key = ShaderKey.make("flash_attn.comp", **defines)
        self.spec = [self.block_size, self.head_dim, self.gqa, self.q_tile]

    @staticmethod
    def max_q_tile(device, n_head: int, n_head_kv: int, head_dim: int, block_size: int = 64) -> int:
        """The largest q_tile whose workgroup fits the device's shared memory and block_size rows, with at
        most MAX_ACC_FLOATS output accumulators per invocation (GQA * q_tile * head_dim / block_size)."""
        gqa = n_head // n_head_kv
        per_token = gqa * (head_dim + block_size + 2) * WORD + 2 * WORD
        by_registers = MAX_ACC_FLOATS * block_size // (gqa * head_dim)
        return max(1, min(device.info.max_shared_memory // per_token, block_size // gqa, by_registers))

    def scratch_bytes(self, n_tok: int) -> int:
        """Bytes of the partials scratch for n_tok tokens: O [n_tok, H, n_splits, D] then (M, L) pairs."""
        return n_tok * self.n_head * self.n_splits * (self.head_dim + 2) * WORD

    def record(self, rec, tokens: View, q: Strided, k_cache: View, v_cache: View, out: Strided, n_tok: int,
               scratch: View, gate: Strided | None = None) -> None:
        """Attention of n_tok query tokens (records in `tokens`) into out [n_tok, H, D].

        q: [n_tok, H, D] (e.g. the query halves of attn_q's packed output, already normed and rotated).
        k_cache, v_cache: this layer's caches (each a View, or a list of Views: its parts, vkmtp.ops.kv_parts,
            cut at the same rows); each token's own K/V must already be written.
        gate: [n_tok, H, D] output gate (the gate halves of attn_q's output), or None for plain attention.
        """
        d, h = self.head_dim, self.n_head
        q.check("flash_attn q", n_tok, h, d)
        out.check("flash_attn out", n_tok, h, d)
        k = KvOperand.of(k_cache, self.k_layout, "flash_attn K cache")
        v = KvOperand.of(v_cache, self.v_layout, "flash_attn V cache")
        if (k.n_parts, k.rows_per_part) != (v.n_parts, v.rows_per_part):
            raise ValueError(f"flash_attn: K in {k.n_parts} parts of {k.rows_per_part} rows, V in {v.n_parts} "
                             f"of {v.rows_per_part}: both caches must be cut at the same rows")
        records = check_tokens(tokens, n_tok)
        need = self.scratch_bytes(n_tok)
        if scratch.nbytes < need:
            raise ValueError(f"flash_attn scratch of {scratch.nbytes} B, {need} B needed for {n_tok} tokens")
        part = scratch.sub(0, need)
        part_o = scratch.word_offset
        part_ml = part_o + n_tok * h * self.n_splits * d
        push = [tokens.word_offset, n_tok, *q.push(), k.word_offset, v.word_offset,
                self.k_layout.n_ctx, h, self.n_splits, self.chunk, float(self.scale), part_o, part_ml,
                k.rows_per_part]
        n_kv = self.k_layout.n_head_kv
        extra = [b for j in range(1, k.n_parts) for b in (k.views[j].buffer, v.views[j].buffer)]
        key = self.key if k.n_parts == 1 else ShaderKey.make("flash_attn.comp", **self.defines, **k.defines)
        rec.dispatch(key, [tokens.buffer, q.buffer, k.views[0].buffer, v.views[0].buffer, scratch.buffer, *extra],
                     (self.n_splits, n_kv, -(-n_tok // self.q_tile)), push=push, spec=self.spec,
                     reads=[records, q.view, *k.views, *v.views], writes=[part])
        g = gate or out
        if gate is not None:
            gate.check("flash_attn gate", n_tok, h, d)
        push = [h, self.n_splits, d, part_o, part_ml, *g.push(), *out.push()]
        rec.dispatch(ShaderKey.make("flash_attn_reduce.comp", **({"GATE": 1} if gate is not None else {})),
                     [scratch.buffer, g.buffer, out.buffer], (h, n_tok, 1), push=push, spec=[self.block_size],
                     reads=[part] + ([gate.view] if gate is not None else []), writes=[out.view])


def shader_variants() -> list[ShaderKey]:
    return (flag_variants("flash_attn.comp", "K_Q8_0", "V_Q8_0")
            + flag_variants("flash_attn_reduce.comp", "GATE"))
