#version 450
// The sampler chain of vkmtp/sampling.py on the GPU, one workgroup per logits row, so a sampled step reads back
// token ids only: logit bias -> grammar mask -> penalties -> top-k -> top-p -> min-p -> temperature -> Gumbel-max draw.
//
// Row r's parameters are PARAM_WORDS uint words at step[prm_off + r * PARAM_WORDS]:
//   0 key, 1 pos (the Gumbel noise of position pos), 2 inv_t (f32 bits; 0: greedy = argmax after penalties),
//   3 top_k (0: off), 4 top_p (f32 bits, >= 1: off), 5 log(min_p) (f32 bits), 6 min_p on,
//   7 1/repeat_penalty (f32), 8 repeat_penalty (f32), 9 frequency_penalty (f32), 10 presence_penalty (f32),
//   11 hist_off, 12 hist_len: the penalty window's first tokens (step words), then
//   13 draft_first, 14 n_draft: its last tokens (at most MAX_WINDOW in all), the token ids of token records
//   draft_first.. (the drafts this row follows, written by the GPU earlier in the step),
//   15 bias_off, 16 n_bias: {id, bias f32} pairs,
//   17 mask_off, 18 mask on: the grammar's allowed tokens, bit i % 32 of word mask_off + i / 32 (llguidance's
//   bitmask layout); a token whose bit is clear gets -inf.
// The row's logits x[x_off + r * stride ..] are shaped in place (bias, penalties); the token goes to
// step[out_off + r].
//
// Everything is f32 with each operation rounded on its own (`precise`: no fused multiply-add) and exp / log
// are polynomials of adds and multiplies, so vkmtp/sampling.py computes the same bits on the host. Selections
// order candidates by the 64-bit key {ordered(x), ~id} (descending logit, ties to the lower id; -0 counts as
// +0), unique per row: top-k is a radix select of the k-th largest key (8-bit digits, count histograms); top-p
// a radix select over the top-k set weighted by fixed-point masses floor(2^24 * exp(x - max)) summed exactly
// in two words, the first key whose cumulative mass reaches f32(top_p) * f32(total). A top-k set of at most
// MAX_CAND tokens is instead gathered into shared memory and ranked, and top-p's cumulative sum runs over it in
// order (the same sums). Shared-memory reductions only: any subgroup size.
//
// Bindings: 0 x (f32 logits), 1 step (uint words)
// Push constants: x_off, stride, n_vocab, n_rows, prm_off, out_off, rec_off
// Spec constants: 0 BLOCK_SIZE (a power of two)
// Dispatch: n_rows x 1 x 1
#extension GL_GOOGLE_include_directive : require
#include "tokens.glsl"

layout(constant_id = 0) const uint BLOCK_SIZE = 256;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) buffer Step { uint step_words[]; };
layout(push_constant) uniform Push {
    uint x_off; uint stride; uint n_vocab; uint n_rows; uint prm_off; uint out_off; uint rec_off;
} p;

#define PARAM_WORDS 19u
#define MAX_WINDOW 1024u   // penalty window tokens (vkmtp.ops.sample.MAX_WINDOW)
#define MAX_CAND 512u      // a top-k set up to this size is gathered into shared memory for top-p / min-p / draw
#define NEG_INF uintBitsToFloat(0xFF800000u)

shared uint h_cnt[256];
shared uint h_lo[256];
shared uint h_hi[256];
shared float red_v[BLOCK_SIZE];
shared uint red_i[BLOCK_SIZE];
shared uint win[MAX_WINDOW];
shared uvec2 sel_prefix;
shared uint sel_rank;
shared uint sel_done;
shared uvec2 sel_above;   // top-p: mass of the keys above the current prefix's range
shared float sel_target;
shared float cand_v[MAX_CAND];   // a small top-k set (its ids in win[], sorted positions in cand_order[])
shared uint cand_order[MAX_CAND];
shared uint n_cand;

