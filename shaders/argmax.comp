#version 450
// Row-wise argmax in two passes (the logits row is 248320 wide): the greatest value, ties to the LOWEST
// index, NaN treated as -inf (a row of only NaN/-inf gives index 0). (value, index) is a total order, so the
// result does not depend on the split into parts or on the reduction order.
//   pass 1 (default): workgroup (part, row) scans x[row][part * part_size, ...) and writes its best (value
//                     bits, index) pair to part[row][part].
//   pass 2 (FINAL):   one workgroup per row reduces the n_parts pairs and writes the index to
//                     ids[ids_off + row * ids_stride] (e.g. straight into the id field of token records) and,
//                     when has_values != 0, the value to vals[vals_off + row].
//
// Bindings: 0 x (float logits), 1 part (uint pairs), 2 ids (uint), 3 vals (float)
// Push constants: x_off, x_stride, n, n_parts, part_size, part_off, ids_off, ids_stride, vals_off, has_values,
//                 n_rows
// Spec constants: 0 BLOCK_SIZE (workgroup size; a power of two without USE_SUBGROUP)
// Defines: FINAL, USE_SUBGROUP
// Dispatch: pass 1 n_parts x n_rows x 1; pass 2 n_rows x 1 x 1 (n_rows <= 65535).
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Part { uint part[]; };
layout(std430, binding = 2) buffer Ids { uint ids[]; };
layout(std430, binding = 3) buffer Vals { float vals[]; };
layout(push_constant) uniform Push {
    uint x_off; uint x_stride; uint n; uint n_parts; uint part_size; uint part_off;
    uint ids_off; uint ids_stride; uint vals_off; uint has_values; uint n_rows;
} p;

#include "reduce.glsl"

void main() {
    uint tid = gl_LocalInvocationID.x;
    float best = uintBitsToFloat(0xFF800000u);
    uint best_i = 0xFFFFFFFFu;
#ifdef FINAL
    uint row = gl_WorkGroupID.x;
    uint base = p.part_off + row * p.n_parts * 2;
    for (uint k = tid; k < p.n_parts; k += BLOCK_SIZE) {
        float v = uintBitsToFloat(part[base + 2 * k]);
        uint i = part[base + 2 * k + 1];
        if (v > best || (v == best && i < best_i)) { best = v; best_i = i; }
    }
    wg_argmax(best, best_i);
    if (tid == 0) {
        ids[p.ids_off + row * p.ids_stride] = best_i;
        if (p.has_values != 0u) vals[p.vals_off + row] = best;
    }
#else
    uint part_idx = gl_WorkGroupID.x;
    uint row = gl_WorkGroupID.y;
    uint start = part_idx * p.part_size;
    uint end = min(start + p.part_size, p.n);
    uint xo = p.x_off + row * p.x_stride;
    for (uint i = start + tid; i < end; i += BLOCK_SIZE) {   // ascending: strict > keeps the lower index
        float v = x[xo + i];
        if (isnan(v)) v = uintBitsToFloat(0xFF800000u);
        if (v > best || (v == best && i < best_i)) { best = v; best_i = i; }
    }
    wg_argmax(best, best_i);
    if (tid == 0) {
        uint o = p.part_off + (row * p.n_parts + part_idx) * 2;
        part[o] = floatBitsToUint(best);
        part[o + 1] = best_i;
    }
#endif
}
