#version 450
// The distinct experts chosen by the tokens of a step, ascending, so the expert mat-vec reads each one once.
// Output format (uint words at used_off):
//   used[0]              = n_distinct
//   used[1 + i]          = i-th distinct expert id, ascending, for i < n_distinct
//   used[1 + i]          = 0xFFFFFFFF for n_distinct <= i < capacity   (capacity = min(n_expert, n_entries))
// Ids >= n_expert in the input are ignored.
//
// Bindings: 0 ids (uint, n_entries = n_tok * n_used words at ids_off, as written by moe_router.comp)
//           1 used (uint, 1 + capacity words at used_off)
// Push constants: ids_off, n_entries, n_expert (<= 1024), used_off, capacity.
// Spec constants: 0 BLOCK_SIZE (local_size_x).
// Dispatch: (1, 1, 1).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 256;
const uint MAX_WORDS = 32;   // 1024 experts

layout(std430, binding = 0) readonly buffer Ids { uint ids[]; };
layout(std430, binding = 1) writeonly buffer Used { uint used[]; };

layout(push_constant) uniform Push {
    uint ids_off; uint n_entries; uint n_expert; uint used_off; uint capacity;
} p;

shared uint bits[MAX_WORDS];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    for (uint w = tid; w < MAX_WORDS; w += BLOCK_SIZE) {
        bits[w] = 0u;
    }
    barrier();
    for (uint i = tid; i < p.n_entries; i += BLOCK_SIZE) {
        const uint e = ids[p.ids_off + i];
        if (e < p.n_expert) {
            atomicOr(bits[e >> 5], 1u << (e & 31u));
        }
    }
    barrier();
    const uint n_words = (p.n_expert + 31u) / 32u;
    uint total = 0;
    uint before = 0;
    for (uint w = 0; w < n_words; ++w) {
        const uint n = uint(bitCount(bits[w]));
        before += w < tid ? n : 0u;
        total += n;
    }
    if (tid < n_words) {
        uint word = bits[tid];
        uint pos = before;
        while (word != 0u) {
            used[p.used_off + 1u + pos] = tid * 32u + uint(findLSB(word));
            pos++;
            word &= word - 1u;
        }
    }
    if (tid == 0) {
        used[p.used_off] = total;
    }
    for (uint i = total + tid; i < p.capacity; i += BLOCK_SIZE) {
        used[p.used_off + 1u + i] = 0xFFFFFFFFu;
    }
}
