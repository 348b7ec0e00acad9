/* The Winograd tile transforms (kernels/winograd.h) compiled for AVX-512 (CMake sets the flags of
 * *_avx512.c): one 16-float vector per step; and the channel-last copies as 16x16 transposes in
 * registers. */
#include <immintrin.h>

#include "kernels/winograd.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_avx512
#define KN_WINOGRAD_OUTPUT kn_winograd_output_avx512
#include "kernels/winograd_tile.inc"

/* The first `lanes` of 16 lanes (clamped to 0..16). */
static __mmask16 lane_mask(int64_t lanes) {
    return lanes >= 16 ? (__mmask16)0xffff : lanes <= 0 ? (__mmask16)0 : (__mmask16)((1u << lanes) - 1);
}

/* r[i] (16 rows of 16) becomes its transpose: r[j] lane i = the old r[i] lane j. */
static inline void transpose16(__m512 r[16]) {
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

void kn_winograd_to_last_avx512(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                int64_t row_step) {
    for (int64_t c = 0; c < channels; c += 16) {
        int rows = channels - c < 16 ? (int)(channels - c) : 16;
        for (int64_t j = 0; j < count; j += 16) {
            int n = count - j < 16 ? (int)(count - j) : 16;
            __mmask16 mask = lane_mask(n);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(mask, src + (c + i) * plane + j) : _mm512_setzero_ps();
            transpose16(r);
            for (int k = 0; k < n; k++)
                _mm512_storeu_ps(dst + (j + k) * row_step + c, r[k]);
        }
    }
}

void kn_winograd_from_last_avx512(const float *src, int64_t row_step, int64_t channels, int64_t count, float *dst,
                                  int64_t plane) {
    for (int64_t c = 0; c < channels; c += 16) {
        int rows = channels - c < 16 ? (int)(channels - c) : 16;
        for (int64_t j = 0; j < count; j += 16) {
            int n = count - j < 16 ? (int)(count - j) : 16;
            __mmask16 mask = lane_mask(n);
            __m512 r[16];
            for (int k = 0; k < 16; k++)
                r[k] = k < n ? _mm512_loadu_ps(src + (j + k) * row_step + c) : _mm512_setzero_ps();
            transpose16(r);
            for (int i = 0; i < rows; i++)
                _mm512_mask_storeu_ps(dst + (c + i) * plane + j, mask, r[i]);
        }
    }
}
