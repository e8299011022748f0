#version 450
// Row-wise top-k (k <= 20) in two passes: the k greatest values in descending order, ties to the LOWER
// index, NaN treated as -inf. Each invocation reads its share of the range ONCE, keeping its own k best in a
// sorted private list; then k rounds of a workgroup argmax (common/reduce.glsl) over the invocations' list heads
// pick the range's top k in order, the winner of each round moving to its next entry. (value, index) is a total
// order, so the result does not depend on the reduction order or on how the range is split among invocations.
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

#define MAX_K 20

bool better(float v, uint i, float bv, uint bi) {
    return v > bv || (v == bv && i < bi);
}

float lv[MAX_K];
uint li[MAX_K];
uint cnt = 0u;

// Insert (v, i) into this invocation's sorted list of at most k entries.
void offer(float v, uint i, uint k) {
    uint at;
    if (cnt < k) {
        at = cnt;
        cnt += 1u;
    } else if (better(v, i, lv[k - 1u], li[k - 1u])) {
        at = k - 1u;
    } else {
        return;
    }
    while (at > 0u && better(v, i, lv[at - 1u], li[at - 1u])) {
        lv[at] = lv[at - 1u];
        li[at] = li[at - 1u];
        at -= 1u;
    }
    lv[at] = v;
    li[at] = i;
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    float neg_inf = uintBitsToFloat(0xFF800000u);
    uint k = min(p.k, uint(MAX_K));
#ifdef FINAL
    uint row = gl_WorkGroupID.x;
    uint base = p.part_off + row * p.n_parts * p.k * 2;
    uint count = p.n_parts * p.k;
    for (uint c = tid; c < count; c += BLOCK_SIZE) {
        uint i = part[base + 2 * c + 1];
        if (i != 0xFFFFFFFFu) offer(uintBitsToFloat(part[base + 2 * c]), i, k);
    }
#else
    uint part_idx = gl_WorkGroupID.x;
    uint row = gl_WorkGroupID.y;
    uint start = part_idx * p.part_size;
    uint end = min(start + p.part_size, p.n);
    uint xo = p.x_off + row * p.x_stride;
    for (uint i = start + tid; i < end; i += BLOCK_SIZE) {
        float v = x[xo + i];
        if (isnan(v)) v = neg_inf;
        offer(v, i, k);
    }
#endif
    uint head = 0u;
    for (uint r = 0; r < k; ++r) {
        float best = head < cnt ? lv[head] : neg_inf;
        uint best_i = head < cnt ? li[head] : 0xFFFFFFFFu;
        wg_argmax(best, best_i);
        if (head < cnt && best_i != 0xFFFFFFFFu && li[head] == best_i) head += 1u;
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
    }
}
