#version 450
// Gumbel noise on draft logits, so the MTP draft with temperature > 0 is argmax(l / T + g): the sample the
// target takes at that position with the same noise, whenever the two distributions agree there
// (vkmtp/sampling.py: Gumbel-max sampling with noise keyed by (seed key, position, token id)).
//
// For row r < n_rows and column c < n_cols of x (f32, row stride `stride` words):
//   prm = params[r] = {key, pos, inv_T (f32 bits), on} in the step buffer;
//   if on != 0: x[r][c] = x[r][c] * inv_T + g, g = -log(-log(u)), u = ((h >> 8) + 0.5) / 2^24,
//   h = pcg(pcg(c ^ pcg(pos + draft_index)) ^ key) with pcg the PCG output hash of 32-bit words.
// Rows with on == 0 (greedy requests in a mixed batch) are left as they are.
//
// Bindings: 0 x (f32 words), 1 step (uint words: the params)
// Push constants: x_off, stride, n_cols, n_rows, prm_off, draft_index
// Spec constants: 0 BLOCK_SIZE
// Dispatch: ceil(n_cols / BLOCK_SIZE) x n_rows x 1 (no reductions: any subgroup size)

layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) buffer Step { uint step_words[]; };

layout(push_constant) uniform Push {
    uint x_off; uint stride; uint n_cols; uint n_rows; uint prm_off; uint draft_index;
} p;

uint pcg(uint v) {
    uint state = v * 747796405u + 2891336453u;
    uint word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

void main() {
    uint c = gl_GlobalInvocationID.x;
    uint r = gl_GlobalInvocationID.y;
    if (c >= p.n_cols || r >= p.n_rows) {
        return;
    }
    uint base = p.prm_off + 4u * r;
    if (step_words[base + 3u] == 0u) {
        return;
    }
    uint key = step_words[base];
    uint pos = step_words[base + 1u] + p.draft_index;
    float inv_t = uintBitsToFloat(step_words[base + 2u]);
    uint h = pcg(pcg(c ^ pcg(pos)) ^ key);
    float u = (float(h >> 8u) + 0.5) / 16777216.0;
    uint i = p.x_off + r * p.stride + c;
    x[i] = x[i] * inv_t - log(-log(u));
}
