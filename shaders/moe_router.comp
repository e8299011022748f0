#version 450
// MoE routing of Qwen3.5/3.6 as llama.cpp's build_moe_ffn does it (NumPy: vkmtp/ref/ops/moe_router.py),
// fused: per token, p = softmax(logits) over n_expert, the n_used largest p (ties -> lower expert id),
// weights w = p / max(sum of the chosen p, 6.103515625e-5).
// Writes ids[t][r] (uint) and weights[t][r] (f32) in rank order (r = 0 is the largest p).
// The logits come from the F32 ffn_gate_inp mat-vec (vkmtp.ops.matvec).
//
// Bindings: 0 logits (f32, [n_tok][logits_stride] at logits_off)
//           1 ids (uint, [n_tok][n_used] at ids_off)
//           2 weights (f32, [n_tok][n_used] at weights_off)
// Push constants: logits_off, logits_stride, n_tok, n_expert, n_used, ids_off, weights_off (words).
// Spec constants: 0 BLOCK_SIZE (local_size_x; a power of two), 1 PER_THREAD (>= ceil(n_expert / BLOCK_SIZE)).
// Defines: USE_SUBGROUP (subgroupMax/Add/Min inside subgroups, shared memory across subgroups; correct for
//   any subgroup size and any lane-to-subgroup mapping). Default: shared-memory tree reductions.
// Dispatch: one workgroup per token, (min(n_tok, 65535), ceil(n_tok / 65535), 1).
#extension GL_GOOGLE_include_directive : require
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint BLOCK_SIZE = 64;
layout(constant_id = 1) const uint PER_THREAD = 4;
const uint MAX_USED = 32;
const float LOWEST = -3.402823466e38;
const float TAKEN = -1.0;                  // below every probability
const float SUM_MIN = 6.103515625e-5;      // llama.cpp's clamp of the chosen probabilities' sum
const uint NO_ID = 0xFFFFFFFFu;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) writeonly buffer Ids { uint ids[]; };
layout(std430, binding = 2) writeonly buffer Weights { float weights[]; };

layout(push_constant) uniform Push {
    uint logits_off; uint logits_stride; uint n_tok; uint n_expert; uint n_used;
    uint ids_off; uint weights_off;
} p;

shared float red_v[BLOCK_SIZE];
shared uint red_i[BLOCK_SIZE];

bool better(float v, uint id, float bv, uint bid) {
    return v > bv || (v == bv && id < bid);
}

#ifdef USE_SUBGROUP
// Each subgroup reduces its lanes; one lane per subgroup posts the result; every invocation then combines the
// posts in subgroup order (same order in every invocation, so all see identical bits).
float block_max(float v) {
    v = subgroupMax(v);
    if (subgroupElect()) {
        red_v[gl_SubgroupID] = v;
    }
    barrier();
    float r = red_v[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) {
        r = max(r, red_v[i]);
    }
    barrier();
    return r;
}

float block_sum(float v) {
    v = subgroupAdd(v);
    if (subgroupElect()) {
        red_v[gl_SubgroupID] = v;
    }
    barrier();
    float r = red_v[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) {
        r += red_v[i];
    }
    barrier();
    return r;
}

void block_argmax(inout float v, inout uint id) {
    const float m = subgroupMax(v);
    const uint i_min = subgroupMin(v == m ? id : NO_ID);
    if (subgroupElect()) {
        red_v[gl_SubgroupID] = m;
        red_i[gl_SubgroupID] = i_min;
    }
    barrier();
    v = red_v[0];
    id = red_i[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) {
        if (better(red_v[i], red_i[i], v, id)) {
            v = red_v[i];
            id = red_i[i];
        }
    }
    barrier();
}
#else
// Tree reductions over BLOCK_SIZE shared slots.
float block_max(float v) {
    const uint tid = gl_LocalInvocationID.x;
    red_v[tid] = v;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s) {
            red_v[tid] = max(red_v[tid], red_v[tid + s]);
        }
        barrier();
    }
    const float r = red_v[0];
    barrier();
    return r;
}

float block_sum(float v) {
    const uint tid = gl_LocalInvocationID.x;
    red_v[tid] = v;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s) {
            red_v[tid] += red_v[tid + s];
        }
        barrier();
    }
    const float r = red_v[0];
    barrier();
    return r;
}

void block_argmax(inout float v, inout uint id) {
    const uint tid = gl_LocalInvocationID.x;
    red_v[tid] = v;
    red_i[tid] = id;
    barrier();
    for (uint s = BLOCK_SIZE / 2; s > 0; s >>= 1) {
        if (tid < s && better(red_v[tid + s], red_i[tid + s], red_v[tid], red_i[tid])) {
            red_v[tid] = red_v[tid + s];
            red_i[tid] = red_i[tid + s];
        }
        barrier();
    }
    v = red_v[0];
    id = red_i[0];
    barrier();
}
#endif

void main() {
    const uint t = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (t >= p.n_tok) {
        return;   // the whole workgroup leaves together
    }
    const uint tid = gl_LocalInvocationID.x;
    float val[PER_THREAD];
    float local_max = LOWEST;
    for (uint i = 0; i < PER_THREAD; ++i) {
        const uint e = tid + i * BLOCK_SIZE;
        val[i] = e < p.n_expert ? logits[p.logits_off + t * p.logits_stride + e] : LOWEST;
        local_max = max(local_max, val[i]);
    }
    const float mx = block_max(local_max);
    float local_sum = 0.0;
    for (uint i = 0; i < PER_THREAD; ++i) {
        if (tid + i * BLOCK_SIZE < p.n_expert) {
            val[i] = exp(val[i] - mx);
            local_sum += val[i];
        }
    }
    const float total = block_sum(local_sum);
    for (uint i = 0; i < PER_THREAD; ++i) {
        val[i] = tid + i * BLOCK_SIZE < p.n_expert ? val[i] / total : TAKEN;
    }

    float chosen_p[MAX_USED];
    uint chosen_id[MAX_USED];
    for (uint r = 0; r < p.n_used; ++r) {
        float bv = TAKEN - 1.0;
        uint bid = NO_ID;
        for (uint i = 0; i < PER_THREAD; ++i) {
            if (val[i] > bv) {   // experts ascend with i: strict > keeps the lower id on ties
                bv = val[i];
                bid = tid + i * BLOCK_SIZE;
            }
        }
        block_argmax(bv, bid);
        chosen_p[r] = bv;
        chosen_id[r] = bid;
        if (bid % BLOCK_SIZE == tid) {
            val[bid / BLOCK_SIZE] = TAKEN;
        }
    }
    if (tid == 0) {
        float sum = 0.0;
        for (uint r = 0; r < p.n_used; ++r) {
            sum += chosen_p[r];
        }
        const float denom = max(sum, SUM_MIN);
        for (uint r = 0; r < p.n_used; ++r) {
            ids[p.ids_off + t * p.n_used + r] = chosen_id[r];
            weights[p.weights_off + t * p.n_used + r] = chosen_p[r] / denom;
        }
    }
}
