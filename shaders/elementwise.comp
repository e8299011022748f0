#version 450
// Elementwise ops on rows of f32, one invocation per element (t, i), i < n:
//   OP_ADD:               y = a + b                                  (residual add)
//   OP_SWIGLU:            y = silu(a) * b = a / (1 + exp(-a)) * b     (a = gate, b = up; two views or halves)
//   OP_SIGMOID_SCALE_ADD: y = y + sigmoid(s_t) * a                     (MoE shared expert, s: one scalar a token)
// Element (t, i) of an operand is at off + t * stride + i; y may alias a or b (in place).
//
// Bindings: 0 a (float), 1 b (float), 2 s (float), 3 y (float). Unused operands are bound to any buffer.
// Push constants: a_off, a_stride, b_off, b_stride, s_off, s_stride, y_off, y_stride, n, n_tok
// Spec constants: 0 BLOCK_SIZE (workgroup size)
// Defines: exactly one of OP_ADD, OP_SWIGLU, OP_SIGMOID_SCALE_ADD
// Dispatch: ceil(n / BLOCK_SIZE) x min(n_tok, 65535) x ceil(n_tok / 65535); t = group.y + group.z * 65535.

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) readonly buffer S { float s[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
layout(push_constant) uniform Push {
    uint a_off; uint a_stride; uint b_off; uint b_stride; uint s_off; uint s_stride;
    uint y_off; uint y_stride; uint n; uint n_tok;
} p;

void main() {
    uint i = gl_GlobalInvocationID.x;
    uint t = gl_WorkGroupID.y + gl_WorkGroupID.z * gl_NumWorkGroups.y;
    if (i >= p.n || t >= p.n_tok) return;
    float av = a[p.a_off + t * p.a_stride + i];
    uint yi = p.y_off + t * p.y_stride + i;
#if defined(OP_ADD)
    y[yi] = av + b[p.b_off + t * p.b_stride + i];
#elif defined(OP_SWIGLU)
    y[yi] = av / (1.0 + exp(-av)) * b[p.b_off + t * p.b_stride + i];
#elif defined(OP_SIGMOID_SCALE_ADD)
    float gate = 1.0 / (1.0 + exp(-s[p.s_off + t * p.s_stride]));
    y[yi] = y[yi] + gate * av;
#else
#error "elementwise.comp needs OP_ADD, OP_SWIGLU or OP_SIGMOID_SCALE_ADD"
#endif
}
