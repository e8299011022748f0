#version 450
// RMSNorm of rows: y = x * inversesqrt(mean(x^2) + eps) * w, one workgroup per row.
// A row is (token t, head h) of length n: x at x_off + t * x_tok_stride + h * x_head_stride (same for the
// other operands), so one shader serves the model norm (n_head = 1, n = n_embd), the per-head q/k norms and
// the GDN output norm (n = head_dim, weight shared by all heads).
//   FUSE_ADD: x <- x + b is written back first and then normed (the residual `x1 = x + m; f = RMSNorm(x1)`).
//   GATED:    y *= silu(z) (GDN: RMSNorm(o_h; ssm_norm) * silu(z_h)).
// The sum of squares is accumulated per invocation over i = tid, tid + BLOCK_SIZE, ... and then reduced
// (common/reduce.glsl): the order depends only on n and BLOCK_SIZE, never on the number of rows.
//
// Bindings: 0 x (float; read, written with FUSE_ADD), 1 b (float), 2 z (float), 3 w (float), 4 y (float; may
//           alias x). Unused operands are bound to any buffer.
// Push constants: x_off, x_tok_stride, x_head_stride, b_off, b_tok_stride, b_head_stride, z_off, z_tok_stride,
//                 z_head_stride, w_off, y_off, y_tok_stride, y_head_stride, n, n_head, n_rows, eps (f32 bits)
// Spec constants: 0 BLOCK_SIZE (workgroup size; a power of two without USE_SUBGROUP)
// Defines: FUSE_ADD, GATED, USE_SUBGROUP
// Dispatch: min(n_rows, 65535) x ceil(n_rows / 65535) x 1; row = group.x + group.y * 65535.
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) readonly buffer Z { float z[]; };
layout(std430, binding = 3) readonly buffer W { float w[]; };
layout(std430, binding = 4) buffer Y { float y[]; };
layout(push_constant) uniform Push {
    uint x_off; uint x_tok_stride; uint x_head_stride;
    uint b_off; uint b_tok_stride; uint b_head_stride;
    uint z_off; uint z_tok_stride; uint z_head_stride;
    uint w_off; uint y_off; uint y_tok_stride; uint y_head_stride;
    uint n; uint n_head; uint n_rows; uint eps_bits;
} p;

#include "reduce.glsl"

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.n_rows) return;  // whole workgroup: the barriers below stay uniform
    uint tid = gl_LocalInvocationID.x;
    uint t = row / p.n_head;
    uint h = row - t * p.n_head;
    uint xo = p.x_off + t * p.x_tok_stride + h * p.x_head_stride;
    uint yo = p.y_off + t * p.y_tok_stride + h * p.y_head_stride;

    float sum_sq = 0.0;
    for (uint i = tid; i < p.n; i += BLOCK_SIZE) {
#ifdef FUSE_ADD
        float v = x[xo + i] + b[p.b_off + t * p.b_tok_stride + h * p.b_head_stride + i];
        x[xo + i] = v;
#else
        float v = x[xo + i];
#endif
        sum_sq += v * v;
    }
    float scale = inversesqrt(wg_sum(sum_sq) / float(p.n) + uintBitsToFloat(p.eps_bits));

    for (uint i = tid; i < p.n; i += BLOCK_SIZE) {
        float v = x[xo + i] * scale * w[p.w_off + i];
#ifdef GATED
        float g = z[p.z_off + t * p.z_tok_stride + h * p.z_head_stride + i];
        v *= g / (1.0 + exp(-g));
#endif
        y[yo + i] = v;
    }
}
