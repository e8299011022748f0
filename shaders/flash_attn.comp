#version 450
// Causal GQA attention over the KV cache, split over the KV range: per (split, KV head, query tile) the
// un-normalized partial O and its softmax state (M = running max, L = sum of exp) for each query row.
// flash_attn_reduce.comp combines the splits, normalizes and applies Qwen3.5's sigmoid output gate.
//
// Rows of a workgroup: the GQA query heads h = kvh * GQA + g that share KV head kvh, for Q_TILE consecutive
// tokens (decode/verify: Q_TILE = 1; prefill: more, to share K/V reads). Token t (record {id, pos, seq})
// attends to cache rows seq * n_ctx + [0, pos] (its K/V are already in the cache): causal length pos + 1.
// The KV range is cut into fixed chunks [c * chunk, (c + 1) * chunk) at absolute positions; split s handles
// chunks s, s + n_splits, ... in ascending order, each as tiles of BLOCK_SIZE positions with an online
// softmax in f32. A row's arithmetic depends only on its own causal length (and chunk, n_splits,
// BLOCK_SIZE), never on the other rows or tokens of the dispatch: a token gives the same bits alone or in a
// verify batch. Positions at or beyond a row's length are never read (stale cache rows may hold NaN).
//
// Loop budget: some drivers end every loop of an invocation once a fixed number of iterations has run in all
// (lavapipe: 65535), silently. Per tile this kernel loops over each token's quads, the tile's row max, row sum
// and P * V positions (vkmtp.ops.flash_attn.prefill_loops_per_tile; unrolling the constant-trip ones made
// lavapipe's f32 prefill 1.7x slower, docs/PERFORMANCE.md). WINDOWS: one dispatch per window of chunks [win_c0, win_c1)
// (a multiple of n_splits wide, so split s takes the same chunks in the same order as in one pass): a window
// past every token of the workgroup returns at once, a window after the first resumes each row's (O, M, L)
// from the partials the previous window wrote -- the same f32 values, so the windows give one pass's bits.
//
// Per tile: (1) invocation j computes the scores of KV position tile + j for every row (full dot products
// over HEAD_DIM, q pre-scaled); (2) row owners (invocation r < ROWS) take the tile max, then every
// invocation turns its column into probabilities; (3) row owners update L, and (row, quad-of-4-dims) items
// rescale their O by exp(M_old - M_new) and add P * V in position order.
//
// Bindings: 0 tokens (uint records, common/tokens.glsl), 1 q (float), 2 k_data (uint: K cache words),
//           3 v_data (uint: V cache words), 4 part (float: partials, written); with KV_PARTS, K and V parts
//           1.. at bindings 5, 6, 7, 8 ... (common/kv_parts.glsl)
// Push constants: tok_off, n_tok, q_off, q_tok_stride, q_head_stride (f32 words), k_off, v_off (cache word
//                 offsets), n_ctx, n_head, n_splits, chunk (multiple of BLOCK_SIZE), scale (f32 bits),
//                 part_o_off (O[t][h][s][HEAD_DIM]), part_ml_off ((M, L)[t][h][s]), rows_per_part (KV_PARTS),
//                 with WINDOWS win_c0, win_c1 (the window's chunks)
// Spec constants: 0 BLOCK_SIZE (workgroup size = KV positions per tile; >= GQA * Q_TILE), 1 HEAD_DIM
//                 (multiple of 4), 2 GQA (query heads per KV head), 3 Q_TILE (tokens per workgroup)
// Defines: WINDOWS (see Loop budget; the partials are read back), K_Q8_0, V_Q8_0 (else f16 caches; Q8_0
//          needs HEAD_DIM % 64 == 0, see ops/kv_layout.py), KV_PARTS,
//          F16_LOADS (the device enabled 16-bit storage: f16 caches of one part, k_off and v_off even, are read
//          as f16vec4 and converted to f32 exactly -- the same values, hence the same bits, as unpackHalf2x16),
//          F16_MATH (the device enabled shaderFloat16: f16 matrices, f32 softmax statistics -- q * scale is
//          rounded to f16 in shared memory and K/V values to f16 (exact for f16 caches), each quad's
//          4-product dot is an f16 dot, summed over the quads in f32; the probabilities are rounded to f16
//          (L sums those rounded values), each P * V product is an f16 product, accumulated in f32. M, L,
//          exp() and O stay f32. vkmtp.ref.ops.flash_attn.flash_attn_f16 models these roundings)
// Dispatch: n_splits x n_head_kv x ceil(n_tok / Q_TILE), once per window with WINDOWS.
#extension GL_GOOGLE_include_directive : require
#if defined(F16_LOADS) && !defined(KV_PARTS)
#extension GL_EXT_shader_16bit_storage : require
#endif
#ifdef F16_MATH
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif

layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(constant_id = 1) const uint HEAD_DIM = 256;
layout(constant_id = 2) const uint GQA = 1;
layout(constant_id = 3) const uint Q_TILE = 1;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 1) readonly buffer Q { float q_in[]; };
layout(std430, binding = 2) readonly buffer K { uint k_data[]; };
layout(std430, binding = 3) readonly buffer V { uint v_data[]; };
#if defined(F16_LOADS) && !defined(KV_PARTS)
layout(std430, binding = 2) readonly buffer K16 { f16vec4 k_f16[]; };
layout(std430, binding = 3) readonly buffer V16 { f16vec4 v_f16[]; };
#endif
#ifdef WINDOWS
layout(std430, binding = 4) buffer Part { float part[]; };            // read back when resuming
#else
layout(std430, binding = 4) writeonly buffer Part { float part[]; };
#endif
layout(push_constant) uniform Push {
    uint tok_off; uint n_tok; uint q_off; uint q_tok_stride; uint q_head_stride;
    uint k_off; uint v_off; uint n_ctx; uint n_head; uint n_splits; uint chunk; uint scale_bits;
    uint part_o_off; uint part_ml_off; uint rows_per_part;
#ifdef WINDOWS
    uint win_c0; uint win_c1;    // this window's chunks [win_c0, win_c1): multiples of n_splits
#endif
} p;

#include "tokens.glsl"
#define KV_PARTS_BINDING 5
#include "kv_parts.glsl"

const uint ROWS = Q_TILE * GQA;
const uint QUADS = HEAD_DIM / 4;
const uint ITEMS = (ROWS * QUADS + BLOCK_SIZE - 1) / BLOCK_SIZE;  // (row, quad) items per invocation
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

#ifdef F16_MATH
#define MVEC f16vec4                     // q, K and V values
#define MSCALAR float16_t                // probabilities in P * V
#define LOAD_KV load_quad16
#else
#define MVEC vec4
#define MSCALAR float
#define LOAD_KV load_quad
#endif
#define P_ROUND(x) float(MSCALAR(x))     // the probability P * V uses, also what L sums

shared MVEC sh_q[ROWS * QUADS];      // q * scale
shared float sh_p[ROWS * BLOCK_SIZE]; // scores, then probabilities of the tile
shared float sh_m[ROWS];             // running max after this tile
shared float sh_alpha[ROWS];         // exp(M_old - M_new)
shared uint sh_len[Q_TILE];          // causal length pos + 1 (0: no token)
shared uint sh_row0[Q_TILE];         // seq * n_ctx

uint cache_word(bool is_v, uint i) {
    return kv_read(is_v, i, (p.n_head / GQA) * (is_v ? V_HEAD_WORDS : K_HEAD_WORDS));
}

