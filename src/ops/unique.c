/* Unique(X) -> Y, indices, inverse_indices, counts (the last three optional), as numpy.unique with
 * return_index, return_inverse and return_counts. Without `axis` the elements of the flattened X are
 * the items; with it, the slices of X along the axis, compared element by element in row-major order
 * (numpy's order for unique with an axis). sorted = 1 (the default) gives the unique items ascending,
 * sorted = 0 in the order of their first occurrence. indices: each unique item's first index;
 * inverse_indices: for every item of X, its unique item's index in Y; counts: how often each occurs.
 *
 * The number of unique items comes from X's values: the op sizes its outputs when it runs
 * (kn_op.sizes_at_run). Shape inference gives the bound, all items distinct, or the exact count when
 * X's data is known before the run.
 *
 * Dtypes: f32, f64 and the integers and bool (compared exactly, u64 unsigned). NaN sorts after every
 * number and all NaNs are one item, as in numpy.unique (equal_nan, numpy 1.21 on). Outputs indices, inverse_indices and counts are i64. No gradient.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "ops/elements.h"
#include "ops/movement.h"

/* X seen as (outer, items, inner): item k is the outer * inner elements at index k of the axis. */
typedef struct unique_view {
    const kn_tensor *x;
    int axis; /* -1: flattened */
    int64_t outer, items, inner;
} unique_view;

static kiln_status unique_view_make(const kn_node *node, const kn_tensor *x, unique_view *v) {
    bool ok = x->dtype == KN_F32 || x->dtype == KN_F64 || x->dtype == KN_BOOL || kn_dtype_is_integer(x->dtype);
    if (!ok)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X of dtype %s is not supported (f32, f64, integers, bool)",
                       kn_dtype_name(x->dtype));
    *v = (unique_view){.x = x, .axis = -1, .outer = 1, .items = kn_shape_numel(&x->shape), .inner = 1};
    const kn_attr *a = kn_node_attr(node, "axis");
    if (!a || a->type != KN_ATTR_INT)
        return KILN_OK;
    v->axis = kn_axis_normalize(a->i, x->shape.ndim);
    if (v->axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)a->i,
                       x->shape.ndim);
    v->outer = kn_shape_span(&x->shape, 0, v->axis);
    v->items = x->shape.d[v->axis];
    v->inner = kn_shape_span(&x->shape, v->axis + 1, x->shape.ndim);
    return KILN_OK;
}

/* -1, 0 or 1 as element i of x is below, equal to or above element j (NaN above every number). */
static int compare_elements(const kn_tensor *x, int64_t i, int64_t j) {
    if (x->dtype == KN_F32 || x->dtype == KN_F64) {
        double a = x->dtype == KN_F32 ? ((const float *)x->data)[i] : ((const double *)x->data)[i];
        double b = x->dtype == KN_F32 ? ((const float *)x->data)[j] : ((const double *)x->data)[j];
        if (isnan(a) || isnan(b))
            return (isnan(a) != 0) - (isnan(b) != 0);
        if (a == b)
            return 0;
        return a < b ? -1 : 1;
    }
    int64_t a = kn_int_load(x->data, x->dtype, i), b = kn_int_load(x->data, x->dtype, j);
    if (a == b)
        return 0;
    return kn_int_less(x->dtype, a, b) ? -1 : 1;
}

/* Items a and b compared element by element. */
static int compare_items(const unique_view *v, int64_t a, int64_t b) {
    for (int64_t o = 0; o < v->outer; o++)
        for (int64_t i = 0; i < v->inner; i++) {
            int c = compare_elements(v->x, (o * v->items + a) * v->inner + i, (o * v->items + b) * v->inner + i);
            if (c)
                return c;
        }
    return 0;
}

/* Stable merge sort of order[0..n) by item (tmp: n scratch entries). */
static void sort_items(const unique_view *v, int64_t *order, int64_t *tmp, int64_t n) {
    for (int64_t width = 1; width < n; width *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * width) {
            int64_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            int64_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                tmp[k++] = compare_items(v, order[b], order[a]) < 0 ? order[b++] : order[a++];
            while (a < mid)
                tmp[k++] = order[a++];
            while (b < hi)
                tmp[k++] = order[b++];
        }
        memcpy(order, tmp, sizeof(int64_t) * (size_t)n);
    }
}

