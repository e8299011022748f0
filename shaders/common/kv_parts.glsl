// KV caches cut by rows into KV_PARTS buffers (vkmtp/ops/kv_parts.py): the kernels address one virtual array of
// cache words, row * row_words + ...; part j holds rows [j * rows_per_part, (j + 1) * rows_per_part) from word 0
// of its own buffer. A head row never straddles two parts, so the part is the same for all words of a head.
// Without KV_PARTS (one buffer) the accessors are plain loads and stores.
//
// Writer (rope.comp / set_rows.comp): define KV_OUT_BINDING (the binding of part 0, `uint kv_out[]`, declared
//   by the shader) and provide push constants p.rows_per_part and p.out_row_stride; parts 1.. take bindings
//   KV_OUT_BINDING + j. Use kv_write(word, value).
// Reader (flash_attn.comp): define KV_PARTS_BINDING (parts 0 are `k_data[]` and `v_data[]`, declared by the
//   shader; K part j at KV_PARTS_BINDING + 2 (j - 1), V part j right after it) and provide p.rows_per_part.
//   Use kv_read(is_v, word, row_words).
#ifndef VKMTP_KV_PARTS_GLSL
#define VKMTP_KV_PARTS_GLSL
#if defined(KV_PARTS) && KV_PARTS > 8
#error "at most 8 KV parts"
#endif

#ifdef KV_OUT_BINDING
#define KV_OUT_PART(j) layout(std430, binding = KV_OUT_BINDING + j) writeonly buffer KvOut##j { uint kv_out##j[]; };
#if defined(KV_PARTS) && KV_PARTS > 1
KV_OUT_PART(1)
#endif
#if defined(KV_PARTS) && KV_PARTS > 2
KV_OUT_PART(2)
#endif
#if defined(KV_PARTS) && KV_PARTS > 3
KV_OUT_PART(3)
#endif
#if defined(KV_PARTS) && KV_PARTS > 4
KV_OUT_PART(4)
#endif
#if defined(KV_PARTS) && KV_PARTS > 5
KV_OUT_PART(5)
#endif
#if defined(KV_PARTS) && KV_PARTS > 6
KV_OUT_PART(6)
#endif
#if defined(KV_PARTS) && KV_PARTS > 7
KV_OUT_PART(7)
#endif

void kv_write(uint i, uint w) {
#ifdef KV_PARTS
    uint part_words = p.rows_per_part * p.out_row_stride;
    uint j = i / part_words;
    i -= j * part_words;
    switch (j) {
    case 0u: kv_out[i] = w; break;
#if KV_PARTS > 1
    case 1u: kv_out1[i] = w; break;
#endif
#if KV_PARTS > 2
    case 2u: kv_out2[i] = w; break;
#endif
#if KV_PARTS > 3
    case 3u: kv_out3[i] = w; break;
#endif
#if KV_PARTS > 4
    case 4u: kv_out4[i] = w; break;
#endif
#if KV_PARTS > 5
    case 5u: kv_out5[i] = w; break;
#endif
#if KV_PARTS > 6
    case 6u: kv_out6[i] = w; break;
#endif
#if KV_PARTS > 7
    case 7u: kv_out7[i] = w; break;
#endif
    }
#else
    kv_out[i] = w;
#endif
}
#endif  // KV_OUT_BINDING

#ifdef KV_PARTS_BINDING
#define KV_IN_PART(j) \
    layout(std430, binding = KV_PARTS_BINDING + 2 * (j - 1)) readonly buffer KIn##j { uint k_data##j[]; }; \
    layout(std430, binding = KV_PARTS_BINDING + 2 * (j - 1) + 1) readonly buffer VIn##j { uint v_data##j[]; };
#if defined(KV_PARTS) && KV_PARTS > 1
KV_IN_PART(1)
#endif
#if defined(KV_PARTS) && KV_PARTS > 2
KV_IN_PART(2)
#endif
#if defined(KV_PARTS) && KV_PARTS > 3
KV_IN_PART(3)
#endif
#if defined(KV_PARTS) && KV_PARTS > 4
KV_IN_PART(4)
#endif
#if defined(KV_PARTS) && KV_PARTS > 5
KV_IN_PART(5)
#endif
#if defined(KV_PARTS) && KV_PARTS > 6
KV_IN_PART(6)
#endif
#if defined(KV_PARTS) && KV_PARTS > 7
KV_IN_PART(7)
#endif
#endif  // KV_PARTS_BINDING

#ifdef KV_PARTS_BINDING
uint kv_read(bool is_v, uint i, uint row_words) {
#ifdef KV_PARTS
    uint part_words = p.rows_per_part * row_words;
    uint j = i / part_words;
    i -= j * part_words;
    switch (j) {
    case 0u: return is_v ? v_data[i] : k_data[i];
#if KV_PARTS > 1
    case 1u: return is_v ? v_data1[i] : k_data1[i];
#endif
#if KV_PARTS > 2
    case 2u: return is_v ? v_data2[i] : k_data2[i];
#endif
#if KV_PARTS > 3
    case 3u: return is_v ? v_data3[i] : k_data3[i];
#endif
#if KV_PARTS > 4
    case 4u: return is_v ? v_data4[i] : k_data4[i];
#endif
#if KV_PARTS > 5
    case 5u: return is_v ? v_data5[i] : k_data5[i];
#endif
#if KV_PARTS > 6
    case 6u: return is_v ? v_data6[i] : k_data6[i];
#endif
#if KV_PARTS > 7
    case 7u: return is_v ? v_data7[i] : k_data7[i];
#endif
    }
    return 0u;
#else
    return is_v ? v_data[i] : k_data[i];
#endif
}
#endif  // KV_PARTS_BINDING (reader)

#endif
