/* The Winograd tile transforms (kernels/winograd.h) compiled for AVX-512 (CMake sets the flags of
 * *_avx512.c): one 16-float vector per step; and the channel-last copies as 16x16 transposes in
 * registers. */
#include <immintrin.h>

#include "kernels/winograd.h"
#include "kernels/x86/transpose_avx512.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_avx512
#define KN_WINOGRAD_OUTPUT kn_winograd_output_avx512
#define KN_WINOGRAD_OUTPUT_GRAD kn_winograd_output_grad_avx512
#include "kernels/winograd_tile.inc"


void kn_winograd_to_last_avx512(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                int64_t row_step) {
    for (int64_t c = 0; c < channels; c += 16) {
        int rows = channels - c < 16 ? (int)(channels - c) : 16;
        for (int64_t j = 0; j < count; j += 16) {
            int n = count - j < 16 ? (int)(count - j) : 16;
            __mmask16 mask = kn_lane_mask16(n);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(mask, src + (c + i) * plane + j) : _mm512_setzero_ps();
            kn_transpose16(r);
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
            __mmask16 mask = kn_lane_mask16(n);
            __m512 r[16];
            for (int k = 0; k < 16; k++)
                r[k] = k < n ? _mm512_loadu_ps(src + (j + k) * row_step + c) : _mm512_setzero_ps();
            kn_transpose16(r);
            for (int i = 0; i < rows; i++)
                _mm512_mask_storeu_ps(dst + (c + i) * plane + j, mask, r[i]);
        }
    }
}
