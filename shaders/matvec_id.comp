#version 450
// Expert-indexed mat-vec (MoE decode / verify): for every (token t, slot j) entry routed to expert
// e = ids[t, j]:
//   d[t * n_used + j][row] = sum_k W_e[row][k] * b[x_row][k],   x_row = t (gate/up: one input per token)
//                                                              or t * n_used + j (down: one input per slot)
// Work is grouped by expert (matvec_id_routes.comp): workgroup (x, u) computes NUM_ROWS rows of group u's
// expert for all of the group's entries (up to NUM_COLS tokens), so each distinct expert's weights are read
// once per dispatch. Batch invariant: an entry's result does not depend on which other entries share its
// group (same per-thread order and reduction as matvec.comp, see matvec_core.glsl).
// An expert stack larger than maxStorageBufferRange is split by experts: one dispatch per part, each doing
// the groups whose expert lies in [expert_start, expert_start + n_experts). Ids >= n_expert_total give NaN
// rows (written by the part with expert_start == 0).
// Bindings: 0 data_a (uint words: experts of this part; expert e's row r at byte
//                     a_off + ((e - expert_start) * n_rows + r) * row_bytes)
//           1 data_b (f32 inputs; aliased as vec4 data_b4)   2 data_d (f32 output)
//           3 routes (uint: matvec_id_routes.comp output for n_entries = n_tok * n_used entries,
//                     group capacity NUM_COLS)
// Push constants: a_off (bytes), row_bytes, n_k, n_rows, expert_start, n_experts, n_expert_total,
//                 b_off, b_stride, b_per_slot (0: x_row = t, 1: x_row = entry), d_off, d_stride (words),
//                 routes_off (words), n_entries, n_used, aux_off (norm weight, words), eps (f32 bits),
//                 head_dim, side_off (X_SWIGLU: an input's up half at side_off words after its gate half)
//           4 data_aux (f32 norm weight; only with X_NORM / X_HEAD_NORM)
// Spec constants: 0 BLOCK_SIZE, 1 NUM_ROWS, 2 NUM_COLS (group capacity: min(n_tok, 8)), 3 SUBGROUP_SIZE
// Defines: DATA_A_<TYPE>, A_ALIGN8 (A_SPLIT type, a_off and each expert's rows 8-byte aligned: dequant.glsl),
//          USE_SUBGROUP_ADD, B_SCALAR (see matvec_core.glsl), X_NORM | X_SWIGLU
//          (common/matvec_io.glsl)
// Dispatch: x = ceil(n_rows / NUM_ROWS), y = n_entries (an upper bound on the number of groups)
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
layout(std430, binding = 2) writeonly buffer D { float data_d[]; };
layout(std430, binding = 3) readonly buffer Routes { uint routes[]; };
layout(push_constant) uniform Push {
    uint a_off;
    uint row_bytes;
    uint n_k;
    uint n_rows;
    uint expert_start;
    uint n_experts;
    uint n_expert_total;
    uint b_off;
    uint b_stride;
    uint b_per_slot;
    uint d_off;
    uint d_stride;
    uint routes_off;
    uint n_entries;
    uint n_used;
    uint aux_off;
    uint eps_bits;
    uint head_dim;
    uint side_off;
} p;

uint x_cols[NUM_COLS];
uint d_cols[NUM_COLS];
uint col_x(uint c) { return x_cols[c]; }
uint col_d(uint c) { return d_cols[c]; }
uint col_side(uint c) { return x_cols[c] + p.side_off; }
#define IO_AUX_BINDING 4

#include "matvec_core.glsl"

void main() {
    const uint u = gl_WorkGroupID.y;
    const uint first_row = gl_WorkGroupID.x * NUM_ROWS;
    const uint n = p.n_entries;
    if (u >= routes[p.routes_off] || first_row >= p.n_rows) {
        return;
    }
    const uint e = routes[p.routes_off + 1u + u];
    const uint n_cols = routes[p.routes_off + 1u + n + u];
    [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
        const uint entry = routes[p.routes_off + 1u + 2u * n + u * NUM_COLS + min(c, n_cols - 1u)];
        x_cols[c] = p.b_off + (p.b_per_slot != 0u ? entry : entry / p.n_used) * p.b_stride;
        d_cols[c] = p.d_off + entry * p.d_stride;
    }
    if (e >= p.n_expert_total) {
        if (p.expert_start == 0u) {
            for (uint i = gl_LocalInvocationID.x; i < NUM_ROWS * n_cols; i += BLOCK_SIZE) {
                const uint r = first_row + i / n_cols;
                if (r < p.n_rows) {
                    data_d[d_cols[i % n_cols] + r] = uintBitsToFloat(0x7FC00000u);
                }
            }
        }
        return;
    }
    if (e < p.expert_start || e - p.expert_start >= p.n_experts) {
        return;  // another part holds this expert
    }
    const uint a_base = p.a_off + (e - p.expert_start) * p.n_rows * p.row_bytes;
    matvec_rows(a_base, p.row_bytes, p.n_k, first_row, p.n_rows, n_cols);
}
