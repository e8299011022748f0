#version 450
// Prefill matrix-matrix product with 8-bit integer dot products: Y[n][m] (+)= sum_k W[m][k] * X[n][k].
// W: M rows of K weights in a quantized GGUF type, X: N tokens of K f32, Y: N tokens of M f32.
// The activations are quantized while the X tile is staged, per block of 32 like ggml's Q8_1:
//   d = amax / 127 (f32, correctly rounded), q = round_half_away(x * (1 / d)), int8;
// the weights' integer quants come from dequant.glsl (dq_quants8: value = q * scale + min per group of 8).
// A group of 8 contributes  d_x * (scale * sum q_w q_x + min * sum q_x)  with both sums exact in int32.
// Each workgroup computes a BM x BN output tile; per step of BK = 32 (one activation block) it stages the
// packed int8 quants of W (4 per uint) with their per-group (scale, min), and the packed int8 quants of X with
// their scale and per-group sums, k-major in shared memory. Invocation (tr, tc) keeps a TM x TN register tile:
// rows tr + i * WR, tokens tc + j * WC.
// Each output is one sequential chain over the K blocks whatever the tile sizes or N, and a token's
// quantization depends on that token only, so a token's result is bit-identical alone or in any batch.
//
// Bindings: 0 data_a (uint words; weights, GGUF block layout)
//           1 data_x (float words; activations)
//           2 data_y (float words; output, read too with ACCUMULATE)
// Push constants: as matmul.comp: m, k, n, a_off (BYTE offset of the weight part), row_bytes, x_off, x_stride,
//                 y_off, y_stride, tiles_m (workgroup tile index = wg.x + wg.z * numWG.x)
// Spec constants: 0 BLOCK_SIZE (local_size_x), 1 BM, 2 BN, 3 TM, 4 TN with BLOCK_SIZE = (BM / TM) * (BN / TN)
// Defines: DATA_A_<TYPE> (a quantized weight type; K is a multiple of 32), ACCUMULATE (Y += W X),
//          INT_DOT (the device enabled shaderIntegerDotProduct: OpSDot on packed int8; else the same sum with
//          bit-field extracts)
// Dispatch: (x, ceil(N / BN), z) with x * z >= tiles_m, x <= maxComputeWorkGroupCount.x
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#ifdef INT_DOT
#extension GL_EXT_spirv_intrinsics : require
#endif

layout(std430, binding = 0) readonly buffer ABuf { uint data_a[]; };
#include "dequant.glsl"
#include "q8_0.glsl"
#include "int_dot.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 128;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint TM = 4;
layout(constant_id = 4) const uint TN = 8;

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

#if defined(DATA_A_Q4_1) || defined(DATA_A_Q5_1) || defined(DATA_A_Q2_K) || defined(DATA_A_Q4_K) \
    || defined(DATA_A_Q5_K)
#define A_HAS_MIN 1
#endif

const uint BK = 32u;
const uint WR = BM / TM;
const uint WC = BN / TN;

shared uint sa_q[8 * BM];     // sa_q[w * BM + r]: W[m0 + r][k_tile + 4w .. 4w + 3] as int8
shared vec2 sa_sm[4 * BM];    // sa_sm[g * BM + r]: (scale, min) of group g (8 elements)
shared uint sb_q[8 * BN];     // sb_q[w * BN + t]: quantized X likewise
shared float sb_d[BN];        // the token's activation scale for this block
shared int sb_sum[4 * BN];    // sb_sum[g * BN + t]: sum of the group's 8 activation quants
shared float sb_amax[4 * BN]; // per-group max |x|, combined into the block's amax

