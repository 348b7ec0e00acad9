/* MaxUnpool(X, I, output_shape?): the inverse of MaxPool with indices. Y is zeros except
 * Y.flat[I[j]] = X[j]: I holds MaxPool's indices into the whole flattened default output (batch and
 * channel included), whose shape is (N, C, (in - 1) * stride - pad_begin - pad_end + kernel) per spatial
 * dim from kernel_shape, strides (default 1) and pads (default 0). output_shape (an i64 input, read at
 * shape inference: a graph input makes a data-dependent session) may make Y larger; the indices keep
 * their coordinates, as in onnx's reference. f32 and f64. No gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

/* The output shape MaxPool's indices refer to: (N, C, (in - 1) * stride - pad_begin - pad_end + kernel). */
static kiln_status maxunpool_default_shape(const kn_node *node, const kn_tensor *x, kn_shape *y) {
    int spatial = x->shape.ndim - 2;
    if (spatial < 1)
        return kn_fail(KILN_ERR_SHAPE, "X has rank %d; MaxUnpool needs (N, C, spatial...)", x->shape.ndim);
    int64_t kernel[KN_MAX_DIMS], strides[KN_MAX_DIMS], pads[2 * KN_MAX_DIMS];
    if (kn_node_ints(node, "kernel_shape", kernel, KN_MAX_DIMS) != spatial)
        return kn_fail(KILN_ERR_INVALID_ARG, "kernel_shape must have %d values", spatial);
    int n_strides = kn_node_ints(node, "strides", strides, KN_MAX_DIMS);
    int n_pads = kn_node_ints(node, "pads", pads, 2 * KN_MAX_DIMS);
    if ((n_strides >= 0 && n_strides != spatial) || (n_pads >= 0 && n_pads != 2 * spatial))
        return kn_fail(KILN_ERR_INVALID_ARG, "strides and pads must have %d and %d values", spatial, 2 * spatial);
    *y = x->shape;
    for (int d = 0; d < spatial; d++) {
        int64_t s = n_strides >= 0 ? strides[d] : 1, p = n_pads >= 0 ? pads[d] + pads[spatial + d] : 0;
        if (s < 1 || kernel[d] < 1 || p < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "kernel %lld, stride %lld, pads %lld along spatial dim %d",
                           (long long)kernel[d], (long long)s, (long long)p, d);
        y->d[d + 2] = kn_count_mul(x->shape.d[d + 2] - 1, s) - p + kernel[d];
        if (y->d[d + 2] < 0)
            return kn_fail(KILN_ERR_SHAPE, "spatial dim %d of the output would be %lld", d, (long long)y->d[d + 2]);
    }
    return kn_shape_check_size(y);
}

/* Y's shape: output_shape when given (it may only grow the default, as the indices keep their
 * coordinates), else the default. */
static kiln_status maxunpool_shape(const kn_node *node, const kn_tensor *x, const kn_tensor *shape_in,
                                   kn_shape *y) {
    kn_shape def;
    KN_TRY(maxunpool_default_shape(node, x, &def));
    if (!shape_in) {
        *y = def;
        return KILN_OK;
    }
    int n;
    KN_TRY(kn_read_ints(shape_in, "output_shape", y->d, KN_MAX_DIMS, &n));
    y->ndim = n;
    if (n != x->shape.ndim || y->d[0] != x->shape.d[0] || y->d[1] != x->shape.d[1])
        return kn_fail(KILN_ERR_SHAPE, "output_shape must keep X's rank %d, batch and channels", x->shape.ndim);
    for (int d = 2; d < n; d++)
        if (y->d[d] < def.d[d])
            return kn_fail(KILN_ERR_INVALID_ARG, "output_shape[%d] is %lld, below the %lld MaxPool's indices "
                           "address", d, (long long)y->d[d], (long long)def.d[d]);
    return kn_shape_check_size(y);
}

static kiln_status maxunpool_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0), *idx = kn_input_at(inputs.in, inputs.n, 1);
    if (!x || !idx)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and I are required");
    if (x->dtype != KN_F32 && x->dtype != KN_F64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X is %s; MaxUnpool supports f32 and f64", kn_dtype_name(x->dtype));
    if (idx->dtype != KN_I64 || !kn_shape_equal(&idx->shape, &x->shape))
        return kn_fail(KILN_ERR_SHAPE, "I must be i64 of X's shape");
    kn_shape y;
    KN_TRY(maxunpool_shape(node, x, kn_input_at(inputs.in, inputs.n, 2), &y));
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

/* Y.flat[I[j]] = X[j], each index taken as coordinates in the default shape and placed at the same
 * coordinates of Y (which output_shape may have grown). */
static kiln_status maxunpool_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *idx = call->in[1];
    kn_tensor *y = call->out[0];
    kn_shape def;
    KN_TRY(maxunpool_default_shape(call->node, x, &def));
    int64_t n = kn_numel(x), def_size = kn_shape_numel(&def), y_strides[KN_MAX_DIMS];
    kn_shape_strides(&y->shape, y_strides);
    size_t esize = kn_dtype_size(x->dtype);
    const int64_t *at = idx->data;
    memset(y->data, 0, esize * (size_t)kn_numel(y));
    for (int64_t j = 0; j < n; j++) {
        if (at[j] < 0 || at[j] >= def_size)
            return kn_fail(KILN_ERR_INVALID_ARG, "index %lld is outside the %lld elements MaxPool's output had",
                           (long long)at[j], (long long)def_size);
        int64_t rest = at[j], to = 0;
        for (int d = def.ndim - 1; d >= 0; d--) {
            to += rest % def.d[d] * y_strides[d];
            rest /= def.d[d];
        }
        memcpy((char *)y->data + (size_t)to * esize, (const char *)x->data + (size_t)j * esize, esize);
    }
    return KILN_OK;
}

const kn_op kn_op_maxunpool = {.name = "MaxUnpool", .min_inputs = 2, .max_inputs = 3, .infer = maxunpool_infer,
                               .forward = maxunpool_forward};
