/* A 16x16 transpose of floats in AVX-512 registers, for the kernels that turn rows into columns: the
 * Winograd channel-last copies (x86/winograd_avx512.c) and the GEMM's transposing pack
 * (x86/gemm_avx512.c). Include only from files compiled for AVX-512. */
#ifndef KN_TRANSPOSE_AVX512_H
#define KN_TRANSPOSE_AVX512_H

#include <immintrin.h>
#include <stdint.h>

/* The first `lanes` of 16 lanes (clamped to 0..16). */
static inline __mmask16 kn_lane_mask16(int64_t lanes) {
    return lanes >= 16 ? (__mmask16)0xffff : lanes <= 0 ? (__mmask16)0 : (__mmask16)((1u << lanes) - 1);
}

/* r[i] (16 rows of 16) becomes its transpose: r[j] lane i = the old r[i] lane j. */
static inline void kn_transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) { // pairs of rows interleaved: t[i] elements 4k, 4k+1; t[i+1] 4k+2, 4k+3
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { // u[i + e] holds element 4k + e of rows i..i+3, per 128-bit lane k
        u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int e = 0; e < 4; e++) {
        // Lanes k = 0, 2 and 1, 3 of rows 0-3 with rows 4-7, and of rows 8-11 with rows 12-15.
        __m512 a_even = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88), a_odd = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xdd);
        __m512 b_even = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88),
               b_odd = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xdd);
        r[e] = _mm512_shuffle_f32x4(a_even, b_even, 0x88);      // element e of lane 0: column e
        r[8 + e] = _mm512_shuffle_f32x4(a_even, b_even, 0xdd);  // lane 2: column 8 + e
        r[4 + e] = _mm512_shuffle_f32x4(a_odd, b_odd, 0x88);    // lane 1: column 4 + e
        r[12 + e] = _mm512_shuffle_f32x4(a_odd, b_odd, 0xdd);   // lane 3: column 12 + e
    }
}

#endif
