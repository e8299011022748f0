#version 450
// Groups the (token, slot) entries of a MoE step by expert, so matvec_id reads each chosen expert's weights
// once per dispatch however many tokens of a verify batch chose it.
// Entry i = t * n_used + j selects expert ids[i]. Entries with the same expert form groups of at most `cap`
// entries (cap = min(n_tok, 8) = matvec_id's NUM_COLS), in increasing entry order; groups are numbered in the
// order of their first entry. One workgroup, O(n^2) work for n = n_tok * n_used entries (n <= MAX_ENTRIES).
// Output (uint words at routes_off):
//   [0]                          n_groups
//   [1 + u]                      expert of group u              (u < n)
//   [1 + n + u]                  number of entries of group u   (1..cap)
//   [1 + 2n + u * cap + q]       entry index of the q-th entry of group u
// Bindings: 0 ids (uint: the router's expert ids, ids[ids_off + t * n_used + j])
//           1 routes (uint output)
// Push constants: ids_off, routes_off (words), n_entries (n), cap
// Spec constants: 0 BLOCK_SIZE (local_size_x), 1 MAX_ENTRIES (shared-memory capacity, >= n)
// Dispatch: 1 x 1 x 1
layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(constant_id = 1) const uint MAX_ENTRIES = 64;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Ids { uint ids[]; };
layout(std430, binding = 1) writeonly buffer Routes { uint routes[]; };
layout(push_constant) uniform Push {
    uint ids_off;
    uint routes_off;
    uint n_entries;
    uint cap;
} p;

shared uint rank_sh[MAX_ENTRIES];  // how many earlier entries chose the same expert

void main() {
    const uint n = p.n_entries;
    const uint tid = gl_LocalInvocationID.x;
    for (uint i = tid; i < n; i += BLOCK_SIZE) {
        const uint e = ids[p.ids_off + i];
        uint r = 0u;
        for (uint k = 0u; k < i; k++) {
            r += ids[p.ids_off + k] == e ? 1u : 0u;
        }
        rank_sh[i] = r;
    }
    barrier();
    for (uint i = tid; i < n; i += BLOCK_SIZE) {
        const uint e = ids[p.ids_off + i];
        const uint chunk_rank = rank_sh[i] - rank_sh[i] % p.cap;  // rank of the entry opening i's group
        uint opener = i;
        uint total = 0u;  // entries choosing e
        for (uint k = 0u; k < n; k++) {
            const bool same = ids[p.ids_off + k] == e;
            total += same ? 1u : 0u;
            if (same && rank_sh[k] == chunk_rank) {
                opener = k;
            }
        }
        uint u = 0u;  // groups opened before i's group
        for (uint k = 0u; k < opener; k++) {
            u += rank_sh[k] % p.cap == 0u ? 1u : 0u;
        }
        const uint q = rank_sh[i] - chunk_rank;
        routes[p.routes_off + 1u + 2u * n + u * p.cap + q] = i;
        if (q == 0u) {
            routes[p.routes_off + 1u + u] = e;
            routes[p.routes_off + 1u + n + u] = min(p.cap, total - chunk_rank);
        }
    }
    if (tid == 0u) {
        uint groups = 0u;
        for (uint k = 0u; k < n; k++) {
            groups += rank_sh[k] % p.cap == 0u ? 1u : 0u;
        }
        routes[p.routes_off] = groups;
    }
}
