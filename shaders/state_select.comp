#version 450
// Rollback after partial acceptance: copy snapshot r of sequence slot s back into the live state, with (s, r)
// read from a device buffer, because the accept decision is made on the GPU inside a replayed sequence.
// Serves the conv state and the GDN state alike (any state of n_words f32 words per slot), for n_groups
// layers at once when their states are laid out group_stride apart.
//   live[live_off + g * live_group_stride + s * n_words + i] =
//       snapshots[snap_off + g * snap_group_stride + (s * n_snap + r) * n_words + i]
// An entry with r >= n_snap (e.g. 0xFFFFFFFF: every draft accepted, the live state is already right) or
// s >= n_slots copies nothing.
//
// Bindings: 0 select (uint: n_sel entries {seq, snapshot index} at sel_off)
//           1 snapshots (f32)
//           2 live (f32)
// Push constants: sel_off, n_sel, n_slots, n_snap, n_words, snap_off, live_off, snap_group_stride,
//   live_group_stride (words).
// Spec constants: 0 BLOCK_SIZE (local_size_x).
// Dispatch: (min(ceil(n_words / BLOCK_SIZE), 65535), n_sel, n_groups); x-groups stride over the words.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 256;

layout(std430, binding = 0) readonly buffer Select { uint select_entries[]; };
layout(std430, binding = 1) readonly buffer Snapshots { float snapshots[]; };
layout(std430, binding = 2) writeonly buffer Live { float live[]; };

layout(push_constant) uniform Push {
    uint sel_off; uint n_sel; uint n_slots; uint n_snap; uint n_words;
    uint snap_off; uint live_off; uint snap_group_stride; uint live_group_stride;
} p;

void main() {
    const uint entry = gl_WorkGroupID.y;
    const uint seq = select_entries[p.sel_off + 2 * entry];
    const uint r = select_entries[p.sel_off + 2 * entry + 1];
    if (entry >= p.n_sel || seq >= p.n_slots || r >= p.n_snap) {
        return;
    }
    const uint g = gl_WorkGroupID.z;
    const uint src = p.snap_off + g * p.snap_group_stride + (seq * p.n_snap + r) * p.n_words;
    const uint dst = p.live_off + g * p.live_group_stride + seq * p.n_words;
    for (uint i = gl_GlobalInvocationID.x; i < p.n_words; i += gl_NumWorkGroups.x * BLOCK_SIZE) {
        live[dst + i] = snapshots[src + i];
    }
}