uint pack_q4(vec4 q) {
    ivec4 i = ivec4(q) & 0xFF;
    return uint(i.x) | (uint(i.y) << 8) | (uint(i.z) << 16) | (uint(i.w) << 24);
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

    for (uint k_tile = 0; k_tile < p.k; k_tile += BK) {
        // W: one (row, group of 8) per item; rows past M load the last valid one (in bounds, never stored).
        for (uint idx = tid; idx < BM * 4u; idx += BLOCK_SIZE) {
            const uint r = idx / 4u;
            const uint g = idx % 4u;
            const uint row_byte = p.a_off + min(m0 + r, p.m - 1u) * p.row_bytes;
            const uint e = k_tile + g * 8u;
            const uint blk = e / A_BLOCK_K;
            const DQ_BLK base = dq_block(row_byte, p.row_bytes, blk);
            const uint i = e - blk * A_BLOCK_K;
            vec4 q0;
            vec4 q1;
            dq_quants8(base, i, q0, q1);
            sa_q[(2u * g) * BM + r] = pack_q4(q0);
            sa_q[(2u * g + 1u) * BM + r] = pack_q4(q1);
            sa_sm[g * BM + r] = dq_scale_min(base, i);
        }
        // X, pass 1: max |x| of each (token, group of 8).
        for (uint idx = tid; idx < BN * 4u; idx += BLOCK_SIZE) {
            const uint t = idx / 4u;
            const uint g = idx % 4u;
            const uint base = p.x_off + min(n0 + t, p.n - 1u) * p.x_stride + k_tile + g * 8u;
            float amax = 0.0;
            [[unroll]] for (uint e = 0; e < 8u; e++) amax = max(amax, abs(data_x[base + e]));
            sb_amax[g * BN + t] = amax;
        }
        barrier();
        // X, pass 2: the block's scale and the group's quants (ggml's quantize_row_q8_1 rounding).
        for (uint idx = tid; idx < BN * 4u; idx += BLOCK_SIZE) {
            const uint t = idx / 4u;
            const uint g = idx % 4u;
            const uint base = p.x_off + min(n0 + t, p.n - 1u) * p.x_stride + k_tile + g * 8u;
            const float amax = max(max(sb_amax[t], sb_amax[BN + t]), max(sb_amax[2u * BN + t], sb_amax[3u * BN + t]));
            const float d = div_rn(amax, 127.0);
            const float id = d == 0.0 ? 0.0 : div_rn(1.0, d);
            uint w0 = 0u;
            uint w1 = 0u;
            int s = 0;
            [[unroll]] for (uint e = 0; e < 4u; e++) {
                const uint b0 = q8_0_byte(data_x[base + e], id);
                const uint b1 = q8_0_byte(data_x[base + 4u + e], id);
                w0 |= b0 << (8u * e);
                w1 |= b1 << (8u * e);
                s += bitfieldExtract(int(b0), 0, 8) + bitfieldExtract(int(b1), 0, 8);
            }
            sb_q[(2u * g) * BN + t] = w0;
            sb_q[(2u * g + 1u) * BN + t] = w1;
            sb_sum[g * BN + t] = s;
            if (g == 0u) sb_d[t] = d;
        }
        barrier();

        float blk[TM * TN];
        [[unroll]] for (uint i = 0; i < TM * TN; i++) blk[i] = 0.0;
        [[unroll]] for (uint g = 0; g < 4u; g++) {
            uint a0[TM];
            uint a1[TM];
            vec2 sm[TM];
            [[unroll]] for (uint i = 0; i < TM; i++) {
                const uint r = tr + i * WR;
                a0[i] = sa_q[(2u * g) * BM + r];
                a1[i] = sa_q[(2u * g + 1u) * BM + r];
                sm[i] = sa_sm[g * BM + r];
            }
            [[unroll]] for (uint j = 0; j < TN; j++) {
                const uint t = tc + j * WC;
                const uint b0 = sb_q[(2u * g) * BN + t];
                const uint b1 = sb_q[(2u * g + 1u) * BN + t];
#ifdef A_HAS_MIN
                const float bs = float(sb_sum[g * BN + t]);
#endif
                [[unroll]] for (uint i = 0; i < TM; i++) {
                    const int isum = dot4x8(a0[i], b0) + dot4x8(a1[i], b1);
#ifdef A_HAS_MIN
                    blk[j * TM + i] += fma(sm[i].x, float(isum), sm[i].y * bs);
#else
                    blk[j * TM + i] = fma(sm[i].x, float(isum), blk[j * TM + i]);
#endif
                }
            }
        }
        [[unroll]] for (uint j = 0; j < TN; j++) {
            const float d = sb_d[tc + j * WC];
            [[unroll]] for (uint i = 0; i < TM; i++) sums[j * TM + i] = fma(d, blk[j * TM + i], sums[j * TM + i]);
        }
        barrier();
    }

    [[unroll]] for (uint j = 0; j < TN; j++) {
        const uint tok = n0 + tc + j * WC;
        if (tok >= p.n) continue;
        [[unroll]] for (uint i = 0; i < TM; i++) {
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
