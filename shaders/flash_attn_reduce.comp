#version 450
// Combines flash_attn.comp's split partials of one (token, query head) in split order:
//   M* = max_s M_s,  w_s = exp(M_s - M*),  O = (sum_s w_s O_s) / (sum_s w_s L_s)
// over the splits with L_s > 0 (a split that saw no position of this row wrote L = 0), then applies Qwen3.5's
// output gate o *= sigmoid(gate) (GATE). The order is fixed by the split index: batch invariant.
//
// Bindings: 0 part (float partials), 1 gate (float; unused without GATE), 2 out (float)
// Push constants: n_head, n_splits (<= BLOCK_SIZE), head_dim, part_o_off, part_ml_off, gate_off,
//                 gate_tok_stride, gate_head_stride, out_off, out_tok_stride, out_head_stride (f32 words)
// Spec constants: 0 BLOCK_SIZE (workgroup size)
// Defines: GATE
// Dispatch: n_head x n_tok x 1.

layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Part { float part[]; };
layout(std430, binding = 1) readonly buffer Gate { float gate[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_data[]; };
layout(push_constant) uniform Push {
    uint n_head; uint n_splits; uint head_dim; uint part_o_off; uint part_ml_off;
    uint gate_off; uint gate_tok_stride; uint gate_head_stride;
    uint out_off; uint out_tok_stride; uint out_head_stride;
} p;

shared float sh_w[BLOCK_SIZE];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint h = gl_WorkGroupID.x;
    uint t = gl_WorkGroupID.y;
    uint first = (t * p.n_head + h) * p.n_splits;

    float m_star = uintBitsToFloat(0xFF800000u);
    for (uint s = 0; s < p.n_splits; ++s) {
        uint ml = p.part_ml_off + (first + s) * 2;
        if (part[ml + 1] > 0.0) m_star = max(m_star, part[ml]);
    }
    if (tid < p.n_splits) {
        uint ml = p.part_ml_off + (first + tid) * 2;
        float m = part[ml];
        sh_w[tid] = part[ml + 1] > 0.0 ? (m == m_star ? 1.0 : exp(m - m_star)) : 0.0;
    }
    barrier();
    float l_star = 0.0;
    for (uint s = 0; s < p.n_splits; ++s) {
        if (sh_w[s] > 0.0) l_star += sh_w[s] * part[p.part_ml_off + (first + s) * 2 + 1];
    }

    for (uint d = tid; d < p.head_dim; d += BLOCK_SIZE) {
        float o = 0.0;
        for (uint s = 0; s < p.n_splits; ++s) {
            if (sh_w[s] > 0.0) o += sh_w[s] * part[p.part_o_off + (first + s) * p.head_dim + d];
        }
        o = o / l_star;
#ifdef GATE
        float g = gate[p.gate_off + t * p.gate_tok_stride + h * p.gate_head_stride + d];
        o *= 1.0 / (1.0 + exp(-g));
#endif
        out_data[p.out_off + t * p.out_tok_stride + h * p.out_head_stride + d] = o;
    }
}
