// Weight loads for matmul.comp: W[row][k] of a weight part stored as uint words (binding 0, data_a).
//   vec4  load_a4(a_off, row, k_row, k0): elements k0..k0+3 of `row` (all < k_row), k0 % 4 == 0
//   float load_a1(a_off, row, k_row, k):  one element
// a_off: word offset of the part, k_row: elements per row (K). Selected by DATA_A_F32 / DATA_A_F16 /
// DATA_A_BF16. 16-bit rows start on a 2-byte boundary when K is odd: 4 halves then span 2 or 3 words.
#ifndef VKMTP_MATMUL_LOAD_GLSL
#define VKMTP_MATMUL_LOAD_GLSL

layout(std430, binding = 0) readonly buffer ABuf { uint data_a[]; };

#if defined(DATA_A_F32)

vec4 load_a4(uint a_off, uint row, uint k_row, uint k0) {
    const uint w = a_off + row * k_row + k0;
    return vec4(uintBitsToFloat(data_a[w]), uintBitsToFloat(data_a[w + 1]),
                uintBitsToFloat(data_a[w + 2]), uintBitsToFloat(data_a[w + 3]));
}

float load_a1(uint a_off, uint row, uint k_row, uint k) {
    return uintBitsToFloat(data_a[a_off + row * k_row + k]);
}

#elif defined(DATA_A_F16) || defined(DATA_A_BF16)

// Two consecutive 16-bit values as (low, high) halves of one word -> two floats.
vec2 unpack_pair(uint w) {
#if defined(DATA_A_F16)
    return unpackHalf2x16(w);
#else
    return vec2(uintBitsToFloat(w << 16), uintBitsToFloat(w & 0xFFFF0000u));
#endif
}

vec4 load_a4(uint a_off, uint row, uint k_row, uint k0) {
    const uint h = a_off * 2 + row * k_row + k0;     // index of the first 16-bit value
    const uint w = h >> 1;
    uint lo = data_a[w];
    uint hi = data_a[w + 1];
    if ((h & 1u) != 0u) {                            // 2-byte aligned: funnel-shift three words into two
        const uint last = data_a[w + 2];
        lo = (lo >> 16) | (hi << 16);
        hi = (hi >> 16) | (last << 16);
    }
    return vec4(unpack_pair(lo), unpack_pair(hi));
}

float load_a1(uint a_off, uint row, uint k_row, uint k) {
    const uint h = a_off * 2 + row * k_row + k;
    const vec2 pair = unpack_pair(data_a[h >> 1]);
    return (h & 1u) != 0u ? pair.y : pair.x;
}

#else
#error "matmul_load.glsl: define DATA_A_F32, DATA_A_F16 or DATA_A_BF16"
#endif

#endif
