#version 450
// Dequantize rows of a GGUF weight to f32: out[r][e] = W[r][e] for r < n_rows, e < n_k.
// The test of shaders/common/dequant.glsl against vkmtp.gguf.dequantize, and a GPU dequant op.
// Bindings: 0 data_a (uint words: raw GGUF blocks; row r at byte a_off + r * row_bytes)
//           1 data_d (f32 output)
// Push constants: a_off (bytes), row_bytes, n_k, n_rows, d_off (words), d_stride (words between rows)
// Spec constants: 0 BLOCK_SIZE (local_size_x)
// Defines: DATA_A_<TYPE> (see dequant.glsl)
// Dispatch: x = ceil(ceil(n_k / 8) / BLOCK_SIZE); rows folded over y and z (r = y + z * num_y)
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer A { uint data_a[]; };
layout(std430, binding = 1) writeonly buffer D { float data_d[]; };
layout(push_constant) uniform Push {
    uint a_off;
    uint row_bytes;
    uint n_k;
    uint n_rows;
    uint d_off;
    uint d_stride;
} p;

#include "dequant.glsl"

void main() {
    uint r = gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
    uint e = 8u * gl_GlobalInvocationID.x;
    if (r >= p.n_rows || e >= p.n_k) {
        return;
    }
    uint row = p.a_off + r * p.row_bytes;
    uint d = p.d_off + r * p.d_stride + e;
    if (e + 8u <= p.n_k) {
        vec4 v0;
        vec4 v1;
        dequant8_row(row, e, v0, v1);
        for (uint j = 0u; j < 4u; j++) {
            data_d[d + j] = v0[j];
            data_d[d + 4u + j] = v1[j];
        }
        return;
    }
#ifdef A_IS_FLOAT
    for (uint j = 0u; e + j < p.n_k; j++) {
        data_d[d + j] = dequant1_row(row, e + j);
    }
#endif
}
