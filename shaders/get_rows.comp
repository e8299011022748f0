#version 450
// Embedding lookup from a GGUF table: d[t][e] = dequant(table[id_t])[e] for the n_tok tokens of a step.
// A table split by rows into parts gets one dispatch per part; each writes the tokens whose id falls in its
// rows [row_start, row_start + n_rows). The part with row_start == 0 writes NaN rows for ids >= n_total, so a
// bad token id shows up instead of leaving stale data.
// Bindings: 0 data_a (uint words: GGUF rows of this part in the device layout of dequant.glsl; row r at byte
//                     a_off + r * row_bytes)
//           1 ids    (uint words: id of token t at ids[ids_off + t * ids_stride]; ids_stride 4 reads the
//                     token_id field of the per-token records of tokens.glsl, 1 a plain array)
//           2 data_d (f32 output, row of token t at d_off + t * d_stride)
// Push constants: a_off (bytes), row_bytes, n_k, row_start, n_rows, n_total, ids_off, ids_stride, d_off,
//                 d_stride, n_tok
// Spec constants: 0 BLOCK_SIZE (local_size_x)
// Defines: DATA_A_<TYPE> (dequant.glsl)
// Dispatch: x = ceil(ceil(n_k / 8) / BLOCK_SIZE); tokens folded over y and z (t = y + z * num_y)
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer A { uint data_a[]; };
layout(std430, binding = 1) readonly buffer Ids { uint ids[]; };
layout(std430, binding = 2) writeonly buffer D { float data_d[]; };
layout(push_constant) uniform Push {
    uint a_off;
    uint row_bytes;
    uint n_k;
    uint row_start;
    uint n_rows;
    uint n_total;
    uint ids_off;
    uint ids_stride;
    uint d_off;
    uint d_stride;
    uint n_tok;
} p;

#include "dequant.glsl"

void main() {
    const uint t = gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
    const uint e = 8u * gl_GlobalInvocationID.x;
    if (t >= p.n_tok || e >= p.n_k) {
        return;
    }
    const uint id = ids[p.ids_off + t * p.ids_stride];
    const uint d = p.d_off + t * p.d_stride + e;
    const uint n_here = min(8u, p.n_k - e);
    if (id >= p.n_total) {
        if (p.row_start == 0u) {
            for (uint j = 0u; j < n_here; j++) {
                data_d[d + j] = uintBitsToFloat(0x7FC00000u);
            }
        }
        return;
    }
    if (id < p.row_start || id - p.row_start >= p.n_rows) {
        return;  // another part holds this row
    }
    const uint row = p.a_off + (id - p.row_start) * p.row_bytes;
    if (n_here == 8u) {
        vec4 v0;
        vec4 v1;
        dequant8_row(row, p.row_bytes, e, v0, v1);
        for (uint j = 0u; j < 4u; j++) {
            data_d[d + j] = v0[j];
            data_d[d + 4u + j] = v1[j];
        }
        return;
    }
#ifdef A_IS_FLOAT
    for (uint j = 0u; j < n_here; j++) {
        data_d[d + j] = dequant1_row(row, e + j);
    }
#endif
}
