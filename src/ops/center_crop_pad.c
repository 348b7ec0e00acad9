/* CenterCropPad(input_data, shape): input_data cropped or zero-padded, centred, to `shape` along `axes`
 * (default: the first len(shape) axes). An axis longer than its target keeps the elements from
 * (dim - target) / 2 on; a shorter one lands at (target - dim) / 2 in zeros (both rounded down, as
 * onnx's reference does).
 *
 * shape is an i64 or i32 input read at shape inference: a constant, or a small graph input, which makes
 * a data-dependent session (runtime/session.c). Any dtype (elements are copied). No gradient.
 */
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

/* Y's shape and, per axis, the offset of Y's first element in X (negative: padding before). */
static kiln_status ccp_geometry(const kn_node *node, const kn_shape *x, const kn_tensor *shape, kn_shape *y,
                                int64_t *offset) {
    int64_t target[KN_MAX_DIMS], axes[KN_MAX_DIMS];
    int n;
    KN_TRY(kn_read_ints(shape, "shape", target, KN_MAX_DIMS, &n));
    int n_axes = kn_node_ints(node, "axes", axes, KN_MAX_DIMS);
    if (n_axes < 0) {
        n_axes = n;
        for (int i = 0; i < n; i++)
            axes[i] = i;
    }
    if (n_axes != n || n > x->ndim)
        return kn_fail(KILN_ERR_INVALID_ARG, "shape gives %d sizes for %d axes of a rank-%d input", n, n_axes,
                       x->ndim);
    *y = *x;
    memset(offset, 0, sizeof(int64_t) * KN_MAX_DIMS);
    unsigned seen = 0;
    for (int i = 0; i < n; i++) {
        int a = kn_axis_normalize(axes[i], x->ndim);
        if (a < 0 || (seen >> a & 1u))
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range or repeated", (long long)axes[i]);
        seen |= 1u << a;
        if (target[i] < 0)
            return kn_fail(KILN_ERR_SHAPE, "target size %lld is negative", (long long)target[i]);
        y->d[a] = target[i];
        offset[a] = target[i] <= x->d[a] ? (x->d[a] - target[i]) / 2 : -((target[i] - x->d[a]) / 2);
    }
    return KILN_OK;
}

static kiln_status ccp_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0), *shape = kn_input_at(inputs.in, inputs.n, 1);
    if (!x || !shape)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs input_data and shape are required");
    kn_shape y;
    int64_t offset[KN_MAX_DIMS];
    KN_TRY(ccp_geometry(node, &x->shape, shape, &y, offset));
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

static kiln_status ccp_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_shape y;
    int64_t offset[KN_MAX_DIMS], x_strides[KN_MAX_DIMS];
    KN_TRY(ccp_geometry(call->node, &x->shape, call->in[1], &y, offset));
    kn_shape_strides(&x->shape, x_strides);
    size_t elem = kn_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = call->out[0]->data;
    int64_t count = kn_shape_numel(&y);
    for (int64_t i = 0; i < count; i++) {
        int64_t rest = i, at = 0;
        bool inside = true;
        for (int d = y.ndim - 1; d >= 0; d--) {
            int64_t from = rest % y.d[d] + offset[d];
            rest /= y.d[d];
            inside = inside && from >= 0 && from < x->shape.d[d];
            at += from * x_strides[d];
        }
        if (inside)
            memcpy(dst + (size_t)i * elem, src + (size_t)at * elem, elem);
        else
            memset(dst + (size_t)i * elem, 0, elem);
    }
    return KILN_OK;
}

const kn_op kn_op_centercroppad = {.name = "CenterCropPad", .min_inputs = 2, .max_inputs = 2, .infer = ccp_infer,
                                   .forward = ccp_forward};
