// f32 -> IEEE binary16 with round-to-nearest-even in integer arithmetic. GLSL's packHalf2x16 does not fix
// its rounding mode across drivers; this matches NumPy's astype(float16) bit for bit (Inf/NaN kept, values
// beyond the f16 range become Inf, f16 subnormals rounded exactly).
#ifndef VKMTP_F16_GLSL
#define VKMTP_F16_GLSL

uint f32_to_f16_bits(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    uint ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return sign | (ax > 0x7F800000u ? 0x7E00u : 0x7C00u);  // NaN, Inf
    if (ax >= 0x477FF000u) return sign | 0x7C00u;                                    // >= 65520 rounds to Inf
    if (ax >= 0x38800000u) {                                                         // normal f16 (>= 2^-14)
        uint rounded = ax + 0xFFFu + ((ax >> 13) & 1u);
        return sign | ((rounded - 0x38000000u) >> 13);
    }
    uint e = ax >> 23;
    if (e < 102u) return sign;                                                       // below half the tiniest
    uint m = (ax & 0x7FFFFFu) | 0x800000u;
    uint shift = 126u - e;                                                           // 14 .. 24
    uint q = m >> shift;
    uint rem = m & ((1u << shift) - 1u);
    uint half_ulp = 1u << (shift - 1u);
    if (rem > half_ulp || (rem == half_ulp && (q & 1u) != 0u)) q += 1u;
    return sign | q;
}

uint pack_f16x2(float lo, float hi) {
    return f32_to_f16_bits(lo) | (f32_to_f16_bits(hi) << 16);
}

#endif
