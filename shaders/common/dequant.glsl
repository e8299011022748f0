// One way to dequantize every supported GGUF type, chosen by a DATA_A_<TYPE> define:
//   DATA_A_F32 DATA_A_F16 DATA_A_BF16 DATA_A_Q8_0 DATA_A_Q4_0 DATA_A_Q4_1 DATA_A_Q5_0 DATA_A_Q5_1
//   DATA_A_Q2_K DATA_A_Q3_K DATA_A_Q4_K DATA_A_Q5_K DATA_A_Q6_K DATA_A_IQ4_NL DATA_A_IQ4_XS
// (IQ2_*/IQ3_* are not supported yet.)
//
// The including shader declares the weights as a uint array and includes this file after it; by default the
// array is `data_a`, or define DQ_LOAD(w) to read word w from elsewhere (e.g. an A tile loader's binding).
// All addresses are BYTE offsets of the bound buffer; rows and blocks may start on 2-byte boundaries.
//
// DEVICE LAYOUT. Rows are GGUF rows (row r at byte row_base + r * row_bytes, row_bytes as in GGUF), and every
// type but three keeps ggml's block structs. Q8_0, Q4_0 and IQ4_NL (A_SPLIT) are repacked at load
// (vkmtp.ops.quant_types.to_device_layout): a row of nb blocks holds every block's quants first (A_QS_BYTES
// each: 32 or 16), then every block's f16 scale. The row is as long as in GGUF, but a block's quants start a
// multiple of 16 bytes after the row start instead of at 2 bytes into a 34/18-byte block: with 8-byte-aligned
// rows (A_ALIGN8, a define the mat-vec wrappers set when the weight's offset and row_bytes allow it) 8 quants
// are one 8-byte load of the uvec2 alias data_a2 the including shader declares; otherwise they are joined
// from words as before (any alignment). Q4_K, Q5_K and IQ4_XS take the same 8-byte loads under A_ALIGN8.
// A block is addressed by a handle DQ_BLK = dq_block(row, row_bytes, b) for block b of a row: the block's byte
// (uint) for the GGUF-layout types, (byte of its quants, byte of its scale) (uvec2) for the A_SPLIT types.
//
// The unit of work is 8 consecutive elements (a "group"); every type's sub-block boundaries fall on
// multiples of 8, so a group has one scale and one min:  value = q * scale + min.
//   A_BLOCK_K, A_BLOCK_BYTES         elements / bytes per block (float types: 1 element per "block")
//   A_IS_FLOAT                       defined for F32/F16/BF16 (rows of any length: dequant1_row for a tail)
//   DQ_BLK dq_block(row, row_bytes, b)  handle of block b of the row at byte `row`
//   vec2 dq_scale_min(blk, i)        (scale, min) of elements i..i+7 of the block blk (i % 8 == 0)
//   void dq_quants8(blk, i, q0, q1)  their 8 quantized values as floats (offsets such as -8 already applied)
//   void dequant8(blk, i, v0, v1)    the 8 dequantized values, v = fma(q, scale, min)
//   void dequant8_row(row, row_bytes, e, v0, v1)  elements e..e+7 (e % 8 == 0) of the row at byte `row`
//   float dequant1_row(row, e)       one element (float types only)
// Mat-vec streams 32-element spans instead (quantized types: every block is a multiple of 32 elements):
//   A_SCALE_K                        elements per scale: 16 (Q2_K, Q3_K, Q6_K; A_SCALE16 defined) or 32
//   A_HAS_MIN                        defined for the types whose value has a min term (Q4_1, Q5_1, Q2_K, Q4/5_K)
//   vec4 dq_span_sm(blk, i)          decoded once per span: (scale, min) of elements i..i+15 (i % 32 == 0) in
//                                    .xy and of i+16..i+31 in .zw
// then dq_quants8 per 8 elements (matvec_span.glsl), so the block header is decoded once per 32 weights and
// the scale and min stay out of the inner dot.
// A mat-mat tile loader can call dequant8_row per (row, group) of its tile, or dq_scale_min + dq_quants8.
#ifndef VKMTP_DEQUANT_GLSL
#define VKMTP_DEQUANT_GLSL

