/* kernels/vmath.h against libm in double, over the whole float range, for every build this CPU runs.
 *
 * Inputs: both signs of every exponent (denormals included) with 4096 mantissas each, spread over the
 * binade's whole mantissa range; 65536 per binade where the functions change shape (|x| in
 * [1/8, 128)); a million random bit patterns; and the special values (+-0, +-inf, NaN, the smallest
 * denormal, FLT_MIN, FLT_MAX, each side of every branch point and clamp). The reference is the function
 * in double; the error is |y - ref| over the spacing of floats at ref (2^-149 below FLT_MIN), so an
 * exactly rounded result scores at most 0.5. NaN must give NaN; a reference that rounds to +-inf
 * must be met exactly, and f(+-0) must keep the sign where the function does.
 *
 * The bounds are those kernels/vmath.h states; the largest error seen per function and build is
 * printed. Also: the array functions give the same bits at every length and position (the vector
 * builds' tails) and in place.
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "kernels/vmath.h"

static double sigmoid_ref(double x) {
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static double gelu_ref(double x) {
    return x >= 0 ? 0.5 * x * (1.0 + erf(x * M_SQRT1_2)) : 0.5 * x * erfc(-x * M_SQRT1_2);
}

static double gelu_tanh_two_u(double x) { return 2.0 * sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x); }

static double gelu_tanh_ref(double x) {
    if (isinf(x))
        return x > 0 ? x : NAN;
    return x * sigmoid_ref(gelu_tanh_two_u(x));
}

static double silu_ref(double x) { return isinf(x) && x < 0 ? NAN : x * sigmoid_ref(x); }

/* The tail underflows: gelu(-inf) = -0, the limit. */
static double gelu_exact_ref(double x) { return isinf(x) && x < 0 ? -0.0 : gelu_ref(x); }

/* Allowed error in ULP at x: the stated bound, and for gelu_tanh's ill-conditioned tail the slack the
 * header states. */
static double bound_flat(double x) { (void)x; return 3.0; }

/* In the tail (x < -1.3037, |result| < 0.12) e^(-x^2 / 2), 1/z and the erfc polynomial each add their
 * rounding. */
static double bound_gelu(double x) { return x >= -1.3037281 ? 4.0 : 10.0; }

static double bound_gelu_tanh(double x) { return x >= 0.0 ? 3.0 : 3.0 + 3.0 * fabs(gelu_tanh_two_u(x)); }

/* Below -87.3 sigmoid(x) is denormal: its absolute error, up to 2^-150, is multiplied by |x|. */
static double bound_silu(double x) { return x >= -87.3 ? 4.0 : 4.0 + fabs(x); }

typedef struct vfunc {
    const char *name;
    double (*ref)(double);
    double (*bound)(double);
    size_t offset; /* of the function in kn_vmath */
} vfunc;

static const vfunc funcs[] = {
    {"exp", exp, bound_flat, offsetof(kn_vmath, exp)},
    {"sigmoid", sigmoid_ref, bound_flat, offsetof(kn_vmath, sigmoid)},
    {"tanh", tanh, bound_flat, offsetof(kn_vmath, tanh)},
    {"erf", erf, bound_flat, offsetof(kn_vmath, erf)},
    {"gelu", gelu_exact_ref, bound_gelu, offsetof(kn_vmath, gelu)},
    {"gelu_tanh", gelu_tanh_ref, bound_gelu_tanh, offsetof(kn_vmath, gelu_tanh)},
    {"silu", silu_ref, bound_silu, offsetof(kn_vmath, silu)},
};

static kn_vmath_fn fn_of(const kn_vmath *v, const vfunc *f) {
    kn_vmath_fn fn;
    memcpy(&fn, (const char *)v + f->offset, sizeof fn);
    return fn;
}

