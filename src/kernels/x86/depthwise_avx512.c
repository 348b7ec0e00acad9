/* The channel-last depthwise row (kernels/depthwise.h) compiled for AVX-512 (CMake sets the flags of
 * *_avx512.c): one 16-lane vector per pixel; and the copy into that layout, 16x16 transposes in
 * registers. */
#include <immintrin.h>
#include <stdbool.h>

#include "kernels/depthwise.h"
#include "kernels/x86/transpose_avx512.h"

#define KN_DEPTHWISE_LAST_NAME kn_depthwise_last_row_avx512
#include "kernels/depthwise_last.inc"

void kn_depthwise_to_last_avx512(const float *x, int64_t plane, int64_t channels, int64_t width, int64_t rows,
                                 float *dst, int64_t dst_row) {
    int64_t count = rows * width; // the pixels, contiguous in each plane
    for (int64_t p = 0; p < count; p += 16) {
        int n = count - p < 16 ? (int)(count - p) : 16;
        __mmask16 mask = kn_lane_mask16(n);
        __m512 v[16];
        for (int c = 0; c < 16; c++)
            v[c] = c < channels ? _mm512_maskz_loadu_ps(mask, x + c * plane + p) : _mm512_setzero_ps();
        kn_transpose16(v); // v[k]: the channels of pixel p + k
        int64_t r = p / width, j = p % width;
        for (int k = 0; k < n; k++) {
            _mm512_storeu_ps(dst + r * dst_row + j * 16, v[k]);
            if (++j == width) {
                j = 0;
                r++;
            }
        }
    }
}
