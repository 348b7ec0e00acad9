/* The inner loops of kernels/lowbit.h with AVX2 and FMA.
 *
 * dot and sweep take a chunk's codes by position (kn_lowbit_order): 8 bytes widen to 8 int32 lanes
 * (vpmovzxbd), and each field is sign-extended in place by a shift left and an arithmetic shift right;
 * then converted (exactly) to float and multiplied into 4 accumulators: about 2 instructions per code
 * less than putting the codes back in order, which the product does not need. The same terms as the
 * generic build, summed 8 lanes side by side.
 *
 * decode writes floats in code order, for kn_sgemm: there the fields are split with masks and put back
 * in order with byte (and, for 2 bits, word) unpacks, 32 signed bytes, levels in two's complement after
 * `(field ^ sign) - sign`, less the zero points in bytes (level - zero point lies in [-15, 15]).
 */
#include <immintrin.h>

#include "kernels/lowbit.h"

/* The levels of the chunk at `codes` in code order, codes 0-15 in *lo and 16-31 in *hi. */
static inline void unpack_levels(const uint8_t *codes, int bits, __m128i *lo, __m128i *hi) {
    __m128i sign;
    if (bits == 4) {
        __m128i b = _mm_loadu_si128((const __m128i *)codes), mask = _mm_set1_epi8(0x0F);
        __m128i even = _mm_and_si128(b, mask), odd = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
        *lo = _mm_unpacklo_epi8(even, odd);
        *hi = _mm_unpackhi_epi8(even, odd);
        sign = _mm_set1_epi8(8);
    } else {
        __m128i b = _mm_loadl_epi64((const __m128i *)codes), mask = _mm_set1_epi8(3);
        __m128i f0 = _mm_and_si128(b, mask), f1 = _mm_and_si128(_mm_srli_epi16(b, 2), mask);
        __m128i f2 = _mm_and_si128(_mm_srli_epi16(b, 4), mask), f3 = _mm_and_si128(_mm_srli_epi16(b, 6), mask);
        __m128i p01 = _mm_unpacklo_epi8(f0, f1), p23 = _mm_unpacklo_epi8(f2, f3); /* codes 0 1 4 5 .. / 2 3 6 7 .. */
        *lo = _mm_unpacklo_epi16(p01, p23);
        *hi = _mm_unpackhi_epi16(p01, p23);
        sign = _mm_set1_epi8(2);
    }
    *lo = _mm_sub_epi8(_mm_xor_si128(*lo, sign), sign);
    *hi = _mm_sub_epi8(_mm_xor_si128(*hi, sign), sign);
}

/* 16 signed bytes as two vectors of 8 floats. */
static inline void to_floats(__m128i bytes, __m256 *f0, __m256 *f1) {
    *f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    *f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
}

/* The 4 vectors of 8 unsigned fields u = code ^ sign (int32) of the chunk at `codes`, by position
 * (kn_lowbit_order): 8 bytes widen to 8 lanes, flipped by one xor, and each field is cut out with a
 * mask, the higher ones after a shift. */
static inline void chunk_fields(const uint8_t *codes, int bits, __m256i u[4]) {
    if (bits == 4) {
        __m256i flip = _mm256_set1_epi32(0x88), mask = _mm256_set1_epi32(0x0F);
        __m256i b0 = _mm256_xor_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)codes)), flip);
        __m256i b1 = _mm256_xor_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + 8))), flip);
        u[0] = _mm256_and_si256(b0, mask);
        u[1] = _mm256_srli_epi32(b0, 4);
        u[2] = _mm256_and_si256(b1, mask);
        u[3] = _mm256_srli_epi32(b1, 4);
    } else {
        __m256i mask = _mm256_set1_epi32(3);
        __m256i b = _mm256_xor_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)codes)),
                                     _mm256_set1_epi32(0xAA));
        u[0] = _mm256_and_si256(b, mask);
        u[1] = _mm256_and_si256(_mm256_srli_epi32(b, 2), mask);
        u[2] = _mm256_and_si256(_mm256_srli_epi32(b, 4), mask);
        u[3] = _mm256_srli_epi32(b, 6);
    }
}

/* Accumulates one unit (8 bytes) of 4-bit codes of each row against x0, x1 (its 16 positions). */
static inline void unit4(const uint8_t *const codes[KN_LOWBIT_DOT_ROWS], int64_t at, __m256 x0, __m256 x1,
                         __m256 acc[KN_LOWBIT_DOT_ROWS][2]) {
    const __m256i flip = _mm256_set1_epi32(0x88), mask = _mm256_set1_epi32(0x0F);
    for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++) {
        _mm_prefetch((const char *)(codes[r] + at + 256), _MM_HINT_T0);
        __m256i b = _mm256_xor_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes[r] + at))), flip);
        acc[r][0] = _mm256_fmadd_ps(x0, _mm256_cvtepi32_ps(_mm256_and_si256(b, mask)), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x1, _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)), acc[r][1]);
    }
}

