// Workgroup-wide reductions for kernels with one workgroup per row: sum, max, and (max, lowest index).
// Every invocation of the workgroup must call them (uniform control flow); every caller gets the result.
//
// Two paths, chosen by the including shader's defines:
//   USE_SUBGROUP  subgroupAdd/subgroupMax/subgroupMin inside each subgroup, then one slot per subgroup in
//                 shared memory, summed in subgroup order by every invocation (needs the device's
//                 `arithmetic` subgroup operations; works for any subgroup size, full or partial).
//   (default)     shared-memory tree over BLOCK_SIZE slots (BLOCK_SIZE must be a power of two).
// For a given variant and BLOCK_SIZE the order of operations is fixed, so a row's result does not depend on
// how many rows are in the dispatch (batch invariance).
//
// Requires before the include: spec constant BLOCK_SIZE (the workgroup size).
#ifndef VKMTP_REDUCE_GLSL
#define VKMTP_REDUCE_GLSL

#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

shared float red_f[BLOCK_SIZE];
shared uint red_u[BLOCK_SIZE];

float wg_sum(float v) {
    uint tid = gl_LocalInvocationID.x;
#ifdef USE_SUBGROUP
    v = subgroupAdd(v);
    if (gl_SubgroupInvocationID == 0) red_f[gl_SubgroupID] = v;
    barrier();
    float total = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; ++i) total += red_f[i];
#else
    red_f[tid] = v;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s) red_f[tid] += red_f[tid + s];
        barrier();
    }
    float total = red_f[0];
#endif
    barrier();  // red_f is reused by the next call
    return total;
}

float wg_max(float v) {
    uint tid = gl_LocalInvocationID.x;
#ifdef USE_SUBGROUP
    v = subgroupMax(v);
    if (gl_SubgroupInvocationID == 0) red_f[gl_SubgroupID] = v;
    barrier();
    float best = red_f[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) best = max(best, red_f[i]);
#else
    red_f[tid] = v;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s) red_f[tid] = max(red_f[tid], red_f[tid + s]);
        barrier();
    }
    float best = red_f[0];
#endif
    barrier();
    return best;
}

// The greatest value and, among equal values, the lowest index. (value, index) is a total order, so the
// result does not depend on the reduction order. NaN must be mapped to -inf by the caller.
void wg_argmax(inout float v, inout uint idx) {
    uint tid = gl_LocalInvocationID.x;
#ifdef USE_SUBGROUP
    float m = subgroupMax(v);
    uint i = subgroupMin(v == m ? idx : 0xFFFFFFFFu);
    if (gl_SubgroupInvocationID == 0) { red_f[gl_SubgroupID] = m; red_u[gl_SubgroupID] = i; }
    barrier();
    v = red_f[0];
    idx = red_u[0];
    for (uint k = 1; k < gl_NumSubgroups; ++k) {
        float o = red_f[k];
        uint oi = red_u[k];
        if (o > v || (o == v && oi < idx)) { v = o; idx = oi; }
    }
#else
    red_f[tid] = v;
    red_u[tid] = idx;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s) {
            float o = red_f[tid + s];
            uint oi = red_u[tid + s];
            if (o > red_f[tid] || (o == red_f[tid] && oi < red_u[tid])) { red_f[tid] = o; red_u[tid] = oi; }
        }
        barrier();
    }
    v = red_f[0];
    idx = red_u[0];
#endif
    barrier();
}

#endif