#extension GL_EXT_control_flow_attributes : require

#include "types.glsl"

#ifndef DQ_LOAD
#define DQ_LOAD(w) data_a[w]
#endif

// --- loads by byte address ---------------------------------------------------------------------------------
uint dq_u32(uint b) { return DQ_LOAD(b >> 2u); }  // b % 4 == 0

uint dq_u32_at(uint b) {  // 4 bytes from any b; the second word is only read when the span needs it
    uint w = b >> 2u;
    uint sh = (b & 3u) * 8u;
    return funnel_shift(DQ_LOAD(w), DQ_LOAD(sh == 0u ? w : w + 1u), sh);
}

uvec2 dq_u64_at(uint b) {  // 8 bytes from any b
    uint w = b >> 2u;
    uint sh = (b & 3u) * 8u;
    uint w0 = DQ_LOAD(w);
    uint w1 = DQ_LOAD(w + 1u);
    uint w2 = DQ_LOAD(sh == 0u ? w + 1u : w + 2u);
    return uvec2(funnel_shift(w0, w1, sh), funnel_shift(w1, w2, sh));
}

uvec2 dq_u64(uint b) { return uvec2(DQ_LOAD(b >> 2u), DQ_LOAD((b >> 2u) + 1u)); }  // b % 4 == 0

// 8 bytes at b where the block layout puts them on 8 bytes when the row does (A_SPLIT quants; Q4_K, Q5_K and
// IQ4_XS quants, whose 144-, 176- and 136-byte blocks keep an 8-byte-aligned row's blocks aligned): one 8-byte
// load with A_ALIGN8, else words (dq_qs8: any alignment; dq_u64_8: b % 4 == 0)
#ifdef A_ALIGN8
uvec2 dq_qs8(uint b) { return data_a2[b >> 3u]; }
uvec2 dq_u64_8(uint b) { return data_a2[b >> 3u]; }
#else
uvec2 dq_qs8(uint b) { return dq_u64_at(b); }
uvec2 dq_u64_8(uint b) { return dq_u64(b); }
#endif

uint dq_u8(uint b) { return byte_of(DQ_LOAD(b >> 2u), b & 3u); }
int dq_s8(uint b) { return sbyte_of(DQ_LOAD(b >> 2u), b & 3u); }
float dq_f16(uint b) { return f16_half(DQ_LOAD(b >> 2u), (b >> 1u) & 1u); }  // b % 2 == 0

// --- per type: block size, (scale, min) and quants of the group at element i of a block --------------------
#if defined(DATA_A_F32) || defined(DATA_A_F16) || defined(DATA_A_BF16)
#define A_IS_FLOAT 1
#define A_BLOCK_K 1u
#if defined(DATA_A_F32)
#define A_BLOCK_BYTES 4u
#else
#define A_BLOCK_BYTES 2u
#endif
vec2 dq_scale_min(uint blk, uint i) { return vec2(1.0, 0.0); }
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {  // `blk` is the byte of the first element
#if defined(DATA_A_F32)
    q0 = uintBitsToFloat(uvec4(dq_u64(blk), dq_u64(blk + 8u)));
    q1 = uintBitsToFloat(uvec4(dq_u64(blk + 16u), dq_u64(blk + 24u)));
#else
    uvec4 u = uvec4(dq_u64_at(blk), dq_u64_at(blk + 8u));
#if defined(DATA_A_F16)
    q0 = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    q1 = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
#else
    q0 = vec4(bf16_lo(u.x), bf16_hi(u.x), bf16_lo(u.y), bf16_hi(u.y));
    q1 = vec4(bf16_lo(u.z), bf16_hi(u.z), bf16_lo(u.w), bf16_hi(u.w));
#endif
#endif
}
float dequant1_row(uint row, uint e) {
#if defined(DATA_A_F32)
    return uintBitsToFloat(dq_u32(row + 4u * e));
#elif defined(DATA_A_F16)
    return dq_f16(row + 2u * e);
#else
    uint b = row + 2u * e;
    return uintBitsToFloat(((DQ_LOAD(b >> 2u) >> ((b & 2u) * 8u)) & 0xFFFFu) << 16u);
#endif
}

