#version 450
// Per-head [RMSNorm] + partial NEOX RoPE + store, one workgroup per (head, token): Qwen3.5's q/k path.
//   NORM:  v = x * inversesqrt(mean(x^2) + eps) * w          (q_norm / k_norm, weight shared by heads)
//   RoPE:  for j < n_rot/2, theta_j = pos * base^(-2j/n_rot):
//            v[j] <- v[j] cos - v[j + n_rot/2] sin,  v[j + n_rot/2] <- v[j] sin + v[j + n_rot/2] cos
//          dims [n_rot, HEAD_DIM) pass through; n_rot = 0 disables the rotation.
//   IMROPE: Qwen3.5 passes (t, h, w, e) = (pos, pos, pos, 0) for text tokens and its sections [11,11,10]
//          cover all 32 rotary pairs, so every pair rotates with `pos`: exactly this NEOX rotation.
//   store: OUT_F32 (default) to out_off + t * out_row_stride + h * out_head_stride (e.g. q in place inside
//          attn_q's packed q+gate output), or OUT_F16 / OUT_Q8_0 into KV-cache row seq * n_ctx + pos
//          (K "set_rows" fused in).
// pos and seq come from the per-token records (common/tokens.glsl), never from push constants.
//   ROPE_QK: q and k of a token in one dispatch: workgroups h < n_q_heads do q head h (norm weight w_norm,
//          f32 store to q_out), the others k head h - n_q_heads from k_off / k_head_stride (norm weight
//          w_norm_k) into the cache; each head's arithmetic is that of its own dispatch (bit-identical).
//   ROPE_QKV (with ROPE_QK): n_kv_heads more workgroups store v head h (from v_off / v_head_stride, neither
//          normed nor rotated) into the V cache (V_OUT_BINDING, one buffer, the K cache's layout), as
//          set_rows.comp does (bit-identical).
//
// Bindings: 0 tokens (uint records), 1 x (float), 2 w_norm (float; unused without NORM), 3 kv_out (uint;
//           may alias x: every element is read into shared memory before any write; with KV_PARTS, cache parts
//           1.. at bindings 4.., common/kv_parts.glsl)
// Push constants: tok_off, x_off, x_tok_stride, x_head_stride (f32 words), w_off, out_off, out_row_stride,
//                 out_head_stride, n_ctx (cache rows per sequence; unused for f32), n_rot,
//                 log2_base (f32 bits: log2 of the rope base), eps (f32 bits), rows_per_part (with KV_PARTS),
//                 ROPE_QK: n_q_heads, k_off, k_head_stride, w_k_off, q_out_off, q_out_row_stride,
//                 q_out_head_stride (q rows share x_tok_stride with k); ROPE_QKV: n_kv_heads, v_off,
//                 v_head_stride, v_out_off (word offset of V cache row 0)
// ROPE_QK bindings: Q_OUT_BINDING (float q_out; may alias x), W_K_BINDING (float w_norm_k), after the cache parts
// Spec constants: 0 BLOCK_SIZE (workgroup size; power of two without USE_SUBGROUP), 1 HEAD_DIM
// Defines: NORM, USE_SUBGROUP (norm reduction), OUT_F16 | OUT_Q8_0 (else f32 rows indexed by token), KV_PARTS,
//          ROPE_QK (with NORM and OUT_F16 | OUT_Q8_0)
// Dispatch: n_head x n_tok x 1 (ROPE_QK: n_q_heads + n_head_kv x n_tok x 1).
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(constant_id = 1) const uint HEAD_DIM = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 1) readonly buffer X { float x_in[]; };
layout(std430, binding = 2) readonly buffer W { float w_norm[]; };
layout(std430, binding = 3) buffer Out { uint kv_out[]; };
layout(push_constant) uniform Push {
    uint tok_off; uint x_off; uint x_tok_stride; uint x_head_stride;
    uint w_off; uint out_off; uint out_row_stride; uint out_head_stride;
    uint n_ctx; uint n_rot; uint log2_base_bits; uint eps_bits; uint rows_per_part;
    uint n_q_heads; uint k_off; uint k_head_stride; uint w_k_off;
    uint q_out_off; uint q_out_row_stride; uint q_out_head_stride;
    uint n_kv_heads; uint v_off; uint v_head_stride; uint v_out_off;
} p;
#ifdef ROPE_QK
layout(std430, binding = Q_OUT_BINDING) writeonly buffer QOut { float q_out[]; };
layout(std430, binding = W_K_BINDING) readonly buffer WK { float w_norm_k[]; };
#endif
#ifdef ROPE_QKV
layout(std430, binding = V_OUT_BINDING) writeonly buffer VOut { uint v_out[]; };
bool head_to_v = false;   // this workgroup stores a V head
#define HEAD_WRITE(i, w) head_write(i, w)
void kv_write(uint i, uint w);
void head_write(uint i, uint w) {
    if (head_to_v) {
        v_out[i] = w;
    } else {
        kv_write(i, w);
    }
}
#endif

