"""Causal GQA flash attention over the KV cache with split-K partials, plus Qwen3.5's sigmoid output gate.

Decode / verify (q_tile 1) drives shaders/flash_attn_dec.comp: one token per workgroup, several lanes per KV
row with 16-byte loads and subgroup-shuffle sums, q in registers, V read once per workgroup, and as many splits
along the context as fill the device (decode_splits) and keep each workgroup within the device's loop budget
(budget_splits: lavapipe ends an invocation's loops after 65535 iterations in all, which silently cut decode
attention to its first ~5000 positions per workgroup before). Prefill (q_tile > 1: K/V reads shared by several
tokens) drives shaders/flash_attn.comp; on a device with a loop budget it runs as one dispatch per window of
the context (prefill_window_chunks), each resuming the running (O, M, L) the previous window left in the
partials, so a workgroup never loops past the budget whatever the prompt's positions. Both write split
partials that shaders/flash_attn_reduce.comp combines, normalizes and gates. Mirrors
vkmtp.ref.ops.flash_attn.flash_attn.

Batch invariance: a token's result depends only on its own causal length and on (n_splits, chunk,
block_size, lanes), which are fixed per FlashAttn object, never on n_tok. Use ONE object for plain decode and
speculative verify; prefill objects run other arithmetic (same results to rounding).
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
MAX_SPLITS = 64       # the reduce's workgroup
DEC_TILE = 64         # KV positions per tile of flash_attn_dec.comp (TILE)
WAVES_PER_UNIT = 2    # decode workgroups per compute unit that decode_splits aims for
# Loop iterations flash_attn_dec.comp runs per tile: the P V row loop (at most DEC_TILE rows), the tile loop and
# the chunk loop; every other loop has a constant trip count and is marked [[unroll]]. Measured on lavapipe
# (gallivm, Mesa 22.3): a workgroup ran 62144 positions (~67.5 iterations per tile) before its budget of 65535
# ended its loops. LOOP_MARGIN leaves room for a compiler that keeps a few small loops.
DEC_LOOPS_PER_TILE = DEC_TILE + 2
LOOP_MARGIN = 2


def decode_splits(compute_units: int, n_head_kv: int, n_ctx: int, chunk: int) -> int:
    """Splits along the context for one decode token: WAVES_PER_UNIT workgroups per compute unit over the
    n_head_kv KV heads, no more than the context has chunks (a split without positions is wasted), at most
    MAX_SPLITS. Depends only on the device and the cache, never on the tokens of a batch."""
    want = -(-WAVES_PER_UNIT * max(1, compute_units) // n_head_kv)
    return max(1, min(want, -(-n_ctx // chunk), MAX_SPLITS))


def budget_splits(loop_iterations: int | None, n_ctx: int, chunk: int) -> int:
    """The fewest splits that keep every decode workgroup within `loop_iterations` loop iterations (None: no
    limit, 1). Split s takes chunks s, s + n_splits, ...; each chunk costs chunk / DEC_TILE tiles."""
    if not loop_iterations:
        return 1
    tiles = loop_iterations // (LOOP_MARGIN * DEC_LOOPS_PER_TILE)
    chunks_per_split = tiles // (chunk // DEC_TILE)
    if chunks_per_split < 1:
        raise ValueError(f"decode attention chunk {chunk} exceeds the device's loop budget of {loop_iterations} "
                         f"iterations per invocation; lower the chunk")
    return -(-(-(-n_ctx // chunk)) // chunks_per_split)


# Loop iterations flash_attn.comp runs per tile of BLOCK_SIZE positions: each token's quad loop of the scores
# (head_dim / 4 iterations), the row max, row sum and P V position loops
# (at most block_size each), the token loop, the tile and chunk loops. Measured on lavapipe (gallivm, Mesa
# 22.3, tools/prefill_attn_reach.py, GQA 6 x 256): 465 iterations per tile at q_tile 4 (9027 positions per
# workgroup), 333 at q_tile 2 (12611); this count gives 454 and 324, LOOP_MARGIN covers the rest.
def prefill_loops_per_tile(q_tile: int, block_size: int, head_dim: int) -> int:
    return q_tile * (head_dim // 4) + 3 * block_size + q_tile + 2


def prefill_window_chunks(loop_iterations: int | None, chunk: int, block_size: int, q_tile: int, head_dim: int,
                          n_splits: int) -> int | None:
    """Chunks per window of prefill attention that keep every workgroup within `loop_iterations` loop
    iterations (None: no limit, no windows): each split takes at most budget / (LOOP_MARGIN * loops per tile)
    tiles per window. A multiple of n_splits, so split s takes the same chunks s, s + n_splits, ... as without
    windows, in the same order: windowed results have the bits of one pass."""
    if not loop_iterations:
        return None
    tiles = loop_iterations // (LOOP_MARGIN * prefill_loops_per_tile(q_tile, block_size, head_dim))
    chunks_per_split = tiles // (chunk // block_size)
    if chunks_per_split < 1:
        raise ValueError(f"prefill attention chunk {chunk} exceeds the device's loop budget of {loop_iterations} "
                         f"iterations per invocation; lower the chunk")
    return chunks_per_split * n_splits


def decode_lanes(device, head_dim: int) -> int:
    """Lanes per KV row of the decode kernel: up to one per 8 values of a head, at most the device's smallest
    subgroup (the lanes of a row are summed with subgroup shuffles), 1 without subgroup shuffles."""
    info = device.info
    if not info.subgroup_ops.get("shuffle"):
        return 1
    width = min(info.min_subgroup_size or info.subgroup_size, info.subgroup_size, head_dim // 8)
    return 1 << (max(1, width).bit_length() - 1)


class FlashAttn:
    """o[t, h] = softmax(q[t, h] . K[seq_t, 0..pos_t]^T * scale) V[...], times sigmoid(gate[t, h]) if given.

    Args:
        n_head: query heads H; KV head of query head h is h // (H / H_kv).
        k_layout, v_layout: cache layouts (same n_head_kv, head_dim, n_ctx; types may differ).
        n_splits: workgroups per (token, KV head) along the KV range (None: 1 when q_tile > 1, where prefill
            has workgroups enough; else `caps.attn_n_splits` when tuned, else decode_splits from the device's
            compute units and the context; for decode never fewer than budget_splits, the fewest that keep a
            workgroup within the device's loop budget, caps.loop_iterations). The scratch grows with it.
        chunk: KV positions per chunk (multiple of block_size); split s takes chunks s, s + n_splits, ...
            (None: `caps.attn_chunk` when q_tile is 1, else 2 * block_size).
        q_tile: tokens per workgroup (1 for decode/verify; 2-4 for prefill, bounded by shared memory). Prefill
            on a device with a loop budget (caps.loop_iterations) runs over windows of the context of at most
            `window_chunks` chunks each, one dispatch per window, for the cache's whole n_ctx (windows past a
            token's causal range exit at once); the partials scratch is the same.
        block_size: workgroup size (prefill: KV positions per tile; decode: at least the subgroup size).
        lanes: lanes per KV row of the decode kernel (None: decode_lanes); 1 needs no subgroup operations.
        scale: score scale (None: 1 / sqrt(head_dim)).
        caps: the kernel defaults to use (None: the device's, vkmtp.device.capabilities).
        f16_loads: prefill reads f16 caches through 16-bit storage (None: caps.attn_f16_loads); needs the
            device feature storage_buffer_16bit.
        f16_math: prefill runs its Q.K and P.V products in float16 with f32 softmax statistics and sums
            (F16_MATH; None: caps.attn_f16_math); needs the device feature shader_float16. Decode / verify
            (flash_attn_dec.comp) have no f16-math variant: they always run f32.
    """

    def __init__(self, device, n_head: int, k_layout: KvLayout, v_layout: KvLayout | None = None,
                 n_splits: int | None = None, chunk: int | None = None, q_tile: int = 1, block_size: int = 64,
                 scale: float | None = None, caps: DeviceCaps | None = None, lanes: int | None = None,
                 f16_loads: bool | None = None, f16_math: bool | None = None):
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
        self.decode = decode
        self.chunk = chunk or (caps.attn_chunk if decode else None) or 2 * block_size
        if decode:
            if self.chunk % DEC_TILE:
                raise ValueError(f"chunk {self.chunk} must be a multiple of {DEC_TILE} (the decode tile)")
            least = budget_splits(caps.loop_iterations, k_layout.n_ctx, self.chunk)
            if least > MAX_SPLITS:
                raise ValueError(f"a {k_layout.n_ctx}-position cache needs {least} decode attention splits on "
                                 f"this device (it ends a shader's loops after {caps.loop_iterations} "
                                 f"iterations), more than the reduce's {MAX_SPLITS}")
            if n_splits is None:
                # a tuned split count is kept where the budget allows it; a longer cache needs more splits
                n_splits = max(least, caps.attn_n_splits or decode_splits(caps.compute_units, k_layout.n_head_kv,
                                                                          k_layout.n_ctx, self.chunk))
            elif n_splits < least:
                raise ValueError(f"n_splits {n_splits} is too few for a {k_layout.n_ctx}-position cache: this "
                                 f"device ends a shader's loops after {caps.loop_iterations} iterations, which "
                                 f"needs at least {least} splits (chunk {self.chunk})")
        self.n_splits = n_splits or 1
        self.q_tile = q_tile
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else float(scale)
        if self.chunk % block_size:
            raise ValueError(f"chunk {self.chunk} must be a multiple of block_size {block_size}")
        if not 1 <= self.n_splits <= MAX_SPLITS:
            raise ValueError(f"n_splits {self.n_splits} must be in 1..{MAX_SPLITS} (the reduce's workgroup)")
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
        # prefill: f16 caches read as f16vec4 where the device enabled 16-bit storage (same values, same bits)
        self.f16_loads = caps.attn_f16_loads if f16_loads is None else bool(f16_loads)
        if self.f16_loads and not device.info.has_feature("storage_buffer_16bit"):
            raise ValueError("flash_attn: f16_loads needs the device feature storage_buffer_16bit (not enabled)")
        # prefill: f16 products, f32 softmax statistics, where the device enabled shaderFloat16
        self.f16_math = False if decode else caps.attn_f16_math if f16_math is None else bool(f16_math)
        if decode and f16_math:
            raise ValueError("flash_attn: f16_math is a prefill (q_tile > 1) kernel choice; decode stays f32")
        if self.f16_math and not device.info.has_feature("shader_float16"):
            raise ValueError("flash_attn: f16_math needs the device feature shader_float16 (not enabled)")
        self.spec = [self.block_size, self.head_dim, self.gqa, self.q_tile]
        self.window_chunks = None if decode else prefill_window_chunks(caps.loop_iterations, self.chunk,
                                                                        self.block_size, q_tile, self.head_dim,
                                                                        self.n_splits)
        if self.window_chunks is not None and self.window_chunks >= -(-k_layout.n_ctx // self.chunk):
            self.window_chunks = None   # the whole cache fits one window: the one-pass kernel
        if decode:
            self._init_decode(device, lanes)

    def _init_decode(self, device, lanes: int | None) -> None:
        """flash_attn_dec.comp's shape: lanes per row, workgroup of whole subgroups, shared memory."""
        d = self.head_dim
        if d % 8:
            raise ValueError(f"head_dim {d} must be a multiple of 8 for decode attention")
        self.lanes = decode_lanes(device, d) if lanes is None else lanes
        if self.lanes < 1 or self.lanes & (self.lanes - 1) or self.lanes > d // 8:
            raise ValueError(f"lanes {self.lanes} must be a power of 2 in 1..{d // 8}")
        if self.lanes > 1 and not device.info.subgroup_ops.get("shuffle"):
            raise ValueError(f"{self.lanes} lanes per KV row need subgroup shuffles, which this device lacks")
        if self.lanes > max(1, device.info.min_subgroup_size or device.info.subgroup_size):
            raise ValueError(f"{self.lanes} lanes per KV row exceed the device's subgroup size")
        # at least 4 KV rows in flight, whole subgroups (the lane groups are carved out of subgroups)
        self.dec_block = max(self.block_size, device.info.max_subgroup_size or device.info.subgroup_size,
                             4 * self.lanes)
        if self.dec_block // self.lanes > DEC_TILE:
            self.dec_block = DEC_TILE * self.lanes
        shared = (self.gqa * d + self.gqa * DEC_TILE + 3 * self.gqa) * WORD
        if shared > device.info.max_shared_memory:
            raise ValueError(f"decode attention with GQA {self.gqa} x head_dim {d} needs {shared} B of shared "
                             f"memory, the device has {device.info.max_shared_memory} B")
        self.dec_spec = [self.dec_block, d, self.gqa]

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
        bindings = [tokens.buffer, q.buffer, k.views[0].buffer, v.views[0].buffer, scratch.buffer, *extra]
        if self.decode:
            defines = {**self.defines, **k.defines, "LANES": self.lanes}
            if k.n_parts == 1 and "K_Q8_0" not in defines and "V_Q8_0" not in defines \
                    and k.word_offset % 4 == 0 and v.word_offset % 4 == 0:
                defines["VEC_LOADS"] = 1   # f16 heads of HEAD_DIM / 2 words start 16-byte aligned
            rec.dispatch(ShaderKey.make("flash_attn_dec.comp", **defines), bindings, (self.n_splits, n_kv, n_tok),
                         push=push, spec=self.dec_spec, reads=[records, q.view, *k.views, *v.views], writes=[part])
        else:
            defines = {**self.defines, **k.defines}
            if self.f16_loads and k.n_parts == 1 and not self.defines and k.word_offset % 2 == 0 \
                    and v.word_offset % 2 == 0:
                defines["F16_LOADS"] = 1   # f16 K and V: f16vec4 loads
            if self.f16_math:
                defines["F16_MATH"] = 1
            groups = (self.n_splits, n_kv, -(-n_tok // self.q_tile))
            reads = [records, q.view, *k.views, *v.views]
            if self.window_chunks is None:
                rec.dispatch(ShaderKey.make("flash_attn.comp", **defines), bindings, groups, push=push,
                             spec=self.spec, reads=reads, writes=[part])
            else:
                key = ShaderKey.make("flash_attn.comp", **defines, WINDOWS=1)
                n_chunks = -(-self.k_layout.n_ctx // self.chunk)
                for c0 in range(0, n_chunks, self.window_chunks):
                    c1 = min(c0 + self.window_chunks, n_chunks)
                    rec.dispatch(key, bindings, groups, push=[*push, c0, c1], spec=self.spec,
                                 reads=reads + ([part] if c0 else []), writes=[part])
        g = gate or out
        if gate is not None:
            gate.check("flash_attn gate", n_tok, h, d)
        push = [h, self.n_splits, d, part_o, part_ml, *g.push(), *out.push()]
        rec.dispatch(ShaderKey.make("flash_attn_reduce.comp", **({"GATE": 1} if gate is not None else {})),
                     [scratch.buffer, g.buffer, out.buffer], (h, n_tok, 1), push=push, spec=[self.block_size],
                     reads=[part] + ([gate.view] if gate is not None else []), writes=[out.view])


def shader_variants() -> list[ShaderKey]:
    dec = [ShaderKey.make("flash_attn_dec.comp", **dict(k.defines), LANES=lanes, **extra)
           for k in flag_variants("flash_attn_dec.comp", "K_Q8_0", "V_Q8_0") for lanes in (1, 8, 16, 32)
           for extra in ([{}, {"VEC_LOADS": 1}] if not k.defines else [{}])]
    prefill = [ShaderKey.make("flash_attn.comp", **dict(k.defines), **math)
               for k in flag_variants("flash_attn.comp", "K_Q8_0", "V_Q8_0") for math in ({}, {"F16_MATH": 1})]
    prefill += [ShaderKey.make("flash_attn.comp", F16_LOADS=1, **math) for math in ({}, {"F16_MATH": 1})]
    prefill += [ShaderKey.make("flash_attn.comp", **dict(k.defines), WINDOWS=1) for k in prefill]
    return prefill + dec + flag_variants("flash_attn_reduce.comp", "GATE")