#elif defined(DATA_A_Q4_0) || defined(DATA_A_IQ4_NL)
#define A_BLOCK_K 32u
#define A_BLOCK_BYTES 18u
#define A_SPLIT 1
#define A_QS_BYTES 16u
vec2 dq_scale_min(uvec2 blk, uint i) { return vec2(dq_f16(blk.y), 0.0); }
void dq_quants8(uvec2 blk, uint i, out vec4 q0, out vec4 q1) {
    // elements j..j+7 are the low nibbles of qs[j..j+7], elements 16+j.. their high nibbles
    uvec2 u = dq_qs8(blk.x + (i & 15u));
    uint sh = (i >> 4u) * 4u;
#if defined(DATA_A_Q4_0)
    q0 = nibbles4(u.x, sh) - 8.0;
    q1 = nibbles4(u.y, sh) - 8.0;
#else
    q0 = iq4_values4(u.x, sh);
    q1 = iq4_values4(u.y, sh);
#endif
}

#elif defined(DATA_A_Q4_1)
#define A_BLOCK_K 32u
#define A_BLOCK_BYTES 20u
vec2 dq_scale_min(uint blk, uint i) { return unpackHalf2x16(dq_u32(blk)); }
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uvec2 u = dq_u64(blk + 4u + (i & 15u));
    uint sh = (i >> 4u) * 4u;
    q0 = nibbles4(u.x, sh);
    q1 = nibbles4(u.y, sh);
}

#elif defined(DATA_A_Q5_0) || defined(DATA_A_Q5_1)
#define A_BLOCK_K 32u
#if defined(DATA_A_Q5_0)
#define A_BLOCK_BYTES 22u
#define Q5_QH 2u
#define Q5_QS 6u
#define Q5_OFFSET 16.0
vec2 dq_scale_min(uint blk, uint i) { return vec2(dq_f16(blk), 0.0); }
#else
#define A_BLOCK_BYTES 24u
#define Q5_QH 4u
#define Q5_QS 8u
#define Q5_OFFSET 0.0
vec2 dq_scale_min(uint blk, uint i) { return unpackHalf2x16(dq_u32(blk)); }
#endif
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uvec2 u = dq_u64_at(blk + Q5_QS + (i & 15u));
    uint sh = (i >> 4u) * 4u;
    uint hb = dq_u32_at(blk + Q5_QH) >> i;  // bit k = 5th bit of element i + k
    vec4 h0 = vec4((uvec4(hb) >> uvec4(0u, 1u, 2u, 3u)) & 1u);
    vec4 h1 = vec4((uvec4(hb) >> uvec4(4u, 5u, 6u, 7u)) & 1u);
    q0 = nibbles4(u.x, sh) + 16.0 * h0 - Q5_OFFSET;
    q1 = nibbles4(u.y, sh) + 16.0 * h1 - Q5_OFFSET;
}

#elif defined(DATA_A_Q8_0)
#define A_BLOCK_K 32u
#define A_BLOCK_BYTES 34u
#define A_SPLIT 1
#define A_QS_BYTES 32u
vec2 dq_scale_min(uvec2 blk, uint i) { return vec2(dq_f16(blk.y), 0.0); }
void dq_quants8(uvec2 blk, uint i, out vec4 q0, out vec4 q1) {
    uvec2 u = dq_qs8(blk.x + i);
    q0 = sbytes4(u.x);
    q1 = sbytes4(u.y);
}

#elif defined(DATA_A_Q2_K)
#define A_BLOCK_K 256u
#define A_BLOCK_BYTES 84u
// element i = 128h + 32s + 16g + l: 2 bits at shift 2s of qs[32h + 16g + l]; scale byte 8h + 2s + g = i / 16
vec2 dq_scale_min(uint blk, uint i) {
    vec2 dm = unpackHalf2x16(dq_u32(blk + 80u));
    uint sc = dq_u8(blk + (i >> 4u));
    return vec2(dm.x * float(sc & 0xFu), -dm.y * float(sc >> 4u));
}
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uint h = i >> 7u;
    uint s = (i >> 5u) & 3u;
    uvec2 u = dq_u64(blk + 16u + 32u * h + (i & 31u));  // i % 32 = 16g + l
    q0 = ubytes4((u.x >> (2u * s)) & 0x03030303u);
    q1 = ubytes4((u.y >> (2u * s)) & 0x03030303u);
}

