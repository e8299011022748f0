#version 450
// out[i] = in[i] * scale + add, for i < n.  Used by the device tests (dependent-dispatch chains) and
// bench_device (dispatch cost).
// Bindings: 0 data (float words; input and output are views into it, possibly the same buffer as binding 1)
//           1 out  (float words)
// Push constants: in_off, out_off (word offsets), n, scale (f32 bits), add (f32 bits)
// Spec constants: 0 BLOCK_SIZE (local_size_x)
// Dispatch: ceil(n / BLOCK_SIZE) x 1 x 1
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer InBuf { float data_in[]; };
layout(std430, binding = 1) writeonly buffer OutBuf { float data_out[]; };
layout(push_constant) uniform Push { uint in_off; uint out_off; uint n; uint scale_bits; uint add_bits; } p;

void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i >= p.n) return;
    data_out[p.out_off + i] = data_in[p.in_off + i] * uintBitsToFloat(p.scale_bits) + uintBitsToFloat(p.add_bits);
}
