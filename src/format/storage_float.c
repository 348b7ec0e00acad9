/* Float storage: f16 (IEEE binary16) and bf16 (the top half of an f32), both rounded to nearest even,
 * and raw f32 (the values of a sparse tensor). */
#include <math.h>
#include <string.h>

#include "format/storage_internal.h"

static uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

uint16_t kn_f32_to_f16(float x) {
    uint32_t b = bits_of(x), magnitude = b & 0x7fffffffu;
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    if (magnitude > 0x7f800000u) /* NaN: quiet, keeping the top of the payload */
        return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    if (magnitude >= 0x477ff000u) /* 65520 and up round to infinity (65504 is the largest half) */
        return (uint16_t)(sign | 0x7c00u);
    if (magnitude < 0x38800000u) /* below 2^-14: a subnormal half, in units of 2^-24; the scaling is
                                    exact and nearbyintf rounds half to even */
        return (uint16_t)(sign | (uint16_t)nearbyintf(float_of(magnitude) * 0x1p24f));
    /* A normal half: rebias the exponent (127 -> 15), then drop 13 mantissa bits rounding half to even;
     * a carry moves into the exponent as it should. */
    uint32_t rebiased = magnitude - ((uint32_t)(127 - 15) << 23);
    rebiased += 0xfffu + ((rebiased >> 13) & 1u);
    return (uint16_t)(sign | (rebiased >> 13));
}

float kn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1f)
        return float_of(sign | 0x7f800000u | mantissa << 13);
    if (exponent == 0)
        return float_of(sign | bits_of((float)mantissa * 0x1p-24f));
    return float_of(sign | (exponent + 127 - 15) << 23 | mantissa << 13);
}

uint16_t kn_f32_to_bf16(float x) {
    uint32_t b = bits_of(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, so that truncating cannot make it infinite */
        return (uint16_t)((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}

float kn_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

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
