#version 450
// Chunked (parallel-over-time) Gated DeltaNet for prefill: the update of gdn.comp, evaluated CHUNK tokens at
// a time in the WY/UT form (as flash-linear-attention's chunk_gated_delta_rule). Mathematically identical to
// the recurrence, not bit-identical to it (different summation order); for prompt chunks only, never for a
// decode or verify step (batch invariance). NumPy oracle of the same evaluation: vkmtp/ref/ops/gdn_chunked.py.
// Per value head h (key head h mod n_head_k), per chunk of n_c tokens with S0 the state before the chunk,
// k^, q^ L2-normalised, beta_t = sigmoid(b_t), g_t = ssm_a * softplus(alpha_t + dt_bias),
// G_t = sum_{s<=t} g_s:
//   r_t     = beta_t (v_t - e^{G_t} S0^T k^_t)
//   delta_t = r_t - sum_{s<t} beta_t e^{G_t - G_s} (k^_t . k^_s) delta_s        (forward substitution)
//   o_t     = scale (e^{G_t} S0^T q^_t + sum_{s<=t} e^{G_t - G_s} (q^_t . k^_s) delta_s)
//   S       = e^{G_last} S0 + sum_s e^{G_last - G_s} k^_s delta_s^T
// Every value column is independent given the chunk's C x C matrices, which depend on k, q, beta and g only.
// A workgroup owns COLS columns of one head; COLS = D (the default) computes the C x C matrices once per head
// and chunk, a smaller COLS gives a GPU more workgroups at the price of recomputing them per column block.
// The chunk's normed keys k^ are staged in shared memory once (they feed A, B, S0^T k^ and the state update);
// q is read from the buffer where it is used (B and S0^T q^).
//
// Bindings and push constants: as gdn.comp (0 records, 1 qkv, 2 gates, 3 head_params, 4 state, 5 unused,
//   6 out); n_snap must be 0 (no snapshots from prefill). The live state ends as the state after the
//   sequence's last token, written to the same place gdn.comp writes it.
// Spec constants: 0 WG_SIZE (local_size_x), 1 HEAD_DIM (D), 2 CHUNK (tokens per chunk), 3 COLS (value columns
//   per workgroup). Shared memory: (CHUNK * CHUNK + CHUNK * COLS + CHUNK * HEAD_DIM + 4 * CHUNK) floats
//   (vkmtp.ops.gdn_chunked.shared_bytes).
// Dispatch: (ceil(D / COLS), n_head_v, Z); workgroup z handles the sequence runs r with r % Z == z.
#extension GL_GOOGLE_include_directive : require
#include "tokens.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 256;
layout(constant_id = 1) const uint HEAD_DIM = 128;
layout(constant_id = 2) const uint CHUNK = 32;
layout(constant_id = 3) const uint COLS = 128;

layout(std430, binding = 0) readonly buffer Records { uint records[]; };
layout(std430, binding = 1) readonly buffer Qkv { float qkv[]; };
layout(std430, binding = 2) readonly buffer Gates { float gates[]; };
layout(std430, binding = 3) readonly buffer HeadParams { float head_params[]; };
layout(std430, binding = 4) coherent buffer State { float state[]; };
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

shared float mat[CHUNK * CHUNK];      // A = beta e^{G_t - G_s} k^k^ (then B = e^{G_t - G_s} q^k^), [t][s]
shared float delta[CHUNK * COLS];     // r, turned into delta in place, [t][column]
shared float keys[CHUNK * HEAD_DIM];  // the chunk's normed keys k^, [t][i]
shared float sh_beta[CHUNK];
shared float sh_g[CHUNK];             // cumulative log-decay G_t
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

void sync() {
    memoryBarrierShared();
    memoryBarrierBuffer();
    barrier();
}

