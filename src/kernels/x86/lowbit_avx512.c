/* The sliver layout's inner loops (kernels/lowbit.h) with AVX-512F: a row of a sliver is 16 bytes,
 * widened to 16 int32 lanes (vpmovzxbd); the low 4 bits are columns 0-15 and the high ones 16-31, in
 * order, so a mask and a shift give both vectors and nothing is shuffled.
 *
 * sweep: 32 columns in two vectors, four rows of k in flight (8 sums: two FMA pipes of latency 4),
 *        added at the end.
 * decode: (float)(u - zu) * s, one rounding, as the generic build: the same bits. */
#include <immintrin.h>

#include "kernels/lowbit.h"

static inline void row_fields(const uint8_t *row, __m512i *lo, __m512i *hi) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)row));
    *lo = _mm512_and_si512(v, _mm512_set1_epi32(15));
    *hi = _mm512_srli_epi32(v, 4);
}

static void sweep_avx512(const uint8_t *codes, int64_t K, const float *x, float acc[32]) {
    __m512 lo[4], hi[4];
    for (int w = 0; w < 4; w++)
        lo[w] = hi[w] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 4 <= K; k += 4)
        for (int w = 0; w < 4; w++) {
            __m512i l, h;
            row_fields(codes + (k + w) * 16, &l, &h);
            __m512 xk = _mm512_set1_ps(x[k + w]);
            lo[w] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l), xk, lo[w]);
            hi[w] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(h), xk, hi[w]);
        }
    for (; k < K; k++) {
        __m512i l, h;
        row_fields(codes + k * 16, &l, &h);
        __m512 xk = _mm512_set1_ps(x[k]);
        lo[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l), xk, lo[0]);
        hi[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(h), xk, hi[0]);
    }
    _mm512_storeu_ps(acc, _mm512_add_ps(_mm512_add_ps(lo[0], lo[1]), _mm512_add_ps(lo[2], lo[3])));
    _mm512_storeu_ps(acc + 16, _mm512_add_ps(_mm512_add_ps(hi[0], hi[1]), _mm512_add_ps(hi[2], hi[3])));
}

static void decode_avx512(const uint8_t *codes, int64_t depth, const int32_t zu[32], const float s[32], float *out) {
    __m512i zu_lo = _mm512_loadu_si512(zu), zu_hi = _mm512_loadu_si512(zu + 16);
    __m512 s_lo = _mm512_loadu_ps(s), s_hi = _mm512_loadu_ps(s + 16);
    for (int64_t k = 0; k < depth; k++) {
        __m512i l, h;
        row_fields(codes + k * 16, &l, &h);
        _mm512_storeu_ps(out + k * 32, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(l, zu_lo)), s_lo));
        _mm512_storeu_ps(out + k * 32 + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(h, zu_hi)), s_hi));
    }
}

const kn_lowbit_sliver_kernels kn_lowbit_slivers_avx512 = {"avx512", sweep_avx512, decode_avx512};
