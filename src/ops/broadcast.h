/* Numpy / ONNX multidirectional broadcasting, shared by the elementwise ops (binary.c,
 * unary_math.c).
 *
 * Shapes are aligned at their last dims; each pair of dims must be equal or contain a 1, and the
 * output takes the larger. A walk over the output first merges dims (kn_broadcast_plan_make): dims
 * of size 1 are dropped and neighbours merged wherever every operand steps through them as through
 * one dim, so equal shapes and scalar operands come out as one flat row and a bias along the last
 * axis as (rows, F). The innermost merged dim is the row an op's kernel runs along; each operand
 * steps through it by 1, or by 0 where it is broadcast there.
 */
#ifndef KN_OPS_BROADCAST_H
#define KN_OPS_BROADCAST_H

#include "core/status.h"
#include "core/tensor.h"

/* The most operands one walk follows (Where's condition, X and Y). Operands that have the output's
 * own shape need no place in the walk: they are indexed like the output. */
#define KN_BROADCAST_MAX_OPERANDS 3

/* out = the broadcast shape of a and b; KILN_ERR_SHAPE naming both shapes when they do not fit. */
kiln_status kn_broadcast_shape(const kn_shape *a, const kn_shape *b, kn_shape *out);

/* The bit mask of `out`'s dims that `x` was broadcast along: those its gradient is summed over. */
unsigned kn_broadcast_axes(const kn_shape *x, const kn_shape *out);

typedef struct kn_broadcast_plan {
    int n_operands;
    int ndim; /* >= 1 */
    int64_t d[KN_MAX_DIMS];
    int64_t step[KN_BROADCAST_MAX_OPERANDS][KN_MAX_DIMS]; /* each operand's element step per dim */
    int64_t numel;                                         /* output elements */
} kn_broadcast_plan;

/* Plans the walk over `out`, the broadcast shape of shapes[0..n), n <= KN_BROADCAST_MAX_OPERANDS */
void kn_broadcast_plan_make(kn_broadcast_plan *p, int n, const kn_shape *const *shapes,
                            const kn_shape *out);

/* A stretch of one row: output elements [at, at + n); operand i's element for output element at + k
 * is offset[i] + k * step[i], step 0 or 1. */
typedef struct kn_broadcast_row {
    int64_t at, n;
    int64_t offset[KN_BROADCAST_MAX_OPERANDS];
    int64_t step[KN_BROADCAST_MAX_OPERANDS];
} kn_broadcast_row;

typedef void (*kn_broadcast_row_fn)(const kn_broadcast_row *row, void *ctx);

/* Calls fn once per stretch, covering every output element once. Stretches never overlap in the
 * output and are spread over threads for large outputs, split by the shapes alone. */
void kn_broadcast_run(const kn_broadcast_plan *p, kn_broadcast_row_fn fn, void *ctx);

#endif
