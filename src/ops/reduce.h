/* Summing a tensor over some of its axes: ReduceMean's forward, and the backward of the broadcasting
 * binary ops (a broadcast input's gradient is the output gradient summed over the broadcast axes). */
#ifndef KN_OPS_REDUCE_H
#define KN_OPS_REDUCE_H

#include <stddef.h>

#include "core/tensor.h"

/* Bytes of workspace kn_reduce_sum_add needs for this shape and set of axes (0 when none). */
size_t kn_reduce_sum_workspace(const kn_shape *x_shape, unsigned axes);

/* y += scale * (x summed over `axes`), `axes` a bit mask over x's dims (bit k: sum over dim k).
 * y holds x's shape with the summed dims dropped or kept as 1 (the memory layout is the same).
 * The summation order depends only on the shape, so the result is the same for every thread count. */
void kn_reduce_sum_add(const float *x, const kn_shape *x_shape, unsigned axes, float scale, float *y,
                       float *workspace);
/* The same sums stored: y = scale * (x summed over `axes`), whatever y held (a fresh gradient). */
void kn_reduce_sum_store(const float *x, const kn_shape *x_shape, unsigned axes, float scale, float *y,
                         float *workspace);

#endif
