// Q8_0 quantization exactly as ggml's quantize_row_q8_0_ref (and vkmtp.gguf / gguf-py): per block of 32,
// d = amax / 127, id = 1 / d (0 when d == 0), q = roundf(x * id) with ties away from zero, d stored as f16.
// Vulkan allows 2.5 ULP for a float division, so both divisions are done exactly in integer arithmetic
// (div_rn) and the product is `precise` (no contraction into a following add); round_away is exact.
#ifndef VKMTP_Q8_0_GLSL
#define VKMTP_Q8_0_GLSL

#define Q8_0_BLOCK 32u
#define Q8_0_BYTES 34u

// a / b correctly rounded (nearest even) for positive normal a and b; 0 when a == 0 or when the quotient is
// below the normal range (only reachable for amax < 1.5e-36, where the f16 scale is 0 anyway).
float div_rn(float a, float b) {
    uint ua = floatBitsToUint(a);
    uint ub = floatBitsToUint(b);
    if ((ua & 0x7FFFFFFFu) == 0u) return 0.0;
    int e = int(ua >> 23) - int(ub >> 23) + 127;
    uint ma = (ua & 0x7FFFFFu) | 0x800000u;
    uint mb = (ub & 0x7FFFFFu) | 0x800000u;
    if (ma < mb) { ma <<= 1; e -= 1; }         // now 1 <= ma / mb < 2
    uint q = 0u;
    uint r = ma;
    for (int i = 0; i < 25; ++i) {              // 24 quotient bits and one guard bit
        q <<= 1;
        if (r >= mb) { r -= mb; q |= 1u; }
        r <<= 1;
    }
    uint guard = q & 1u;
    q >>= 1;
    if (guard != 0u && (r != 0u || (q & 1u) != 0u)) q += 1u;
    if (q == 0x1000000u) { q >>= 1; e += 1; }
    if (e <= 0) return 0.0;
    if (e >= 255) return uintBitsToFloat(0x7F800000u);
    return uintBitsToFloat((uint(e) << 23) | (q & 0x7FFFFFu));
}

// roundf: nearest integer, halfway cases away from zero (exact for every float).
float round_away(float v) {
    float a = abs(v);
    float f = floor(a);
    float r = f + ((a - f) >= 0.5 ? 1.0 : 0.0);
    return v < 0.0 ? -r : r;
}

// Quantized byte (two's complement int8 in the low 8 bits) of x with inverse scale id.
uint q8_0_byte(float x, float id) {
    precise float t = x * id;
    return uint(int(round_away(t))) & 0xFFu;
}

#endif