uint pcg(uint v) {
    uint state = v * 747796405u + 2891336453u;
    uint word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// 2^y for -25 <= y <= 0 (vkmtp.sampling._exp2_f32)
float exp2_poly(float y) {
    precise float n = floor(y);
    precise float f = y - n;
    precise float a = 0.00021877505059819669;
    a = a * f + 0.0012387821916490793;
    a = a * f + 0.009684580378234386;
    a = a * f + 0.05548042804002762;
    a = a * f + 0.2402305006980896;
    a = a * f + 0.6931469440460205;
    a = a * f + 1.0;
    return ldexp(a, int(n));
}

// ln x for normal x > 0 (vkmtp.sampling._log_f32)
float log_poly(float v) {
    uint bits = floatBitsToUint(v);
    int e = int((bits >> 23u) & 0xFFu) - 127;
    precise float m = uintBitsToFloat((bits & 0x7FFFFFu) | 0x3F800000u);
    if (m > 1.4142135381698608) { m = m * 0.5; e += 1; }
    precise float t = m - 1.0;
    precise float q = -0.07866667956113815;
    q = q * t + 0.12821748852729797;
    q = q * t + -0.131016343832016;
    q = q * t + 0.1418900042772293;
    q = q * t + -0.1662759929895401;
    q = q * t + 0.2000196874141693;
    q = q * t + -0.2500077188014984;
    q = q * t + 0.33333322405815125;
    q = q * t + -0.4999999701976776;
    precise float t2 = t * t;
    precise float r = t2 * q;
    precise float lp = t + r;
    precise float el = float(e) * 0.6931471824645996;
    precise float res = el + lp;
    return res;
}

uint mass_of(float v, float mx) {   // vkmtp.sampling.top_p_masses
    precise float d = v - mx;
    precise float y = d * 1.4426950216293335;
    if (!(y >= -25.0)) return 0u;
    precise float e = exp2_poly(y) * 16777216.0;
    return uint(e);
}

float mass_f32(uvec2 m) {   // vkmtp.sampling.mass_to_f32: {lo, hi}
    precise float hi = float(m.y) * 4294967296.0;
    precise float s = hi + float(m.x);
    return s;
}

uvec2 add64(uvec2 a, uvec2 b) {
    uint lo = a.x + b.x;
    return uvec2(lo, a.y + b.y + (lo < a.x ? 1u : 0u));
}

uvec2 sub64(uvec2 a, uvec2 b) {
    return uvec2(a.x - b.x, a.y - b.y - (a.x < b.x ? 1u : 0u));
}

uvec2 key_of(float v, uint i) {   // {lo, hi}: hi = ordered(v), lo = ~id
    uint u = floatBitsToUint(v == 0.0 ? 0.0 : v);
    uint o = (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
    return uvec2(~i, o);
}

bool key_ge(uvec2 a, uvec2 b) {
    return a.y > b.y || (a.y == b.y && a.x >= b.x);
}

uint digit_of(uvec2 k, uint pass) {
    return pass < 4u ? (k.y >> (24u - 8u * pass)) & 0xFFu : (k.x >> (24u - 8u * (pass - 4u))) & 0xFFu;
}

bool prefix_match(uvec2 k, uvec2 prefix, uint pass) {   // the key's bits above digit `pass` equal the prefix's
    uvec2 mask = pass < 4u ? uvec2(0u, pass == 0u ? 0u : ~0u << (32u - 8u * pass))
                           : uvec2(pass == 4u ? 0u : ~0u << (32u - 8u * (pass - 4u)), ~0u);
    return (k.x & mask.x) == prefix.x && (k.y & mask.y) == prefix.y;
}

uvec2 with_digit(uvec2 prefix, uint pass, uint d) {
    if (pass < 4u) prefix.y |= d << (24u - 8u * pass);
    else prefix.x |= d << (24u - 8u * (pass - 4u));
    return prefix;
}

float read_x(uint xo, uint i) {
    float v = x[xo + i];
    return isnan(v) ? NEG_INF : v;
}

void write_best(uint row, uint tid, float best, uint best_i) {   // the workgroup's best (score, id) -> token
    red_v[tid] = best;
    red_i[tid] = best_i;
    barrier();
    for (uint s = BLOCK_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            float v = red_v[tid + s];
            uint i = red_i[tid + s];
            if (v > red_v[tid] || (v == red_v[tid] && i < red_i[tid])) { red_v[tid] = v; red_i[tid] = i; }
        }
        barrier();
    }
    if (tid == 0u) step_words[p.out_off + row] = red_i[0] == 0xFFFFFFFFu ? 0u : red_i[0];
}

float gumbel_score(float v, uint i, float inv_t, uint key, uint pos_hash) {
    uint h = pcg(pcg(i ^ pos_hash) ^ key);
    precise float u = (float(h >> 9u) + 0.5) * 1.1920928955078125e-07;
    precise float a = -log_poly(u);
    precise float g = -log_poly(a);
    precise float s = v * inv_t;
    precise float score = s + g;
    return score;
}

// top-p, min-p and the draw over a top-k set of at most MAX_CAND keys >= thr, gathered into shared memory
void sample_small_set(uint row, uint tid, uint xo, uint n, uvec2 thr, float mx) {
    uint base = p.prm_off + row * PARAM_WORDS;
    if (tid == 0u) n_cand = 0u;
    barrier();
    for (uint i = tid; i < n; i += BLOCK_SIZE) {
        float v = read_x(xo, i);
        if (key_ge(key_of(v, i), thr)) {
            uint c = atomicAdd(n_cand, 1u);
            if (c < MAX_CAND) { cand_v[c] = v; win[c] = i; }
        }
    }
    barrier();
    uint nc = min(n_cand, MAX_CAND);
    for (uint c = tid; c < nc; c += BLOCK_SIZE) {   // rank = keys above: descending logit, ties to the lower id
        uvec2 kc = key_of(cand_v[c], win[c]);
        uint rank = 0u;
        for (uint c2 = 0u; c2 < nc; c2++) {
            uvec2 k2 = key_of(cand_v[c2], win[c2]);
            if (k2.y > kc.y || (k2.y == kc.y && k2.x > kc.x)) rank++;
        }
        cand_order[rank] = c;
    }
    barrier();
    float top_p = uintBitsToFloat(step_words[base + 4u]);
    if (tid == 0u) {
        uint keep = nc;
        if (top_p < 1.0) {
            uvec2 total = uvec2(0u);
            for (uint r = 0u; r < nc; r++) total = add64(total, uvec2(mass_of(cand_v[cand_order[r]], mx), 0u));
            precise float target = top_p * mass_f32(total);
            uvec2 cum = uvec2(0u);
            for (uint r = 0u; r < nc; r++) {
                cum = add64(cum, uvec2(mass_of(cand_v[cand_order[r]], mx), 0u));
                if (mass_f32(cum) >= target) { keep = r + 1u; break; }
            }
        }
        sel_rank = keep;
    }
    barrier();
    uint keep = sel_rank;
    bool min_p_on = step_words[base + 6u] != 0u;
    precise float min_thr = mx + uintBitsToFloat(step_words[base + 5u]);
    float inv_t = uintBitsToFloat(step_words[base + 2u]);
    uint key = step_words[base];
    uint pos_hash = pcg(step_words[base + 1u]);
    float best = NEG_INF;
    uint best_i = 0xFFFFFFFFu;
    for (uint r = tid; r < keep; r += BLOCK_SIZE) {
        uint c = cand_order[r];
        float v = cand_v[c];
        uint i = win[c];
        if (min_p_on && !(v >= min_thr)) continue;
        float score = gumbel_score(v, i, inv_t, key, pos_hash);
        if (score > best || (score == best && i < best_i)) { best = score; best_i = i; }
    }
    write_best(row, tid, best, best_i);
}

void main() {
    uint row = gl_WorkGroupID.x;
    uint tid = gl_LocalInvocationID.x;
    if (row >= p.n_rows) return;
    uint base = p.prm_off + row * PARAM_WORDS;
    uint xo = p.x_off + row * p.stride;
    uint n = p.n_vocab;

    // --- logit bias, then the penalties over the window (each distinct token once, at its first occurrence)
    uint bias_off = step_words[base + 15u];
    uint n_bias = step_words[base + 16u];
    for (uint b = tid; b < n_bias; b += BLOCK_SIZE) {
        uint id = step_words[bias_off + 2u * b];
        precise float v = x[xo + id] + uintBitsToFloat(step_words[bias_off + 2u * b + 1u]);
        x[xo + id] = v;
    }
    memoryBarrierBuffer();
    barrier();
    if (step_words[base + 18u] != 0u) {
        uint mask_off = step_words[base + 17u];
        for (uint i = tid; i < n; i += BLOCK_SIZE) {
            if ((step_words[mask_off + (i >> 5u)] & (1u << (i & 31u))) == 0u) x[xo + i] = NEG_INF;
        }
        memoryBarrierBuffer();
        barrier();
    }
    uint hist_off = step_words[base + 11u];
    uint hist_len = step_words[base + 12u];
    uint draft_first = step_words[base + 13u];
    uint w = min(hist_len + step_words[base + 14u], MAX_WINDOW);   // the wrapper checks the bound
    float inv_rep = uintBitsToFloat(step_words[base + 7u]);
    float rep = uintBitsToFloat(step_words[base + 8u]);
    float freq = uintBitsToFloat(step_words[base + 9u]);
    float pres = uintBitsToFloat(step_words[base + 10u]);
    for (uint i = tid; i < w; i += BLOCK_SIZE) {
        win[i] = i < hist_len ? step_words[hist_off + i] : step_words[p.rec_off + TOK_ID(draft_first + i - hist_len)];
    }
    barrier();
    for (uint i = tid; i < w; i += BLOCK_SIZE) {
        uint t = win[i];
        bool first = true;
        uint count = 0u;
        for (uint j = 0u; j < w; j++) {
            if (win[j] == t) {
                count++;
                if (j < i) first = false;
            }
        }
        if (first) {
            precise float v = x[xo + t];
            v = v > 0.0 ? v * inv_rep : v * rep;
            precise float f = float(count) * freq;
            precise float v2 = v - f;
            precise float v3 = v2 - pres;
            x[xo + t] = v3;
        }
    }
    memoryBarrierBuffer();
    barrier();

    // --- the row's maximum (greedy: its argmax is the token)
    float inv_t = uintBitsToFloat(step_words[base + 2u]);
    float best = NEG_INF;
    uint best_i = 0xFFFFFFFFu;
    for (uint i = tid; i < n; i += BLOCK_SIZE) {
        float v = read_x(xo, i);
        if (v > best) { best = v; best_i = i; }
    }
    red_v[tid] = best;
    red_i[tid] = best_i;
    barrier();
    for (uint s = BLOCK_SIZE / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            float v = red_v[tid + s];
            uint i = red_i[tid + s];
            if (v > red_v[tid] || (v == red_v[tid] && i < red_i[tid])) { red_v[tid] = v; red_i[tid] = i; }
        }
        barrier();
    }
    float mx = red_v[0];
    if (inv_t == 0.0) {
        if (tid == 0u) step_words[p.out_off + row] = red_i[0] == 0xFFFFFFFFu ? 0u : red_i[0];
        return;
    }
    barrier();

    // --- top-k: the k-th largest key
    uint top_k = step_words[base + 3u];
    uvec2 thr = uvec2(0u);
    if (top_k > 0u && top_k < n) {
        if (tid == 0u) { sel_prefix = uvec2(0u); sel_rank = top_k; sel_done = 0u; }
        for (uint pass = 0u; pass < 8u; pass++) {
            barrier();
            if (sel_done != 0u) break;
            uvec2 prefix = sel_prefix;
            for (uint b = tid; b < 256u; b += BLOCK_SIZE) h_cnt[b] = 0u;
            barrier();
            for (uint i = tid; i < n; i += BLOCK_SIZE) {
                uvec2 k = key_of(read_x(xo, i), i);
                if (prefix_match(k, prefix, pass)) atomicAdd(h_cnt[digit_of(k, pass)], 1u);
            }
            barrier();
            if (tid == 0u) {
                uint r = sel_rank;
                uint cum = 0u;
                for (int b = 255; b >= 0; b--) {
                    uint c = h_cnt[b];
                    if (cum + c >= r) {
                        sel_rank = r - cum;
                        sel_prefix = with_digit(prefix, pass, uint(b));
                        sel_done = (c == r - cum) ? 1u : 0u;
                        break;
                    }
                    cum += c;
                }
            }
        }
        barrier();
        thr = sel_prefix;
        barrier();
        if (top_k <= MAX_CAND) {
            sample_small_set(row, tid, xo, n, thr, mx);
            return;
        }
    }

    // --- top-p over the top-k set: the first key whose cumulative mass reaches top_p of the set's mass
    float top_p = uintBitsToFloat(step_words[base + 4u]);
    if (top_p < 1.0) {
        if (tid == 0u) { sel_prefix = uvec2(0u); sel_done = 0u; sel_above = uvec2(0u); }
        for (uint pass = 0u; pass < 8u; pass++) {
            barrier();
            if (sel_done != 0u) break;
            uvec2 prefix = sel_prefix;
            for (uint b = tid; b < 256u; b += BLOCK_SIZE) { h_cnt[b] = 0u; h_lo[b] = 0u; h_hi[b] = 0u; }
            barrier();
            for (uint i = tid; i < n; i += BLOCK_SIZE) {
                float v = read_x(xo, i);
                uvec2 k = key_of(v, i);
                if (key_ge(k, thr) && prefix_match(k, prefix, pass)) {
                    uint d = digit_of(k, pass);
                    uint m = mass_of(v, mx);
                    atomicAdd(h_cnt[d], 1u);
                    uint old = atomicAdd(h_lo[d], m);
                    if (old + m < old) atomicAdd(h_hi[d], 1u);
                }
            }
            barrier();
            if (tid == 0u) {
                if (pass == 0u) {
                    uvec2 total = uvec2(0u);
                    for (uint b = 0u; b < 256u; b++) total = add64(total, uvec2(h_lo[b], h_hi[b]));
                    precise float target = top_p * mass_f32(total);
                    sel_target = target;
                }
                uvec2 cum = sel_above;
                for (int b = 255; b >= 0; b--) {
                    uvec2 mb = uvec2(h_lo[b], h_hi[b]);
                    uvec2 next = add64(cum, mb);
                    if (h_cnt[b] > 0u && mass_f32(next) >= sel_target) {
                        sel_above = cum;
                        sel_prefix = with_digit(prefix, pass, uint(b));
                        sel_done = h_cnt[b] == 1u ? 1u : 0u;
                        break;
                    }
                    cum = next;
                }
            }
        }
        barrier();
        // the chosen digit range may also hold keys outside the top-k set (the counts were of members only)
        if (key_ge(sel_prefix, thr)) thr = sel_prefix;
        barrier();
    }

    // --- min-p, temperature, Gumbel-max over the candidates (ties to the lowest id)
    bool min_p_on = step_words[base + 6u] != 0u;
    precise float min_thr = mx + uintBitsToFloat(step_words[base + 5u]);
    uint key = step_words[base];
    uint pos_hash = pcg(step_words[base + 1u]);
    best = NEG_INF;
    best_i = 0xFFFFFFFFu;
    for (uint i = tid; i < n; i += BLOCK_SIZE) {
        float v = read_x(xo, i);
        if (!key_ge(key_of(v, i), thr) || (min_p_on && !(v >= min_thr))) continue;
        float score = gumbel_score(v, i, inv_t, key, pos_hash);
        if (score > best || (score == best && i < best_i)) { best = score; best_i = i; }
    }
    write_best(row, tid, best, best_i);
}
