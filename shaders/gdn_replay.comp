#version 450
// GDN state rollback by replay, after a verify step that logged its tokens (gdn.comp with LOG_STEPS) and left
// the live states as they were before the step. For each entry {seq slot s, m} read from a device buffer
// (the accept decision is made on the GPU inside the same submission), the live state of slot s becomes the
// state after the sequence's tokens 0..m: every element redoes those tokens' updates from the log,
//   S[j][i] <- S[j][i] * decay_t;  S[j][i] <- fma(k^_t[i], delta_t[j], S[j][i])      for t = 0..m,
// with the functions of common/gdn_update.glsl, so the result is bit-identical to the state the verify kernel
// had after token m (and to plain decoding of the same tokens). One state write per sequence and step,
// whatever was accepted. Entries with s >= n_slots are skipped; m is clamped to n_log - 1.
//
// Bindings: 0 select (uint: n_sel entries {seq slot, m} at sel_off)
//           1 log    (f32: group g at log_off + g * log_group_stride; entry (s, t, h) at
//                     ((s * n_log + t) * n_head_v + h) * (1 + 2D): decay, delta[D], k^[D])
//           2 state  (f32: group g at state_off + g * state_group_stride; slot s, head h, column j, row i at
//                     ((s * n_head_v + h) * D + j) * D + i)
// Push constants: sel_off, n_sel, n_slots, n_log, n_head_v, log_off, state_off, log_group_stride,
//   state_group_stride (words).
// Spec constants: 0 BLOCK_SIZE (local_size_x), 1 HEAD_DIM (D).
// Dispatch: (min(ceil(D * D / BLOCK_SIZE), 65535), n_head_v * n_sel, n_groups); x-groups stride over a
//   head's D * D elements.
#extension GL_GOOGLE_include_directive : require
#include "gdn_update.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(constant_id = 1) const uint HEAD_DIM = 128;
const uint LOG_WORDS = 1 + 2 * HEAD_DIM;

layout(std430, binding = 0) readonly buffer Select { uint select_entries[]; };
layout(std430, binding = 1) readonly buffer Log { float log_data[]; };
layout(std430, binding = 2) buffer State { float state[]; };

layout(push_constant) uniform Push {
    uint sel_off; uint n_sel; uint n_slots; uint n_log; uint n_head_v;
    uint log_off; uint state_off; uint log_group_stride; uint state_group_stride;
} p;

void main() {
    const uint entry = gl_WorkGroupID.y / p.n_head_v;
    const uint h = gl_WorkGroupID.y % p.n_head_v;
    if (entry >= p.n_sel) {
        return;
    }
    const uint seq = select_entries[p.sel_off + 2 * entry];
    const uint m = min(select_entries[p.sel_off + 2 * entry + 1], p.n_log - 1);
    if (seq >= p.n_slots) {
        return;
    }
    const uint g = gl_WorkGroupID.z;
    const uint head_words = HEAD_DIM * HEAD_DIM;
    const uint st = p.state_off + g * p.state_group_stride + (seq * p.n_head_v + h) * head_words;
    const uint lg = p.log_off + g * p.log_group_stride;
    for (uint e = gl_GlobalInvocationID.x; e < head_words; e += gl_NumWorkGroups.x * BLOCK_SIZE) {
        const uint j = e / HEAD_DIM;
        const uint i = e - j * HEAD_DIM;
        float s = state[st + e];
        for (uint t = 0; t <= m; ++t) {
            const uint base = lg + ((seq * p.n_log + t) * p.n_head_v + h) * LOG_WORDS;
            s = decayed(s, log_data[base]);
            s = rank1_update(s, log_data[base + 1 + HEAD_DIM + i], log_data[base + 1 + j]);
        }
        state[st + e] = s;
    }
}
