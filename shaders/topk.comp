#version 450
// Row-wise top-k (k <= 20) in two passes: the k greatest values in descending order, ties to the LOWER
// index, NaN treated as -inf. Round r selects the best (value, index) strictly after round r-1's winner in
// that total order, by a full scan of the range plus a workgroup argmax (common/reduce.glsl); k rounds of a
// 4096-wide part cost k (<= 20) reads per element, far less than the logits' matmul.
//   pass 1 (default): workgroup (part, row) writes the top-k (value bits, index) pairs of x[row][part range]
//                     to part[row][part][k] (index 0xFFFFFFFF = none: the range has fewer than k values).
//   pass 2 (FINAL):   one workgroup per row selects the top k of the n_parts * k candidates and writes
//                     vals[row][k] and ids[row][k].
//
// Bindings: 0 x (float), 1 part (uint pairs), 2 vals (float), 3 ids (uint)
// Push constants: x_off, x_stride, n, n_parts, part_size, part_off, vals_off, ids_off, k
// Spec constants: 0 BLOCK_SIZE (workgroup size; a power of two without USE_SUBGROUP)
// Defines: FINAL, USE_SUBGROUP
// Dispatch: pass 1 n_parts x n_rows x 1; pass 2 n_rows x 1 x 1.
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Part { uint part[]; };
layout(std430, binding = 2) buffer Vals { float vals[]; };
layout(std430, binding = 3) buffer Ids { uint ids[]; };
layout(push_constant) uniform Push {
    uint x_off; uint x_stride; uint n; uint n_parts; uint part_size; uint part_off;
    uint vals_off; uint ids_off; uint k;
} p;

#include "reduce.glsl"

// (v, i) comes after (pv, pi) in descending-value, ascending-index order.
bool after(float v, uint i, float pv, uint pi) {
    return v < pv || (v == pv && i > pi);
}

bool better(float v, uint i, float bv, uint bi) {
    return v > bv || (v == bv && i < bi);
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    float neg_inf = uintBitsToFloat(0xFF800000u);
    float prev = uintBitsToFloat(0x7F800000u);  // +inf with index 0: nothing comes before it
    uint prev_i = 0u;
    bool first = true;
#ifdef FINAL
    uint row = gl_WorkGroupID.x;
    uint base = p.part_off + row * p.n_parts * p.k * 2;
    uint count = p.n_parts * p.k;
#else
    uint part_idx = gl_WorkGroupID.x;
    uint row = gl_WorkGroupID.y;
    uint start = part_idx * p.part_size;
    uint end = min(start + p.part_size, p.n);
    uint xo = p.x_off + row * p.x_stride;
#endif
    for (uint r = 0; r < p.k; ++r) {
        float best = neg_inf;
        uint best_i = 0xFFFFFFFFu;
#ifdef FINAL
        for (uint c = tid; c < count; c += BLOCK_SIZE) {
            float v = uintBitsToFloat(part[base + 2 * c]);
            uint i = part[base + 2 * c + 1];
            if (i != 0xFFFFFFFFu && (first || after(v, i, prev, prev_i)) && better(v, i, best, best_i)) {
                best = v;
                best_i = i;
            }
        }
#else
        for (uint i = start + tid; i < end; i += BLOCK_SIZE) {
            float v = x[xo + i];
            if (isnan(v)) v = neg_inf;
            if ((first || after(v, i, prev, prev_i)) && better(v, i, best, best_i)) {
                best = v;
                best_i = i;
            }
        }
#endif
        wg_argmax(best, best_i);
        if (tid == 0) {
#ifdef FINAL
            vals[p.vals_off + row * p.k + r] = best;
            ids[p.ids_off + row * p.k + r] = best_i;
#else
            uint o = p.part_off + ((row * p.n_parts + part_idx) * p.k + r) * 2;
            part[o] = floatBitsToUint(best);
            part[o + 1] = best_i;
#endif
        }
        if (best_i == 0xFFFFFFFFu) {  // range exhausted: later rounds find nothing either
            prev = neg_inf;
            prev_i = 0xFFFFFFFFu;
        } else {
            prev = best;
            prev_i = best_i;
        }
        first = false;
    }
}
