/* The piecewise-linear activations that ops apply to their outputs in place (ops/fused_act.h: Conv's,
 * Gemm's and MatMul's fused activations, Conv's depthwise outputs), with an optional bias per row:
 *     y[r * ld + c] = f(y[r * ld + c] + bias[r])   (no addition when bias is NULL)
 * over rows x cols, for f = identity, Relu, Clip to [lo, hi] (ONNX's order: max then min, NaN passes)
 * or ONNX HardSwish (x * HardSigmoid(x), alpha 1/6, beta 1/2). The formulas are fused_act.c's; the
 * same C loops are compiled generic (the reference), for AVX2 and for AVX-512, the x86 builds without
 * contracting multiply-adds (CMake sets -ffp-contract=off on them), so every build gives the same bits:
 * the ops are otherwise compiled for the baseline x86-64 and these passes ran four floats at a time. */
#ifndef KN_ACT_ROWS_H
#define KN_ACT_ROWS_H

#include <stdint.h>

typedef enum kn_act_rows_kind { KN_ACT_ROWS_IDENTITY, KN_ACT_ROWS_RELU, KN_ACT_ROWS_CLIP, KN_ACT_ROWS_HARDSWISH } kn_act_rows_kind;

typedef struct kn_act_rows {
    kn_act_rows_kind kind;
    float lo, hi; /* Clip */
} kn_act_rows;

typedef void (*kn_act_rows_fn)(const kn_act_rows *act, const float *bias, float *y, int64_t rows, int64_t cols,
                               int64_t ld);

void kn_act_rows_generic(const kn_act_rows *act, const float *bias, float *y, int64_t rows, int64_t cols,
                         int64_t ld);
#ifdef KILN_HAVE_X86_KERNELS
/* Only call these after kn_cpu() reports avx2 / avx512f. */
void kn_act_rows_avx2(const kn_act_rows *act, const float *bias, float *y, int64_t rows, int64_t cols, int64_t ld);
void kn_act_rows_avx512(const kn_act_rows *act, const float *bias, float *y, int64_t rows, int64_t cols,
                        int64_t ld);
#endif

/* The fastest build this CPU runs. */
kn_act_rows_fn kn_act_rows_best(void);

#endif
