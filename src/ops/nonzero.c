/* NonZero(X): the indices of X's nonzero elements as a (rank, count) i64 tensor, row k holding the
 * coordinates along axis k, the elements in row-major order (numpy.nonzero, stacked). A 0-d X is seen
 * as 1-D of one element, as numpy does: (1, 0 or 1).
 *
 * The count comes from X's values: the op sizes its output when it runs (kn_op.sizes_at_run). Shape
 * inference gives (rank, count) when X's data is known before the run, else the bound (rank, numel).
 *
 * Any dtype; "nonzero" is the value's: -0.0 is zero, NaN is not. No gradient.
 */
#include <stdint.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

/* Whether element i of x is nonzero. */
static bool element_nonzero(const kn_tensor *x, int64_t i) {
    switch (x->dtype) {
    case KN_F32: return ((const float *)x->data)[i] != 0.0f;
    case KN_F64: return ((const double *)x->data)[i] != 0.0;
    case KN_F16:
    case KN_BF16: return (((const uint16_t *)x->data)[i] & 0x7fffu) != 0; /* all but the sign bit */
    default: return kn_int_load(x->data, x->dtype, i) != 0;
    }
}

static int64_t count_nonzero(const kn_tensor *x) {
    int64_t count = 0, n = kn_shape_numel(&x->shape);
    for (int64_t i = 0; i < n; i++)
        count += element_nonzero(x, i);
    return count;
}

/* X's rank as NonZero counts it: a 0-d X has one axis. */
static int64_t index_rows(const kn_shape *x) { return x->ndim ? x->ndim : 1; }

static kiln_status nonzero_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    int64_t dims[2] = {index_rows(&x->shape), x->data ? count_nonzero(x) : kn_shape_numel(&x->shape)};
    kn_shape y = kn_shape_of(2, dims);
    kn_set_output(g, node, 0, &y, KN_I64);
    return KILN_OK;
}

static kiln_status nonzero_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    int64_t count = count_nonzero(x), n = kn_shape_numel(&x->shape), rows = index_rows(&x->shape);
    int64_t *out = y->data; /* (rows, count), written at the actual count */
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!element_nonzero(x, i))
            continue;
        int64_t rest = i; /* i's coordinates, last axis first */
        for (int d = x->shape.ndim - 1; d >= 0; d--) {
            out[d * count + at] = rest % x->shape.d[d];
            rest /= x->shape.d[d];
        }
        if (x->shape.ndim == 0)
            out[at] = 0;
        at++;
    }
    int64_t dims[2] = {rows, count};
    y->shape = kn_shape_of(2, dims);
    return KILN_OK;
}

const kn_op kn_op_nonzero = {.name = "NonZero", .min_inputs = 1, .max_inputs = 1, .infer = nonzero_infer,
                             .forward = nonzero_forward, .sizes_at_run = true};
