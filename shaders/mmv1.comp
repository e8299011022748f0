#version 450
// Tiled matrix-matrix product for prefill: Y[n][m] (+)= sum_k W[m][k] * X[n][k].
// W: M rows of K weights in a GGUF type (one row = one output), X: N tokens of K f32, Y: N tokens of M f32.
// Each workgroup computes a BM x BN output tile (BM weight rows x BN tokens). Per step of BK along K it
// dequantizes a BM x BK tile of W and loads a BN x BK tile of X into shared memory (rows padded by one word
// against bank conflicts), then every invocation accumulates a TM x TN register tile: rows tr + i*(BM/TM),
// tokens tc + j*(BN/TN) (strided, so neighbouring invocations read neighbouring shared rows).
// Each output is one sequential fma chain over k = 0..K-1 whatever the tile sizes, the variant or N, so a
// token's result is bit-identical alone or in any batch.
//
// Bindings: 0 data_a (uint words; weights, GGUF block layout)
//           1 data_x (float words; activations)
//           2 data_y (float words; output, read too with ACCUMULATE)
// Push constants: m (rows of this weight part), k, n (tokens), a_off (word offset of the weight part),
//                 x_off, x_stride (word offset / row stride of X), y_off, y_stride (of Y), tiles_m
//                 (number of BM tiles along M; workgroup tile index = wg.x + wg.z * numWG.x, folded when it
//                 exceeds maxComputeWorkGroupCount.x)
// Spec constants: 0 BLOCK_SIZE (local_size_x), 1 BM, 2 BN, 3 BK, 4 TM, 5 TN
//                 with BLOCK_SIZE = (BM / TM) * (BN / TN), BK a multiple of 4
// Defines: DATA_A_<TYPE> (weight type), ALIGNED (K % BK == 0: no K bounds checks), ACCUMULATE (Y += W X)
// Dispatch: (min(tiles_m, maxX), ceil(N / BN), ceil(tiles_m / maxX))
#extension GL_GOOGLE_include_directive : require

#include "matmul_load.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 128;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 8;

layout(std430, binding = 1) readonly buffer XBuf { float data_x[]; };
#ifdef ACCUMULATE
layout(std430, binding = 2) buffer YBuf { float data_y[]; };
#else
layout(std430, binding = 2) writeonly buffer YBuf { float data_y[]; };
#endif

layout(push_constant) uniform Push {
    uint m; uint k; uint n; uint a_off; uint x_off; uint x_stride; uint y_off; uint y_stride; uint tiles_m;
} p;

const uint STRIDE = BK + 1;          // padded shared row (words)
const uint WR = BM / TM;             // invocations along M
const uint WC = BN / TN;             // invocations along N
const uint CHUNKS = BK / 4;          // 4-element chunks per tile row

shared float buf_a[BM * STRIDE];
shared float buf_b[BN * STRIDE];

// Dequantized W[row][k0 .. k0+3] of this part into shared row `r`; zero past K (unaligned variant only).
void stage_a(uint r, uint row, uint k0, uint c) {
    vec4 v;
#ifdef ALIGNED
    v = load_a4(p.a_off, row, p.k, k0);
#else
    if (k0 + 4 <= p.k) {
        v = load_a4(p.a_off, row, p.k, k0);
    } else {
        for (uint e = 0; e < 4; e++) {
            v[e] = k0 + e < p.k ? load_a1(p.a_off, row, p.k, k0 + e) : 0.0;
        }
    }
#endif
    const uint s = r * STRIDE + c * 4;
    buf_a[s] = v.x; buf_a[s + 1] = v.y; buf_a[s + 2] = v.z; buf_a[s + 3] = v.w;
}

// X[tok][k0 .. k0+3] into shared row `r`; zero past K (unaligned variant only).
void stage_b(uint r, uint tok, uint k0, uint c) {
    const uint base = p.x_off + tok * p.x_stride + k0;
    const uint s = r * STRIDE + c * 4;
#ifdef ALIGNED
    buf_b[s] = data_x[base]; buf_b[s + 1] = data_x[base + 1];
    buf_b[s + 2] = data_x[base + 2]; buf_b[s + 3] = data_x[base + 3];
#else
    for (uint e = 0; e < 4; e++) {
        buf_b[s + e] = k0 + e < p.k ? data_x[base + e] : 0.0;
    }
#endif
}

void main() {
    const uint tile_m = gl_WorkGroupID.x + gl_WorkGroupID.z * gl_NumWorkGroups.x;
    if (tile_m >= p.tiles_m) return;   // whole workgroup leaves together: no barrier is skipped by some
    const uint m0 = tile_m * BM;
    const uint n0 = gl_WorkGroupID.y * BN;
    const uint tid = gl_LocalInvocationID.x;
    const uint tr = tid % WR;
    const uint tc = tid / WR;

    float sums[TM * TN];
    for (uint i = 0; i < TM * TN; i++) sums[i] = 0.0;
    float a[TM];
    float b[TN];

    for (uint k_tile = 0; k_tile < p.k; k_tile += BK) {
        // Rows past M / tokens past N load the last valid one (in bounds, never stored).
        for (uint idx = tid; idx < BM * CHUNKS; idx += BLOCK_SIZE) {
            const uint r = idx / CHUNKS;
            const uint c = idx % CHUNKS;
            stage_a(r, min(m0 + r, p.m - 1), k_tile + c * 4, c);
        }
        for (uint idx = tid; idx < BN * CHUNKS; idx += BLOCK_SIZE) {
            const uint r = idx / CHUNKS;
            const uint c = idx % CHUNKS;
            stage_b(r, min(n0 + r, p.n - 1), k_tile + c * 4, c);
        }
        barrier();
        for (uint kk = 0; kk < BK; kk++) {
            for (uint i = 0; i < TM; i++) a[i] = buf_a[(tr + i * WR) * STRIDE + kk];
            for (uint j = 0; j < TN; j++) b[j] = buf_b[(tc + j * WC) * STRIDE + kk];
            for (uint j = 0; j < TN; j++) {
                for (uint i = 0; i < TM; i++) {
                    sums[j * TM + i] = fma(a[i], b[j], sums[j * TM + i]);
                }
            }
        }
        barrier();
    }

    for (uint j = 0; j < TN; j++) {
        const uint tok = n0 + tc + j * WC;
        if (tok >= p.n) continue;
        for (uint i = 0; i < TM; i++) {
            const uint row = m0 + tr + i * WR;
            if (row >= p.m) continue;
            const uint o = p.y_off + tok * p.y_stride + row;
#ifdef ACCUMULATE
            data_y[o] = data_y[o] + sums[j * TM + i];
#else
            data_y[o] = sums[j * TM + i];
#endif
        }
    }
}