/* The same for one unit of 2-bit codes (32 positions, x[0..3]). */
static inline void unit2(const uint8_t *const codes[KN_LOWBIT_DOT_ROWS], int64_t at, const __m256 x[4],
                         __m256 acc[KN_LOWBIT_DOT_ROWS][2]) {
    const __m256i flip = _mm256_set1_epi32(0xAA), mask = _mm256_set1_epi32(3);
    for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++) {
        __m256i b = _mm256_xor_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes[r] + at))), flip);
        acc[r][0] = _mm256_fmadd_ps(x[0], _mm256_cvtepi32_ps(_mm256_and_si256(b, mask)), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x[1], _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 2), mask)),
                                    acc[r][1]);
        acc[r][0] = _mm256_fmadd_ps(x[2], _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 4), mask)),
                                    acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x[3], _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 6)), acc[r][1]);
    }
}

static void dot_avx2(const uint8_t *const codes[KN_LOWBIT_DOT_ROWS], int64_t n_runs, int64_t run_units, int bits,
                     const int8_t *const zero_point[KN_LOWBIT_DOT_ROWS], const float *const scale[KN_LOWBIT_DOT_ROWS],
                     const float *xi, const float *xi_sums, float out[KN_LOWBIT_DOT_ROWS]) {
    __m256 total[KN_LOWBIT_DOT_ROWS];
    float off[KN_LOWBIT_DOT_ROWS] = {0}; /* sum_j scale (sign + zero point) xi_sums[j], taken off at the end */
    int64_t at = 0;
    for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++)
        total[r] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n_runs; j++) {
        __m256 acc[KN_LOWBIT_DOT_ROWS][2]; /* two per row */
        for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++)
            acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        if (bits == 4) {
            for (int64_t u = 0; u < run_units; u++, at += 8, xi += 16)
                unit4(codes, at, _mm256_loadu_ps(xi), _mm256_loadu_ps(xi + 8), acc);
        } else {
            for (int64_t u = 0; u < run_units; u++, at += 8, xi += 32) {
                __m256 x[4] = {_mm256_loadu_ps(xi), _mm256_loadu_ps(xi + 8), _mm256_loadu_ps(xi + 16),
                               _mm256_loadu_ps(xi + 24)};
                unit2(codes, at, x, acc);
            }
        }
        for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++) {
            int z = zero_point[r] ? zero_point[r][j] : 0;
            total[r] = _mm256_fmadd_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_set1_ps(scale[r][j]), total[r]);
            off[r] += scale[r][j] * (float)((1 << (bits - 1)) + z) * xi_sums[j];
        }
    }
    /* the 4 rows' sums side by side: pairs of rows added lane-wise, then the 128-bit halves */
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(total[0], total[1]), _mm256_hadd_ps(total[2], total[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
    for (int r = 0; r < KN_LOWBIT_DOT_ROWS; r++)
        out[r] -= off[r];
}

static void sweep_avx2(const uint8_t *codes, int64_t stride, int64_t K, int bits, const float *xs,
                       const int8_t *zr, const int8_t *zc, float *acc_out) {
    /* sum_k xs[k] (u - sign - zr[k] - zc[p]) = sum_k xs[k] u - (sign S0 + S1) - zc[p] S0 */
    float s0 = 0.0f, s1 = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        s0 += xs[k];
        s1 += zr ? xs[k] * (float)zr[k] : 0.0f;
    }
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t k = 0; k < K; k++, codes += stride) {
        __m256i u[4];
        chunk_fields(codes, bits, u);
        __m256 xk = _mm256_broadcast_ss(xs + k);
        for (int i = 0; i < 4; i++)
            acc[i] = _mm256_fmadd_ps(xk, _mm256_cvtepi32_ps(u[i]), acc[i]);
    }
    __m256 off = _mm256_set1_ps((float)(1 << (bits - 1)) * s0 + s1), sum0 = _mm256_set1_ps(s0);
    for (int i = 0; i < 4; i++) {
        __m256 zcol = zc ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(zc + 8 * i))))
                         : _mm256_setzero_ps();
        __m256 col = _mm256_sub_ps(acc[i], _mm256_fmadd_ps(zcol, sum0, off));
        _mm256_storeu_ps(acc_out + 8 * i, _mm256_add_ps(_mm256_loadu_ps(acc_out + 8 * i), col));
    }
}

static void decode_avx2(const uint8_t *codes, int bits, const int8_t *z, const float *s, float *out) {
    __m128i lo, hi;
    __m256 f[4];
    unpack_levels(codes, bits, &lo, &hi);
    to_floats(_mm_sub_epi8(lo, _mm_loadu_si128((const __m128i *)z)), &f[0], &f[1]);
    to_floats(_mm_sub_epi8(hi, _mm_loadu_si128((const __m128i *)(z + 16))), &f[2], &f[3]);
    for (int i = 0; i < 4; i++)
        _mm256_storeu_ps(out + 8 * i, _mm256_mul_ps(f[i], _mm256_loadu_ps(s + 8 * i)));
}

const kn_lowbit_kernels kn_lowbit_avx2 = {"avx2", dot_avx2, sweep_avx2, decode_avx2};