static float float_of(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Error of y in units of the float spacing at ref; INFINITY for a NaN / infinity mismatch. */
static double ulp_error(float y, double ref) {
    if (isnan(ref))
        return isnan(y) ? 0.0 : INFINITY;
    if (isnan(y))
        return INFINITY;
    float rounded = (float)ref;
    if (isinf(rounded))
        return y == rounded ? 0.0 : INFINITY;
    if (ref == 0.0 && y == 0.0)
        return !signbit(y) == !signbit(ref) ? 0.0 : INFINITY;
    double a = fabs(ref);
    double spacing = a < FLT_MIN ? ldexp(1.0, -149) : ldexp(1.0, ilogb(a) - 23);
    return fabs((double)y - ref) / spacing;
}

/* The test inputs (see the top of the file). */
static float *make_inputs(size_t *count) {
    static const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_MIN, -FLT_MIN,
        FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MAX, -FLT_MAX, 0.625f, -0.625f, 0.921875f, -0.921875f,
        -1.3037281f, -1.3037282f, -1.303728f, 88.72f, 88.73f, 89.0f, 89.5f, -87.3f, -103.9f, -104.0f,
        -104.5f, -150.0f, 3.92f, 3.93f, 9.0f, 9.2f, 10.5f, -14.0f, -14.9f, -20.0f, 1e20f, -1e20f};
    size_t n_specials = sizeof specials / sizeof specials[0];
    size_t n_sweep = 2 * 255 * 4096, n_dense = 2 * 10 * 65536, n_random = 1000000;
    size_t n = n_specials + n_sweep + n_dense + n_random;
    float *x = malloc(n * sizeof(float));
    if (!x)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n_specials; i++)
        x[k++] = specials[i];
    for (uint32_t sign = 0; sign < 2; sign++)
        for (uint32_t e = 0; e < 255; e++)
            for (uint32_t j = 0; j < 4096; j++) /* the top 12 mantissa bits, the low 11 scrambled */
                x[k++] = float_of(sign << 31 | e << 23 | j << 11 | ((j * 977u) & 0x7ffu));
    for (uint32_t sign = 0; sign < 2; sign++)
        for (uint32_t e = 124; e < 134; e++) /* [1/8, 128) */
            for (uint32_t j = 0; j < 65536; j++)
                x[k++] = float_of(sign << 31 | e << 23 | j << 7 | ((j * 37u) & 0x7fu));
    kn_rng rng = kn_rng_seeded(9);
    for (size_t i = 0; i < n_random; i++)
        x[k++] = float_of((uint32_t)kn_rng_next(&rng));
    *count = k;
    return x;
}

static void check_accuracy(const kn_vmath *v, const vfunc *f, const float *x, const double *ref, size_t n,
                           float *y) {
    fn_of(v, f)(y, x, (int64_t)n);
    double worst = 0.0, worst_x = 0.0;
    size_t over = 0;
    for (size_t i = 0; i < n; i++) {
        double err = ulp_error(y[i], ref[i]);
        if (err > f->bound(x[i])) {
            if (over++ < 5)
                fprintf(stderr, "%s %s(%a = %.9g) = %.9g, reference %.17g: %.3g ULP\n", v->name, f->name,
                        x[i], x[i], y[i], ref[i], err);
        }
        if (!(err <= worst) && isfinite(x[i]) && f->bound(x[i]) == f->bound(0.0)) {
            worst = err;
            worst_x = x[i];
        }
    }
    printf("  %-7s %-10s max %.2f ULP (at %.9g) where the flat bound %.0f applies\n", v->name, f->name,
           worst, worst_x, f->bound(0.0));
    CHECK_MSG(over == 0, "%s %s: %zu of %zu inputs beyond the bound", v->name, f->name, over, n);
}

/* Every length from 0 to 70 at an odd offset, out of place and in place, against one long call. */
static void check_lengths(const kn_vmath *v, const vfunc *f) {
    enum { N = 80 };
    float x[N], whole[N], part[N], inplace[N];
    kn_rng rng = kn_rng_seeded(3);
    for (int i = 0; i < N; i++)
        x[i] = (kn_rng_uniform(&rng) - 0.5f) * 12.0f;
    fn_of(v, f)(whole, x, N);
    int mismatches = 0;
    for (int len = 0; len <= 70; len++) {
        for (int i = 0; i < N; i++)
            part[i] = inplace[i] = 12345.0f;
        memcpy(inplace + 3, x + 3, (size_t)len * sizeof(float));
        fn_of(v, f)(part + 3, x + 3, len);
        fn_of(v, f)(inplace + 3, inplace + 3, len);
        for (int i = 0; i < N; i++) {
            bool inside = i >= 3 && i < 3 + len;
            float want = inside ? whole[i] : 12345.0f;
            if (memcmp(&part[i], &want, sizeof want) != 0 || memcmp(&inplace[i], &want, sizeof want) != 0)
                mismatches++;
        }
    }
    CHECK_MSG(mismatches == 0, "%s %s: %d elements differ between lengths / in place", v->name, f->name,
              mismatches);
}

int main(void) {
    size_t n = 0;
    float *x = make_inputs(&n);
    double *ref = malloc(n * sizeof(double));
    float *y = malloc(n * sizeof(float));
    CHECK(x && ref && y);
    if (!x || !ref || !y)
        return check_finish();
    printf("%zu inputs\n", n);
    const kn_vmath *builds[] = {kn_vmath_for(KN_VMATH_GENERIC), kn_vmath_for(KN_VMATH_AVX2),
                                kn_vmath_for(KN_VMATH_AVX512)};
    CHECK(builds[0] != NULL);
    for (size_t f = 0; f < sizeof funcs / sizeof funcs[0]; f++) {
        for (size_t i = 0; i < n; i++)
            ref[i] = funcs[f].ref(x[i]);
        for (size_t b = 0; b < 3; b++) {
            if (!builds[b])
                continue;
            check_accuracy(builds[b], &funcs[f], x, ref, n, y);
            check_lengths(builds[b], &funcs[f]);
        }
    }
    free(x);
    free(ref);
    free(y);
    return check_finish();
}
