#version 450
// Chunked (parallel-over-time) Gated DeltaNet for prefill: the update of gdn.comp, evaluated CHUNK tokens at
// a time in the WY/UT form (as flash-linear-attention's chunk_gated_delta_rule). Mathematically identical to
// the recurrence, not bit-identical to it (different summation order); for prompt chunks only, never for a
// decode or verify step (batch invariance). NumPy oracle of the same evaluation: vkmtp/ref/ops/gdn_chunked.py.
// Per value head h (key head h mod n_head_k), per chunk of n_c tokens with S0 the state before the chunk,
// k^, q^ L2-normalised, beta_t = sigmoid(b_t), g_t = ssm_a * softplus(alpha_t + dt_bias),
// G_t = sum_{s<=t} g_s (within the chunk):
//   delta_t = beta_t (v_t - e^{G_t} S0^T k^_t) - sum_{s<t} A[t][s] delta_s,  A[t][s] = beta_t e^{G_t-G_s} k^_t.k^_s
//   o_t     = scale (e^{G_t} S0^T q^_t + sum_{s<=t} B[t][s] delta_s),        B[t][s] = e^{G_t-G_s} q^_t.k^_s
//   S       = e^{G_last} S0 + sum_s k^_s (e^{G_last - G_s} delta_s)^T
// Only A and B (C x C, from k, q, beta and g) couple the value columns. The workgroup stages the chunk's normed
// keys and queries in shared memory and builds A and B together; then each invocation owns one value column j
// (as gdn.comp with one lane per column): its state column S[.][j] stays in registers for the whole sequence
// (loaded once, stored once), and per chunk it forms its deltas by forward substitution, its outputs and its
// state update with no further barrier. Work per token and column: 3 D + C multiply-adds (the recurrence: 4 D).
// Tokens past the end of a short last chunk enter as neutral (beta 0, g 0, k q v 0), so every loop over the
// chunk runs CHUNK times (a constant: the per-column deltas stay in registers).
//
// Bindings and push constants: as gdn.comp (0 records, 1 qkv, 2 gates, 3 head_params, 4 state, 5 unused,
//   6 out); n_snap must be 0 (no snapshots from prefill). The live state ends as the state after the
//   sequence's last token, written where gdn.comp writes it.
// Spec constants: 0 WG_SIZE (local_size_x) = COLS, the value columns of a workgroup (a divisor of D), 1 HEAD_DIM
//   (D), 2 CHUNK (tokens per chunk). Shared memory: (2 * CHUNK * HEAD_DIM + 2 * CHUNK * CHUNK + 4 * CHUNK)
//   floats (vkmtp.ops.gdn_chunked.shared_bytes).
// Dispatch: (D / COLS, n_head_v, Z); workgroup z handles the sequence runs r with r % Z == z. Tokens whose
//   seq >= n_slots are skipped (nothing written).
#extension GL_GOOGLE_include_directive : require
#include "tokens.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 128;
layout(constant_id = 1) const uint HEAD_DIM = 128;
layout(constant_id = 2) const uint CHUNK = 16;

layout(std430, binding = 0) readonly buffer Records { uint records[]; };
layout(std430, binding = 1) readonly buffer Qkv { float qkv[]; };
layout(std430, binding = 2) readonly buffer Gates { float gates[]; };
layout(std430, binding = 3) readonly buffer HeadParams { float head_params[]; };
layout(std430, binding = 4) buffer State { float state[]; };
layout(std430, binding = 6) writeonly buffer Out { float out_o[]; };

layout(push_constant) uniform Push {
    uint rec_off; uint n_tok;
    uint q_off; uint k_off; uint v_off; uint qkv_stride;
    uint b_off; uint alpha_off; uint gate_stride;
    uint ssm_a_off; uint dt_bias_off;
    uint state_off; uint n_slots; uint snap_off; uint n_snap;
    uint out_off; uint out_stride;
    uint n_head_v; uint n_head_k;
    uint eps_bits; uint scale_bits;
} p;

shared float keys[CHUNK * HEAD_DIM];   // k^ of the chunk's tokens, [t][i]
shared float queries[CHUNK * HEAD_DIM];   // q^, [t][i]
shared float mat_a[CHUNK * CHUNK];     // A[t][s] (s < t, else 0)
shared float mat_b[CHUNK * CHUNK];     // B[t][s] (s <= t, else 0)
shared float sh_beta[CHUNK];
shared float sh_g[CHUNK];              // g_t, then the cumulative G_t
shared float sh_inv_k[CHUNK];
shared float sh_inv_q[CHUNK];

float sigmoid(float x) {
    return 1.0 / (1.0 + exp(-x));
}

float log1p_accurate(float y) {
    precise float u = 1.0 + y;
    precise float d = u - 1.0;
    return d == 0.0 ? y : log(u) * (y / d);
}

float softplus(float x) {
    return x > 20.0 ? x : log1p_accurate(exp(x));
}

