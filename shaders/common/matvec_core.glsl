// The body shared by matvec.comp and matvec_id.comp: NUM_ROWS rows of a quantized weight times up to NUM_COLS
// activation columns, reduced over the workgroup and written (or added) to the output.
//
// The including shader declares, before including this file:
//   buffers  data_a (uint: weights), data_b (float) and data_b4 (vec4) aliasing the activations,
//            data_d (float)
//   spec constants BLOCK_SIZE (= local_size_x), NUM_ROWS, NUM_COLS, SUBGROUP_SIZE
//   uint col_x(uint c)  word offset of activation column c
//   uint col_d(uint c)  word offset of output column c
// Defines: DATA_A_<TYPE> (dequant.glsl), USE_SUBGROUP_ADD (subgroupAdd + shared memory across subgroups;
//          otherwise a shared-memory tree), ACCUMULATE (d += W x instead of d = W x),
//          B_SCALAR (activation columns not 16-byte aligned: scalar loads); X_NORM, X_HEAD_NORM, X_SWIGLU,
//          D_SIGMOID_ADD: how input columns are prepared and results written (common/matvec_io.glsl)
//
// Work split and BATCH INVARIANCE. Quantized types: thread t of the workgroup owns the 32-element spans t,
// t + BLOCK_SIZE, ... of every row (MV_ITER_K elements per iteration); matvec_span.glsl decodes each span's
// block header once, then its quants 8 at a time, each chunk dotted against every column before the next is
// decoded (the order of operations per (row, column) is written there). Float types (F32/F16/BF16) keep
// 8-element groups with the values dequantized directly. Column c's accumulator therefore sees the same
// operations in the same order whatever NUM_COLS (and NUM_ROWS) is; the cross-thread reduction is the same
// fixed tree / subgroupAdd per (row, column). All arithmetic feeding an accumulator is `precise` with explicit
// fma(), so no compiler may contract or reorder it differently between variants: column c is bit-identical
// for NUM_COLS = 1 and n.
//
// NO CLIFF AT ODD COLUMN COUNTS. The per-column work is the same straight-line block for every column (no
// vectorization across columns, no column tiling that leaves a remainder at 3, 5, 6 or 7). Live registers
// are 8 * NUM_ROWS decoded quants + 8 activations + a few floats per (row, column); activation vectors are
// loaded per chunk and column (from cache) instead of being held for all columns.
#ifndef VKMTP_MATVEC_CORE_GLSL
#define VKMTP_MATVEC_CORE_GLSL

#extension GL_EXT_control_flow_attributes : require
#ifdef USE_SUBGROUP_ADD
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#include "dequant.glsl"

#ifdef USE_SUBGROUP_ADD
const uint RED_SLOTS = BLOCK_SIZE / SUBGROUP_SIZE;  // one partial sum per subgroup
#else
const uint RED_SLOTS = BLOCK_SIZE;                  // one partial sum per thread (BLOCK_SIZE a power of 2)
#endif
const uint RED_VALUES = NUM_ROWS * NUM_COLS;
shared float red[RED_VALUES * RED_SLOTS];

// 8 activations from word xw: two vec4 loads, or 8 scalar loads when B_SCALAR says the activations are not
// 16-byte aligned (a define rather than a run-time branch: it halves the code the driver has to compile)
void load_x8(uint xw, out vec4 x0, out vec4 x1) {
#ifdef B_SCALAR
    x0 = vec4(data_b[xw], data_b[xw + 1u], data_b[xw + 2u], data_b[xw + 3u]);
    x1 = vec4(data_b[xw + 4u], data_b[xw + 5u], data_b[xw + 6u], data_b[xw + 7u]);
#else
    x0 = data_b4[xw >> 2u];
    x1 = data_b4[(xw >> 2u) + 1u];
#endif
}

// input preparation and output write (fused norms, SwiGLU, gated add): prepare_input, load_in8, store_out
#include "matvec_io.glsl"

#ifdef A_IS_FLOAT
const uint MV_ITER_K = 8u;
#else
const uint MV_ITER_K = 32u;
#endif

// Per-thread state of matvec_rows, private globals so that matvec_span.glsl's mv_span can update them:
// mv_acc[r * NUM_COLS + c] accumulates row r, column c; mv_row[r] is the byte of row r's first element,
// mv_row_bytes the bytes per row (the A_SPLIT types' scales follow a row's quants).
// mv_acc is not `precise` (glslang mis-compiles precise global arrays): every update is an explicit fma or a
// precise value.
float mv_acc[RED_VALUES];
uint mv_row[NUM_ROWS];
uint mv_row_bytes;

