/* Elementwise transcendental functions over float arrays, vectorized: y[i] = f(x[i]) for i < n.
 *
 *   exp        e^x
 *   sigmoid    1 / (1 + e^-x)
 *   tanh
 *   erf
 *   gelu       x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), in its tail (x < -1.3) 0.5 x erfc(-x / sqrt 2)
 *   gelu_tanh  0.5 x (1 + tanh(u)), u = sqrt(2 / pi) (x + 0.044715 x^3), computed as x sigmoid(2u)
 *   silu       x sigmoid(x), as x times this file's sigmoid: Mul(x, Sigmoid(x)) gives the same bits
 *
 * y may be x (in place); otherwise the arrays must not overlap. Each function is a range reduction and
 * a polynomial (coefficients fitted by tools/vmath_fit.py), written three times with the same
 * constants and steps: generic C (the reference, any CPU), AVX2 + FMA and AVX-512 (src/kernels/x86).
 * The builds differ only in rounding (FMA contracts a multiply and an add), so they agree within the
 * bounds below, not bit for bit.
 *
 * Accuracy against the function evaluated in double and rounded to float, in units in the last place
 * of the float result (tests/test_vmath.c checks every exponent, both signs, dense mantissa samples,
 * random floats, +-0, +-inf, NaN, denormals and the saturation ends, for each build this CPU runs;
 * the largest errors it saw are in brackets):
 *     exp 3 (1.0), sigmoid 3 (2.3), tanh 3 (1.3), erf 3 (1.0)        over the whole float range
 *     gelu       4 (3.2) for x >= -1.3037; 10 (8.7) below, where |gelu| < 0.12: e^(-x^2/2), 1/z and
 *                the erfc polynomial each add their rounding
 *     gelu_tanh  3 (2.3) for x >= 0; 3 + 3|2u| below, about the function's condition number there:
 *                a float u carries relative error 2^-24, which the result multiplies (libm-based
 *                0.5 x (1 + tanhf(u)) loses every digit there, to cancellation)
 *     silu       4 (3.1) for x >= -87.3; 4 + |x| below, where sigmoid(x) is denormal and its
 *                absolute error, up to 2^-150, is multiplied by x (as in Mul(x, Sigmoid(x)))
 * Special values: NaN gives NaN; exp(-inf) = 0, exp(+inf) = +inf; sigmoid(+-inf) = 1, 0; tanh and
 * erf of +-inf = +-1; gelu, gelu_tanh and silu of +inf = +inf; gelu(-inf) = -0 (the limit), and
 * gelu_tanh(-inf) = silu(-inf) = NaN (-inf times 0, as the formulas and PyTorch give); f(-0) = -0 for
 * every function but exp and sigmoid.
 */
#ifndef KN_VMATH_H
#define KN_VMATH_H

#include <stdint.h>

typedef void (*kn_vmath_fn)(float *y, const float *x, int64_t n);

typedef struct kn_vmath {
    const char *name; /* "generic", "avx2", "avx512" */
    kn_vmath_fn exp, sigmoid, tanh, erf, gelu, gelu_tanh, silu;
} kn_vmath;

typedef enum kn_vmath_path { KN_VMATH_GENERIC, KN_VMATH_AVX2, KN_VMATH_AVX512 } kn_vmath_path;

/* The build for `path`, or NULL when this CPU (or KILN_ISA, see core/cpu.h) does not allow it. */
const kn_vmath *kn_vmath_for(kn_vmath_path path);
/* The fastest build allowed. */
const kn_vmath *kn_vmath_best(void);

/* fn over y[0..n) = f(x[0..n)), on kiln's threads when n is large. */
void kn_vmath_run(kn_vmath_fn fn, float *y, const float *x, int64_t n);

extern const kn_vmath kn_vmath_generic;
#ifdef KILN_HAVE_X86_KERNELS
/* Only use these after kn_cpu() reports avx2 / avx512f. */
extern const kn_vmath kn_vmath_avx2;
extern const kn_vmath kn_vmath_avx512;
#endif

#endif
