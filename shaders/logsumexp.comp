#version 450
// Row-wise log-sum-exp of logits, and the logit of one chosen token per row, in two passes: what token
// log-probabilities need besides the top-n pairs of shaders/topk.comp (logprob_i = x_i - lse), so the host
// reads a few words per row instead of the row. NaN counts as -inf (as in argmax/topk).
//   pass 1 (default): workgroup (part, row) writes {m, s} of x[row][part range] to part[row][part]:
//                     m = the range's max, s = sum exp(x - m) (s = 0 when every value is -inf).
//   pass 2 (FINAL):   one workgroup per row merges the n_parts pairs: M = max m, S = sum s * exp(m - M),
//                     out[row] = {lse = M + log(S), x[row][chosen[row]]} (the second word 0 without CHOSEN).
// The summation order is fixed by the variant and BLOCK_SIZE (common/reduce.glsl), not by the row count.
//
// Bindings: 0 x (float), 1 part (float), 2 out (float), 3 chosen (uint)
// Push constants: x_off, x_stride, n, n_parts, part_size, part_off, out_off, chosen_off, has_chosen
// Spec constants: 0 BLOCK_SIZE (workgroup size; a power of two without USE_SUBGROUP)
// Defines: FINAL, USE_SUBGROUP
// Dispatch: pass 1 n_parts x n_rows x 1; pass 2 n_rows x 1 x 1.
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Part { float part[]; };
layout(std430, binding = 2) buffer Out { float outv[]; };
layout(std430, binding = 3) readonly buffer Chosen { uint chosen[]; };
layout(push_constant) uniform Push {
    uint x_off; uint x_stride; uint n; uint n_parts; uint part_size; uint part_off;
    uint out_off; uint chosen_off; uint has_chosen;
} p;

#include "reduce.glsl"

void main() {
    uint tid = gl_LocalInvocationID.x;
    float neg_inf = uintBitsToFloat(0xFF800000u);
#ifdef FINAL
    uint row = gl_WorkGroupID.x;
    uint base = p.part_off + row * p.n_parts * 2;
    float m = neg_inf;
    for (uint c = tid; c < p.n_parts; c += BLOCK_SIZE) m = max(m, part[base + 2 * c]);
    float big = wg_max(m);
    float s = 0.0;
    if (big > neg_inf) {
        for (uint c = tid; c < p.n_parts; c += BLOCK_SIZE) {
            float pm = part[base + 2 * c];
            if (pm > neg_inf) s += part[base + 2 * c + 1] * exp(pm - big);
        }
    }
    float total = wg_sum(s);
    if (tid == 0) {
        outv[p.out_off + 2 * row] = big > neg_inf ? big + log(total) : neg_inf;
        float c = 0.0;
        if (p.has_chosen != 0u) {
            c = x[p.x_off + row * p.x_stride + chosen[p.chosen_off + row]];
            if (isnan(c)) c = neg_inf;
        }
        outv[p.out_off + 2 * row + 1] = c;
    }
#else
    uint part_idx = gl_WorkGroupID.x;
    uint row = gl_WorkGroupID.y;
    uint start = part_idx * p.part_size;
    uint end = min(start + p.part_size, p.n);
    uint xo = p.x_off + row * p.x_stride;
    float m = neg_inf;
    for (uint i = start + tid; i < end; i += BLOCK_SIZE) {
        float v = x[xo + i];
        if (!isnan(v)) m = max(m, v);
    }
    float big = wg_max(m);
    float s = 0.0;
    if (big > neg_inf) {
        for (uint i = start + tid; i < end; i += BLOCK_SIZE) {
            float v = x[xo + i];
            if (!isnan(v) && v > neg_inf) s += exp(v - big);
        }
    }
    float total = wg_sum(s);
    if (tid == 0) {
        uint o = p.part_off + (row * p.n_parts + part_idx) * 2;
        part[o] = big;
        part[o + 1] = total;
    }
#endif
}
