/* The reference build of kernels/act_rows.h, and the choice of build for this CPU. */
#include "kernels/act_rows.h"

#include <stddef.h>

#include "core/cpu.h"

#define KN_ACT_ROWS_NAME kn_act_rows_generic
#include "kernels/act_rows.inc"

kn_act_rows_fn kn_act_rows_best(void) {
#ifdef KILN_HAVE_X86_KERNELS
    if (kn_cpu()->avx512f)
        return kn_act_rows_avx512;
    if (kn_cpu()->avx2)
        return kn_act_rows_avx2;
#endif
    return kn_act_rows_generic;
}
