// GGUF block layouts and 32-bit word helpers (no 8/16-bit storage: see docs/DESIGN.md).
//
// Every GGUF tensor is bound as a `uint` array and addressed by BYTE offsets (uint: views stay < 4 GiB).
// Byte layouts are ggml's block structs (ggml/src/ggml-common.h in llama.cpp). Blocks of Q4_0, Q5_0, Q8_0,
// IQ4_NL, Q3_K and Q6_K (and F16/BF16 values) may start on a 2-byte boundary; such spans are read as two or
// three words and joined with a funnel shift. This file has only pure functions on words; dequant.glsl adds
// the buffer loads.
#ifndef VKMTP_TYPES_GLSL
#define VKMTP_TYPES_GLSL

// ggml type ids (GGUF tensor info)
#define GGML_F32 0u
#define GGML_F16 1u
#define GGML_Q4_0 2u
#define GGML_Q4_1 3u
#define GGML_Q5_0 6u
#define GGML_Q5_1 7u
#define GGML_Q8_0 8u
#define GGML_Q2_K 10u
#define GGML_Q3_K 11u
#define GGML_Q4_K 12u
#define GGML_Q5_K 13u
#define GGML_Q6_K 14u
#define GGML_IQ4_NL 20u
#define GGML_IQ4_XS 23u
#define GGML_BF16 30u

// Elements per block (QK_*) and bytes per block (*_BYTES).
#define QK_K 256u
#define QK_LEGACY 32u
#define F32_BYTES 4u
#define F16_BYTES 2u
#define BF16_BYTES 2u
#define Q4_0_BYTES 18u    // d f16 | qs[16]
#define Q4_1_BYTES 20u    // d f16 | m f16 | qs[16]
#define Q5_0_BYTES 22u    // d f16 | qh u32 (unaligned) | qs[16]
#define Q5_1_BYTES 24u    // d f16 | m f16 | qh u32 | qs[16]
#define Q8_0_BYTES 34u    // d f16 | qs[32] int8
#define Q2_K_BYTES 84u    // scales[16] | qs[64] | d f16 | dmin f16
#define Q3_K_BYTES 110u   // hmask[32] | qs[64] | scales[12] | d f16
#define Q4_K_BYTES 144u   // d f16 | dmin f16 | scales[12] | qs[128]
#define Q5_K_BYTES 176u   // d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
#define Q6_K_BYTES 210u   // ql[128] | qh[64] | scales[16] int8 | d f16
#define IQ4_NL_BYTES 18u  // d f16 | qs[16]
#define IQ4_XS_BYTES 136u // d f16 | scales_h u16 | scales_l[4] | qs[128]

// (w >> sh) | (hi << (32 - sh)) for any sh in 0..31, without the undefined shift by 32 when sh == 0.
uint funnel_shift(uint lo, uint hi, uint sh) {
    return (lo >> sh) | ((hi << 1u) << (31u - sh));
}

// Byte k (0..3) of a word, unsigned and sign-extended.
uint byte_of(uint w, uint k) { return bitfieldExtract(w, int(8u * k), 8); }
int sbyte_of(uint w, uint k) { return bitfieldExtract(int(w), int(8u * k), 8); }

// The 4 bytes of a word as floats, unsigned / signed (int8).
vec4 ubytes4(uint w) { return vec4(uvec4(w, w >> 8u, w >> 16u, w >> 24u) & 0xFFu); }
vec4 sbytes4(uint w) {
    int s = int(w);
    return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8),
                bitfieldExtract(s, 24, 8));
}

// The 4 low (sh = 0) or high (sh = 4) nibbles of the 4 bytes of a word, as floats.
vec4 nibbles4(uint w, uint sh) { return ubytes4((w >> sh) & 0x0F0F0F0Fu); }

// Low / high f16 of a word; the f16 at half-word position `half` (0 or 1).
float f16_lo(uint w) { return unpackHalf2x16(w).x; }
float f16_hi(uint w) { return unpackHalf2x16(w).y; }
float f16_half(uint w, uint half_index) { return unpackHalf2x16(w >> (16u * half_index)).x; }

// bf16 = the upper 16 bits of an f32.
float bf16_lo(uint w) { return uintBitsToFloat(w << 16u); }
float bf16_hi(uint w) { return uintBitsToFloat(w & 0xFFFF0000u); }

// IQ4_NL / IQ4_XS non-linear 4-bit code book (ggml's kvalues_iq4nl): -127 -104 -83 -65 -49 -35 -22 -10
// 1 13 25 38 53 69 89 113, packed as int8 bytes into 4 words and looked up with selects and a bit-field
// extract (no dynamically indexed array: those go to scratch memory on some compilers and are slow to build
// on lavapipe).
const uvec4 IQ4_PACKED = uvec4(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);

float iq4_value(uint n) {
    uint w = n < 8u ? (n < 4u ? IQ4_PACKED.x : IQ4_PACKED.y) : (n < 12u ? IQ4_PACKED.z : IQ4_PACKED.w);
    return float(bitfieldExtract(int(w), int(8u * (n & 3u)), 8));
}

// The code-book values of the 4 low (sh = 0) or high (sh = 4) nibbles of a word. The code book is a quartic
// in the nibble n to within 0.433 (a minimax fit; evaluated in f32 the error stays below 0.4331), so the
// quartic rounded to the nearest integer IS the code book, exactly: 4 fmas and a round per value, on all 4
// nibbles at once, instead of iq4_value's 3-level select and byte extract per nibble (the mat-vec's
// per-weight cost for IQ4_XS / IQ4_NL). vkmtp/tests/unit/test_quant_types.py checks the 16 values.
const vec4 IQ4_POLY = vec4(0.0015860428, 0.031086439, -1.3719270, 24.173830);
const float IQ4_POLY0 = -126.56701;

vec4 iq4_values4(uint w, uint sh) {
    vec4 n = nibbles4(w, sh);
    vec4 p = fma(vec4(IQ4_POLY.x), n, vec4(IQ4_POLY.y));
    p = fma(p, n, vec4(IQ4_POLY.z));
    p = fma(p, n, vec4(IQ4_POLY.w));
    p = fma(p, n, vec4(IQ4_POLY0));
    return roundEven(p);
}

// 6-bit (scale, min) of sub-block b (0..7) of Q4_K / Q5_K from the 12 scale bytes held in words s0, s1, s2
// (block bytes 4..15): b < 4: scale = byte b & 63, min = byte b+4 & 63; b >= 4: the low 4 bits come from
// byte b+4 (scale: low nibble, min: high nibble) and the top 2 bits from bits 6..7 of bytes b-4 / b.
uvec2 k4_scale_min(uint s0, uint s1, uint s2, uint b) {
    if (b < 4u) {
        return uvec2(byte_of(s0, b) & 63u, byte_of(s1, b) & 63u);
    }
    uint k = b - 4u;
    uint lo = byte_of(s2, k);
    return uvec2((lo & 0xFu) | ((byte_of(s0, k) >> 6u) << 4u), (lo >> 4u) | ((byte_of(s1, k) >> 6u) << 4u));
}

#endif
