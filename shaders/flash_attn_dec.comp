#version 450
// Decode / verify attention (one query token per workgroup) over the KV cache, split over the KV range: per
// (split, KV head, token) the un-normalized partial O and softmax state (M, L) of the GQA query heads that share
// the KV head; flash_attn_reduce.comp combines the splits. Prefill (several tokens per workgroup) is
// flash_attn.comp.
//
// Work split, per tile of TILE = 64 positions (chunks are multiples of it; split s takes chunks s, s + n_splits,
// ... in ascending order, as flash_attn.comp):
//  (1) scores: LANES lanes share one KV row; lane l reads the row's 8-value groups l, l + LANES, ... (f16: one
//      16-byte load each, neighbouring lanes read neighbouring bytes) against its own q values (held in
//      registers), and the LANES partial dot products are summed by a butterfly of subgroup shuffles (xor 1,
//      2, ..., LANES / 2; a + b == b + a, so every lane holds the same bits). The lane groups are carved out of
//      subgroups (gl_SubgroupInvocationID / LANES), LANES is at most the device's smallest subgroup size
//      (ops/flash_attn.py); without subgroup shuffles LANES is 1 and each invocation reads whole rows.
//  (2) softmax of the tile per query head: the lanes of one group take the max and the sum of exp over the
//      tile's valid positions (lane-strided, then the same butterfly).
//  (3) O = O * alpha + P V: each invocation reads, row by row, the V values of its (query head, 4 dims) items
//      straight from the cache. Where BLOCK_SIZE divides HEAD_DIM / 4 (head_dim 256) every V value is read by
//      exactly one invocation (neighbouring invocations read neighbouring 8 bytes) and serves all GQA heads,
//      and the P values read are the same for the whole workgroup: no staging in shared memory is needed.
// Every row's arithmetic depends only on its own causal length and (n_splits, chunk, BLOCK_SIZE, LANES): a token
// gives the same bits alone or in a verify batch of any size. Positions at or beyond the causal length are never
// read (stale rows may hold NaN).
// Loop iterations: a CPU driver may end an invocation's loops after a fixed number of iterations in all
// (lavapipe: 65535); ops/flash_attn.py `dec_loop_iterations` counts every loop below per tile, and the splits
// keep each workgroup within the device's budget. Keep the two in step.
//
// Bindings: 0 tokens, 1 q (float), 2 k_data, 3 v_data (uint cache words), 4 part (float, written); with
//           KV_PARTS, K and V parts 1.. at bindings 5, 6, ... (common/kv_parts.glsl)
// Push constants: as flash_attn.comp (tok_off, n_tok, q_off, q_tok_stride, q_head_stride, k_off, v_off, n_ctx,
//                 n_head, n_splits, chunk, scale bits, part_o_off, part_ml_off, rows_per_part)
// Spec constants: 0 BLOCK_SIZE (workgroup size; a multiple of the subgroup size and of LANES), 1 HEAD_DIM
//                 (multiple of 8), 2 GQA
// Defines: LANES (lanes per KV row, power of 2, at most 64; > 1 needs subgroup shuffles), VEC_LOADS (f16
//          caches read as uvec4 (K) and uvec2 (V): cache offsets and head rows 16-byte aligned), K_Q8_0, V_Q8_0,
//          KV_PARTS
// Dispatch: n_splits x n_head_kv x n_tok.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
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
layout(std430, binding = 3) readonly buffer V2 { uvec2 v_vec[]; };
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
const uint QUADS = HEAD_DIM / 4;
const uint OCTS = HEAD_DIM / 8;                       // 8-value groups per head
const uint OCTS_PER_LANE = OCTS / LANES;
const uint GROUPS = BLOCK_SIZE / LANES;               // KV rows in flight
const uint ITEMS = (GQA * QUADS + BLOCK_SIZE - 1) / BLOCK_SIZE;  // (query head, quad) items per invocation
// Where BLOCK_SIZE divides QUADS (head_dim 256 at 64 invocations), item k of every invocation belongs to the
// same query head k / QPH: its P reads are uniform (one load for the workgroup on a CPU driver, a broadcast on
// a GPU). Otherwise item k is entry tid + k * BLOCK_SIZE of the (query head, quad) list. Same arithmetic per
// output value either way.
const bool HEAD_UNIFORM = QUADS % BLOCK_SIZE == 0;
const uint QPH = (QUADS + BLOCK_SIZE - 1) / BLOCK_SIZE;  // quads per query head per invocation (HEAD_UNIFORM)
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

