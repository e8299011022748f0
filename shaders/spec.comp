#version 450
// Speculative-step bookkeeping on the GPU, so one submission drafts, verifies, accepts and rolls back without
// the host in the loop (the host reads only the accepted token ids). One shader, three modes (#define):
//
// MODE_DRAFT_TOKEN  after draft step i: for each sequence s, tok = ids[s] (the MTP head's argmax);
//                   valid[s*K + i] = (i == 0 || valid[s*K + i-1]) && (p_min <= 0 || p_top1 >= p_min), where
//                   p_top1 = 1 / sum_j exp(topv[s*n_top + j] - topv[s*n_top]) over the draft's top-n_top logits
//                   (llama.cpp: softmax over the top-10 candidates); tok becomes verify record s*V + i + 1 and,
//                   when i + 1 < K, draft record (i+1, s).
// MODE_ACCEPT       for each sequence s (drafts shorter than n_min are dropped: nothing valid, m = 0):
//                   m = number of leading drafts that are valid and equal the target's
//                   argmax of the row before them (synthetic benchmark mode instead: u[s*K + j] < rate);
//                   out[s*V + j] = token of row j for j <= m (a draft for j < m, the target's token at m);
//                   accept[s] = m, n_valid[s] = number of valid drafts, sel[s] = {seq slot, m} (the snapshot
//                   the state rollback (state_select.comp) copies back), hsel[s] = {s*V + m, seq slot} (the
//                   verify row whose hidden state MODE_COPY_ROWS copies to the slot).
// MODE_COPY_ROWS    for r < n_rows: dst[pairs[r].y * width + w] = src[pairs[r].x * width + w], w < width, with
//                   the {src row, dst row} pairs read from the step buffer at run time (the hidden state of
//                   the last accepted row becomes its slot's next draft input; a prefill chunk's last hidden
//                   becomes its slot's; a slot's hidden feeds a chunk's first MTP row).
// MODE_SHIFT_ROWS   for r < n_rows, with slot = pairs[r].y: ring[ring_pairs[r].y * width + w] = cur[slot * width
//                   + w], then cur[slot * width + w] = src[pairs[r].x * width + w] (each invocation reads its
//                   word of the old row before writing the new one; the rows' slots are distinct). A plain
//                   decode step with the MTP head loaded: the slot's pending hidden moves into its lag ring and
//                   the step's hidden becomes pending, in one dispatch that needs no barrier of its own.
//
// Bindings: 0 step (uint words: records, ids, flags; host-visible step buffer)
//           1 data (f32/uint words: top-k values for DRAFT_TOKEN, source rows for COPY_ROWS / SHIFT_ROWS)
//           2 dst (COPY_ROWS destination rows, SHIFT_ROWS cur rows; other modes bind any buffer here)
//           3 ring (SHIFT_ROWS only: the rows cur's old values move to)
// Push constants (word offsets into the bound buffers; records are 4 words, see tokens.glsl):
//   DRAFT_TOKEN: ids_off, topv_off, valid_off, vrec_off, drec_next_off, n_seq, K, i, n_top, p_min (f32)
//   ACCEPT:      vids_off, valid_off, vrec_off, out_off, accept_off, nvalid_off, u_off, n_seq, K, rate (f32),
//                sel_off, hsel_off, n_min
//   COPY_ROWS:   pairs_off, src_off, dst_off, n_rows, width
//   SHIFT_ROWS:  pairs_off, ring_pairs_off, src_off, cur_off, ring_off, n_rows, width
// Spec constants: 0 BLOCK_SIZE
// Dispatch: DRAFT_TOKEN / ACCEPT: ceil(n_seq / BLOCK_SIZE) x 1 x 1; COPY_ROWS / SHIFT_ROWS: ceil(width / BLOCK_SIZE)
//           x n_rows x 1
#extension GL_GOOGLE_include_directive : require
#include "tokens.glsl"

layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer Step { uint step_words[]; };
layout(std430, binding = 1) buffer Data { uint data_words[]; };
layout(std430, binding = 2) buffer Dst { uint dst_words[]; };

#if defined(MODE_DRAFT_TOKEN)
layout(push_constant) uniform Push {
    uint ids_off; uint topv_off; uint valid_off; uint vrec_off; uint drec_next_off;
    uint n_seq; uint K; uint i; uint n_top; uint p_min_bits;
} p;