// One chunk of tokens [t0, t0 + n_c) of a sequence whose state starts at word `sbase` (column 0, row 0).
void process_chunk(uint t0, uint n_c, uint sbase, uint h, uint hk, uint j0) {
    const uint tid = gl_LocalInvocationIndex;
    const float eps = uintBitsToFloat(p.eps_bits);
    const uint kq_col = hk * HEAD_DIM;
    // per-token scalars
    for (uint t = tid; t < n_c; t += WG_SIZE) {
        const uint row = (t0 + t) * p.qkv_stride + kq_col;
        float kk = 0.0;
        float qq = 0.0;
        for (uint i = 0; i < HEAD_DIM; ++i) {
            const float kv = qkv[p.k_off + row + i];
            const float qv = qkv[p.q_off + row + i];
            kk += kv * kv;
            qq += qv * qv;
        }
        sh_inv_k[t] = 1.0 / max(sqrt(kk), eps);
        sh_inv_q[t] = 1.0 / max(sqrt(qq), eps);
        sh_beta[t] = sigmoid(gates[p.b_off + (t0 + t) * p.gate_stride + h]);
        const float alpha = gates[p.alpha_off + (t0 + t) * p.gate_stride + h];
        sh_g[t] = head_params[p.ssm_a_off + h] * softplus(alpha + head_params[p.dt_bias_off + h]);
    }
    sync();
    if (tid == 0) {
        for (uint t = 1; t < n_c; ++t) {
            sh_g[t] += sh_g[t - 1];
        }
    }
    // normed keys, once per chunk
    for (uint idx = tid; idx < n_c * HEAD_DIM; idx += WG_SIZE) {
        const uint t = idx / HEAD_DIM;
        const uint i = idx % HEAD_DIM;
        keys[idx] = qkv[p.k_off + (t0 + t) * p.qkv_stride + kq_col + i] * sh_inv_k[t];
    }
    sync();
    // A[t][s] = beta_t e^{G_t - G_s} (k^_t . k^_s), s < t
    for (uint idx = tid; idx < n_c * n_c; idx += WG_SIZE) {
        const uint t = idx / n_c;
        const uint s = idx % n_c;
        if (s < t) {
            float dot = 0.0;
            for (uint i = 0; i < HEAD_DIM; ++i) {
                dot += keys[t * HEAD_DIM + i] * keys[s * HEAD_DIM + i];
            }
            mat[t * CHUNK + s] = sh_beta[t] * exp(sh_g[t] - sh_g[s]) * dot;
        }
    }
    // r_t = beta_t (v_t - e^{G_t} S0^T k^_t) for this workgroup's columns
    for (uint idx = tid; idx < n_c * COLS; idx += WG_SIZE) {
        const uint t = idx / COLS;
        const uint c = idx % COLS;
        const uint j = j0 + c;
        if (j < HEAD_DIM) {
            float dot = 0.0;
            for (uint i = 0; i < HEAD_DIM; ++i) {
                dot += state[sbase + j * HEAD_DIM + i] * keys[t * HEAD_DIM + i];
            }
            const float v = qkv[p.v_off + (t0 + t) * p.qkv_stride + h * HEAD_DIM + j];
            delta[t * COLS + c] = sh_beta[t] * (v - exp(sh_g[t]) * dot);
        }
    }
    sync();
    // forward substitution: delta_t = r_t - sum_{s<t} A[t][s] delta_s
    for (uint t = 1; t < n_c; ++t) {
        for (uint c = tid; c < COLS; c += WG_SIZE) {
            float acc = delta[t * COLS + c];
            for (uint s = 0; s < t; ++s) {
                acc -= mat[t * CHUNK + s] * delta[s * COLS + c];
            }
            delta[t * COLS + c] = acc;
        }
        sync();
    }
    // B[t][s] = e^{G_t - G_s} (q^_t . k^_s), s <= t
    for (uint idx = tid; idx < n_c * n_c; idx += WG_SIZE) {
        const uint t = idx / n_c;
        const uint s = idx % n_c;
        if (s <= t) {
            const uint rq = p.q_off + (t0 + t) * p.qkv_stride + kq_col;
            float dot = 0.0;
            for (uint i = 0; i < HEAD_DIM; ++i) {
                dot += qkv[rq + i] * keys[s * HEAD_DIM + i];
            }
            mat[t * CHUNK + s] = exp(sh_g[t] - sh_g[s]) * (dot * sh_inv_q[t]);
        }
    }
    sync();
    // o_t = scale (e^{G_t} S0^T q^_t + sum_{s<=t} B[t][s] delta_s)
    const float scale = uintBitsToFloat(p.scale_bits);
    for (uint idx = tid; idx < n_c * COLS; idx += WG_SIZE) {
        const uint t = idx / COLS;
        const uint c = idx % COLS;
        const uint j = j0 + c;
        if (j < HEAD_DIM) {
            const uint rq = p.q_off + (t0 + t) * p.qkv_stride + kq_col;
            float dot = 0.0;
            for (uint i = 0; i < HEAD_DIM; ++i) {
                dot += state[sbase + j * HEAD_DIM + i] * qkv[rq + i];
            }
            float acc = exp(sh_g[t]) * (dot * sh_inv_q[t]);
            for (uint s = 0; s <= t; ++s) {
                acc += mat[t * CHUNK + s] * delta[s * COLS + c];
            }
            out_o[p.out_off + (t0 + t) * p.out_stride + h * HEAD_DIM + j] = acc * scale;
        }
    }
    sync();   // every read of S0 and of delta above happens before the changes below
    // S = e^{G_last} S0 + sum_s k^_s (e^{G_last - G_s} delta_s)^T: delta scaled in place first (one exp per
    // token and column instead of one per state element and token)
    const float g_last = sh_g[n_c - 1];
    for (uint idx = tid; idx < n_c * COLS; idx += WG_SIZE) {
        delta[idx] *= exp(g_last - sh_g[idx / COLS]);
    }
    sync();
    for (uint idx = tid; idx < HEAD_DIM * COLS; idx += WG_SIZE) {
        const uint i = idx % HEAD_DIM;
        const uint c = idx / HEAD_DIM;
        const uint j = j0 + c;
        if (j < HEAD_DIM) {
            const uint at = sbase + j * HEAD_DIM + i;
            float acc = exp(g_last) * state[at];
            for (uint s = 0; s < n_c; ++s) {
                acc += keys[s * HEAD_DIM + i] * delta[s * COLS + c];
            }
            state[at] = acc;
        }
    }
    sync();
}

void main() {
    const uint h = gl_WorkGroupID.y;
    const uint hk = h % p.n_head_k;
    const uint j0 = gl_WorkGroupID.x * COLS;
    uint run = 0;
    uint t = 0;
    while (t < p.n_tok) {
        const uint seq = records[p.rec_off + TOK_SEQ(t)];
        uint end = t + 1;
        while (end < p.n_tok && records[p.rec_off + TOK_SEQ(end)] == seq) {
            end++;
        }
        if (run % gl_NumWorkGroups.z == gl_WorkGroupID.z && seq < p.n_slots) {
            const uint sbase = p.state_off + (seq * p.n_head_v + h) * HEAD_DIM * HEAD_DIM;
            for (uint t0 = t; t0 < end; t0 += CHUNK) {
                process_chunk(t0, min(CHUNK, end - t0), sbase, h, hk, j0);
            }
        }
        run++;
        t = end;
    }
}
