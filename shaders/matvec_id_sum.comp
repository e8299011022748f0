#version 450
// MoE combine: d[t][row] = sum_j w[t * n_used + j] * s[t * n_used + j][row]  (ACCUMULATE: d[t][row] += ...)
// summing the routing-weighted expert outputs of each token in slot order j = 0, 1, ... (a fixed order, so a
// token's result does not depend on the other tokens of the batch).
// Bindings: 0 slots (f32: the down projections of matvec_id, one row per entry)
//           1 weights (f32: routing weights, w[w_off + t * n_used + j])
//           2 data_d (f32 output)
// Push constants: s_off, s_stride, w_off, d_off, d_stride (words), n_rows, n_used, n_tok
// Spec constants: 0 BLOCK_SIZE (local_size_x)
// Defines: ACCUMULATE
// Dispatch: x = ceil(n_rows / BLOCK_SIZE), tokens folded over y and z (t = y + z * num_y)
layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer S { float slots[]; };
layout(std430, binding = 1) readonly buffer W { float weights[]; };
#ifdef ACCUMULATE
layout(std430, binding = 2) buffer D { float data_d[]; };
#else
layout(std430, binding = 2) writeonly buffer D { float data_d[]; };
#endif
layout(push_constant) uniform Push {
    uint s_off;
    uint s_stride;
    uint w_off;
    uint d_off;
    uint d_stride;
    uint n_rows;
    uint n_used;
    uint n_tok;
} p;

void main() {
    const uint row = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
    if (row >= p.n_rows || t >= p.n_tok) {
        return;
    }
    precise float acc = 0.0;
    for (uint j = 0u; j < p.n_used; j++) {
        const uint entry = t * p.n_used + j;
        acc = fma(weights[p.w_off + entry], slots[p.s_off + entry * p.s_stride + row], acc);
    }
    const uint d = p.d_off + t * p.d_stride + row;
#ifdef ACCUMULATE
    data_d[d] = data_d[d] + acc;
#else
    data_d[d] = acc;
#endif
}