void main() {
    uint s = gl_GlobalInvocationID.x;
    if (s >= p.n_seq) return;
    uint tok = step_words[p.ids_off + s];
    uint valid = (p.i == 0u) ? 1u : step_words[p.valid_off + s * p.K + p.i - 1u];
    float p_min = uintBitsToFloat(p.p_min_bits);
    if (p_min > 0.0 && p.n_top > 0u) {
        float top = uintBitsToFloat(data_words[p.topv_off + s * p.n_top]);
        float denom = 0.0;
        for (uint j = 0u; j < p.n_top; j++) {
            denom += exp(uintBitsToFloat(data_words[p.topv_off + s * p.n_top + j]) - top);
        }
        if (1.0 / denom < p_min) valid = 0u;
    }
    step_words[p.valid_off + s * p.K + p.i] = valid;
    uint V = p.K + 1u;
    step_words[p.vrec_off + TOK_ID(s * V + p.i + 1u)] = tok;
    if (p.i + 1u < p.K) step_words[p.drec_next_off + TOK_ID(s)] = tok;
}

#elif defined(MODE_ACCEPT)
layout(push_constant) uniform Push {
    uint vids_off; uint valid_off; uint vrec_off; uint out_off; uint accept_off; uint nvalid_off; uint u_off;
    uint n_seq; uint K; uint rate_bits; uint sel_off; uint hsel_off; uint n_min;
} p;

void main() {
    uint s = gl_GlobalInvocationID.x;
    if (s >= p.n_seq) return;
    uint V = p.K + 1u;
    float rate = uintBitsToFloat(p.rate_bits);
    uint n_valid = 0u;
    for (uint j = 0u; j < p.K; j++) {
        if (step_words[p.valid_off + s * p.K + j] != 0u) n_valid++;
    }
    if (n_valid < p.n_min) n_valid = 0u;
    uint m = 0u;
    bool go = true;
    for (uint j = 0u; j < p.K; j++) {
        bool valid = j < n_valid;
        uint draft = step_words[p.vrec_off + TOK_ID(s * V + j + 1u)];
        bool ok = rate > 0.0 ? (uintBitsToFloat(data_words[p.u_off + s * p.K + j]) < rate)
                             : (step_words[p.vids_off + s * V + j] == draft);
        go = go && valid && ok;
        if (go) {
            step_words[p.out_off + s * V + j] = draft;
            m++;
        }
    }
    step_words[p.out_off + s * V + m] = step_words[p.vids_off + s * V + m];
    step_words[p.accept_off + s] = m;
    step_words[p.nvalid_off + s] = n_valid;
    step_words[p.sel_off + 2u * s] = step_words[p.vrec_off + TOK_SEQ(s * V)];
    step_words[p.sel_off + 2u * s + 1u] = m;
    step_words[p.hsel_off + 2u * s] = s * V + m;
    step_words[p.hsel_off + 2u * s + 1u] = step_words[p.vrec_off + TOK_SEQ(s * V)];
}

#elif defined(MODE_COPY_ROWS)
layout(push_constant) uniform Push { uint pairs_off; uint src_off; uint dst_off; uint n_rows; uint width; } p;

void main() {
    uint w = gl_GlobalInvocationID.x;
    uint r = gl_WorkGroupID.y;
    if (w >= p.width || r >= p.n_rows) return;
    uint src_row = step_words[p.pairs_off + 2u * r];
    uint dst_row = step_words[p.pairs_off + 2u * r + 1u];
    dst_words[p.dst_off + dst_row * p.width + w] = data_words[p.src_off + src_row * p.width + w];
}

#elif defined(MODE_SHIFT_ROWS)
layout(std430, binding = 3) buffer Ring { uint ring_words[]; };
layout(push_constant) uniform Push {
    uint pairs_off; uint ring_pairs_off; uint src_off; uint cur_off; uint ring_off; uint n_rows; uint width;
} p;

void main() {
    uint w = gl_GlobalInvocationID.x;
    uint r = gl_WorkGroupID.y;
    if (w >= p.width || r >= p.n_rows) return;
    uint src_row = step_words[p.pairs_off + 2u * r];
    uint slot = step_words[p.pairs_off + 2u * r + 1u];
    uint ring_row = step_words[p.ring_pairs_off + 2u * r + 1u];
    uint cur = p.cur_off + slot * p.width + w;
    ring_words[p.ring_off + ring_row * p.width + w] = dst_words[cur];
    dst_words[cur] = data_words[p.src_off + src_row * p.width + w];
}
#endif
