/* CumSum: running sums along one axis (an i32 or i64 scalar input, negative counts from the end).
 *
 *     exclusive = 1   element k holds the sum of the elements before k (the first is 0)
 *     reverse = 1     sums run from the end of the axis
 *
 * Dtypes: f32 and f64 (summed in double, each output rounded once) and the integers (wrapping as
 * numpy). No gradient.
 */
#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

static kiln_status cumsum_axis(const kn_tensor *axis_in, int rank, int *axis) {
    int64_t v[1];
    int n;
    KN_TRY(kn_read_ints(axis_in, "axis", v, 1, &n));
    if (n != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis must hold one value, got %d", n);
    *axis = kn_axis_normalize(v[0], rank);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)v[0],
                       rank);
    return KILN_OK;
}

static kiln_status cumsum_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0), *axis = kn_node_input(g, node, 1);
    if (!x || !axis)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs x and axis are required");
    if (x->dtype != KN_F32 && x->dtype != KN_F64 && !kn_dtype_is_integer(x->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32, f64 and the integers",
                       x->name, kn_dtype_name(x->dtype));
    if (x->shape.ndim == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' is a scalar; CumSum needs an axis", x->name);
    if ((axis->dtype != KN_I64 && axis->dtype != KN_I32) || kn_shape_numel(&axis->shape) != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis must be one i32 or i64");
    kn_set_output(g, node, 0, &x->shape, x->dtype);
    return KILN_OK;
}

static kiln_status cumsum_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int axis = 0;
    KN_TRY(cumsum_axis(call->in[1], x->shape.ndim, &axis));
    bool exclusive = kn_node_int(call->node, "exclusive", 0) != 0;
    bool reverse = kn_node_int(call->node, "reverse", 0) != 0;
    int64_t outer = kn_shape_span(&x->shape, 0, axis), dim = x->shape.d[axis];
    int64_t inner = kn_shape_span(&x->shape, axis + 1, x->shape.ndim);
    void *y = call->out[0]->data; /* x's shape, as (outer, dim, inner) */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double fsum = 0.0;
            int64_t isum = 0;
            for (int64_t s = 0; s < dim; s++) {
                int64_t k = reverse ? dim - 1 - s : s, at = (o * dim + k) * inner + i;
                if (x->dtype == KN_F32 || x->dtype == KN_F64) {
                    double v = x->dtype == KN_F32 ? kn_f32(x)[at] : ((const double *)x->data)[at];
                    double out = exclusive ? fsum : fsum + v;
                    fsum += v;
                    if (x->dtype == KN_F32)
                        kn_f32(call->out[0])[at] = (float)out;
                    else
                        ((double *)y)[at] = out;
                } else {
                    int64_t v = kn_int_load(x->data, x->dtype, at);
                    int64_t next = (int64_t)((uint64_t)isum + (uint64_t)v);
                    kn_int_store(y, x->dtype, at, exclusive ? isum : next);
                    isum = next;
                }
            }
        }
    return KILN_OK;
}

static int64_t cumsum_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}

const kn_op kn_op_cumsum = {.name = "CumSum", .min_inputs = 2, .max_inputs = 2, .infer = cumsum_infer,
                            .forward = cumsum_forward, .flops = cumsum_flops};
