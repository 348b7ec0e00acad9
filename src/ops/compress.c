/* Compress(input, condition): the slices of input along `axis` whose condition entry is true, in order
 * (numpy.compress); without `axis`, the elements of the flattened input. A condition shorter than the
 * axis leaves the rest out; a longer one is an error.
 *
 * The output's extent is the count of true entries: the op sizes its output when it runs
 * (kn_op.sizes_at_run). Shape inference gives the exact shape when the condition is known (a constant,
 * or computed at inference), else the bound: the condition's length, the most it can keep.
 *
 * Any dtype (elements are copied); condition bool. No gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

/* The axis (-1: flattened) and the condition's count of true entries (its length when its data is not
 * known), checked against x. */
static kiln_status compress_params(const kn_node *node, const kn_shape *x, const kn_tensor *cond, int *axis,
                                   int64_t *kept) {
    if (cond->dtype != KN_BOOL || cond->shape.ndim != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "condition must be 1-D bool, got rank %d of %s", cond->shape.ndim,
                       kn_dtype_name(cond->dtype));
    const kn_attr *a = kn_node_attr(node, "axis");
    *axis = -1;
    if (a && a->type == KN_ATTR_INT) {
        *axis = kn_axis_normalize(a->i, x->ndim);
        if (*axis < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)a->i, x->ndim);
    }
    int64_t extent = *axis < 0 ? kn_shape_numel(x) : x->d[*axis], n = cond->shape.d[0];
    if (n > extent)
        return kn_fail(KILN_ERR_INVALID_ARG, "condition has %lld entries; the %s has %lld", (long long)n,
                       *axis < 0 ? "flattened input" : "axis", (long long)extent);
    const uint8_t *c = cond->data;
    *kept = c ? 0 : n; /* not known before the run: at most all of it */
    for (int64_t i = 0; c && i < n; i++)
        *kept += c[i] != 0;
    return KILN_OK;
}

static kn_shape compress_shape(const kn_shape *x, int axis, int64_t kept) {
    if (axis < 0)
        return kn_shape_of(1, &kept);
    kn_shape y = *x;
    y.d[axis] = kept;
    return y;
}

static kiln_status compress_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0), *cond = kn_input_at(inputs.in, inputs.n, 1);
    if (!x || !cond)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs input and condition are required");
    int axis;
    int64_t kept;
    KN_TRY(compress_params(node, &x->shape, cond, &axis, &kept));
    kn_shape y = compress_shape(&x->shape, axis, kept);
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

static kiln_status compress_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *cond = call->in[1];
    int axis;
    int64_t kept;
    KN_TRY(compress_params(call->node, &x->shape, cond, &axis, &kept));
    call->out[0]->shape = compress_shape(&x->shape, axis, kept);
    /* x as (outer, extent, inner); a kept slice copies inner elements. */
    int64_t outer = axis < 0 ? 1 : kn_shape_span(&x->shape, 0, axis);
    int64_t extent = axis < 0 ? kn_shape_numel(&x->shape) : x->shape.d[axis];
    int64_t inner = axis < 0 ? 1 : kn_shape_span(&x->shape, axis + 1, x->shape.ndim);
    size_t slice = kn_dtype_size(x->dtype) * (size_t)inner;
    const uint8_t *c = cond->data;
    const char *src = x->data;
    char *dst = call->out[0]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < cond->shape.d[0]; i++)
            if (c[i]) {
                memcpy(dst, src + (size_t)(o * extent + i) * slice, slice);
                dst += slice;
            }
    return KILN_OK;
}

const kn_op kn_op_compress = {.name = "Compress", .min_inputs = 2, .max_inputs = 2, .infer = compress_infer,
                              .forward = compress_forward, .sizes_at_run = true};
