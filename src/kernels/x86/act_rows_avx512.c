/* kernels/act_rows.h compiled for AVX-512 (CMake sets the flags of *_avx512.c, and -ffp-contract=off on this file
 * so that no multiply-add is contracted: the same bits as the generic build). */
#include <stddef.h>

#include "kernels/act_rows.h"

#define KN_ACT_ROWS_NAME kn_act_rows_avx512
#include "kernels/act_rows.inc"
