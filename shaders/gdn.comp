#version 450
// Gated DeltaNet recurrence for 1..T tokens in one dispatch (the token loop runs inside the shader), with the
// input gates and the q/k L2 norm fused in. Per value head h (key head hk = h mod n_head_k, tiled mapping),
// per token of a sequence:
//   beta  = sigmoid(b[t][h]);  g = ssm_a[h] * softplus(alpha[t][h] + dt_bias[h]);  (softplus threshold 20)
//   k^ = k / max(|k|, eps), q^ = q / max(|q|, eps)
//   S <- exp(g) S;  delta = beta (v - S^T k^);  S <- S + k^ (x) delta;  o = S^T q^ * scale
// State S (D x D f32) is stored per value column j, contiguous over the key index i:
//   state[state_off + ((seq * n_head_v + h) * D + j) * D + i]
// LANES_PER_COLUMN lanes own one column j; lane l keeps rows l, l+L, l+2L, ... in registers. Two cross-lane
// reductions per token: (S^T k, |k|^2, |q|^2) and S^T q. The norms scale the dot products afterwards.
//
// Bindings: 0 records  (uint words; shaders/common/tokens.glsl, only `seq` is read)
//           1 qkv      (q, k, v rows of the conv output; q_off/k_off/v_off, one row stride)
//           2 gates    (raw b and alpha projections, [n_tok][gate_stride] each at b_off / alpha_off)
//           3 head_params (ssm_a at ssm_a_off, dt_bias at dt_bias_off; n_head_v floats each)
//           4 state    (live state, n_slots slots of n_head_v * D * D floats; read and written)
//           5 snapshots (n_slots * n_snap states: snapshot m of slot s = state after the token with index m
//                        within its sequence in this step, at snap_off + (s * n_snap + m) * n_head_v*D*D)
//           6 out      (o, [n_tok][out_stride], head h at h * D)
// Push constants: rec_off, n_tok, q_off, k_off, v_off, qkv_stride, b_off, alpha_off, gate_stride, ssm_a_off,
//   dt_bias_off, state_off, n_slots, snap_off, n_snap, out_off, out_stride, n_head_v, n_head_k,
//   eps (f32 bits), scale (f32 bits). All offsets and strides in words.
// Spec constants: 0 WG_SIZE (local_size_x, a multiple of LANES_PER_COLUMN), 1 HEAD_DIM (D),
//   2 LANES_PER_COLUMN (power of two, <= HEAD_DIM).
// Defines: REDUCE_SHUFFLE (subgroupShuffleXor butterfly; bit-identical to the default shared-memory
//   butterfly), REDUCE_CLUSTERED (subgroupClusteredAdd), LOG_STEPS (binding 5 is a step log instead of
//   snapshots: entry (s, m, h) at snap_off + ((s * n_snap + m) * n_head_v + h) * (1 + 2D) holds the decay
//   exp(g), delta[j] for j < D, then k^[i] for i < D, of the sequence's token m (every token of a sequence
//   must have m < n_snap), and the live state is NOT written: shaders/gdn_replay.comp later redoes the first
//   tokens of each sequence from the log, bit for bit, once the number of accepted tokens is known).
//   The state update of a token is the two functions of common/gdn_update.glsl, shared with the replay. Lanes are numbered by gl_LocalInvocationIndex. At
//   the start the shader checks, on integer sums, that the subgroup reduction over LANES_PER_COLUMN
//   consecutive invocations really gives each column's sum on this driver (it does not when a column
//   straddles subgroups, when the driver runs another width than it reports, or maps invocations to lanes
//   differently); if not, the whole dispatch uses the shared-memory butterfly.
// Dispatch: (ceil(D / COLS_PER_WG), n_head_v, Z). Workgroup z processes the sequences (runs of equal `seq`
//   in the records) with run index r, r % Z == z, so any Z >= 1 is correct; Z = number of sequences in the
//   step gives one sequence per workgroup. Tokens whose seq >= n_slots are skipped (nothing written).
#extension GL_GOOGLE_include_directive : require
#if defined(REDUCE_SHUFFLE) || defined(REDUCE_CLUSTERED)
#extension GL_KHR_shader_subgroup_basic : require
#endif
#ifdef REDUCE_SHUFFLE
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#ifdef REDUCE_CLUSTERED
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_clustered : require
#endif
#include "tokens.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG_SIZE = 64;
layout(constant_id = 1) const uint HEAD_DIM = 128;
layout(constant_id = 2) const uint LANES_PER_COLUMN = 8;
const uint ROWS_PER_LANE = HEAD_DIM / LANES_PER_COLUMN;
const uint COLS_PER_WG = WG_SIZE / LANES_PER_COLUMN;
const uint LOG_WORDS = 1 + 2 * HEAD_DIM;   // one token of one head in the step log (LOG_STEPS)

