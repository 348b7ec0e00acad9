/* The Winograd tile transforms (kernels/winograd.h) compiled for AVX-512 (CMake sets the flags of
 * *_avx512.c): one 16-float vector per step. */
#include "kernels/winograd.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_avx512
#define KN_WINOGRAD_OUTPUT kn_winograd_output_avx512
#include "kernels/winograd_tile.inc"