#elif defined(DATA_A_Q3_K)
#define A_BLOCK_K 256u
#define A_BLOCK_BYTES 110u
// element i = 128h + 32s + 16g + l: low 2 bits at shift 2s of qs[32h + 16g + l] (bytes 32..95), high bit
// (4h + s) of hmask[16g + l] (clear = subtract 4); 6-bit signed scale t = i / 16 packed in bytes 96..107
vec2 dq_scale_min(uint blk, uint i) {
    uint t = i >> 4u;
    uint lo4 = (dq_u8(blk + 96u + (t & 7u)) >> (4u * (t >> 3u))) & 0xFu;
    uint hi2 = (dq_u8(blk + 104u + (t & 3u)) >> (2u * (t >> 2u))) & 3u;
    return vec2(dq_f16(blk + 108u) * float(int(lo4 | (hi2 << 4u)) - 32), 0.0);
}
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uint h = i >> 7u;
    uint s = (i >> 5u) & 3u;
    uint gl = i & 31u;  // 16g + l
    uvec2 lo = dq_u64_at(blk + 32u + 32u * h + gl);
    uvec2 hm = dq_u64_at(blk + gl);
    uint hs = 4u * h + s;
    q0 = ubytes4(((lo.x >> (2u * s)) & 0x03030303u) | (((hm.x >> hs) & 0x01010101u) << 2u)) - 4.0;
    q1 = ubytes4(((lo.y >> (2u * s)) & 0x03030303u) | (((hm.y >> hs) & 0x01010101u) << 2u)) - 4.0;
}

#elif defined(DATA_A_Q4_K) || defined(DATA_A_Q5_K)
#define A_BLOCK_K 256u
#if defined(DATA_A_Q4_K)
#define A_BLOCK_BYTES 144u
#define QK_QS 16u
#else
#define A_BLOCK_BYTES 176u
#define QK_QS 48u
#endif
// element i = 64c + 32g + l: nibble g of qs[32c + l]; sub-block b = 2c + g = i / 32
vec2 dq_scale_min(uint blk, uint i) {
    vec2 dm = unpackHalf2x16(dq_u32(blk));
    uvec2 sm = k4_scale_min(dq_u32(blk + 4u), dq_u32(blk + 8u), dq_u32(blk + 12u), i >> 5u);
    return vec2(dm.x * float(sm.x), -dm.y * float(sm.y));
}
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uint l = i & 31u;
    uvec2 u = dq_u64_8(blk + QK_QS + 32u * (i >> 6u) + l);
    uint sh = ((i >> 5u) & 1u) * 4u;
    q0 = nibbles4(u.x, sh);
    q1 = nibbles4(u.y, sh);
#if defined(DATA_A_Q5_K)
    uvec2 h = dq_u64_8(blk + 16u + l);  // bit b of qh[l] is the 5th bit of element 32b + l
    uint b = i >> 5u;
    q0 += 16.0 * ubytes4((h.x >> b) & 0x01010101u);
    q1 += 16.0 * ubytes4((h.y >> b) & 0x01010101u);
#endif
}

