#version 450
// Decode / verify attention (one query token per workgroup) over the KV cache, split over the KV range: per
// (split, KV head, token) the un-normalized partial O and softmax state (M, L) of the GQA query heads that share
// the KV head; flash_attn_reduce.comp combines the splits. Prefill (several tokens per workgroup) is
// flash_attn.comp.
//
// Work split, per tile of TILE = 64 positions (chunks are multiples of it; split s takes chunks s, s + n_splits,
// ... in ascending order, as flash_attn.comp):
//  (1) scores: LANES lanes share one KV row; lane l reads the row's 8-value groups l, l + LANES, ... (f16: one
//      16-byte load each, neighbouring lanes read neighbouring bytes) and the LANES partial dot products are
//      summed by a butterfly of subgroup shuffles (xor 1, 2, ..., LANES / 2; a + b == b + a, so every lane holds
//      the same bits). The lane groups are carved out of subgroups (gl_SubgroupInvocationID / LANES), LANES is
//      at most the device's smallest subgroup size (ops/flash_attn.py); without subgroup shuffles LANES is 1
//      and each invocation reads whole rows.
//  (2) softmax of the tile per query head: the lanes of one group take the max and the sum of exp over the
//      tile's valid positions (lane-strided, then the same butterfly).
//  (3) V: sub-tiles of VT rows are staged in shared memory as f32 by all invocations with coalesced loads, then
//      each invocation accumulates its (query head, 4 dims) items over the staged rows in position order.
// Every row's arithmetic depends only on its own causal length and (n_splits, chunk, BLOCK_SIZE, LANES): a token
// gives the same bits alone or in a verify batch of any size. Positions at or beyond the causal length are never
// read (stale rows may hold NaN).
//
// Bindings: 0 tokens, 1 q (float), 2 k_data, 3 v_data (uint cache words), 4 part (float, written); with
//           KV_PARTS, K and V parts 1.. at bindings 5, 6, ... (common/kv_parts.glsl)
// Push constants: as flash_attn.comp (tok_off, n_tok, q_off, q_tok_stride, q_head_stride, k_off, v_off, n_ctx,
//                 n_head, n_splits, chunk, scale bits, part_o_off, part_ml_off, rows_per_part)
// Spec constants: 0 BLOCK_SIZE (workgroup size; a multiple of the subgroup size and of LANES), 1 HEAD_DIM
//                 (multiple of 8), 2 GQA
// Defines: LANES (lanes per KV row, power of 2; > 1 needs subgroup shuffles), VEC_LOADS (f16 caches read as
//          uvec4: cache offsets and head rows 16-byte aligned), K_Q8_0, V_Q8_0, KV_PARTS
// Dispatch: n_splits x n_head_kv x n_tok.
#extension GL_GOOGLE_include_directive : require
#if LANES > 1
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

layout(constant_id = 0) const uint BLOCK_SIZE = 128;
layout(constant_id = 1) const uint HEAD_DIM = 256;
layout(constant_id = 2) const uint GQA = 1;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 1) readonly buffer Q { float q_in[]; };
layout(std430, binding = 2) readonly buffer K { uint k_data[]; };
layout(std430, binding = 3) readonly buffer V { uint v_data[]; };
#if defined(VEC_LOADS) && !defined(KV_PARTS)
layout(std430, binding = 2) readonly buffer K4 { uvec4 k_vec[]; };
layout(std430, binding = 3) readonly buffer V4 { uvec4 v_vec[]; };
#endif
layout(std430, binding = 4) writeonly buffer Part { float part[]; };
layout(push_constant) uniform Push {
    uint tok_off; uint n_tok; uint q_off; uint q_tok_stride; uint q_head_stride;
    uint k_off; uint v_off; uint n_ctx; uint n_head; uint n_splits; uint chunk; uint scale_bits;
    uint part_o_off; uint part_ml_off; uint rows_per_part;
} p;

#include "tokens.glsl"
#define KV_PARTS_BINDING 5
#include "kv_parts.glsl"

const uint TILE = 64;
const uint VT = 16;                                   // V rows staged at a time
const uint QUADS = HEAD_DIM / 4;
const uint OCTS = HEAD_DIM / 8;                       // 8-value groups per head
const uint OCTS_PER_LANE = OCTS / LANES;
const uint GROUPS = BLOCK_SIZE / LANES;               // KV rows in flight
const uint ITEMS = (GQA * QUADS + BLOCK_SIZE - 1) / BLOCK_SIZE;  // (query head, quad) items per invocation
#ifdef K_Q8_0
const bool K_IS_Q8 = true;
const uint K_HEAD_WORDS = HEAD_DIM / 64 * 17;
#else
const bool K_IS_Q8 = false;
const uint K_HEAD_WORDS = HEAD_DIM / 2;
#endif
#ifdef V_Q8_0
const bool V_IS_Q8 = true;
const uint V_HEAD_WORDS = HEAD_DIM / 64 * 17;
#else
const bool V_IS_Q8 = false;
const uint V_HEAD_WORDS = HEAD_DIM / 2;
#endif

