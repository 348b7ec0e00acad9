/* The reference build of the Winograd tile transforms (kernels/winograd.h), and the choice of build
 * for this CPU. */
#include "kernels/winograd.h"

#include "core/cpu.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_generic
#define KN_WINOGRAD_OUTPUT kn_winograd_output_generic
#define KN_WINOGRAD_OUTPUT_GRAD kn_winograd_output_grad_generic
#include "kernels/winograd_tile.inc"

void kn_winograd_to_last_generic(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                 int64_t row_step) {
    int64_t padded = (channels + KN_WINOGRAD_LANES - 1) / KN_WINOGRAD_LANES * KN_WINOGRAD_LANES;
    for (int64_t j = 0; j < count; j++) {
        float *row = dst + j * row_step;
        for (int64_t c = 0; c < channels; c++)
            row[c] = src[c * plane + j];
        for (int64_t c = channels; c < padded; c++)
            row[c] = 0.0f;
    }
}

void kn_winograd_from_last_generic(const float *src, int64_t row_step, int64_t channels, int64_t count, float *dst,
                                   int64_t plane) {
    for (int64_t c = 0; c < channels; c++)
        for (int64_t j = 0; j < count; j++)
            dst[c * plane + j] = src[j * row_step + c];
}

static const kn_winograd_kernels generic = {"generic", kn_winograd_input_generic, kn_winograd_output_generic,
                                            kn_winograd_output_grad_generic, kn_winograd_to_last_generic,
                                            kn_winograd_from_last_generic};

#ifdef KILN_HAVE_X86_KERNELS
/* The AVX2 build keeps the generic copies: an 8x8 transpose was not worth its code here. */
static const kn_winograd_kernels avx2 = {"avx2", kn_winograd_input_avx2, kn_winograd_output_avx2,
                                         kn_winograd_output_grad_avx2, kn_winograd_to_last_generic,
                                         kn_winograd_from_last_generic};
static const kn_winograd_kernels avx512 = {"avx512", kn_winograd_input_avx512, kn_winograd_output_avx512,
                                           kn_winograd_output_grad_avx512, kn_winograd_to_last_avx512,
                                           kn_winograd_from_last_avx512};
#endif

const kn_winograd_kernels *kn_winograd_kernels_generic(void) { return &generic; }

const kn_winograd_kernels *kn_winograd_kernels_best(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return &avx512;
    if (kn_cpu()->avx2)
        return &avx2;
#endif
    return &generic;
}
