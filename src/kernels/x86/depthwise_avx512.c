/* The channel-last depthwise row (kernels/depthwise.h) compiled for AVX-512 (CMake sets the flags of
 * *_avx512.c): one 16-lane vector per pixel. */
#include <stdbool.h>

#include "kernels/depthwise.h"

#define KN_DEPTHWISE_LAST_NAME kn_depthwise_last_row_avx512
#include "kernels/depthwise_last.inc"
