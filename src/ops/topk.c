/* TopK: the k largest (largest = 1) or smallest (largest = 0) elements along one axis, with their
 * indices (i64), most extreme first; equal elements keep their order (the lower index first), as
 * onnx's reference does. k is a one-element i64 input: shape inference reads its value, so a k given
 * as a graph input makes a data-dependent session (runtime/session.c). `sorted` = 0 allows any order;
 * kiln sorts anyway.
 *
 * Dtypes: f32, f64 and the integers (compared exactly, u64 unsigned). NaN counts as larger than every
 * number. No gradient.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

/* One element of a slice, keyed so that the wanted order is always "largest key first". */
typedef struct topk_entry {
    double f;    /* f32 / f64: the value, negated for largest = 0 */
    int64_t i;   /* integers: the value (u64 with its sign bit flipped), bit-inverted for largest = 0 */
    int64_t at;  /* its index along the axis */
} topk_entry;

static int by_float_key(const void *pa, const void *pb) {
    const topk_entry *a = pa, *b = pb;
    bool a_nan = isnan(a->f), b_nan = isnan(b->f);
    if (a_nan != b_nan)
        return a_nan ? -1 : 1;
    if (!a_nan && a->f != b->f)
        return a->f > b->f ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at);
}

static int by_int_key(const void *pa, const void *pb) {
    const topk_entry *a = pa, *b = pb;
    if (a->i != b->i)
        return a->i > b->i ? -1 : 1;
    return (a->at > b->at) - (a->at < b->at);
}

static bool topk_dtype_ok(kn_dtype dtype) {
    return dtype == KN_F32 || dtype == KN_F64 || kn_dtype_is_integer(dtype);
}

/* The axis and k of the node for input x, checked against x's shape. */
static kiln_status topk_params(const kn_node *node, const kn_shape *x, const kn_tensor *k_in, int *axis,
                               int64_t *k) {
    int64_t a = kn_node_int(node, "axis", -1);
    *axis = kn_axis_normalize(a, x->ndim);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)a, x->ndim);
    int64_t v[1];
    int n;
    KN_TRY(kn_read_ints(k_in, "K", v, 1, &n));
    if (n != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "K must hold one value, got %d", n);
    if (v[0] < 0 || v[0] > x->d[*axis])
        return kn_fail(KILN_ERR_INVALID_ARG, "K is %lld; axis %d has %lld elements", (long long)v[0], *axis,
                       (long long)x->d[*axis]);
    *k = v[0];
    return KILN_OK;
}

static kiln_status topk_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 2));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0), *k_in = kn_input_at(inputs.in, inputs.n, 1);
    if (!x || !k_in)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and K are required");
    if (!topk_dtype_ok(x->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "X is %s; TopK supports f32, f64 and the integers",
                       kn_dtype_name(x->dtype));
    if (x->shape.ndim == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "X is a scalar; TopK needs an axis");
    int axis;
    int64_t k;
    KN_TRY(topk_params(node, &x->shape, k_in, &axis, &k));
    kn_shape y = x->shape;
    y.d[axis] = k;
    kn_set_output(g, node, 0, &y, x->dtype);
    kn_set_output(g, node, 1, &y, KN_I64);
    return KILN_OK;
}

static size_t topk_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int axis = kn_axis_normalize(kn_node_int(node, "axis", -1), x->shape.ndim);
    return axis < 0 ? 0 : sizeof(topk_entry) * (size_t)x->shape.d[axis];
}

/* Fills the slice's entries from x (element `first`, then every `inner`-th), keyed for the order. */
static void topk_load(const kn_tensor *x, int64_t first, int64_t inner, int64_t dim, bool largest,
                      topk_entry *e) {
    for (int64_t j = 0; j < dim; j++) {
        int64_t at = first + j * inner;
        e[j].at = j;
        if (x->dtype == KN_F32 || x->dtype == KN_F64) {
            double v = x->dtype == KN_F32 ? kn_f32(x)[at] : ((const double *)x->data)[at];
            e[j].f = largest ? v : -v;
        } else {
            int64_t v = kn_int_load(x->data, x->dtype, at);
            if (x->dtype == KN_U64)
                v = (int64_t)((uint64_t)v ^ ((uint64_t)1 << 63)); /* unsigned order as signed order */
            e[j].i = largest ? v : ~v;
        }
    }
}

static kiln_status topk_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_tensor *values = call->out[0], *indices = call->out[1];
    int axis;
    int64_t k;
    KN_TRY(topk_params(call->node, &x->shape, call->in[1], &axis, &k));
    kn_shape y = x->shape;
    y.d[axis] = k;
    if (!kn_shape_equal(&values->shape, &y) || !kn_shape_equal(&indices->shape, &y))
        return kn_fail(KILN_ERR_SHAPE, "TopK: the outputs were not sized for K = %lld", (long long)k);
    int64_t outer = kn_shape_span(&x->shape, 0, axis), dim = x->shape.d[axis];
    int64_t inner = kn_shape_span(&x->shape, axis + 1, x->shape.ndim);
    topk_entry *e = kn_op_scratch(call->ctx, sizeof(topk_entry) * (size_t)(dim ? dim : 1)); /* (dim) */
    if (!e)
        return kn_fail(KILN_ERR_NOMEM, "TopK: no memory for %lld elements", (long long)dim);
    bool largest = kn_node_int(call->node, "largest", 1) != 0, floats = x->dtype == KN_F32 || x->dtype == KN_F64;
    size_t esize = kn_dtype_size(x->dtype);
    int64_t *idx = indices->data; /* (outer, k, inner), as values */
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            topk_load(x, o * dim * inner + i, inner, dim, largest, e);
            qsort(e, (size_t)dim, sizeof *e, floats ? by_float_key : by_int_key);
            for (int64_t j = 0; j < k; j++) {
                int64_t to = (o * k + j) * inner + i, from = (o * dim + e[j].at) * inner + i;
                memcpy((char *)values->data + (size_t)to * esize, (const char *)x->data + (size_t)from * esize,
                       esize);
                idx[to] = e[j].at;
            }
        }
    return KILN_OK;
}

const kn_op kn_op_topk = {.name = "TopK", .min_inputs = 2, .max_inputs = 2, .infer = topk_infer,
                          .forward = topk_forward, .workspace = topk_workspace};
