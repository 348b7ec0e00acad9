/* The reference build of the Winograd tile transforms (kernels/winograd.h), and the choice of build
 * for this CPU. */
#include "kernels/winograd.h"

#include "core/cpu.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_generic
#define KN_WINOGRAD_OUTPUT kn_winograd_output_generic
#include "kernels/winograd_tile.inc"

static const kn_winograd_kernels generic = {"generic", kn_winograd_input_generic, kn_winograd_output_generic};

#ifdef KILN_HAVE_X86_KERNELS
static const kn_winograd_kernels avx2 = {"avx2", kn_winograd_input_avx2, kn_winograd_output_avx2};
static const kn_winograd_kernels avx512 = {"avx512", kn_winograd_input_avx512, kn_winograd_output_avx512};
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