// Values 4 * quad .. 4 * quad + 3 of the V head starting at word `base`.
vec4 load_v_quad(uint base, uint quad) {
    if (V_IS_Q8) return load_quad_q8(true, base, quad);
    uint w = base + 2 * quad;
#if defined(VEC_LOADS) && !defined(KV_PARTS)
    uvec2 u = v_vec[w / 2];
#else
    uvec2 u = uvec2(cache_word(true, w), cache_word(true, w + 1));
#endif
    return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
}

// Values 8 * oct .. 8 * oct + 7 of the K head starting at word `base`, as two vec4.
void load_k_oct(uint base, uint oct, out vec4 lo, out vec4 hi) {
    if (K_IS_Q8) {
        lo = load_quad_q8(false, base, 2 * oct);
        hi = load_quad_q8(false, base, 2 * oct + 1);
        return;
    }
    uint w = base + 4 * oct;
#if defined(VEC_LOADS) && !defined(KV_PARTS)
    uvec4 u = k_vec[w / 4];
#else
    uvec4 u = uvec4(cache_word(false, w), cache_word(false, w + 1), cache_word(false, w + 2),
                    cache_word(false, w + 3));
#endif
    lo = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    hi = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}

uint item_head(uint k, uint tid) { return HEAD_UNIFORM ? k / QPH : (tid + k * BLOCK_SIZE) / QUADS; }
uint item_quad(uint k, uint tid) {
    return HEAD_UNIFORM ? tid + (k % QPH) * BLOCK_SIZE : (tid + k * BLOCK_SIZE) % QUADS;
}
bool item_valid(uint k, uint tid) { return HEAD_UNIFORM || tid + k * BLOCK_SIZE < GQA * QUADS; }

// Butterflies over the LANES lanes of a row (written out: no loop iterations counted)
#if LANES > 64
#error "at most 64 lanes per KV row"
#endif
#define BUTTERFLY(x, OP) \
    if (LANES > 1) x = OP(x, subgroupShuffleXor(x, 1)); \
    if (LANES > 2) x = OP(x, subgroupShuffleXor(x, 2)); \
    if (LANES > 4) x = OP(x, subgroupShuffleXor(x, 4)); \
    if (LANES > 8) x = OP(x, subgroupShuffleXor(x, 8)); \
    if (LANES > 16) x = OP(x, subgroupShuffleXor(x, 16)); \
    if (LANES > 32) x = OP(x, subgroupShuffleXor(x, 32));
float add(float a, float b) { return a + b; }

float lanes_sum(float x) {
#if LANES > 1
    BUTTERFLY(x, add)
#endif
    return x;
}