#ifndef A_IS_FLOAT
#include "matvec_span.glsl"
#endif

// sum_j w_j x_j over 8 elements: one product then 7 fused multiply-adds, always in this order
float dot8(vec4 w0, vec4 w1, vec4 x0, vec4 x1) {
    precise float s = w0.x * x0.x;
    s = fma(w0.y, x0.y, s);
    s = fma(w0.z, x0.z, s);
    s = fma(w0.w, x0.w, s);
    s = fma(w1.x, x1.x, s);
    s = fma(w1.y, x1.y, s);
    s = fma(w1.z, x1.z, s);
    s = fma(w1.w, x1.w, s);
    return s;
}

// Rows first_row .. first_row + NUM_ROWS - 1 (those < n_rows are written) of the weight whose row 0 is at
// byte a_base, times the first n_cols (<= NUM_COLS, uniform) columns. Unless B_SCALAR, every col_x(c) is a
// multiple of 4.
void matvec_rows(uint a_base, uint row_bytes, uint n_k, uint first_row, uint n_rows, uint n_cols) {
    const uint tid = gl_LocalInvocationID.x;
    [[unroll]] for (uint i = 0u; i < RED_VALUES; i++) {
        mv_acc[i] = 0.0;
    }
    prepare_input(n_k, n_cols);
    mv_row_bytes = row_bytes;
    [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
        // rows past the end re-read the last row (never written): every thread runs the same loop
        mv_row[r] = a_base + min(first_row + r, n_rows - 1u) * row_bytes;
    }

#ifdef A_IS_FLOAT
    const uint n_groups = n_k >> 3u;
    for (uint g = tid; g < n_groups; g += BLOCK_SIZE) {
        const uint e = g << 3u;
        vec4 w0[NUM_ROWS];
        vec4 w1[NUM_ROWS];
        [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
            dequant8_row(mv_row[r], row_bytes, e, w0[r], w1[r]);
        }
        [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
            if (c < n_cols) {
                vec4 x0;
                vec4 x1;
                load_in8(c, e, x0, x1);
                [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
                    precise float a = mv_acc[r * NUM_COLS + c] + dot8(w0[r], w1[r], x0, x1);
                    mv_acc[r * NUM_COLS + c] = a;
                }
            }
        }
    }
#else
    const uint n_spans = n_k >> 5u;  // quantized rows are whole blocks: a multiple of 32 elements
    for (uint g = tid; g < n_spans; g += BLOCK_SIZE) {
        mv_span(g << 5u, n_cols);
    }
#endif
#ifdef A_IS_FLOAT
    // a row length that is not a multiple of 8: the thread that owns the next group takes the 1..7 leftovers
    if ((n_groups << 3u) < n_k && tid == n_groups % BLOCK_SIZE) {
        for (uint e = n_groups << 3u; e < n_k; e++) {
            [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
                float w = dequant1_row(mv_row[r], e);
                [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
                    if (c < n_cols) {
                        mv_acc[r * NUM_COLS + c] = fma(w, load_in1(c, e), mv_acc[r * NUM_COLS + c]);
                    }
                }
            }
        }
    }
#endif

    // reduce every (row, column) accumulator over the workgroup, in a fixed order
#ifdef USE_SUBGROUP_ADD
    [[unroll]] for (uint i = 0u; i < RED_VALUES; i++) {
        precise float s = subgroupAdd(mv_acc[i]);
        if (gl_SubgroupInvocationID == 0u) {
            red[i * RED_SLOTS + gl_SubgroupID] = s;
        }
    }
    barrier();
    const uint n_slots = gl_NumSubgroups;
#else
    [[unroll]] for (uint i = 0u; i < RED_VALUES; i++) {
        red[i * RED_SLOTS + tid] = mv_acc[i];
    }
    barrier();
    for (uint s = BLOCK_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            [[unroll]] for (uint i = 0u; i < RED_VALUES; i++) {
                red[i * RED_SLOTS + tid] += red[i * RED_SLOTS + tid + s];
            }
        }
        barrier();
    }
    const uint n_slots = 1u;
#endif
    for (uint i = tid; i < RED_VALUES; i += BLOCK_SIZE) {
        const uint r = i / NUM_COLS;
        const uint c = i - r * NUM_COLS;
        if (first_row + r < n_rows && c < n_cols) {
            precise float total = red[i * RED_SLOTS];
            for (uint s = 1u; s < n_slots; s++) {
                total += red[i * RED_SLOTS + s];
            }
            const uint d = col_d(c) + first_row + r;
            store_out(c, d, total);
        }
    }
}

#endif
