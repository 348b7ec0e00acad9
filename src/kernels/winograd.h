/* The tile transforms of Winograd's F(4x4, 3x3) convolution (src/ops/conv_winograd.c), Lavin and
 * Gray's points 0, +-1, +-2, +-1/2:
 *     Y (4, 4) = A^T [ U (6, 6) (.) V (6, 6) ] A,   U = G g G^T (the 3x3 filter g),   V = B^T d B
 * for a 6x6 input patch d; training also takes the gradient of the output transform, A dY A^T. Each transform works on KN_WINOGRAD_LANES channels at once, the channels of
 * one pixel lying next to each other (a channel-last layout), so that every step is one vector op.
 *
 * The same C loops are compiled three times — generic (the reference), AVX2 + FMA and AVX-512 in
 * src/kernels/x86 — and kn_winograd_kernels picks the build this CPU runs. The wider builds may
 * contract multiply-adds into FMAs, so they agree with the generic one to rounding, not bit for bit. */
#ifndef KN_WINOGRAD_H
#define KN_WINOGRAD_H

#include <stdint.h>

#define KN_WINOGRAD_LANES 16

/* V = B^T d B for the 6x6 patch whose pixel (r, s) holds KN_WINOGRAD_LANES channels at
 * d + r * row_step + s * col_step; element xi = 6 a + b of V goes to v + xi * xi_step (lanes
 * contiguous). */
typedef void (*kn_winograd_input_fn)(const float *d, int64_t row_step, int64_t col_step, float *v,
                                     int64_t xi_step);
/* Y = A^T M A for the 6x6 products M, element xi at m + xi * xi_step; output pixel (r, s) (4x4) goes
 * to y + r * row_step + s * col_step (lanes contiguous). */
typedef void (*kn_winograd_output_fn)(const float *m, int64_t xi_step, float *y, int64_t row_step,
                                      int64_t col_step);

/* The gradient of the output transform: dM (6, 6) = A dY A^T for the 4x4 output gradient dY whose
 * pixel (r, s) holds KN_WINOGRAD_LANES channels at y + r * row_step + s * col_step; element xi of dM
 * goes to m + xi * xi_step (lanes contiguous). */
typedef void (*kn_winograd_output_grad_fn)(const float *y, int64_t row_step, int64_t col_step, float *m,
                                           int64_t xi_step);

/* Between a row of `count` pixels of `channels` planes (src + c * plane + j) and the same pixels
 * channel-last (one row of row_step floats per pixel, row_step >= channels rounded up to
 * KN_WINOGRAD_LANES):
 *   to_last    dst[j * row_step + c] = src[c * plane + j]; the lanes past `channels` up to the next
 *              multiple of KN_WINOGRAD_LANES are zeroed
 *   from_last  dst[c * plane + j] = src[j * row_step + c] (src is read up to that multiple too)
 * Exact copies in every build: the AVX-512 one transposes 16x16 blocks in registers. */
typedef void (*kn_winograd_to_last_fn)(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                       int64_t row_step);
typedef void (*kn_winograd_from_last_fn)(const float *src, int64_t row_step, int64_t channels, int64_t count,
                                         float *dst, int64_t plane);

typedef struct kn_winograd_kernels {
    const char *name;
    kn_winograd_input_fn input;
    kn_winograd_output_fn output;
    kn_winograd_output_grad_fn output_grad;
    kn_winograd_to_last_fn to_last;
    kn_winograd_from_last_fn from_last;
} kn_winograd_kernels;

void kn_winograd_input_generic(const float *d, int64_t row_step, int64_t col_step, float *v, int64_t xi_step);
void kn_winograd_output_generic(const float *m, int64_t xi_step, float *y, int64_t row_step, int64_t col_step);
void kn_winograd_output_grad_generic(const float *y, int64_t row_step, int64_t col_step, float *m, int64_t xi_step);
void kn_winograd_to_last_generic(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                 int64_t row_step);
void kn_winograd_from_last_generic(const float *src, int64_t row_step, int64_t channels, int64_t count, float *dst,
                                   int64_t plane);
#ifdef KILN_HAVE_X86_KERNELS
/* Only call these after kn_cpu() reports avx2 / avx512f. */
void kn_winograd_input_avx2(const float *d, int64_t row_step, int64_t col_step, float *v, int64_t xi_step);
void kn_winograd_output_avx2(const float *m, int64_t xi_step, float *y, int64_t row_step, int64_t col_step);
void kn_winograd_output_grad_avx2(const float *y, int64_t row_step, int64_t col_step, float *m, int64_t xi_step);
void kn_winograd_input_avx512(const float *d, int64_t row_step, int64_t col_step, float *v, int64_t xi_step);
void kn_winograd_output_avx512(const float *m, int64_t xi_step, float *y, int64_t row_step, int64_t col_step);
void kn_winograd_output_grad_avx512(const float *y, int64_t row_step, int64_t col_step, float *m, int64_t xi_step);
void kn_winograd_to_last_avx512(const float *src, int64_t plane, int64_t channels, int64_t count, float *dst,
                                int64_t row_step);
void kn_winograd_from_last_avx512(const float *src, int64_t row_step, int64_t channels, int64_t count, float *dst,
                                  int64_t plane);
#endif

/* The generic build (the reference). */
const kn_winograd_kernels *kn_winograd_kernels_generic(void);
/* The fastest build this CPU runs. */
const kn_winograd_kernels *kn_winograd_kernels_best(void);

#endif