layout(std430, binding = 0) readonly buffer Records { uint records[]; };
layout(std430, binding = 1) readonly buffer Qkv { float qkv[]; };
layout(std430, binding = 2) readonly buffer Gates { float gates[]; };
layout(std430, binding = 3) readonly buffer HeadParams { float head_params[]; };
layout(std430, binding = 4) buffer State { float state[]; };
layout(std430, binding = 5) writeonly buffer Snapshots { float snapshots[]; };
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

shared vec3 red[WG_SIZE];
shared uint subgroup_ok;

// Butterfly over the LANES_PER_COLUMN lanes of a column: at step s every lane adds its partner's value
// (lane ^ s). Both partners compute the same sum (a + b == b + a), so all lanes end with identical bits,
// in the same order as the subgroupShuffleXor butterfly below.
vec3 butterfly_shared(vec3 v, uint lin) {
    for (uint s = 1; s < LANES_PER_COLUMN; s <<= 1) {
        red[lin] = v;
        memoryBarrierShared();
        barrier();
        const vec3 other = red[lin ^ s];
        memoryBarrierShared();
        barrier();
        v = v + other;
    }
    return v;
}

vec3 column_sum(vec3 v, uint lin, bool use_subgroup) {
    if (LANES_PER_COLUMN == 1) {
        return v;
    }
#if defined(REDUCE_SHUFFLE)
    if (use_subgroup) {
        for (uint s = 1; s < LANES_PER_COLUMN; s <<= 1) {
            v = v + subgroupShuffleXor(v, s);
        }
        return v;
    }
#elif defined(REDUCE_CLUSTERED)
    // The cluster size must be a literal constant (a spec constant is refused); these branches fold away.
    if (use_subgroup) {
        switch (LANES_PER_COLUMN) {
            case 2: return subgroupClusteredAdd(v, 2);
            case 4: return subgroupClusteredAdd(v, 4);
            case 8: return subgroupClusteredAdd(v, 8);
            case 16: return subgroupClusteredAdd(v, 16);
            case 32: return subgroupClusteredAdd(v, 32);
            case 64: return subgroupClusteredAdd(v, 64);
            case 128: return subgroupClusteredAdd(v, 128);
            default: break;
        }
    }
#endif
    return butterfly_shared(v, lin);
}

#include "gdn_update.glsl"

float sigmoid(float x) {
    return 1.0 / (1.0 + exp(-x));
}

// log(1 + y) without losing small y (Goldberg's trick); `precise` stops (u - 1) from being folded to y.
float log1p_accurate(float y) {
    precise float u = 1.0 + y;
    precise float d = u - 1.0;
    return d == 0.0 ? y : log(u) * (y / d);
}

float softplus(float x) {
    return x > 20.0 ? x : log1p_accurate(exp(x));
}

#if defined(REDUCE_SHUFFLE) || defined(REDUCE_CLUSTERED)
uint lane_hash(uint i) {
    return (i + 1u) * 2654435761u;
}

uint subgroup_column_sum(uint v) {
#if defined(REDUCE_SHUFFLE)
    for (uint s = 1; s < LANES_PER_COLUMN; s <<= 1) {
        v += subgroupShuffleXor(v, s);
    }
#else
    switch (LANES_PER_COLUMN) {
        case 2: v = subgroupClusteredAdd(v, 2); break;
        case 4: v = subgroupClusteredAdd(v, 4); break;
        case 8: v = subgroupClusteredAdd(v, 8); break;
        case 16: v = subgroupClusteredAdd(v, 16); break;
        case 32: v = subgroupClusteredAdd(v, 32); break;
        case 64: v = subgroupClusteredAdd(v, 64); break;
        case 128: v = subgroupClusteredAdd(v, 128); break;
        default: break;
    }
#endif
    return v;
}

// True when the subgroup reduction sums exactly the LANES_PER_COLUMN invocations lin - lin % L ... + L - 1
// in every column of the workgroup (checked on hashed integers, exact). Uniform over the workgroup.
bool subgroup_reduction_works(uint lin) {
    const uint got = subgroup_column_sum(lane_hash(lin));
    const uint base = lin - lin % LANES_PER_COLUMN;
    uint want = 0u;
    for (uint i = 0; i < LANES_PER_COLUMN; ++i) {
        want += lane_hash(base + i);
    }
    if (lin == 0) {
        subgroup_ok = 1u;
    }
    memoryBarrierShared();
    barrier();
    if (got != want) {
        subgroup_ok = 0u;
    }
    memoryBarrierShared();
    barrier();
    return subgroup_ok == 1u;
}
#endif

