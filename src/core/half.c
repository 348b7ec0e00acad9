/* f16 (IEEE binary16) and bf16 (the top half of an f32) <-> f32. */
#include "core/half.h"

#include <math.h>
#include <string.h>

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
