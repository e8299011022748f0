// How the mat-vec (matvec.comp, matvec_id.comp) prepares its INPUT columns and writes its OUTPUT, kept apart
// from the weight decoding of matvec_core.glsl, which calls only prepare_input(), load_in8(), load_in1() and
// store_out().
// Fusing these into the mat-vec removes a dispatch and a barrier per fused op (docs/PERFORMANCE.md, "Fused
// mat-vec inputs and outputs"); each mode computes the formula of the kernel it replaces, elementwise in the
// same order; only the norms' sums of squares are summed in the mat-vec's own fixed order (not rms_norm.comp's).
//
// Input modes (at most one define):
//   (none)       x = b[col_x(c) + k]
//   X_NORM       RMSNorm of the whole column folded in (rms_norm.comp): x = (b * s_c) * w[k] with
//                s_c = inversesqrt(sum_k b^2 / n_k + eps). Every workgroup computes s_c itself before its
//                rows: thread t sums b^2 over k = t, t + BLOCK_SIZE, ... (one fma each, in that order), then
//                the workgroup reduction of matvec_core.glsl (subgroupAdd + slots in order, or the tree).
//   X_HEAD_NORM  per-head RMSNorm with a SiLU gate (the GDN output norm, rms_norm.comp GATED) folded in: head
//                h = k / head_dim of column c: x = ((b * s_ch) * w[k % head_dim]) * silu(z), z = b[col_side(c) + k],
//                s_ch = inversesqrt(sum over the head of b^2 / head_dim + eps), the sum by one thread per
//                (column, head), sequential in k.
//   X_SWIGLU     SwiGLU of the gate | up halves folded in (elementwise.comp OP_SWIGLU): g = b[col_x(c) + k],
//                u = b[col_side(c) + k], x = g / (1 + exp(-g)) * u.
// Output modes: (none) d = total; ACCUMULATE d = d + total; D_SIGMOID_ADD (matvec.comp only; the MoE shared
//   expert, elementwise.comp OP_SIGMOID_SCALE_ADD) d = d + (1 / (1 + exp(-s_c))) * total, s_c = b[col_gate(c)].
// A column's scale depends only on that column, BLOCK_SIZE and the subgroup size, never on NUM_COLS or on
// which rows the workgroup computes: the batch invariance of matvec_core.glsl holds.
//
// The including shader declares, besides what matvec_core.glsl needs: push constants p.aux_off (word offset
// of the norm weight in data_aux), p.eps_bits, p.head_dim; uint col_side(uint c); with D_SIGMOID_ADD
// uint col_gate(uint c); and binding IO_AUX_BINDING (the norm weight) with X_NORM or X_HEAD_NORM.
// Included by matvec_core.glsl after its `red` reduction slots.
#ifndef VKMTP_MATVEC_IO_GLSL
#define VKMTP_MATVEC_IO_GLSL

#if defined(X_NORM) || defined(X_HEAD_NORM)
layout(std430, binding = IO_AUX_BINDING) readonly buffer Aux { float data_aux[]; };
#endif

#ifdef X_HEAD_NORM
const uint MAX_IN_HEADS = 64u;   // heads per column (the wrapper checks n_k / head_dim)
shared float in_scale[NUM_COLS * MAX_IN_HEADS];
#else
shared float in_scale[NUM_COLS];
#endif

// Column scales for X_NORM / X_HEAD_NORM, before the weight loop. Every invocation calls it (barriers).
void prepare_input(uint n_k, uint n_cols) {
#if defined(X_NORM)
    const uint tid = gl_LocalInvocationID.x;
    precise float ss[NUM_COLS];
    [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
        ss[c] = 0.0;
        if (c < n_cols) {
            const uint xc = col_x(c);
            for (uint k = tid; k < n_k; k += BLOCK_SIZE) {
                const float v = data_b[xc + k];
                ss[c] = fma(v, v, ss[c]);
            }
        }
    }
#ifdef USE_SUBGROUP_ADD
    [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
        precise float s = subgroupAdd(ss[c]);
        if (gl_SubgroupInvocationID == 0u) {
            red[c * RED_SLOTS + gl_SubgroupID] = s;
        }
    }
    barrier();
    const uint n_slots = gl_NumSubgroups;
#else
    [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
        red[c * RED_SLOTS + tid] = ss[c];
    }
    barrier();
    for (uint s = BLOCK_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            [[unroll]] for (uint c = 0u; c < NUM_COLS; c++) {
                red[c * RED_SLOTS + tid] += red[c * RED_SLOTS + tid + s];
            }
        }
        barrier();
    }
    const uint n_slots = 1u;
