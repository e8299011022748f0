#version 450
// Quantized matrix times 1..8 activation columns (decode and the verify batch of a speculative step):
//   d[c][row] = sum_k W[row][k] * b[c][k]    (ACCUMULATE: d[c][row] += ...)
// for rows 0..n_rows-1 of one weight part and columns c < NUM_COLS. Batch invariant: column c's result is
// bit-identical for every NUM_COLS (see matvec_core.glsl for the work split and why).
// Bindings: 0 data_a (uint words: GGUF rows in the device layout of dequant.glsl; row r at byte a_off + r * row_bytes)
//           1 data_b (f32 activations; also aliased as vec4 data_b4)
//           2 data_d (f32 output; may be the same buffer as binding 1 at another range)
//           3 data_aux (f32 norm weight; only with X_NORM / X_HEAD_NORM)
// Push constants: a_off (bytes), row_bytes, n_k, n_rows, b_off, b_stride, d_off, d_stride (words),
//   aux_off (norm weight), eps (f32 bits), head_dim (X_HEAD_NORM), side_off, side_stride (column c's z gate /
//   up half at side_off + c * side_stride in data_b), gate_off, gate_stride (D_SIGMOID_ADD: column c's
//   gate logit at gate_off + c * gate_stride in data_b) (words)
//   Writing into a slice of a larger output (e.g. one projection's columns of a fused tensor) is just
//   d_off / d_stride.
// Spec constants: 0 BLOCK_SIZE (local_size_x; a power of 2, a multiple of the subgroup size),
//                 1 NUM_ROWS (rows per workgroup), 2 NUM_COLS (columns), 3 SUBGROUP_SIZE (device's)
// Defines: DATA_A_<TYPE>, A_ALIGN8 (an A_SPLIT type whose a_off and row_bytes are multiples of 8: dequant.glsl),
//          USE_SUBGROUP_ADD, ACCUMULATE, B_SCALAR (b_off or b_stride not a multiple of 4),
//          X_NORM | X_HEAD_NORM | X_SWIGLU, D_SIGMOID_ADD (common/matvec_io.glsl)
// Dispatch: ceil(n_rows / NUM_ROWS) workgroups folded over x and y (workgroup w = x + y * num_x)
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 32;
layout(constant_id = 1) const uint NUM_ROWS = 1;
layout(constant_id = 2) const uint NUM_COLS = 1;
layout(constant_id = 3) const uint SUBGROUP_SIZE = 32;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer A { uint data_a[]; };
#ifdef A_ALIGN8
layout(std430, binding = 0) readonly buffer A2 { uvec2 data_a2[]; };  // 8-byte quant loads (dequant.glsl)
#endif
layout(std430, binding = 1) readonly buffer B { float data_b[]; };
layout(std430, binding = 1) readonly buffer B4 { vec4 data_b4[]; };
#if defined(ACCUMULATE) || defined(D_SIGMOID_ADD)
layout(std430, binding = 2) buffer D { float data_d[]; };
#else
layout(std430, binding = 2) writeonly buffer D { float data_d[]; };
#endif
layout(push_constant) uniform Push {
    uint a_off;
    uint row_bytes;
    uint n_k;
    uint n_rows;
    uint b_off;
    uint b_stride;
    uint d_off;
    uint d_stride;
    uint aux_off;
    uint eps_bits;
    uint head_dim;
    uint side_off;
    uint side_stride;
    uint gate_off;
    uint gate_stride;
} p;

uint col_x(uint c) { return p.b_off + c * p.b_stride; }
uint col_d(uint c) { return p.d_off + c * p.d_stride; }
uint col_side(uint c) { return p.side_off + c * p.side_stride; }
uint col_gate(uint c) { return p.gate_off + c * p.gate_stride; }
#define IO_AUX_BINDING 3

#include "matvec_core.glsl"

void main() {
    const uint first_row = (gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * NUM_ROWS;
    if (first_row >= p.n_rows) {
        return;
    }
    matvec_rows(p.a_off, p.row_bytes, p.n_k, first_row, p.n_rows, NUM_COLS);
}
