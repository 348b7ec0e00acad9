/* The reference build of the depthwise rows, and the choice of build for this CPU. */
#include "kernels/depthwise.h"

#include <stdbool.h>

#include "core/cpu.h"

#define KN_DEPTHWISE_ROW_NAME kn_depthwise3x3_row_generic
#define KN_DEPTHWISE5_ROW_NAME kn_depthwise5x5_row_generic
#include "kernels/depthwise_row.inc"

#define KN_DEPTHWISE_LAST_NAME kn_depthwise_last_row_generic
#include "kernels/depthwise_last.inc"

/* Only an AVX2 build: on the AVX-512 machine it was tuned on, an AVX-512 build of the same loop ran
 * mobilenet_v2 about 5% slower than AVX2, which ran it about 5% faster than the baseline build. */
kn_depthwise3x3_row_fn kn_depthwise3x3_row(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx2)
        return kn_depthwise3x3_row_avx2;
#endif
    return kn_depthwise3x3_row_generic;
}

kn_depthwise5x5_row_fn kn_depthwise5x5_row(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx2)
        return kn_depthwise5x5_row_avx2;
#endif
    return kn_depthwise5x5_row_generic;
}

kn_depthwise_last_row_fn kn_depthwise_last_row(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return kn_depthwise_last_row_avx512;
    if (kn_cpu()->avx2)
        return kn_depthwise_last_row_avx2;
#endif
    return kn_depthwise_last_row_generic;
}

void kn_depthwise_to_last_generic(const float *x, int64_t plane, int64_t channels, int64_t width, int64_t rows,
                                  float *dst, int64_t dst_row) {
    const int64_t L = KN_DEPTHWISE_LANES;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < width; j++) {
            float *pixel = dst + r * dst_row + j * L;
            for (int64_t c = 0; c < L; c++)
                pixel[c] = c < channels ? x[c * plane + r * width + j] : 0.0f;
        }
}

kn_depthwise_to_last_fn kn_depthwise_to_last(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return kn_depthwise_to_last_avx512;
#endif
    return kn_depthwise_to_last_generic;
}
