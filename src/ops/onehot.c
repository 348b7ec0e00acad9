/* OneHot(indices, depth, values): y has indices' shape with a new axis of `depth` entries inserted at
 * `axis` (default -1, the last); y[..., j, ...] = values[1] where j is the index there, else values[0].
 * A negative index counts from the end (j + depth); one outside [-depth, depth) gives a row of
 * values[0]. depth is one number of any numeric dtype (truncated to an integer): shape inference reads
 * it, so a depth given as a graph input makes a data-dependent session (runtime/session.c).
 *
 * Dtypes: indices f32, f64 or an integer (floats truncated); values any dtype, which y takes. No gradient.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

/* Element i of a float or integer tensor, as a double. */
static double onehot_number(const kn_tensor *t, int64_t i) {
    if (t->dtype == KN_F32)
        return kn_f32(t)[i];
    if (t->dtype == KN_F64)
        return ((const double *)t->data)[i];
    int64_t v = kn_int_load(t->data, t->dtype, i);
    return t->dtype == KN_U64 ? (double)(uint64_t)v : (double)v;
}

static bool onehot_numeric(kn_dtype dtype) {
    return dtype == KN_F32 || dtype == KN_F64 || kn_dtype_is_integer(dtype);
}

/* The depth and the output axis (in y's rank) for indices of rank `rank`. */
static kiln_status onehot_params(const kn_node *node, const kn_tensor *depth_in, int rank, int64_t *depth,
                                 int *axis) {
    if (!onehot_numeric(depth_in->dtype) || kn_numel(depth_in) != 1 || depth_in->shape.ndim > 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "depth must be one number, got %lld of %s",
                       (long long)kn_numel(depth_in), kn_dtype_name(depth_in->dtype));
    KN_TRY(kn_require_data(depth_in, "depth"));
    double d = trunc(onehot_number(depth_in, 0));
    if (!(d >= 1 && d < 0x1p62))
        return kn_fail(KILN_ERR_INVALID_ARG, "depth is %g; it must be at least 1", onehot_number(depth_in, 0));
    *depth = (int64_t)d;
    int64_t a = kn_node_int(node, "axis", -1);
    *axis = kn_axis_normalize(a, rank + 1);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for an output of rank %d", (long long)a,
                       rank + 1);
    return KILN_OK;
}

/* y's shape: the indices' with depth inserted at axis. */
static kiln_status onehot_shape(const kn_shape *indices, int64_t depth, int axis, kn_shape *y) {
    if (indices->ndim + 1 > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the output would have rank %d; at most %d supported",
                       indices->ndim + 1, KN_MAX_DIMS);
    *y = (kn_shape){.ndim = indices->ndim + 1};
    for (int d = 0, from = 0; d < y->ndim; d++)
        y->d[d] = d == axis ? depth : indices->d[from++];
    return kn_shape_check_size(y);
}

static kiln_status onehot_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *indices = kn_input_at(inputs.in, inputs.n, 0), *depth_in = kn_input_at(inputs.in, inputs.n, 1);
    const kn_tensor *values = kn_input_at(inputs.in, inputs.n, 2);
    if (!indices || !depth_in || !values)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs indices, depth and values are required");
    if (!onehot_numeric(indices->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "indices are %s; OneHot takes f32, f64 or integer indices",
                       kn_dtype_name(indices->dtype));
    if (kn_numel(values) != 2 || values->shape.ndim != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "values must be 1-D of two elements (off, on), got %lld",
                       (long long)kn_numel(values));
    int64_t depth;
    int axis;
    KN_TRY(onehot_params(node, depth_in, indices->shape.ndim, &depth, &axis));
    kn_shape y;
    KN_TRY(onehot_shape(&indices->shape, depth, axis, &y));
    kn_set_output(g, node, 0, &y, values->dtype);
    return KILN_OK;
}

static kiln_status onehot_forward(const kn_op_call *call) {
    const kn_tensor *indices = call->in[0], *values = call->in[2];
    kn_tensor *y = call->out[0];
    int64_t depth;
    int axis;
    KN_TRY(onehot_params(call->node, call->in[1], indices->shape.ndim, &depth, &axis));
    kn_shape want;
    KN_TRY(onehot_shape(&indices->shape, depth, axis, &want));
    if (!kn_shape_equal(&y->shape, &want))
        return kn_fail(KILN_ERR_SHAPE, "OneHot: the output was not sized for depth %lld", (long long)depth);
    /* y as (outer, depth, inner); indices as (outer, inner). */
    int64_t outer = kn_shape_span(&indices->shape, 0, axis);
    int64_t inner = kn_shape_span(&indices->shape, axis, indices->shape.ndim);
    size_t esize = kn_dtype_size(values->dtype);
    const char *off = values->data, *on = off + esize;
    char *dst = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double v = trunc(onehot_number(indices, o * inner + i));
            int64_t hot = -1; /* none for an index out of range, or NaN */
            if (v >= -(double)depth && v < (double)depth)
                hot = (int64_t)(v < 0 ? v + (double)depth : v);
            for (int64_t j = 0; j < depth; j++)
                memcpy(dst + (size_t)((o * depth + j) * inner + i) * esize, j == hot ? on : off, esize);
        }
    return KILN_OK;
}

const kn_op kn_op_onehot = {.name = "OneHot", .min_inputs = 3, .max_inputs = 3, .infer = onehot_infer,
                            .forward = onehot_forward};
