/* Constants shared by every build of kernels/vmath.h. The polynomials are printed by
 * tools/vmath_fit.py (largest error of the float coefficients, in double, in each comment); the rest
 * are the range reductions'. Private to src/kernels. */
#ifndef KN_VMATH_CONSTS_H
#define KN_VMATH_CONSTS_H

/* exp: x = n ln2 + r, |r| <= ln2 / 2, e^x = 2^n e^r. ln2 = LN2_HI + LN2_LO with LN2_HI's 9 significant
 * bits, so n LN2_HI is exact for |n| < 2^15 and x - n LN2_HI too (Cody and Waite). */
#define KN_VMATH_LOG2E 1.44269502e+00f
#define KN_VMATH_LN2_HI 6.93359375e-01f
#define KN_VMATH_LN2_LO -2.12194442e-04f
/* Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer, which then sits in the low
 * mantissa bits: bits(s) - bits(SHIFTER) = n. */
#define KN_VMATH_SHIFTER 12582912.0f
/* Inputs are clamped here: e^89 overflows, e^-104 is below half the smallest denormal. 2^n is applied
 * as 2^(n/2) 2^(n - n/2) so that n from -150 to 129 needs no exponent outside the normal range. */
#define KN_VMATH_EXP_LO -104.0f
#define KN_VMATH_EXP_HI 89.0f

/* e^r = 1 + r + r^2 P(r) on [-ln2/2, ln2/2], P's error times r^2 / e^r: largest error 3.13e-09 */
#define KN_VMATH_EXP_P0 4.999999404e-01f
#define KN_VMATH_EXP_P1 1.666652113e-01f
#define KN_VMATH_EXP_P2 4.166826233e-02f
#define KN_VMATH_EXP_P3 8.368669078e-03f
#define KN_VMATH_EXP_P4 1.382102142e-03f

/* tanh: the polynomial below KN_VMATH_TANH_SMALL, 1 - 2 / (e^2|x| + 1) (with x's sign) above, where
 * the result is >= 0.55 and the subtraction loses nothing. */
#define KN_VMATH_TANH_SMALL 0.625f
/* tanh x = x + x^3 P(x^2) on [0, 0.625], relative: largest error 1.79e-10 */
#define KN_VMATH_TANH_P0 -3.333333135e-01f
#define KN_VMATH_TANH_P1 1.333322078e-01f
#define KN_VMATH_TANH_P2 -5.394819006e-02f
#define KN_VMATH_TANH_P3 2.170703374e-02f
#define KN_VMATH_TANH_P4 -8.190561086e-03f
#define KN_VMATH_TANH_P5 2.153366571e-03f

/* erf: the polynomial below KN_VMATH_ERF_SMALL, 1 - erfc(|x|) (with x's sign) above. erfc is
 * e^(-z^2) times a polynomial in 1/z; it is accurate relative to itself up to z = 10.5, past which
 * e^(-z^2) has underflowed, so gelu's tail uses it too. */
#define KN_VMATH_ERF_SMALL 0.921875f
/* erf x = x + x P(x^2) on [0, 0.921875], relative: largest error 8.91e-10 */
#define KN_VMATH_ERF_P0 1.283791661e-01f
#define KN_VMATH_ERF_P1 -3.761262894e-01f
#define KN_VMATH_ERF_P2 1.128362566e-01f
#define KN_VMATH_ERF_P3 -2.685572393e-02f
#define KN_VMATH_ERF_P4 5.192358978e-03f
#define KN_VMATH_ERF_P5 -8.048883174e-04f
#define KN_VMATH_ERF_P6 7.991272287e-05f
/* erfc z = e^(-z^2) P(1/z - 0.6) on [0.921875, 10.5], relative: largest error 3.27e-08 */
#define KN_VMATH_ERFC_CENTER 6.000000238e-01f
#define KN_VMATH_ERFC_P0 2.962874770e-01f
#define KN_VMATH_ERFC_P1 3.909839988e-01f
#define KN_VMATH_ERFC_P2 -1.755806357e-01f
#define KN_VMATH_ERFC_P3 4.112998024e-02f
#define KN_VMATH_ERFC_P4 2.958064899e-02f
#define KN_VMATH_ERFC_P5 -5.390946195e-02f
#define KN_VMATH_ERFC_P6 4.813550785e-02f
#define KN_VMATH_ERFC_P7 -2.535862848e-02f
#define KN_VMATH_ERFC_P8 -2.524300653e-04f
#define KN_VMATH_ERFC_P9 2.224799432e-02f
#define KN_VMATH_ERFC_P10 -4.807277396e-02f
#define KN_VMATH_ERFC_P11 3.102538548e-02f
#define KN_VMATH_ERFC_P12 1.956701465e-02f

/* gelu: x Phi(x) with Phi(x) = 0.5 (1 + erf(x / sqrt 2)) from x = KN_VMATH_GELU_TAIL up, and
 * 0.5 erfc(-x / sqrt 2) below, where 1 + erf would cancel. */
#define KN_VMATH_SQRT1_2 7.07106781e-01f
#define KN_VMATH_GELU_TAIL -1.30372810e+00f /* -0.921875 sqrt 2 */
#define KN_VMATH_GELU_FLOOR -20.0f           /* gelu(-20) = -0 in float */

/* gelu_tanh: 2u = x (A + B x^2), A = 2 sqrt(2 / pi), B = 0.044715 A. */
#define KN_VMATH_GELU_TANH_A 1.59576917e+00f
#define KN_VMATH_GELU_TANH_B 7.13548139e-02f

#endif
