#version 450
// Row-wise top-k (k <= 20) in two passes: the k greatest values in descending order, ties to the LOWER
// index, NaN treated as -inf. Each invocation reads its share of the range ONCE, keeping its k best in a sorted
// private list; then the workgroup merges the lists pairwise in shared memory, log2(BLOCK_SIZE) levels of
// one k-step merge each (k rounds of a workgroup-wide argmax cost k times the barriers, which dominate on CPU
// drivers). (value, index) is a total order, so the result does not depend on how the range is split among
// invocations or merged.
//   pass 1 (default): workgroup (part, row) writes the top-k (value bits, index) pairs of x[row][part range]
//                     to part[row][part][k] (index 0xFFFFFFFF = none: the range has fewer than k values).
//   pass 2 (FINAL):   one workgroup per row selects the top k of the n_parts * k candidates and writes
//                     vals[row][k] and ids[row][k].
// Shared memory: 2 * MAX_K words per invocation (BLOCK_SIZE 64: 10 KiB).
//
// Bindings: 0 x (float), 1 part (uint pairs), 2 vals (float), 3 ids (uint)
// Push constants: x_off, x_stride, n, n_parts, part_size, part_off, vals_off, ids_off, k
// Spec constants: 0 BLOCK_SIZE (workgroup size, a power of two)
// Defines: FINAL
// Dispatch: pass 1 n_parts x n_rows x 1; pass 2 n_rows x 1 x 1.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

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

#define MAX_K 20

bool better(float v, uint i, float bv, uint bi) {
    return v > bv || (v == bv && i < bi);
}

// This invocation's MAX_K best (value, index) pairs, best first; empty places hold (-inf, 0xFFFFFFFF), which
// every real pair beats. Only constant indices touch the list, so it lives in registers (CPU drivers turn
// dynamically indexed private arrays into memory gathers). The first k places are the top k for any k <= MAX_K.
float lv[MAX_K];
uint li[MAX_K];
shared float sv[BLOCK_SIZE * MAX_K];
shared uint si[BLOCK_SIZE * MAX_K];

// Insert (v, i): false when it does not beat the list's last pair (so neither does anything worse).
bool offer(float v, uint i) {
    if (!better(v, i, lv[MAX_K - 1], li[MAX_K - 1])) return false;
    lv[MAX_K - 1] = v;
    li[MAX_K - 1] = i;
    [[unroll]] for (int j = MAX_K - 1; j > 0; --j) {
        if (better(lv[j], li[j], lv[j - 1], li[j - 1])) {
            float tv = lv[j]; lv[j] = lv[j - 1]; lv[j - 1] = tv;
            uint ti = li[j]; li[j] = li[j - 1]; li[j - 1] = ti;
        }
    }
    return true;
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    float neg_inf = uintBitsToFloat(0xFF800000u);
    uint k = min(p.k, uint(MAX_K));
    [[unroll]] for (int j = 0; j < MAX_K; ++j) {
        lv[j] = neg_inf;
        li[j] = 0xFFFFFFFFu;
    }
#ifdef FINAL
    uint row = gl_WorkGroupID.x;
    uint base = p.part_off + row * p.n_parts * p.k * 2;
    uint count = p.n_parts * p.k;
    for (uint c = tid; c < count; c += BLOCK_SIZE) {
        uint i = part[base + 2 * c + 1];
        if (i != 0xFFFFFFFFu) offer(uintBitsToFloat(part[base + 2 * c]), i);
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
        offer(v, i);
    }
#endif
    // pairwise merges: at level `stride`, invocation tid (a multiple of 2 * stride) takes in the list that
    // invocation tid + stride published in shared memory, best first, until a pair no longer enters
    [[unroll]] for (int j = 0; j < MAX_K; ++j) {
        sv[tid * MAX_K + j] = lv[j];
        si[tid * MAX_K + j] = li[j];
    }
    barrier();
    for (uint stride = 1u; stride < BLOCK_SIZE; stride <<= 1) {
        bool merging = (tid & (2u * stride - 1u)) == 0u;
        if (merging) {
            uint o = (tid + stride) * MAX_K;
            for (uint j = 0u; j < k; ++j) {
                if (si[o + j] == 0xFFFFFFFFu || !offer(sv[o + j], si[o + j])) break;
            }
        }
        barrier();
        if (merging) {
            [[unroll]] for (int j = 0; j < MAX_K; ++j) {
                sv[tid * MAX_K + j] = lv[j];
                si[tid * MAX_K + j] = li[j];
            }
        }
        barrier();
    }
    if (tid == 0u) {
        for (uint r = 0u; r < k; ++r) {
#ifdef FINAL
            vals[p.vals_off + row * p.k + r] = sv[r];
            ids[p.ids_off + row * p.k + r] = si[r];
#else
            uint o = p.part_off + ((row * p.n_parts + part_idx) * p.k + r) * 2;
            part[o] = floatBitsToUint(sv[r]);
            part[o + 1] = si[r];
#endif
        }
    }
}
