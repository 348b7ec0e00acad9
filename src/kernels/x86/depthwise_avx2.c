/* The depthwise rows (kernels/depthwise.h) compiled for AVX2 + FMA (CMake sets the flags of *_avx2.c). */
#include <stdbool.h>

#include "kernels/depthwise.h"

#define KN_DEPTHWISE_ROW_NAME kn_depthwise3x3_row_avx2
#define KN_DEPTHWISE5_ROW_NAME kn_depthwise5x5_row_avx2
#include "kernels/depthwise_row.inc"

#define KN_DEPTHWISE_LAST_NAME kn_depthwise_last_row_avx2
#include "kernels/depthwise_last.inc"
