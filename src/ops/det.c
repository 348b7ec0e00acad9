/* Det: the determinant of each square matrix in the last two dims, (..., M, M) -> (...), by LU
 * decomposition with partial pivoting in double, rounded once to the input's dtype (f32 or f64).
 * No gradient.
 */
#include <math.h>

#include "core/status.h"
#include "ops/movement.h"

static kiln_status det_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    if (x->dtype != KN_F32 && x->dtype != KN_F64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X is %s; Det supports f32 and f64", kn_dtype_name(x->dtype));
    int r = x->shape.ndim;
    if (r < 2 || x->shape.d[r - 1] != x->shape.d[r - 2]) {
        char xs[96];
        return kn_fail(KILN_ERR_SHAPE, "X %s is not a stack of square matrices",
                       kn_shape_str(&x->shape, xs, sizeof xs));
    }
    kn_shape y = {.ndim = r - 2};
    for (int d = 0; d < r - 2; d++)
        y.d[d] = x->shape.d[d];
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

static size_t det_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int64_t m = x->shape.ndim >= 2 ? x->shape.d[x->shape.ndim - 1] : 0;
    return sizeof(double) * (size_t)(m * m);
}

/* The determinant of the m x m matrix a (row-major), which it overwrites with its LU factors. */
static double det_lu(double *a, int64_t m) {
    double det = 1.0;
    for (int64_t k = 0; k < m; k++) {
        int64_t p = k;
        for (int64_t i = k + 1; i < m; i++)
            if (fabs(a[i * m + k]) > fabs(a[p * m + k]))
                p = i;
        if (a[p * m + k] == 0.0)
            return 0.0;
        if (p != k) {
            for (int64_t j = 0; j < m; j++) {
                double t = a[k * m + j];
                a[k * m + j] = a[p * m + j];
                a[p * m + j] = t;
            }
            det = -det;
        }
        double pivot = a[k * m + k];
        det *= pivot;
        for (int64_t i = k + 1; i < m; i++) {
            double f = a[i * m + k] / pivot;
            for (int64_t j = k + 1; j < m; j++)
                a[i * m + j] -= f * a[k * m + j];
        }
    }
    return det;
}

static kiln_status det_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    int r = x->shape.ndim;
    int64_t m = x->shape.d[r - 1], count = kn_numel(y);
    double *a = kn_op_scratch(call->ctx, sizeof(double) * (size_t)(m > 0 ? m * m : 1)); /* (m, m) */
    if (!a)
        return kn_fail(KILN_ERR_NOMEM, "Det: no memory for a %lld x %lld matrix", (long long)m, (long long)m);
    for (int64_t b = 0; b < count; b++) {
        for (int64_t i = 0; i < m * m; i++)
            a[i] = x->dtype == KN_F32 ? kn_f32(x)[b * m * m + i] : ((const double *)x->data)[b * m * m + i];
        double d = det_lu(a, m);
        if (y->dtype == KN_F32)
            kn_f32(y)[b] = (float)d;
        else
            ((double *)y->data)[b] = d;
    }
    return KILN_OK;
}

const kn_op kn_op_det = {.name = "Det", .min_inputs = 1, .max_inputs = 1, .infer = det_infer,
                         .forward = det_forward, .workspace = det_workspace};
