// The weight-decoding half of the quantized mat-vec (matvec_core.glsl includes it): one 32-element span of
// NUM_ROWS rows, decoded once and dotted against every column's activations.
//
// Why this shape. The span's block header (dq_span_sm: one (scale, min) pair, two for the 16-element-scale
// types) is decoded once per span and row. The span is then walked in 8-element chunks: each column's 8
// activations of the chunk are loaded once, then each row's 8 quants are decoded (dq_quants8) and dotted
// against every column, so what is live is 8 quants and 8 activations per column, not 32 quants per row, and
// every activation load feeds NUM_ROWS rows (on a driver where each lane's load is a separate gather, lavapipe,
// the activation loads are what a second column costs; rows per workgroup come from the tuning profile).
//
// Reduction order (batch invariance, and the same results as the unsplit span): per (row, column) and per
// 16-element half h of the span, the dot sum(q x) is one product then 15 fmas in element order, carried across
// the two 8-element chunks of the half. Types with one scale per 32 add the two halves' dots and scale once:
// acc = fma(d0 + d1, scale, acc); 16-element-scale types scale each half: acc = fma(d0, s0, acc),
// acc = fma(d1, s1, acc). Types with a min then add fma(sum16(x), min, acc) per half, sum16 = per-component
// (x0 + x1) + (x2 + x3) of the half's four vec4, then (v.x + v.y) + (v.z + v.w). None of it depends on
// NUM_COLS or NUM_ROWS, and all of it is `precise`.
//
// Requires before the include: dequant.glsl (a quantized DATA_A_<TYPE>), NUM_ROWS, NUM_COLS, RED_VALUES,
// the private arrays mv_acc[RED_VALUES] (accumulators, row-major over columns) and mv_row[NUM_ROWS] (byte of
// each row's first block), mv_row_bytes (bytes per row), and load_in8(c, k, x0, x1) (matvec_io.glsl: column
// c's input elements k .. k + 7, prepared as the input mode says).
#ifndef VKMTP_MATVEC_SPAN_GLSL
#define VKMTP_MATVEC_SPAN_GLSL

// The running dot of the current half, continued over one 8-element chunk (first: start the chain).
float dot8_chain(float s, bool first, vec4 q0, vec4 q1, vec4 x0, vec4 x1) {
    precise float t = first ? q0.x * x0.x : fma(q0.x, x0.x, s);
    t = fma(q0.y, x0.y, t);
    t = fma(q0.z, x0.z, t);
    t = fma(q0.w, x0.w, t);
    t = fma(q1.x, x1.x, t);
    t = fma(q1.y, x1.y, t);
    t = fma(q1.z, x1.z, t);
    t = fma(q1.w, x1.w, t);
    return t;
}

// Span of elements e..e+31 (e % 32 == 0) of the NUM_ROWS rows times the first n_cols columns, into mv_acc.
void mv_span(uint e, uint n_cols) {
    const uint blk = e / A_BLOCK_K;
    const uint i = e - blk * A_BLOCK_K;
    DQ_BLK at[NUM_ROWS];
    vec4 sm[NUM_ROWS];
    [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
        at[r] = dq_block(mv_row[r], mv_row_bytes, blk);
        sm[r] = dq_span_sm(at[r], i);
    }
    precise float d[RED_VALUES];       // running dot of the current half, per (row, column)
#ifndef A_SCALE16
    precise float d0[RED_VALUES];      // the first half's dot, added to the second's before scaling
#endif
#ifdef A_HAS_MIN
    precise vec4 xs[NUM_COLS];         // per-component activation sum of the current half
    precise float sx0[NUM_COLS];       // the first half's sum16
#endif
    [[unroll]] for (uint h = 0u; h < 2u; h++) {
        [[unroll]] for (uint s = 0u; s < 2u; s++) {
            const uint k = 16u * h + 8u * s;
            vec4 x0[NUM_COLS];
            vec4 x1[NUM_COLS];
            [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
                if (c < n_cols) {
                    load_in8(c, e + k, x0[c], x1[c]);
#ifdef A_HAS_MIN
                    precise vec4 pair = x0[c] + x1[c];
                    xs[c] = s == 0u ? pair : xs[c] + pair;
#endif
                }
            }
            [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
                vec4 q0;
                vec4 q1;
                dq_quants8(at[r], i + k, q0, q1);
                [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
                    if (c < n_cols) {
                        d[r * NUM_COLS + c] = dot8_chain(d[r * NUM_COLS + c], s == 0u, q0, q1, x0[c], x1[c]);
                    }
                }
            }
        }
        // the half is complete: scale it (16-element scales) or keep it for the second half
        [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
            if (c < n_cols) {
#ifdef A_HAS_MIN
                precise float sx = (xs[c].x + xs[c].y) + (xs[c].z + xs[c].w);
#endif
                [[unroll]] for (uint r = 0u; r < NUM_ROWS; r++) {
                    const uint rc = r * NUM_COLS + c;
#ifdef A_SCALE16
                    mv_acc[rc] = fma(d[rc], h == 0u ? sm[r].x : sm[r].z, mv_acc[rc]);
#else
                    if (h == 0u) {
                        d0[rc] = d[rc];
                    } else {
                        precise float dd = d0[rc] + d[rc];
                        mv_acc[rc] = fma(dd, sm[r].x, mv_acc[rc]);
                    }
#endif
#ifdef A_HAS_MIN
                    if (h == 1u) {
                        mv_acc[rc] = fma(sx0[c], sm[r].y, mv_acc[rc]);
                        mv_acc[rc] = fma(sx, sm[r].w, mv_acc[rc]);
                    }
#endif
                }
#ifdef A_HAS_MIN
                sx0[c] = sx;
#endif
            }
        }
    }
}

#endif