// Values 4 * quad .. 4 * quad + 3 of the head starting at word `base`.
vec4 load_quad(bool is_v, bool is_q8, uint base, uint quad) {
    if (!is_q8) {
#if defined(F16_LOADS) && !defined(KV_PARTS)
        uint i = base / 2 + quad;              // base is even: k_off, v_off and head rows are
        return vec4(is_v ? v_f16[i] : k_f16[i]);
#else
        return vec4(unpackHalf2x16(cache_word(is_v, base + 2 * quad)),
                    unpackHalf2x16(cache_word(is_v, base + 2 * quad + 1)));
#endif
    }
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

#ifdef F16_MATH
// load_quad in f16: exact for f16 caches (read straight through 16-bit storage where enabled), rounded for Q8_0
f16vec4 load_quad16(bool is_v, bool is_q8, uint base, uint quad) {
#if defined(F16_LOADS) && !defined(KV_PARTS)
    if (!is_q8) {
        uint i = base / 2 + quad;
        return is_v ? v_f16[i] : k_f16[i];
    }
#endif
    return f16vec4(load_quad(is_v, is_q8, base, quad));
}
#endif

// Valid positions of token-slot i in the tile starting at `tile`.
uint n_valid(uint i, uint tile) {
    return sh_len[i] > tile ? min(sh_len[i] - tile, BLOCK_SIZE) : 0u;
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint split = gl_WorkGroupID.x;
    uint kvh = gl_WorkGroupID.y;
    uint t0 = gl_WorkGroupID.z * Q_TILE;
    float neg_inf = uintBitsToFloat(0xFF800000u);
    float scale = uintBitsToFloat(p.scale_bits);
    uint n_head_kv = p.n_head / GQA;
    uint k_row_words = n_head_kv * K_HEAD_WORDS;
    uint v_row_words = n_head_kv * V_HEAD_WORDS;

    if (tid < Q_TILE) {
        uint t = t0 + tid;
        bool live = t < p.n_tok;
        sh_len[tid] = live ? tokens[p.tok_off + TOK_POS(t)] + 1 : 0u;
        sh_row0[tid] = live ? tokens[p.tok_off + TOK_SEQ(t)] * p.n_ctx : 0u;
    }
    barrier();
    uint max_len = 0;
    for (uint i = 0; i < Q_TILE; ++i) max_len = max(max_len, sh_len[i]);
#ifdef WINDOWS
    if (p.win_c0 * p.chunk >= max_len) return;   // a window past every token's causal range: nothing to do
#endif
    for (uint idx = tid; idx < ROWS * QUADS; idx += BLOCK_SIZE) {
        uint r = idx / QUADS;
        uint quad = idx - r * QUADS;
        uint i = r / GQA;
        uint t = t0 + i;
        vec4 v = vec4(0.0);
        if (t < p.n_tok) {
            uint src = p.q_off + t * p.q_tok_stride + (kvh * GQA + r - i * GQA) * p.q_head_stride + 4 * quad;
            v = vec4(q_in[src], q_in[src + 1], q_in[src + 2], q_in[src + 3]) * scale;
        }
        sh_q[idx] = MVEC(v);
    }
    barrier();

    float m_run = neg_inf;  // row state, owned by invocation r < ROWS
    float l_run = 0.0;
    vec4 acc[ITEMS];
    for (uint k = 0; k < ITEMS; ++k) acc[k] = vec4(0.0);
#ifdef WINDOWS
    if (p.win_c0 > 0) {     // resume: the state the previous window of this split left in the partials
        for (uint k = 0; k < ITEMS; ++k) {
            uint item = tid + k * BLOCK_SIZE;
            uint r = item / QUADS;
            uint t = t0 + r / GQA;
            if (item < ROWS * QUADS && t < p.n_tok) {
                uint h = kvh * GQA + r - (r / GQA) * GQA;
                uint o = p.part_o_off + ((t * p.n_head + h) * p.n_splits + split) * HEAD_DIM
                       + 4 * (item - r * QUADS);
                acc[k] = vec4(part[o], part[o + 1], part[o + 2], part[o + 3]);
            }
        }
        if (tid < ROWS && t0 + tid / GQA < p.n_tok) {
            uint t = t0 + tid / GQA;
            uint h = kvh * GQA + tid - (tid / GQA) * GQA;
            uint ml = p.part_ml_off + ((t * p.n_head + h) * p.n_splits + split) * 2;
            m_run = part[ml];
            l_run = part[ml + 1];
        }
    }
    uint c_first = p.win_c0 + split;
    uint c_stop = p.win_c1;
#else
    uint c_first = split;
    uint c_stop = 0xFFFFFFFFu;
#endif

    for (uint c = c_first; c < c_stop && c * p.chunk < max_len; c += p.n_splits) {
        uint c_end = min(c * p.chunk + p.chunk, max_len);
        for (uint tile = c * p.chunk; tile < c_end; tile += BLOCK_SIZE) {
            // (1) scores of position tile + tid
            uint kpos = tile + tid;
            for (uint i = 0; i < Q_TILE; ++i) {
                if (kpos < sh_len[i]) {
                    uint base = p.k_off + (sh_row0[i] + kpos) * k_row_words + kvh * K_HEAD_WORDS;
                    float dots[GQA];
                    for (uint g = 0; g < GQA; ++g) dots[g] = 0.0;
                    for (uint quad = 0; quad < QUADS; ++quad) {
                        MVEC kv = LOAD_KV(false, K_IS_Q8, base, quad);
#ifdef F16_MATH
                        for (uint g = 0; g < GQA; ++g)
                            dots[g] = dots[g] + float(dot(sh_q[(i * GQA + g) * QUADS + quad], kv));
#else
                        for (uint g = 0; g < GQA; ++g) {
                            vec4 qv = sh_q[(i * GQA + g) * QUADS + quad];
                            dots[g] = dots[g] + qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
                        }
#endif
                    }
                    for (uint g = 0; g < GQA; ++g) sh_p[(i * GQA + g) * BLOCK_SIZE + tid] = dots[g];
                }
            }
            barrier();
            // (2) row maxima, then probabilities
            if (tid < ROWS) {
                uint nv = n_valid(tid / GQA, tile);
                if (nv > 0) {
                    float mt = sh_p[tid * BLOCK_SIZE];
                    for (uint j = 1; j < nv; ++j) mt = max(mt, sh_p[tid * BLOCK_SIZE + j]);
                    float m_new = max(m_run, mt);
                    sh_alpha[tid] = m_new == m_run ? 1.0 : exp(m_run - m_new);  // exp(-inf) never computed
                    sh_m[tid] = m_new;
                    m_run = m_new;
                }
            }
            barrier();
            for (uint r = 0; r < ROWS; ++r) {
                uint c_idx = r * BLOCK_SIZE + tid;
                if (kpos < sh_len[r / GQA]) sh_p[c_idx] = P_ROUND(exp(sh_p[c_idx] - sh_m[r]));
            }
            barrier();
            // (3) L and O
            if (tid < ROWS) {
                uint nv = n_valid(tid / GQA, tile);
                if (nv > 0) {
                    float ts = 0.0;
                    for (uint j = 0; j < nv; ++j) ts += sh_p[tid * BLOCK_SIZE + j];
                    l_run = l_run * sh_alpha[tid] + ts;
                }
            }
            uint item_nv[ITEMS];    // valid positions of the item's row in this tile (0: inactive)
            uint item_key[ITEMS];   // (token slot, quad): items with equal keys share the V values
            uint item_base[ITEMS];  // V word offset of the item's head at position `tile`
            for (uint k = 0; k < ITEMS; ++k) {
                uint item = tid + k * BLOCK_SIZE;
                uint r = min(item / QUADS, ROWS - 1);
                uint i = r / GQA;
                item_nv[k] = item < ROWS * QUADS ? n_valid(i, tile) : 0u;
                item_key[k] = i * QUADS + item - (item / QUADS) * QUADS;
                item_base[k] = p.v_off + (sh_row0[i] + tile) * v_row_words + kvh * V_HEAD_WORDS;
                if (item_nv[k] > 0) acc[k] *= sh_alpha[r];
            }
            uint jmax = min(max_len - tile, BLOCK_SIZE);
            for (uint j = 0; j < jmax; ++j) {
                uint loaded = 0xFFFFFFFFu;
                MVEC vv = MVEC(0.0);
                for (uint k = 0; k < ITEMS; ++k) {
                    if (j < item_nv[k]) {
                        if (item_key[k] != loaded) {
                            uint base = item_base[k] + j * v_row_words;
                            vv = LOAD_KV(true, V_IS_Q8, base, item_key[k] % QUADS);
                            loaded = item_key[k];
                        }
                        uint r = (tid + k * BLOCK_SIZE) / QUADS;
                        acc[k] += vec4(MSCALAR(sh_p[r * BLOCK_SIZE + j]) * vv);
                    }
                }
            }
            barrier();
        }
    }

    // partials of every row, also of rows that saw no position in this split (L = 0: the reduce skips them)
    for (uint k = 0; k < ITEMS; ++k) {
        uint item = tid + k * BLOCK_SIZE;
        uint r = item / QUADS;
        uint t = t0 + r / GQA;
        if (item < ROWS * QUADS && t < p.n_tok) {
            uint h = kvh * GQA + r - (r / GQA) * GQA;
            uint o = p.part_o_off + ((t * p.n_head + h) * p.n_splits + split) * HEAD_DIM
                   + 4 * (item - r * QUADS);
            part[o] = acc[k].x;
            part[o + 1] = acc[k].y;
            part[o + 2] = acc[k].z;
            part[o + 3] = acc[k].w;
        }
    }
    if (tid < ROWS && t0 + tid / GQA < p.n_tok) {
        uint t = t0 + tid / GQA;
        uint h = kvh * GQA + tid - (tid / GQA) * GQA;
        uint ml = p.part_ml_off + ((t * p.n_head + h) * p.n_splits + split) * 2;
        part[ml] = m_run;
        part[ml + 1] = l_run;
    }
}
