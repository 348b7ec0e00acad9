/* The Winograd tile transforms (kernels/winograd.h) compiled for AVX2 + FMA (CMake sets the flags of
 * *_avx2.c): two 8-float vectors per 16-channel step. */
#include "kernels/winograd.h"

#define KN_WINOGRAD_INPUT kn_winograd_input_avx2
#define KN_WINOGRAD_OUTPUT kn_winograd_output_avx2
#define KN_WINOGRAD_OUTPUT_GRAD kn_winograd_output_grad_avx2
#include "kernels/winograd_tile.inc"