shared vec4 sh_q[GQA * QUADS];       // q * scale
shared float sh_p[GQA * TILE];       // scores, then probabilities of the tile
shared float sh_m[GQA];              // running max
shared float sh_l[GQA];              // running sum of exp
shared float sh_alpha[GQA];          // exp(M_old - M_new) of this tile
shared vec4 sh_v[VT * QUADS];        // staged V rows (f32)

uint cache_word(bool is_v, uint i) {
    return kv_read(is_v, i, (p.n_head / GQA) * (is_v ? V_HEAD_WORDS : K_HEAD_WORDS));
}

// Values 4 * quad .. 4 * quad + 3 of a Q8_0 head starting at word `base`.
vec4 load_quad_q8(bool is_v, uint base, uint quad) {
    uint blk = quad / 8;                       // 8 quads per 32-value block of 34 bytes
    uint d_byte = blk * 34;
    uint d_word = cache_word(is_v, base + d_byte / 4);
    float d = (d_byte & 2u) != 0u ? unpackHalf2x16(d_word).y : unpackHalf2x16(d_word).x;
    uint q_byte = d_byte + 2 + 4 * (quad - blk * 8);
    uint w = base + q_byte / 4;
    uint qs = (q_byte & 2u) != 0u ? (cache_word(is_v, w) >> 16) | (cache_word(is_v, w + 1) << 16)
                                  : cache_word(is_v, w);
    return vec4(bitfieldExtract(int(qs), 0, 8), bitfieldExtract(int(qs), 8, 8),
                bitfieldExtract(int(qs), 16, 8), bitfieldExtract(int(qs), 24, 8)) * d;
}

// Values 8 * oct .. 8 * oct + 7 of the head starting at word `base`, as two vec4.
void load_oct(bool is_v, bool is_q8, uint base, uint oct, out vec4 lo, out vec4 hi) {
    if (is_q8) {
        lo = load_quad_q8(is_v, base, 2 * oct);
        hi = load_quad_q8(is_v, base, 2 * oct + 1);
        return;
    }
    uint w = base + 4 * oct;
#if defined(VEC_LOADS) && !defined(KV_PARTS)
    uvec4 u = is_v ? v_vec[w / 4] : k_vec[w / 4];
#else
    uvec4 u = uvec4(cache_word(is_v, w), cache_word(is_v, w + 1), cache_word(is_v, w + 2), cache_word(is_v, w + 3));
#endif
    lo = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    hi = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}

float lanes_sum(float x) {
#if LANES > 1
    for (uint m = 1; m < LANES; m *= 2) x += subgroupShuffleXor(x, m);
#endif
    return x;
}

float lanes_max(float x) {
#if LANES > 1
    for (uint m = 1; m < LANES; m *= 2) x = max(x, subgroupShuffleXor(x, m));
#endif
    return x;
}