#include "tokens.glsl"
#ifdef NORM
#include "reduce.glsl"
#endif
#define KV_OUT_BINDING 3
shared float head_row[HEAD_DIM];
#include "head_store.glsl"

// 2*pi split so that k * TWO_PI_HI is exact for |k| < 2^16 (Cody-Waite): reduces theta to [-pi, pi], where
// the GPU's sin/cos are accurate, for positions up to ~4e5 at the highest frequency.
const float TWO_PI_HI = 6.28125;
const float TWO_PI_LO = 1.9353071795864769e-3;
const float INV_TWO_PI = 0.15915494309189535;

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint h = gl_WorkGroupID.x;
    uint t = gl_WorkGroupID.y;
#ifdef ROPE_QK
    const bool is_q = h < p.n_q_heads;   // uniform over the workgroup
    if (!is_q) h -= p.n_q_heads;
    uint src = is_q ? p.x_off + t * p.x_tok_stride + h * p.x_head_stride
                    : p.k_off + t * p.x_tok_stride + h * p.k_head_stride;
#else
    uint src = p.x_off + t * p.x_tok_stride + h * p.x_head_stride;
#endif
#ifdef ROPE_QKV
    const bool is_v = !is_q && h >= p.n_kv_heads;   // uniform over the workgroup
    if (is_v) {
        h -= p.n_kv_heads;
        src = p.v_off + t * p.x_tok_stride + h * p.v_head_stride;
    }
    head_to_v = is_v;
#else
    const bool is_v = false;
#endif
    float sum_sq = 0.0;
    for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) {
        float v = x_in[src + i];
        head_row[i] = v;
        sum_sq += v * v;
    }
#ifdef NORM
    if (!is_v) {
    float scale = inversesqrt(wg_sum(sum_sq) / float(HEAD_DIM) + uintBitsToFloat(p.eps_bits));
#ifdef ROPE_QK
    if (is_q) {
        for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) head_row[i] = head_row[i] * scale * w_norm[p.w_off + i];
    } else {
        for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) head_row[i] = head_row[i] * scale * w_norm_k[p.w_k_off + i];
    }
#else
    for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) head_row[i] = head_row[i] * scale * w_norm[p.w_off + i];
#endif
    }
#endif
    barrier();

    uint pos = tokens[p.tok_off + TOK_POS(t)];
    uint half_rot = is_v ? 0u : p.n_rot / 2;
    float log2_base = uintBitsToFloat(p.log2_base_bits);
    for (uint j = tid; j < half_rot; j += BLOCK_SIZE) {
        float inv_freq = exp2(-float(2 * j) / float(p.n_rot) * log2_base);
        precise float theta = float(pos) * inv_freq;
        precise float k = round(theta * INV_TWO_PI);
        precise float r = (theta - k * TWO_PI_HI) - k * TWO_PI_LO;
        float c = cos(r);
        float s = sin(r);
        float x0 = head_row[j];
        float x1 = head_row[j + half_rot];
        head_row[j] = x0 * c - x1 * s;
        head_row[j + half_rot] = x0 * s + x1 * c;
    }
    barrier();

#ifdef ROPE_QK
    if (is_q) {
        uint qo = p.q_out_off + t * p.q_out_row_stride + h * p.q_out_head_stride;
        for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) q_out[qo + i] = head_row[i];
        return;
    }
#endif
#if defined(OUT_F16) || defined(OUT_Q8_0)
    uint seq = tokens[p.tok_off + TOK_SEQ(t)];
    uint row = seq * p.n_ctx + pos;
#else
    uint row = t;
#endif
    store_head((is_v ? p.v_out_off : p.out_off) + row * p.out_row_stride + h * p.out_head_stride);
}
