// Writes one head vector, staged in shared memory, as f32, f16 pairs or Q8_0 blocks (whole 32-bit words
// only: the device has no 8/16-bit storage). Used by rope.comp and set_rows.comp for KV-cache rows.
//
// Requires before the include: spec constants BLOCK_SIZE (workgroup size) and HEAD_DIM,
//   `shared float head_row[HEAD_DIM]` (the values, complete: a barrier must follow the last write), and
//   `uint kv_out[]` (the destination buffer) with KV_OUT_BINDING defined to its binding (common/kv_parts.glsl:
//   a cache in several parts).
// Defines: OUT_F16 | OUT_Q8_0 (else f32). Q8_0 needs HEAD_DIM % 64 == 0: a head is then an even number of
// 34-byte blocks, so it starts and ends on a word boundary and one workgroup owns every word it writes.
// store_head() must be called in uniform control flow (the Q8_0 path has a barrier).
#ifndef VKMTP_HEAD_STORE_GLSL
#define VKMTP_HEAD_STORE_GLSL

#include "f16.glsl"
#include "q8_0.glsl"
#include "kv_parts.glsl"

#if defined(OUT_Q8_0)
const uint HEAD_WORDS = HEAD_DIM / 64 * 17;  // two 34-byte blocks = 17 words
shared float q8_id[HEAD_DIM / 32];
shared uint q8_d16[HEAD_DIM / 32];
#elif defined(OUT_F16)
const uint HEAD_WORDS = HEAD_DIM / 2;
#else
const uint HEAD_WORDS = HEAD_DIM;
#endif

// HEAD_WRITE(word, value): how a word is stored (a shader writing two caches defines its own; default kv_write)
#ifndef HEAD_WRITE
#define HEAD_WRITE(i, w) kv_write(i, w)
#endif

void store_head(uint base) {
    uint tid = gl_LocalInvocationID.x;
#if defined(OUT_Q8_0)
    for (uint b = tid; b < HEAD_DIM / 32; b += BLOCK_SIZE) {
        float amax = 0.0;
        for (uint j = 0; j < 32; ++j) amax = max(amax, abs(head_row[b * 32 + j]));
        float d = div_rn(amax, 127.0);
        q8_d16[b] = f32_to_f16_bits(d);
        q8_id[b] = d == 0.0 ? 0.0 : div_rn(1.0, d);
    }
    barrier();
    for (uint w = tid; w < HEAD_WORDS; w += BLOCK_SIZE) {
        uint word = 0u;
        for (uint k = 0; k < 4; ++k) {
            uint byte_idx = w * 4 + k;
            uint blk = byte_idx / Q8_0_BYTES;
            uint off = byte_idx - blk * Q8_0_BYTES;
            uint v = off < 2 ? (q8_d16[blk] >> (8 * off)) & 0xFFu
                             : q8_0_byte(head_row[blk * 32 + off - 2], q8_id[blk]);
            word |= v << (8 * k);
        }
        HEAD_WRITE(base + w, word);
    }
#elif defined(OUT_F16)
    for (uint w = tid; w < HEAD_WORDS; w += BLOCK_SIZE) {
        HEAD_WRITE(base + w, pack_f16x2(head_row[2 * w], head_row[2 * w + 1]));
    }
#else
    for (uint i = tid; i < HEAD_WORDS; i += BLOCK_SIZE) {
        HEAD_WRITE(base + i, floatBitsToUint(head_row[i]));
    }
#endif
}

#endif
