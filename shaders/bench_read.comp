#version 450
// Memory read bandwidth probe: every invocation sums uvec4 words of `data` in a grid-stride loop and the
// workgroup writes one word, so the result depends on every byte read (the compiler cannot drop the loads).
// Bindings: 0 data (uvec4[]), 1 out (uint[], one per workgroup)
// Push constants: n_vec4 (number of uvec4 in data)
// Spec constants: 0 BLOCK_SIZE (local_size_x)
// Dispatch: n_groups x 1 x 1
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) readonly buffer Data { uvec4 data[]; };
layout(std430, binding = 1) writeonly buffer Out { uint out_words[]; };
layout(push_constant) uniform Push { uint n_vec4; } p;
shared uint partial[1024];

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uvec4 acc = uvec4(0);
    for (uint i = gl_GlobalInvocationID.x; i < p.n_vec4; i += stride) {
        acc ^= data[i];
    }
    partial[gl_LocalInvocationID.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
    barrier();
    if (gl_LocalInvocationID.x == 0) {
        uint r = 0;
        for (uint j = 0; j < gl_WorkGroupSize.x; j++) r ^= partial[j];
        out_words[gl_WorkGroupID.x] = r;
    }
}