#elif defined(DATA_A_Q6_K)
#define A_BLOCK_K 256u
#define A_BLOCK_BYTES 210u
// element i = 128h + 32s + l: nibble (s >= 2) of ql[64h + 32(s & 1) + l], bits 2s..2s+1 of qh[32h + l],
// q - 32; signed scale byte 8h + 2s + l / 16 = i / 16
vec2 dq_scale_min(uint blk, uint i) {
    return vec2(dq_f16(blk + 208u) * float(dq_s8(blk + 192u + (i >> 4u))), 0.0);
}
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uint h = i >> 7u;
    uint s = (i >> 5u) & 3u;
    uint l = i & 31u;
    uvec2 ql = dq_u64_at(blk + 64u * h + 32u * (s & 1u) + l);
    uvec2 qh = dq_u64_at(blk + 128u + 32u * h + l);
    uint sh = (s >> 1u) * 4u;
    q0 = ubytes4(((ql.x >> sh) & 0x0F0F0F0Fu) | (((qh.x >> (2u * s)) & 0x03030303u) << 4u)) - 32.0;
    q1 = ubytes4(((ql.y >> sh) & 0x0F0F0F0Fu) | (((qh.y >> (2u * s)) & 0x03030303u) << 4u)) - 32.0;
}

#elif defined(DATA_A_IQ4_XS)
#define A_BLOCK_K 256u
#define A_BLOCK_BYTES 136u
// sub-block b = i / 32: 6-bit scale (low nibble b of scales_l, bits 2b..2b+1 of scales_h) - 32;
// element 32b + j: code-book value of nibble (j >= 16) of qs[16b + j % 16]
vec2 dq_scale_min(uint blk, uint i) {
    uint w0 = dq_u32(blk);  // d | scales_h
    uint b = i >> 5u;
    uint ls = ((dq_u32(blk + 4u) >> (4u * b)) & 0xFu) | (((w0 >> (16u + 2u * b)) & 3u) << 4u);
    return vec2(f16_lo(w0) * float(int(ls) - 32), 0.0);
}
void dq_quants8(uint blk, uint i, out vec4 q0, out vec4 q1) {
    uvec2 u = dq_u64_8(blk + 8u + 16u * (i >> 5u) + (i & 15u));
    uint sh = ((i >> 4u) & 1u) * 4u;
    q0 = iq4_values4(u.x, sh);
    q1 = iq4_values4(u.y, sh);
}

#else
#error "dequant.glsl: define one DATA_A_<TYPE>"
#endif

// --- block handles -----------------------------------------------------------------------------------------
#ifdef A_SPLIT
#define DQ_BLK uvec2
DQ_BLK dq_block(uint row, uint row_bytes, uint b) {
    return uvec2(row + A_QS_BYTES * b, row + A_QS_BYTES * (row_bytes / A_BLOCK_BYTES) + 2u * b);
}
#else
#define DQ_BLK uint
DQ_BLK dq_block(uint row, uint row_bytes, uint b) { return row + b * A_BLOCK_BYTES; }
#endif

// --- spans of 32 elements (quantized types) ----------------------------------------------------------------
#ifndef A_IS_FLOAT
#if defined(DATA_A_Q2_K) || defined(DATA_A_Q3_K) || defined(DATA_A_Q6_K)
#define A_SCALE16 1
#define A_SCALE_K 16u
#else
#define A_SCALE_K 32u
#endif
#if defined(DATA_A_Q4_1) || defined(DATA_A_Q5_1) || defined(DATA_A_Q2_K) || defined(DATA_A_Q4_K) \
    || defined(DATA_A_Q5_K)
#define A_HAS_MIN 1
#endif
vec4 dq_span_sm(DQ_BLK blk, uint i) {
    vec2 lo = dq_scale_min(blk, i);
#ifdef A_SCALE16
    return vec4(lo, dq_scale_min(blk, i + 16u));
#else
    return vec4(lo, lo);
#endif
}
#endif

// --- shared by all types -----------------------------------------------------------------------------------
void dequant8(DQ_BLK blk, uint i, out vec4 v0, out vec4 v1) {
    vec2 sm = dq_scale_min(blk, i);
    vec4 q0;
    vec4 q1;
    dq_quants8(blk, i, q0, q1);
    v0 = fma(q0, vec4(sm.x), vec4(sm.y));
    v1 = fma(q1, vec4(sm.x), vec4(sm.y));
}

void dequant8_row(uint row, uint row_bytes, uint e, out vec4 v0, out vec4 v1) {
    uint blk = e / A_BLOCK_K;
    dequant8(dq_block(row, row_bytes, blk), e - blk * A_BLOCK_K, v0, v1);
}

#endif
