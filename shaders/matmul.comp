#version 450
// Tiled matrix-matrix product for prefill: Y[n][m] (+)= sum_k W[m][k] * X[n][k].
// W: M rows of K weights in a GGUF type (one row = one output), X: N tokens of K f32, Y: N tokens of M f32.
// Each workgroup computes a BM x BN output tile (BM weight rows x BN tokens). Per step of BK along K it
// dequantizes a BM x BK tile of W and loads a BN x BK tile of X into shared memory, k-major, as vec4s of 4
// consecutive rows (tokens); each k-row is padded by one vec4 against bank conflicts on the transposing
// stores. Invocation (tr, tc) keeps a TM x TN register tile: row groups tr + i*WR and token groups tc + j*WC
// (4 rows / tokens each), so neighbouring invocations read neighbouring vec4s.
// Each output is one sequential fma chain over k = 0..K-1 whatever the tile sizes or N, so a token's result
// is bit-identical alone or in any batch.
//
// Bindings: 0 data_a (uint words; weights, GGUF block layout)
//           1 data_x (float words; activations)
//           2 data_y (float words; output, read too with ACCUMULATE)
// Push constants: m (rows of this weight part), k, n (tokens), a_off (BYTE offset of the weight part),
//                 row_bytes (bytes per weight row), x_off, x_stride (word offset / row stride of X), y_off,
//                 y_stride (of Y), tiles_m
//                 (number of BM tiles along M; workgroup tile index = wg.x + wg.z * numWG.x, folded when it
//                 exceeds maxComputeWorkGroupCount.x)
// Spec constants: 0 BLOCK_SIZE (local_size_x), 1 BM, 2 BN, 3 BK, 4 TM, 5 TN
//                 with BLOCK_SIZE = (BM / TM) * (BN / TN); BK a multiple of 8, TM and TN of 4
// Defines: DATA_A_<TYPE> (weight type, dequant.glsl), ALIGNED (K % BK == 0: no K bounds checks),
//          ACCUMULATE (Y += W X, the fused residual add)
// Dispatch: (x, ceil(N / BN), z) with x * z >= tiles_m, x <= maxComputeWorkGroupCount.x
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable

layout(std430, binding = 0) readonly buffer ABuf { uint data_a[]; };
#include "dequant.glsl"

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
    uint m; uint k; uint n; uint a_off; uint row_bytes; uint x_off; uint x_stride; uint y_off; uint y_stride;
    uint tiles_m;
} p;

const uint WR = BM / TM;             // invocations along M
const uint WC = BN / TN;             // invocations along N
const uint GROUPS = BK / 8;          // 8-element groups (dequant.glsl's unit) per tile row
const uint A_ROW = BM / 4 + 1;       // vec4s per shared k-row of the W tile (+1 against bank conflicts)
const uint B_ROW = BN / 4 + 1;

// k-major tiles: buf_a[kk * A_ROW + m / 4][m % 4] = W[m0 + m][k_tile + kk], buf_b likewise for X.
shared vec4 buf_a[BK * A_ROW];
shared vec4 buf_b[BK * B_ROW];

// Store 8 consecutive k values of tile row r (group g) into a k-major tile.
#define STORE8(buf, ROW, r, g, v0, v1) {                                                         \
        const uint s_ = (g) * 8 * ROW + (r) / 4;                                                  \
        const uint q_ = (r) % 4;                                                                  \
        buf[s_][q_] = v0.x; buf[s_ + ROW][q_] = v0.y;                                             \
        buf[s_ + 2 * ROW][q_] = v0.z; buf[s_ + 3 * ROW][q_] = v0.w;                               \
        buf[s_ + 4 * ROW][q_] = v1.x; buf[s_ + 5 * ROW][q_] = v1.y;                               \
        buf[s_ + 6 * ROW][q_] = v1.z; buf[s_ + 7 * ROW][q_] = v1.w; }

// Dequantized W[row][k0 .. k0+7] of this part into tile row r; zero past K (unaligned variant only).
void stage_a(uint r, uint row, uint k0, uint g) {
    vec4 v0;
    vec4 v1;
    const uint row_byte = p.a_off + row * p.row_bytes;
#ifdef ALIGNED
    dequant8_row(row_byte, p.row_bytes, k0, v0, v1);
#else
    if (k0 + 8 <= p.k) {
        dequant8_row(row_byte, p.row_bytes, k0, v0, v1);
    } else {
        // Quantized rows hold whole groups of 8, so only float rows end inside a group.
        vec4 t[2] = vec4[2](vec4(0.0), vec4(0.0));
#ifdef A_IS_FLOAT
        for (uint e = 0; e < 8 && k0 + e < p.k; e++) t[e / 4][e % 4] = dequant1_row(row_byte, k0 + e);
#endif
        v0 = t[0];
        v1 = t[1];
    }
#endif
    STORE8(buf_a, A_ROW, r, g, v0, v1);
}

// X[tok][k0 .. k0+7] into tile row r; zero past K (unaligned variant only).
void stage_b(uint r, uint tok, uint k0, uint g) {
    const uint base = p.x_off + tok * p.x_stride + k0;
    vec4 v0;
    vec4 v1;
#ifdef ALIGNED
    v0 = vec4(data_x[base], data_x[base + 1], data_x[base + 2], data_x[base + 3]);
    v1 = vec4(data_x[base + 4], data_x[base + 5], data_x[base + 6], data_x[base + 7]);
#else
    vec4 t[2] = vec4[2](vec4(0.0), vec4(0.0));
    for (uint e = 0; e < 8 && k0 + e < p.k; e++) t[e / 4][e % 4] = data_x[base + e];
    v0 = t[0];
    v1 = t[1];
#endif
    STORE8(buf_b, B_ROW, r, g, v0, v1);
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
    [[unroll]] for (uint i = 0; i < TM * TN; i++) sums[i] = 0.0;
    vec4 a[TM / 4];
    vec4 b[TN / 4];

    for (uint k_tile = 0; k_tile < p.k; k_tile += BK) {
        // Rows past M / tokens past N load the last valid one (in bounds, never stored).
        for (uint idx = tid; idx < BM * GROUPS; idx += BLOCK_SIZE) {
            const uint r = idx / GROUPS;
            const uint g = idx % GROUPS;
            stage_a(r, min(m0 + r, p.m - 1), k_tile + g * 8, g);
        }
        for (uint idx = tid; idx < BN * GROUPS; idx += BLOCK_SIZE) {
            const uint r = idx / GROUPS;
            const uint g = idx % GROUPS;
            stage_b(r, min(n0 + r, p.n - 1), k_tile + g * 8, g);
        }
        barrier();
        for (uint kk = 0; kk < BK; kk++) {
            [[unroll]] for (uint i = 0; i < TM / 4; i++) a[i] = buf_a[kk * A_ROW + tr + i * WR];
            [[unroll]] for (uint j = 0; j < TN / 4; j++) b[j] = buf_b[kk * B_ROW + tc + j * WC];
            [[unroll]] for (uint j = 0; j < TN; j++) {
                [[unroll]] for (uint i = 0; i < TM; i++) {
                    sums[j * TM + i] = fma(a[i / 4][i % 4], b[j / 4][j % 4], sums[j * TM + i]);
                }
            }
        }
        barrier();
    }

    [[unroll]] for (uint j = 0; j < TN; j++) {
        const uint tok = n0 + (tc + (j / 4) * WC) * 4 + j % 4;
        if (tok >= p.n) continue;
        [[unroll]] for (uint i = 0; i < TM; i++) {
            const uint row = m0 + (tr + (i / 4) * WR) * 4 + i % 4;
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
