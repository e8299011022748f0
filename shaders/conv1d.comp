#version 450
// Causal depthwise conv1d + SiLU over the qkv channels of a GDN layer (the step after its qkv projection),
// continuing from a per-sequence conv state; NumPy: vkmtp/ref/ops/conv1d.py. For token t of a sequence
// (index m within the sequence in this step), with x_j = u[first + j][c] for j >= 0 and
// x_j = state[seq][K_C - 1 + j][c] for -(K_C-1) <= j < 0:
//   out[t][c] = silu(sum_{k < K_C} W[c][k] * x_{m - (K_C - 1) + k})   (k ascending; W[c][K_C-1]: current)
// New state of a sequence = (x_{n-K_C+1}, ..., x_{n-1}) after its n tokens (the last K_C-1 raw inputs).
// Snapshot m (m < n_snap) = the state as it would be after token m: (x_{m-K_C+2}, ..., x_m).
// State layout, channel fastest: state[state_off + (seq * (K_C - 1) + k) * n_ch + c], k = 0 oldest.
// Snapshots: snapshots[snap_off + ((seq * n_snap + m) * (K_C - 1) + k) * n_ch + c].
//
// Bindings: 0 records (uint; shaders/common/tokens.glsl, only `seq` is read)
//           1 u (raw attn_qkv projection, [n_tok][u_stride] f32 at u_off)
//           2 weight (ssm_conv1d, [n_ch][K_C] f32 at w_off)
//           3 state (live conv states, n_slots slots; read, then rewritten)
//           4 snapshots (n_slots * n_snap states)
//           5 out ([n_tok][out_stride] f32 at out_off)
// Push constants: rec_off, n_tok, n_ch, u_off, u_stride, w_off, state_off, n_slots, snap_off, n_snap,
//   out_off, out_stride (words).
// Spec constants: 0 CHANNELS (local_size_x), 1 TOKEN_LANES (local_size_y), 2 K_C (conv kernel, 2..8).
// Dispatch: (ceil(n_ch / CHANNELS), 1, 1). A workgroup owns CHANNELS channels for every token of the step:
//   all reads of the old state happen before the barrier, all writes of the new state after it, so sequences
//   of any length (and any number of sequences) need no second pass. Tokens whose seq >= n_slots are skipped.
#extension GL_GOOGLE_include_directive : require
#include "tokens.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 0) const uint CHANNELS = 64;
layout(constant_id = 1) const uint TOKEN_LANES = 1;
layout(constant_id = 2) const uint K_C = 4;

layout(std430, binding = 0) readonly buffer Records { uint records[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(std430, binding = 2) readonly buffer Weight { float weight[]; };
layout(std430, binding = 3) buffer State { float state[]; };
layout(std430, binding = 4) writeonly buffer Snapshots { float snapshots[]; };
layout(std430, binding = 5) writeonly buffer Out { float out_x[]; };

layout(push_constant) uniform Push {
    uint rec_off; uint n_tok; uint n_ch;
    uint u_off; uint u_stride; uint w_off;
    uint state_off; uint n_slots; uint snap_off; uint n_snap;
    uint out_off; uint out_stride;
} p;

uint seq_of(uint t) {
    return records[p.rec_off + TOK_SEQ(t)];
}

// Index of token t within its sequence, counted back at most `limit` tokens (exact when < limit).
uint index_in_sequence(uint t, uint seq, uint limit) {
    uint m = 0;
    while (m < limit && m < t && seq_of(t - m - 1) == seq) {
        m++;
    }
    return m;
}

// x_j of the sequence whose token m is token t: from u when j >= 0, else from the old state.
float input_at(int j, uint t, uint m, uint seq, uint c) {
    if (j >= 0) {
        return u[p.u_off + (t - m + uint(j)) * p.u_stride + c];
    }
    return state[p.state_off + (seq * (K_C - 1) + uint(int(K_C) - 1 + j)) * p.n_ch + c];
}

void main() {
    const uint c = gl_GlobalInvocationID.x;
    const bool ch_ok = c < p.n_ch;
    const uint lookback = max(K_C - 1, p.n_snap);
    float w[8];
    for (uint k = 0; k < K_C; ++k) {
        w[k] = ch_ok ? weight[p.w_off + c * K_C + k] : 0.0;
    }
    for (uint t = gl_LocalInvocationID.y; t < p.n_tok && ch_ok; t += TOKEN_LANES) {
        const uint seq = seq_of(t);
        if (seq >= p.n_slots) {
            continue;
        }
        const uint m = index_in_sequence(t, seq, lookback);
        float acc = 0.0;
        for (uint k = 0; k < K_C; ++k) {
            acc += w[k] * input_at(int(m) - int(K_C - 1) + int(k), t, m, seq, c);
        }
        out_x[p.out_off + t * p.out_stride + c] = acc / (1.0 + exp(-acc));
        if (m < p.n_snap) {
            const uint base = p.snap_off + (seq * p.n_snap + m) * (K_C - 1) * p.n_ch + c;
            for (uint k = 0; k + 1 < K_C; ++k) {
                snapshots[base + k * p.n_ch] = input_at(int(m) - int(K_C - 2) + int(k), t, m, seq, c);
            }
        }
    }
    memoryBarrierBuffer();
    barrier();
    // New state: written by the invocation of each sequence's last token, after every old-state read above.
    for (uint t = gl_LocalInvocationID.y; t < p.n_tok && ch_ok; t += TOKEN_LANES) {
        const uint seq = seq_of(t);
        if (seq >= p.n_slots || (t + 1 < p.n_tok && seq_of(t + 1) == seq)) {
            continue;
        }
        const uint m = index_in_sequence(t, seq, K_C - 1);
        float window[8];
        for (uint k = 0; k + 1 < K_C; ++k) {
            window[k] = input_at(int(m) - int(K_C - 2) + int(k), t, m, seq, c);
        }
        for (uint k = 0; k + 1 < K_C; ++k) {
            state[p.state_off + (seq * (K_C - 1) + k) * p.n_ch + c] = window[k];
        }
    }
}