/* Output k's shape for `count` unique items. */
static kn_shape unique_output_shape(const unique_view *v, int k, int64_t count) {
    if (k == 0 && v->axis >= 0) {
        kn_shape y = v->x->shape;
        y.d[v->axis] = count;
        return y;
    }
    return kn_shape_of(1, k == 2 ? &v->items : &count);
}

/* The number of distinct items (order: the items sorted, tmp: scratch; both v->items entries). */
static int64_t count_unique(const unique_view *v, int64_t *order, int64_t *tmp) {
    for (int64_t i = 0; i < v->items; i++)
        order[i] = i;
    sort_items(v, order, tmp, v->items);
    int64_t count = v->items > 0;
    for (int64_t i = 1; i < v->items; i++)
        count += compare_items(v, order[i - 1], order[i]) != 0;
    return count;
}

static kiln_status unique_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out < 1 || node->n_out > 4)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs; expected 1 to 4", node->n_out);
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x = kn_input_at(inputs.in, inputs.n, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    unique_view v;
    KN_TRY(unique_view_make(node, x, &v));
    int64_t count = v.items;
    if (x->data) {
        int64_t *order = malloc(sizeof(int64_t) * 2 * (size_t)(v.items ? v.items : 1));
        if (!order)
            return kn_fail(KILN_ERR_NOMEM, "out of memory counting the unique items of X");
        count = count_unique(&v, order, order + v.items);
        free(order);
    }
    for (int k = 0; k < node->n_out; k++) {
        kn_shape y = unique_output_shape(&v, k, count);
        kn_set_output(g, node, k, &y, k == 0 ? x->dtype : KN_I64);
    }
    return KILN_OK;
}

/* Scratch: order, tmp, the unique index of each sorted group and its output position. */
static size_t unique_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int64_t n = x ? kn_shape_numel(&x->shape) : 0;
    return sizeof(int64_t) * 4 * (size_t)(n ? n : 1);
}

static kiln_status unique_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    unique_view v;
    KN_TRY(unique_view_make(call->node, x, &v));
    int64_t n = v.items;
    int64_t *order = kn_op_scratch(call->ctx, sizeof(int64_t) * 4 * (size_t)(n ? n : 1));
    if (!order)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for Unique's scratch");
    int64_t *tmp = order + n, *first = tmp + n, *position = first + n;
    int64_t count = count_unique(&v, order, tmp);
    int64_t *group_of = tmp; /* (n) item -> its group among the sorted distinct items */
    int64_t group = -1;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || compare_items(&v, order[i - 1], order[i]) != 0)
            first[++group] = order[i]; /* stable: the group's first item has its lowest index */
        group_of[order[i]] = group;
    }
    /* Output position of each group: its rank sorted, or by first occurrence. */
    bool sorted = kn_node_int(call->node, "sorted", 1) != 0;
    int64_t next = 0;
    for (int64_t gi = 0; gi < count; gi++)
        position[gi] = sorted ? gi : -1;
    for (int64_t i = 0; !sorted && i < n; i++)
        if (position[group_of[i]] < 0)
            position[group_of[i]] = next++;

    size_t elem = kn_dtype_size(x->dtype), chunk = elem * (size_t)v.inner;
    char *y = call->out[0]->data;
    const char *src = x->data;
    int64_t *indices = call->node->n_out > 1 ? call->out[1]->data : NULL;
    int64_t *inverse = call->node->n_out > 2 ? call->out[2]->data : NULL;
    int64_t *counts = call->node->n_out > 3 ? call->out[3]->data : NULL;
    for (int64_t gi = 0; gi < count; gi++) {
        int64_t p = position[gi];
        for (int64_t o = 0; o < v.outer; o++)
            memcpy(y + (size_t)(o * count + p) * chunk, src + (size_t)(o * n + first[gi]) * chunk, chunk);
        if (indices)
            indices[p] = first[gi];
        if (counts)
            counts[p] = 0;
    }
    for (int64_t i = 0; i < n; i++) {
        if (inverse)
            inverse[i] = position[group_of[i]];
        if (counts)
            counts[position[group_of[i]]]++;
    }
    for (int k = 0; k < call->node->n_out; k++)
        call->out[k]->shape = unique_output_shape(&v, k, count);
    return KILN_OK;
}

const kn_op kn_op_unique = {.name = "Unique", .min_inputs = 1, .max_inputs = 1, .infer = unique_infer,
                            .forward = unique_forward, .workspace = unique_workspace, .sizes_at_run = true};