void main() {
    const uint lin = gl_LocalInvocationIndex;
#if defined(REDUCE_SHUFFLE) || defined(REDUCE_CLUSTERED)
    const bool use_subgroup = LANES_PER_COLUMN > 1 && subgroup_reduction_works(lin);
#else
    const bool use_subgroup = false;
#endif
    const uint lane = lin % LANES_PER_COLUMN;
    const uint j = gl_WorkGroupID.x * COLS_PER_WG + lin / LANES_PER_COLUMN;
    const bool col_ok = j < HEAD_DIM;
    const uint h = gl_WorkGroupID.y;
    const uint hk = h % p.n_head_k;
    const float eps = uintBitsToFloat(p.eps_bits);
    const float scale = uintBitsToFloat(p.scale_bits);
    const float ssm_a = head_params[p.ssm_a_off + h];
    const float dt_bias = head_params[p.dt_bias_off + h];
    const uint head_words = HEAD_DIM * HEAD_DIM;
    const uint col_in_head = j * HEAD_DIM + lane;

    float s[ROWS_PER_LANE];
    float kr[ROWS_PER_LANE];
    float qr[ROWS_PER_LANE];
    for (uint r = 0; r < ROWS_PER_LANE; ++r) {
        s[r] = 0.0;
    }
    uint run = 0;
    uint seq = 0;
    uint m = 0;          // index of the token within its sequence in this step
    bool mine = false;     // this workgroup processes the current sequence
    for (uint t = 0; t < p.n_tok; ++t) {
        const uint tok_seq = records[p.rec_off + TOK_SEQ(t)];
        if (t == 0 || tok_seq != seq) {
            mine = run % gl_NumWorkGroups.z == gl_WorkGroupID.z && tok_seq < p.n_slots;
            run++;
            seq = tok_seq;
            m = 0;
            if (mine && col_ok) {
                const uint base = p.state_off + (seq * p.n_head_v + h) * head_words + col_in_head;
                for (uint r = 0; r < ROWS_PER_LANE; ++r) {
                    s[r] = state[base + r * LANES_PER_COLUMN];
                }
            }
        } else {
            m++;
        }
        if (!mine) {
            continue;
        }
        const bool last = t + 1 == p.n_tok || records[p.rec_off + TOK_SEQ(t + 1)] != seq;

        const float beta = sigmoid(gates[p.b_off + t * p.gate_stride + h]);
        const float decay = exp(ssm_a * softplus(gates[p.alpha_off + t * p.gate_stride + h] + dt_bias));
        const uint row = t * p.qkv_stride + hk * HEAD_DIM + lane;
        vec3 part = vec3(0.0);   // (S^T k, |k|^2, |q|^2) partial sums of this lane
        for (uint r = 0; r < ROWS_PER_LANE; ++r) {
            kr[r] = qkv[p.k_off + row + r * LANES_PER_COLUMN];
            qr[r] = qkv[p.q_off + row + r * LANES_PER_COLUMN];
            s[r] = decayed(s[r], decay);
            part += vec3(s[r] * kr[r], kr[r] * kr[r], qr[r] * qr[r]);
        }
        const vec3 tot = column_sum(part, lin, use_subgroup);
        const float inv_k = 1.0 / max(sqrt(tot.y), eps);
        const float inv_q = 1.0 / max(sqrt(tot.z), eps);
        const float v = col_ok ? qkv[p.v_off + t * p.qkv_stride + h * HEAD_DIM + j] : 0.0;
        const float delta = beta * (v - tot.x * inv_k);
        float o = 0.0;
        for (uint r = 0; r < ROWS_PER_LANE; ++r) {
            s[r] = rank1_update(s[r], normed_key(kr[r], inv_k), delta);
            o += s[r] * qr[r];
        }
        o = column_sum(vec3(o, 0.0, 0.0), lin, use_subgroup).x;
        if (col_ok) {
            if (lane == 0) {
                out_o[p.out_off + t * p.out_stride + h * HEAD_DIM + j] = o * inv_q * scale;
            }
#ifdef LOG_STEPS
            if (m < p.n_snap) {   // what gdn_replay.comp needs to redo this token's update of the state
                const uint base = p.snap_off + ((seq * p.n_snap + m) * p.n_head_v + h) * LOG_WORDS;
                if (j == 0 && lane == 0) {
                    snapshots[base] = decay;
                }
                if (lane == 0) {
                    snapshots[base + 1 + j] = delta;
                }
                if (j == 0) {
                    for (uint r = 0; r < ROWS_PER_LANE; ++r) {
                        snapshots[base + 1 + HEAD_DIM + lane + r * LANES_PER_COLUMN] = normed_key(kr[r], inv_k);
                    }
                }
            }
            // the live state keeps the state before the step
#else
            if (m < p.n_snap) {
                const uint base = p.snap_off + ((seq * p.n_snap + m) * p.n_head_v + h) * head_words
                                  + col_in_head;
                for (uint r = 0; r < ROWS_PER_LANE; ++r) {
                    snapshots[base + r * LANES_PER_COLUMN] = s[r];
                }
            }
            if (last) {
                const uint base = p.state_off + (seq * p.n_head_v + h) * head_words + col_in_head;
                for (uint r = 0; r < ROWS_PER_LANE; ++r) {
                    state[base + r * LANES_PER_COLUMN] = s[r];
                }
            }
#endif
        }
    }
}