void main() {
    uint tid = gl_LocalInvocationID.x;
#if LANES > 1
    uint grp = gl_SubgroupID * (gl_SubgroupSize / LANES) + gl_SubgroupInvocationID / LANES;
    uint lane = gl_SubgroupInvocationID % LANES;
#else
    uint grp = tid;
    uint lane = 0;
#endif
    uint split = gl_WorkGroupID.x;
    uint kvh = gl_WorkGroupID.y;
    uint t = gl_WorkGroupID.z;
    float neg_inf = uintBitsToFloat(0xFF800000u);
    float scale = uintBitsToFloat(p.scale_bits);
    uint n_head_kv = p.n_head / GQA;
    uint k_row_words = n_head_kv * K_HEAD_WORDS;
    uint v_row_words = n_head_kv * V_HEAD_WORDS;
    uint len = tokens[p.tok_off + TOK_POS(t)] + 1;
    uint row0 = tokens[p.tok_off + TOK_SEQ(t)] * p.n_ctx;

    for (uint idx = tid; idx < GQA * QUADS; idx += BLOCK_SIZE) {
        uint g = idx / QUADS;
        uint src = p.q_off + t * p.q_tok_stride + (kvh * GQA + g) * p.q_head_stride + 4 * (idx - g * QUADS);
        sh_q[idx] = vec4(q_in[src], q_in[src + 1], q_in[src + 2], q_in[src + 3]) * scale;
    }
    if (tid < GQA) {
        sh_m[tid] = neg_inf;
        sh_l[tid] = 0.0;
    }
    vec4 acc[ITEMS];
    for (uint k = 0; k < ITEMS; ++k) acc[k] = vec4(0.0);
    barrier();

    for (uint c = split; c * p.chunk < len; c += p.n_splits) {
        uint c_end = min(c * p.chunk + p.chunk, len);
        for (uint tile = c * p.chunk; tile < c_end; tile += TILE) {
            uint nv = min(len - tile, TILE);
            // (1) scores: group grp takes rows tile + grp, tile + grp + GROUPS, ...
            for (uint j = grp; j < TILE; j += GROUPS) {
                bool valid = j < nv;
                uint base = p.k_off + (row0 + tile + j) * k_row_words + kvh * K_HEAD_WORDS;
                float dots[GQA];
                for (uint g = 0; g < GQA; ++g) dots[g] = 0.0;
                if (valid) {
                    for (uint o = 0; o < OCTS_PER_LANE; ++o) {
                        uint oct = lane + o * LANES;
                        vec4 lo, hi;
                        load_oct(false, K_IS_Q8, base, oct, lo, hi);
                        for (uint g = 0; g < GQA; ++g) {
                            dots[g] += dot(sh_q[g * QUADS + 2 * oct], lo) + dot(sh_q[g * QUADS + 2 * oct + 1], hi);
                        }
                    }
                }
                for (uint g = 0; g < GQA; ++g) {
                    float s = lanes_sum(dots[g]);
                    if (valid && lane == 0) sh_p[g * TILE + j] = s;
                }
            }
            barrier();
            // (2) softmax state per query head, by lane group g % GROUPS
            for (uint g = grp; g < GQA; g += GROUPS) {
                float mt = neg_inf;
                for (uint j = lane; j < nv; j += LANES) mt = max(mt, sh_p[g * TILE + j]);
                mt = lanes_max(mt);
                float m_old = sh_m[g];
                float m_new = max(m_old, mt);
                float ts = 0.0;
                for (uint j = lane; j < nv; j += LANES) {
                    float e = exp(sh_p[g * TILE + j] - m_new);
                    sh_p[g * TILE + j] = e;
                    ts += e;
                }
                ts = lanes_sum(ts);
                if (lane == 0) {
                    float alpha = m_new == m_old ? 1.0 : exp(m_old - m_new);  // exp(-inf) never computed
                    sh_alpha[g] = alpha;
                    sh_l[g] = sh_l[g] * alpha + ts;
                    sh_m[g] = m_new;
                }
            }
            barrier();
            // (3) O = O * alpha + P V, V staged VT rows at a time
            for (uint k = 0; k < ITEMS; ++k) {
                uint item = tid + k * BLOCK_SIZE;
                if (item < GQA * QUADS) acc[k] *= sh_alpha[item / QUADS];
            }
            for (uint v0 = 0; v0 < nv; v0 += VT) {
                uint vn = min(nv - v0, VT);
                for (uint idx = tid; idx < vn * OCTS; idx += BLOCK_SIZE) {
                    uint jj = idx / OCTS;
                    uint oct = idx - jj * OCTS;
                    uint base = p.v_off + (row0 + tile + v0 + jj) * v_row_words + kvh * V_HEAD_WORDS;
                    vec4 lo, hi;
                    load_oct(true, V_IS_Q8, base, oct, lo, hi);
                    sh_v[jj * QUADS + 2 * oct] = lo;
                    sh_v[jj * QUADS + 2 * oct + 1] = hi;
                }
                barrier();
                for (uint k = 0; k < ITEMS; ++k) {
                    uint item = tid + k * BLOCK_SIZE;
                    if (item < GQA * QUADS) {
                        uint g = item / QUADS;
                        uint quad = item - g * QUADS;
                        for (uint jj = 0; jj < vn; ++jj) acc[k] += sh_p[g * TILE + v0 + jj] * sh_v[jj * QUADS + quad];
                    }
                }
                barrier();
            }
        }
    }

    // partials of every query head, also when this split saw no position (L = 0: the reduce skips it)
    for (uint k = 0; k < ITEMS; ++k) {
        uint item = tid + k * BLOCK_SIZE;
        if (item < GQA * QUADS) {
            uint g = item / QUADS;
            uint o = p.part_o_off + ((t * p.n_head + kvh * GQA + g) * p.n_splits + split) * HEAD_DIM
                   + 4 * (item - g * QUADS);
            part[o] = acc[k].x;
            part[o + 1] = acc[k].y;
            part[o + 2] = acc[k].z;
            part[o + 3] = acc[k].w;
        }
    }
    if (tid < GQA) {
        uint ml = p.part_ml_off + ((t * p.n_head + kvh * GQA + tid) * p.n_splits + split) * 2;
        part[ml] = sh_m[tid];
        part[ml + 1] = sh_l[tid];
    }
}
