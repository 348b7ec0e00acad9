/* The reference build of kernels/vmath.h: the same steps as src/kernels/x86/vmath_simd.inc, one float
 * at a time, with separate multiplies and adds where the vector builds fuse them. */
#include "kernels/vmath.h"

#include <string.h>

#include "kernels/vmath_consts.h"

static inline uint32_t bits_of(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float abs_of(float x) { return float_of(bits_of(x) & 0x7fffffffu); }

/* |magnitude| with the sign bit of `sign`. */
static inline float with_sign_of(float magnitude, float sign) {
    return float_of(bits_of(magnitude) | (bits_of(sign) & 0x80000000u));
}

/* 2^k for -126 <= k <= 127. Unsigned arithmetic: a NaN input reaches here with any k, harmlessly. */
static inline float pow2i(int32_t k) { return float_of(((uint32_t)k + 127u) << 23); }

/* Comparisons with NaN are false, so the clamps let NaN through. */
static float exp_one(float x) {
    x = x < KN_VMATH_EXP_LO ? KN_VMATH_EXP_LO : x;
    x = x > KN_VMATH_EXP_HI ? KN_VMATH_EXP_HI : x;
    float s = x * KN_VMATH_LOG2E + KN_VMATH_SHIFTER;
    float n = s - KN_VMATH_SHIFTER;
    float r = x - n * KN_VMATH_LN2_HI;
    r = r - n * KN_VMATH_LN2_LO;
    float p = KN_VMATH_EXP_P4;
    p = p * r + KN_VMATH_EXP_P3;
    p = p * r + KN_VMATH_EXP_P2;
    p = p * r + KN_VMATH_EXP_P1;
    p = p * r + KN_VMATH_EXP_P0;
    p = 1.0f + ((r * r) * p + r);
    int32_t k = (int32_t)(bits_of(s) - bits_of(KN_VMATH_SHIFTER));
    int32_t k1 = k / 2;
    return p * pow2i(k1) * pow2i(k - k1);
}

/* e^-|x| never overflows; one division serves both signs. */
static float sigmoid_one(float x) {
    float e = exp_one(-abs_of(x));
    return (x < 0.0f ? e : 1.0f) / (1.0f + e);
}

static float tanh_one(float x) {
    float ax = abs_of(x);
    if (ax < KN_VMATH_TANH_SMALL) {
        float x2 = x * x;
        float p = KN_VMATH_TANH_P5;
        p = p * x2 + KN_VMATH_TANH_P4;
        p = p * x2 + KN_VMATH_TANH_P3;
        p = p * x2 + KN_VMATH_TANH_P2;
        p = p * x2 + KN_VMATH_TANH_P1;
        p = p * x2 + KN_VMATH_TANH_P0;
        return with_sign_of((ax * x2) * p + ax, x);
    }
    float e = exp_one(2.0f * ax);
    return with_sign_of(1.0f - 2.0f / (e + 1.0f), x);
}

/* erfc(z) / e^(-z^2) for z >= 0.921875. */
static float erfc_scaled(float z) {
    float w = 1.0f / z - KN_VMATH_ERFC_CENTER;
    float p = KN_VMATH_ERFC_P12;
    p = p * w + KN_VMATH_ERFC_P11;
    p = p * w + KN_VMATH_ERFC_P10;
    p = p * w + KN_VMATH_ERFC_P9;
    p = p * w + KN_VMATH_ERFC_P8;
    p = p * w + KN_VMATH_ERFC_P7;
    p = p * w + KN_VMATH_ERFC_P6;
    p = p * w + KN_VMATH_ERFC_P5;
    p = p * w + KN_VMATH_ERFC_P4;
    p = p * w + KN_VMATH_ERFC_P3;
    p = p * w + KN_VMATH_ERFC_P2;
    p = p * w + KN_VMATH_ERFC_P1;
    p = p * w + KN_VMATH_ERFC_P0;
    return p;
}

/* For |x| >= 0.921875 erfc(|x|) is below 0.2 and needs only absolute accuracy, so e^(-x^2) may take
 * x^2 rounded. */
static float erf_one(float x) {
    float ax = abs_of(x);
    if (ax < KN_VMATH_ERF_SMALL) {
        float x2 = x * x;
        float p = KN_VMATH_ERF_P6;
        p = p * x2 + KN_VMATH_ERF_P5;
        p = p * x2 + KN_VMATH_ERF_P4;
        p = p * x2 + KN_VMATH_ERF_P3;
        p = p * x2 + KN_VMATH_ERF_P2;
        p = p * x2 + KN_VMATH_ERF_P1;
        p = p * x2 + KN_VMATH_ERF_P0;
        return x * p + x;
    }
    float erfc = exp_one(-(ax * ax)) * erfc_scaled(ax);
    return with_sign_of(1.0f - erfc, x);
}

/* In the tail the result is relative to e^(-x^2 / 2) itself, so x^2 / 2 is carried as hi + lo (the
 * product of two floats is exact in double) and e^-(hi + lo) = e^-hi (1 - lo). Below GELU_FLOOR the
 * result has underflowed to -0; the clamp keeps x^2 finite. */
static float gelu_one(float x) {
    if (!(x < KN_VMATH_GELU_TAIL))
        return 0.5f * x * (1.0f + erf_one(x * KN_VMATH_SQRT1_2));
    x = x < KN_VMATH_GELU_FLOOR ? KN_VMATH_GELU_FLOOR : x;
    float half_x = 0.5f * x;
    double square = (double)half_x * x;
    float hi = (float)square, lo = (float)(square - hi);
    float e = exp_one(-hi);
    e = e - e * lo;
    return half_x * (e * erfc_scaled(-x * KN_VMATH_SQRT1_2));
}

static float gelu_tanh_one(float x) {
    float two_u = x * ((x * x) * KN_VMATH_GELU_TANH_B + KN_VMATH_GELU_TANH_A);
    return x * sigmoid_one(two_u);
}

static float silu_one(float x) { return x * sigmoid_one(x); }

#define KN_VMATH_ARRAY(name)                                                                        \
    static void name##_generic(float *y, const float *x, int64_t n) {                               \
        for (int64_t i = 0; i < n; i++)                                                             \
            y[i] = name##_one(x[i]);                                                                \
    }

KN_VMATH_ARRAY(exp)
KN_VMATH_ARRAY(sigmoid)
KN_VMATH_ARRAY(tanh)
KN_VMATH_ARRAY(erf)
KN_VMATH_ARRAY(gelu)
KN_VMATH_ARRAY(gelu_tanh)
KN_VMATH_ARRAY(silu)

const kn_vmath kn_vmath_generic = {
    .name = "generic",
    .exp = exp_generic, .sigmoid = sigmoid_generic, .tanh = tanh_generic, .erf = erf_generic,
    .gelu = gelu_generic, .gelu_tanh = gelu_tanh_generic, .silu = silu_generic,
};