float lanes_max(float x) {
#if LANES > 1
    BUTTERFLY(x, max)
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
    barrier();
    // this lane's q values (its 8-value groups lane, lane + LANES, ... of each query head)
    vec4 qr[GQA * OCTS_PER_LANE * 2];
    [[unroll]] for (uint g = 0; g < GQA; ++g) {
        [[unroll]] for (uint o = 0; o < OCTS_PER_LANE; ++o) {
            uint oct = lane + o * LANES;
            qr[(g * OCTS_PER_LANE + o) * 2] = sh_q[g * QUADS + 2 * oct];
            qr[(g * OCTS_PER_LANE + o) * 2 + 1] = sh_q[g * QUADS + 2 * oct + 1];
        }
    }
    vec4 acc[ITEMS];
    [[unroll]] for (uint k = 0; k < ITEMS; ++k) acc[k] = vec4(0.0);

    for (uint c = split; c * p.chunk < len; c += p.n_splits) {
        uint c_end = min(c * p.chunk + p.chunk, len);
        for (uint tile = c * p.chunk; tile < c_end; tile += TILE) {
            uint nv = min(len - tile, TILE);
            // (1) scores: group grp takes rows grp, grp + GROUPS, ... of the tile
            [[unroll]] for (uint r = 0; r < TILE / GROUPS; ++r) {
                uint j = grp + r * GROUPS;
                bool valid = j < nv;
                uint base = p.k_off + (row0 + tile + j) * k_row_words + kvh * K_HEAD_WORDS;
                float dots[GQA];
                [[unroll]] for (uint g = 0; g < GQA; ++g) dots[g] = 0.0;
                if (valid) {
                    [[unroll]] for (uint o = 0; o < OCTS_PER_LANE; ++o) {
                        vec4 lo, hi;
                        load_k_oct(base, lane + o * LANES, lo, hi);
                        [[unroll]] for (uint g = 0; g < GQA; ++g) {
                            dots[g] += dot(qr[(g * OCTS_PER_LANE + o) * 2], lo)
                                     + dot(qr[(g * OCTS_PER_LANE + o) * 2 + 1], hi);
                        }
                    }
                }
                [[unroll]] for (uint g = 0; g < GQA; ++g) {
                    float s = lanes_sum(dots[g]);
                    if (valid && lane == 0) sh_p[g * TILE + j] = s;
                }
            }
            barrier();
            // (2) softmax state per query head, by lane group g % GROUPS
            [[unroll]] for (uint r = 0; r < (GQA + GROUPS - 1) / GROUPS; ++r) {
                uint g = grp + r * GROUPS;
                if (g < GQA) {
                    float mt = neg_inf;
                    [[unroll]] for (uint i = 0; i < TILE / LANES; ++i) {
                        uint j = lane + i * LANES;
                        if (j < nv) mt = max(mt, sh_p[g * TILE + j]);
                    }
                    mt = lanes_max(mt);
                    float m_old = sh_m[g];
                    float m_new = max(m_old, mt);
                    float ts = 0.0;
                    [[unroll]] for (uint i = 0; i < TILE / LANES; ++i) {
                        uint j = lane + i * LANES;
                        if (j < nv) {
                            float e = exp(sh_p[g * TILE + j] - m_new);
                            sh_p[g * TILE + j] = e;
                            ts += e;
                        }
                    }
                    ts = lanes_sum(ts);
                    if (lane == 0) {
                        float alpha = m_new == m_old ? 1.0 : exp(m_old - m_new);  // exp(-inf) never computed
                        sh_alpha[g] = alpha;
                        sh_l[g] = sh_l[g] * alpha + ts;
                        sh_m[g] = m_new;
                    }
                }
            }
            barrier();
            // (3) O = O * alpha + P V, row by row in position order, V read straight from the cache
            [[unroll]] for (uint k = 0; k < ITEMS; ++k) {
                if (item_valid(k, tid)) acc[k] *= sh_alpha[item_head(k, tid)];
            }
            for (uint j = 0; j < nv; ++j) {
                uint base = p.v_off + (row0 + tile + j) * v_row_words + kvh * V_HEAD_WORDS;
                if (HEAD_UNIFORM) {
                    [[unroll]] for (uint qi = 0; qi < QPH; ++qi) {
                        vec4 v = load_v_quad(base, tid + qi * BLOCK_SIZE);
                        [[unroll]] for (uint g = 0; g < GQA; ++g) acc[g * QPH + qi] += sh_p[g * TILE + j] * v;
                    }
                } else {
                    [[unroll]] for (uint k = 0; k < ITEMS; ++k) {
                        if (item_valid(k, tid)) {
                            acc[k] += sh_p[item_head(k, tid) * TILE + j] * load_v_quad(base, item_quad(k, tid));
                        }
                    }
                }
            }
            barrier();   // the next tile rewrites sh_p
        }
    }

    // partials of every query head, also when this split saw no position (L = 0: the reduce skips it)
    [[unroll]] for (uint k = 0; k < ITEMS; ++k) {
        if (item_valid(k, tid)) {
            uint g = item_head(k, tid);
            uint o = p.part_o_off + ((t * p.n_head + kvh * GQA + g) * p.n_splits + split) * HEAD_DIM
                   + 4 * item_quad(k, tid);
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
