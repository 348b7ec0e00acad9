/* Float storage: f16 (IEEE binary16) and bf16 (the top half of an f32), both rounded to nearest even,
 * and raw f32 (the values of a sparse tensor). */
#include <math.h>
#include <string.h>

#include "format/storage_internal.h"

kiln_status kn_float_encode(kn_arena *arena, const float *x, kn_storage *s) {
    int64_t n = kn_shape_numel(&s->shape);
    s->payload_bytes = (size_t)n * (size_t)(s->bits / 8);
    void *payload = kn_arena_alloc(arena, s->payload_bytes ? s->payload_bytes : 1);
    if (!payload)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %zu bytes of %s", s->payload_bytes,
                       kn_encoding_name(s->encoding));
    uint16_t *half = payload;
    switch (s->encoding) {
    case KN_ENC_F16:
        for (int64_t i = 0; i < n; i++)
            half[i] = kn_f32_to_f16(x[i]);
        break;
    case KN_ENC_BF16:
        for (int64_t i = 0; i < n; i++)
            half[i] = kn_f32_to_bf16(x[i]);
        break;
    default: memcpy(payload, x, s->payload_bytes); break;
    }
    s->payload = payload;
    return KILN_OK;
}

kiln_status kn_float_check(const kn_storage *s) {
    size_t bytes = (size_t)kn_shape_numel(&s->shape) * (size_t)(s->bits / 8); /* < the f32 size */
    if (s->bits != kn_encoding_bits(s->encoding))
        return kn_fail(KILN_ERR_FORMAT, "%s storage of %d bits per element", kn_encoding_name(s->encoding),
                       s->bits);
    if (s->axis != -1 || s->block != 0)
        return kn_fail(KILN_ERR_FORMAT, "%s storage has an axis or block", kn_encoding_name(s->encoding));
    if (s->payload_bytes != bytes)
        return kn_fail(KILN_ERR_FORMAT, "%zu bytes of %s for %zu expected", s->payload_bytes,
                       kn_encoding_name(s->encoding), bytes);
    return KILN_OK;
}

void kn_float_decode(const kn_storage *s, float *out) {
    int64_t n = kn_shape_numel(&s->shape);
    const uint16_t *half = s->payload;
    switch (s->encoding) {
    case KN_ENC_F16:
        for (int64_t i = 0; i < n; i++)
            out[i] = kn_f16_to_f32(half[i]);
        break;
    case KN_ENC_BF16:
        for (int64_t i = 0; i < n; i++)
            out[i] = kn_bf16_to_f32(half[i]);
        break;
    default:
        if (n)
            memcpy(out, s->payload, (size_t)n * sizeof(float));
        break;
    }
}
