/* Max pooling's most common window, 2x2 with stride 2 and no padding or dilation, one plane at a time:
 * the forward pass and the backward pass that training runs on every image. The formulas are
 * ops/pool.c's; they are compiled generic (the reference, SSE2 on x86-64, which an AVX2 CPU runs too)
 * and written for AVX-512 (kernels/x86/pool2x2_avx512.c). They only compare, select and add to 0 or to
 * dx, so every build gives the same bits. */
#ifndef KN_POOL2X2_H
#define KN_POOL2X2_H

#include <stdbool.h>
#include <stdint.h>

/* A plane's geometry: out_h x out_w windows over rows in_w floats long (2 out_h <= in_h, 2 out_w <= in_w). */
typedef struct kn_pool2x2 {
    int64_t out_h, out_w, in_w;
} kn_pool2x2;

/* y (out_h, out_w) = the maximum of each window of x; a NaN in a window wins. */
typedef void (*kn_maxpool2x2_forward_fn)(const kn_pool2x2 *g, const float *x, float *y);
/* Each window's gradient dy goes where the forward's maximum came from: to the first NaN if there is
 * one, else to the first maximum (rows, then columns); the window's other three pixels get 0. Added to
 * dx, or stored when `store` (dx's pixels outside every window are then left as they were). */
typedef void (*kn_maxpool2x2_backward_fn)(const kn_pool2x2 *g, const float *x, const float *dy, float *dx,
                                          bool store);

typedef struct kn_pool2x2_kernels {
    kn_maxpool2x2_forward_fn forward;
    kn_maxpool2x2_backward_fn backward;
} kn_pool2x2_kernels;

void kn_maxpool2x2_forward_generic(const kn_pool2x2 *g, const float *x, float *y);
void kn_maxpool2x2_backward_generic(const kn_pool2x2 *g, const float *x, const float *dy, float *dx, bool store);
#ifdef KILN_HAVE_X86_KERNELS
/* Only call these after kn_cpu() reports avx512f. */
void kn_maxpool2x2_forward_avx512(const kn_pool2x2 *g, const float *x, float *y);
void kn_maxpool2x2_backward_avx512(const kn_pool2x2 *g, const float *x, const float *dy, float *dx, bool store);
#endif

/* The fastest builds this CPU runs. */
const kn_pool2x2_kernels *kn_pool2x2_best(void);

#endif
