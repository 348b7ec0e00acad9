/* One output row of a 3x3 or 5x5, dilation-1 depthwise convolution, the inner loop of Conv's depthwise
 * path (src/ops/conv.c): y[t] = bias + the taps k (row-major) times the input rows at columns
 * t * stride + 0, 1, ..., for t in [0, count) — 3x3: rows r0, r1, r2; 5x5: rows r[0..4] (MobileNetV3's
 * and EfficientNet's kernels). The same C loops are compiled twice — generic (the reference) and with
 * AVX2 + FMA enabled in src/kernels/x86 — and kn_depthwise3x3_row / kn_depthwise5x5_row pick the one
 * this CPU runs. The AVX2 build may contract multiply-adds into FMAs, so it agrees with the reference
 * to rounding, not bit for bit (test_fast_paths holds it to it). */
#ifndef KN_DEPTHWISE_H
#define KN_DEPTHWISE_H

#include <stdint.h>

typedef void (*kn_depthwise3x3_row_fn)(const float *r0, const float *r1, const float *r2, const float *k,
                                       float bias, int64_t stride, int64_t count, float *y);

void kn_depthwise3x3_row_generic(const float *r0, const float *r1, const float *r2, const float *k, float bias,
                                 int64_t stride, int64_t count, float *y);
#ifdef KILN_HAVE_X86_KERNELS
/* Only call this after kn_cpu() reports avx2. */
void kn_depthwise3x3_row_avx2(const float *r0, const float *r1, const float *r2, const float *k, float bias,
                              int64_t stride, int64_t count, float *y);
#endif

typedef void (*kn_depthwise5x5_row_fn)(const float *const *r, const float *k, float bias, int64_t stride,
                                       int64_t count, float *y);

void kn_depthwise5x5_row_generic(const float *const *r, const float *k, float bias, int64_t stride, int64_t count,
                                 float *y);
#ifdef KILN_HAVE_X86_KERNELS
void kn_depthwise5x5_row_avx2(const float *const *r, const float *k, float bias, int64_t stride, int64_t count,
                              float *y);
#endif

/* The fastest builds this CPU runs. */
kn_depthwise3x3_row_fn kn_depthwise3x3_row(void);
kn_depthwise5x5_row_fn kn_depthwise5x5_row(void);

/* Channel-last rows: KN_DEPTHWISE_LANES channels side by side, one vector of them per pixel, so that
 * every tap is one multiply-add over whole vectors whatever the image width and stride (the row kernels
 * above vectorize along a row, and a 7x7 image fills half a vector). Conv's depthwise path copies
 * blocks of channels into this layout and back (src/ops/conv.c). For t in [0, count) and lane c:
 *     y[t * L + c] = bias[c] + sum over taps (i, j) in kernel order of
 *                    k[(i * kw + j) * L + c] * x[i * dh * x_row + (t * sw + j * dw) * L + c]
 * (L = KN_DEPTHWISE_LANES): x is the window of output 0 in a padded channel-last image whose rows are
 * x_row floats apart, k the taps channel-last (kh * kw, L). 3x3 and 5x5 kernels of dilation 1 run
 * unrolled loops. Each output sums its bias and then its taps in kernel order, as the row kernels do;
 * the wider builds may contract multiply-adds into FMAs. */
#define KN_DEPTHWISE_LANES 16

typedef struct kn_depthwise_taps {
    int64_t kh, kw; /* kernel */
    int64_t sw;     /* column stride */
    int64_t dh, dw; /* dilations */
} kn_depthwise_taps;

typedef void (*kn_depthwise_last_row_fn)(const float *x, int64_t x_row, const float *k, const float *bias,
                                         const kn_depthwise_taps *taps, int64_t count, float *y);

void kn_depthwise_last_row_generic(const float *x, int64_t x_row, const float *k, const float *bias,
                                   const kn_depthwise_taps *taps, int64_t count, float *y);
#ifdef KILN_HAVE_X86_KERNELS
/* Only call these after kn_cpu() reports avx2 / avx512f. */
void kn_depthwise_last_row_avx2(const float *x, int64_t x_row, const float *k, const float *bias,
                                const kn_depthwise_taps *taps, int64_t count, float *y);
void kn_depthwise_last_row_avx512(const float *x, int64_t x_row, const float *k, const float *bias,
                                  const kn_depthwise_taps *taps, int64_t count, float *y);
#endif

/* The fastest build this CPU runs. */
kn_depthwise_last_row_fn kn_depthwise_last_row(void);

/* The copy into that layout: `rows` image rows of `width` pixels of `channels` (at most L) planes
 * x (channels, plane), the rows contiguous in each plane, to channel-last pixels whose rows are dst_row
 * floats apart: dst[r * dst_row + j * L + c] = x[c * plane + r * width + j], the lanes past `channels`
 * zeroed, nothing else written (the caller's padding stays). An exact copy in every build; AVX-512's
 * transposes 16 pixels at a time whatever the width (a 7-pixel row alone would waste half of each). */
typedef void (*kn_depthwise_to_last_fn)(const float *x, int64_t plane, int64_t channels, int64_t width, int64_t rows,
                                        float *dst, int64_t dst_row);

void kn_depthwise_to_last_generic(const float *x, int64_t plane, int64_t channels, int64_t width, int64_t rows,
                                  float *dst, int64_t dst_row);
#ifdef KILN_HAVE_X86_KERNELS
void kn_depthwise_to_last_avx512(const float *x, int64_t plane, int64_t channels, int64_t width, int64_t rows,
                                 float *dst, int64_t dst_row);
#endif

kn_depthwise_to_last_fn kn_depthwise_to_last(void);

#endif
