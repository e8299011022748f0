#version 450
// KV-cache write ("set_rows"): token t's row x[t] (n_head heads of HEAD_DIM f32) goes to cache row
// seq * n_ctx + pos (seq and pos from the token's record) as f16 or Q8_0 (or f32). Used for V; K is
// written by rope.comp, fused with its norm and rotation.
//
// Bindings: 0 tokens (uint: per-token records {id, pos, seq, flags}, common/tokens.glsl)
//           1 x      (float: source heads)
//           2 kv_out (uint: cache words; with KV_PARTS, parts 1.. at bindings 3.., common/kv_parts.glsl)
// Push constants: tok_off (word offset of record 0), x_off, x_tok_stride, x_head_stride (f32 words),
//                 out_off (word offset of cache row 0), out_row_stride (words per cache row),
//                 out_head_stride (words per head within a row), n_ctx (rows per sequence slot),
//                 rows_per_part (cache rows per part; read only with KV_PARTS)
// Spec constants: 0 BLOCK_SIZE (workgroup size), 1 HEAD_DIM
// Defines: OUT_F16 | OUT_Q8_0 (else f32); see common/head_store.glsl for the Q8_0 word layout. KV_PARTS.
// Dispatch: n_head x n_tok x 1 (one workgroup per head of a token).
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(constant_id = 1) const uint HEAD_DIM = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Tokens { uint tokens[]; };
layout(std430, binding = 1) readonly buffer X { float x_in[]; };
layout(std430, binding = 2) buffer Out { uint kv_out[]; };
layout(push_constant) uniform Push {
    uint tok_off; uint x_off; uint x_tok_stride; uint x_head_stride;
    uint out_off; uint out_row_stride; uint out_head_stride; uint n_ctx; uint rows_per_part;
} p;

#include "tokens.glsl"
#define KV_OUT_BINDING 2
shared float head_row[HEAD_DIM];
#include "head_store.glsl"

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint h = gl_WorkGroupID.x;
    uint t = gl_WorkGroupID.y;
    uint src = p.x_off + t * p.x_tok_stride + h * p.x_head_stride;
    for (uint i = tid; i < HEAD_DIM; i += BLOCK_SIZE) head_row[i] = x_in[src + i];
    barrier();
    uint pos = tokens[p.tok_off + TOK_POS(t)];
    uint seq = tokens[p.tok_off + TOK_SEQ(t)];
    store_head(p.out_off + (seq * p.n_ctx + pos) * p.out_row_stride + h * p.out_head_stride);
}