#endif
    if (tid < NUM_COLS) {
        precise float total = red[tid * RED_SLOTS];
        for (uint s = 1u; s < n_slots; s++) {
            total += red[tid * RED_SLOTS + s];
        }
        in_scale[tid] = inversesqrt(total / float(n_k) + uintBitsToFloat(p.eps_bits));
    }
    barrier();   // in_scale ready; red free again for the final reduction
#elif defined(X_HEAD_NORM)
    const uint d = p.head_dim;
    const uint n_heads = n_k / d;
    for (uint i = gl_LocalInvocationID.x; i < n_cols * n_heads; i += BLOCK_SIZE) {
        const uint c = i / n_heads;
        const uint h = i - c * n_heads;
        const uint x0 = col_x(c) + h * d;
        precise float ss = 0.0;
        for (uint k = 0u; k < d; k++) {
            const float v = data_b[x0 + k];
            ss = fma(v, v, ss);
        }
        in_scale[c * MAX_IN_HEADS + h] = inversesqrt(ss / float(d) + uintBitsToFloat(p.eps_bits));
    }
    barrier();
#endif
}

// 8 consecutive words of column c's side operand (z gate or up half), aligned like load_x8
void load_side8(uint w, out vec4 s0, out vec4 s1) {
#ifdef B_SCALAR
    s0 = vec4(data_b[w], data_b[w + 1u], data_b[w + 2u], data_b[w + 3u]);
    s1 = vec4(data_b[w + 4u], data_b[w + 5u], data_b[w + 6u], data_b[w + 7u]);
#else
    s0 = data_b4[w >> 2u];
    s1 = data_b4[(w >> 2u) + 1u];
#endif
}

#if defined(X_NORM) || defined(X_HEAD_NORM)
vec4 aux4(uint w) {
    return vec4(data_aux[w], data_aux[w + 1u], data_aux[w + 2u], data_aux[w + 3u]);
}
#endif

vec4 silu4(vec4 g) {
    return g / (1.0 + exp(-g));
}

// Input elements k .. k + 7 of column c (k a multiple of 8), prepared as the input mode says
void load_in8(uint c, uint k, out vec4 x0, out vec4 x1) {
    load_x8(col_x(c) + k, x0, x1);
#if defined(X_NORM)
    const float s = in_scale[c];
    x0 = (x0 * s) * aux4(p.aux_off + k);
    x1 = (x1 * s) * aux4(p.aux_off + k + 4u);
#elif defined(X_HEAD_NORM)
    const uint d = p.head_dim;           // a multiple of 8: the 8 elements share a head
    const uint h = k / d;
    const uint kh = k - h * d;
    const float s = in_scale[c * MAX_IN_HEADS + h];
    vec4 z0;
    vec4 z1;
    load_side8(col_side(c) + k, z0, z1);
    x0 = ((x0 * s) * aux4(p.aux_off + kh)) * silu4(z0);
    x1 = ((x1 * s) * aux4(p.aux_off + kh + 4u)) * silu4(z1);
#elif defined(X_SWIGLU)
    vec4 u0;
    vec4 u1;
    load_side8(col_side(c) + k, u0, u1);
    x0 = silu4(x0) * u0;
    x1 = silu4(x1) * u1;
#endif
}

// One input element (the float types' leftover elements past a multiple of 8)
float load_in1(uint c, uint k) {
    float x = data_b[col_x(c) + k];
#if defined(X_NORM)
    x = (x * in_scale[c]) * data_aux[p.aux_off + k];
#elif defined(X_HEAD_NORM)
    const uint h = k / p.head_dim;
    const float z = data_b[col_side(c) + k];
    x = ((x * in_scale[c * MAX_IN_HEADS + h]) * data_aux[p.aux_off + k - h * p.head_dim]) * (z / (1.0 + exp(-z)));
#elif defined(X_SWIGLU)
    const float u = data_b[col_side(c) + k];
    x = x / (1.0 + exp(-x)) * u;
#endif
    return x;
}

// The reduced result of (row, column c) at word d of the output
void store_out(uint c, uint d, float total) {
#if defined(D_SIGMOID_ADD)
    const float gate = 1.0 / (1.0 + exp(-data_b[col_gate(c)]));
    data_d[d] = data_d[d] + gate * total;
#elif defined(ACCUMULATE)
    data_d[d] = data_d[d] + total;
#else
    data_d[d] = total;
#endif
}

#endif
