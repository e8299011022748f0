#version 450
// Softmax of each row: y = exp(x - max(x)) / sum(exp(x - max(x))), one workgroup per row; y may alias x.
// Reductions in common/reduce.glsl (fixed order per BLOCK_SIZE and variant: batch invariant).
//
// Bindings: 0 x (float), 1 y (float)
// Push constants: x_off, x_stride, y_off, y_stride (f32 words), n, n_rows
// Spec constants: 0 BLOCK_SIZE (workgroup size; a power of two without USE_SUBGROUP)
// Defines: USE_SUBGROUP
// Dispatch: min(n_rows, 65535) x ceil(n_rows / 65535) x 1.
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
layout(push_constant) uniform Push { uint x_off; uint x_stride; uint y_off; uint y_stride; uint n; uint n_rows; } p;

#include "reduce.glsl"

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.n_rows) return;
    uint tid = gl_LocalInvocationID.x;
    uint xo = p.x_off + row * p.x_stride;
    uint yo = p.y_off + row * p.y_stride;
    float m = uintBitsToFloat(0xFF800000u);
    for (uint i = tid; i < p.n; i += BLOCK_SIZE) m = max(m, x[xo + i]);
    m = wg_max(m);
    float sum = 0.0;
    for (uint i = tid; i < p.n; i += BLOCK_SIZE) {
        float e = exp(x[xo + i] - m);
        y[yo + i] = e;
        sum += e;
    }
    sum = wg_sum(sum);
    for (uint i = tid; i < p.n; i += BLOCK_SIZE) y[yo + i] = y[yo + i] / sum;
}