void sync_shared() {
    memoryBarrierShared();
    barrier();
}

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint h = gl_WorkGroupID.y;
    const uint hk = h % p.n_head_k;
    const uint j = gl_WorkGroupID.x * WG_SIZE + tid;   // this invocation's value column (< D: COLS divides D)
    const uint kq_col = hk * HEAD_DIM;
    const float eps = uintBitsToFloat(p.eps_bits);
    const float scale = uintBitsToFloat(p.scale_bits);
    const float ssm_a = head_params[p.ssm_a_off + h];
    const float dt_bias = head_params[p.dt_bias_off + h];

    float s[HEAD_DIM];    // S[i][j] for i < D: this column of the state
    float dl[CHUNK];      // delta_t of this column
    uint run = 0;
    uint t = 0;
    while (t < p.n_tok) {
        const uint seq = records[p.rec_off + TOK_SEQ(t)];
        uint end = t + 1;
        while (end < p.n_tok && records[p.rec_off + TOK_SEQ(end)] == seq) {
            end++;
        }
        if (run % gl_NumWorkGroups.z == gl_WorkGroupID.z && seq < p.n_slots) {
            const uint base = p.state_off + ((seq * p.n_head_v + h) * HEAD_DIM + j) * HEAD_DIM;
            for (uint i = 0; i < HEAD_DIM; ++i) {
                s[i] = state[base + i];
            }
            for (uint t0 = t; t0 < end; t0 += CHUNK) {
                const uint n_c = min(CHUNK, end - t0);
                // stage the raw keys and queries (zero past n_c)
                for (uint idx = tid; idx < CHUNK * HEAD_DIM; idx += WG_SIZE) {
                    const uint c = idx / HEAD_DIM;   // rows past the chunk read its last token's (in bounds)
                    const uint row = min(t0 + c, end - 1) * p.qkv_stride + kq_col + idx % HEAD_DIM;
                    keys[idx] = c < n_c ? qkv[p.k_off + row] : 0.0;
                    queries[idx] = c < n_c ? qkv[p.q_off + row] : 0.0;
                }
                sync_shared();
                // per-token scalars
                for (uint c = tid; c < CHUNK; c += WG_SIZE) {
                    float kk = 0.0;
                    float qq = 0.0;
                    for (uint i = 0; i < HEAD_DIM; ++i) {
                        kk += keys[c * HEAD_DIM + i] * keys[c * HEAD_DIM + i];
                        qq += queries[c * HEAD_DIM + i] * queries[c * HEAD_DIM + i];
                    }
                    sh_inv_k[c] = 1.0 / max(sqrt(kk), eps);
                    sh_inv_q[c] = 1.0 / max(sqrt(qq), eps);
                    const uint gate_row = min(t0 + c, end - 1) * p.gate_stride + h;
                    sh_beta[c] = c < n_c ? sigmoid(gates[p.b_off + gate_row]) : 0.0;
                    sh_g[c] = c < n_c ? ssm_a * softplus(gates[p.alpha_off + gate_row] + dt_bias) : 0.0;
                }
                sync_shared();
                if (tid == 0) {
                    for (uint c = 1; c < CHUNK; ++c) {
                        sh_g[c] += sh_g[c - 1];
                    }
                }
                for (uint idx = tid; idx < CHUNK * HEAD_DIM; idx += WG_SIZE) {
                    keys[idx] *= sh_inv_k[idx / HEAD_DIM];
                    queries[idx] *= sh_inv_q[idx / HEAD_DIM];
                }
                sync_shared();
                // A and B, the only values shared between columns
                for (uint idx = tid; idx < CHUNK * CHUNK; idx += WG_SIZE) {
                    const uint tt = idx / CHUNK;
                    const uint ss = idx % CHUNK;
                    float kk = 0.0;
                    float qk = 0.0;
                    if (ss <= tt) {
                        for (uint i = 0; i < HEAD_DIM; ++i) {
                            kk += keys[tt * HEAD_DIM + i] * keys[ss * HEAD_DIM + i];
                            qk += queries[tt * HEAD_DIM + i] * keys[ss * HEAD_DIM + i];
                        }
                    }
                    const float decay = ss <= tt ? exp(sh_g[tt] - sh_g[ss]) : 0.0;
                    mat_a[idx] = ss < tt ? sh_beta[tt] * decay * kk : 0.0;
                    mat_b[idx] = decay * qk;
                }
                sync_shared();
                // this column: deltas by forward substitution, outputs
                for (uint c = 0; c < CHUNK; ++c) {
                    float sk = 0.0;
                    float sq = 0.0;
                    for (uint i = 0; i < HEAD_DIM; ++i) {
                        sk += s[i] * keys[c * HEAD_DIM + i];
                        sq += s[i] * queries[c * HEAD_DIM + i];
                    }
                    const float eg = exp(sh_g[c]);
                    const uint v_row = min(t0 + c, end - 1) * p.qkv_stride;
                    const float v = c < n_c ? qkv[p.v_off + v_row + h * HEAD_DIM + j] : 0.0;
                    float r = sh_beta[c] * (v - eg * sk);
                    for (uint u = 0; u < CHUNK; ++u) {   // A[c][u] = 0 for u >= c
                        r -= mat_a[c * CHUNK + u] * (u < c ? dl[u] : 0.0);
                    }
                    dl[c] = r;
                    float o = eg * sq;
                    for (uint u = 0; u < CHUNK; ++u) {   // B[c][u] = 0 for u > c
                        o += mat_b[c * CHUNK + u] * (u <= c ? dl[u] : 0.0);
                    }
                    if (c < n_c) {
                        out_o[p.out_off + (t0 + c) * p.out_stride + h * HEAD_DIM + j] = o * scale;
                    }
                }
                // S <- e^{G_last} S + sum_c k^_c (e^{G_last - G_c} delta_c)
                const float g_last = sh_g[CHUNK - 1];
                for (uint c = 0; c < CHUNK; ++c) {
                    dl[c] *= exp(g_last - sh_g[c]);
                }
                const float e_last = exp(g_last);
                for (uint i = 0; i < HEAD_DIM; ++i) {
                    float acc = e_last * s[i];
                    for (uint c = 0; c < CHUNK; ++c) {
                        acc += keys[c * HEAD_DIM + i] * dl[c];
                    }
                    s[i] = acc;
                }
                sync_shared();   // every invocation is done with this chunk's shared values
            }
            for (uint i = 0; i < HEAD_DIM; ++i) {
                state[base + i] = s[i];
            }
        }
        run++;
        t = end;
    }
}
