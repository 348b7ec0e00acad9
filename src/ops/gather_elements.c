/* Element-wise indexing along one axis: GatherElements and ScatterElements, and Trilu, which keeps
 * one triangle of the last two dims.
 *
 *     GatherElements   y[i..., j, k...] = data[i..., indices[i..., j, k...], k...] along `axis`
 *                      (default 0); y has indices' shape, which matches data's in rank
 *     ScatterElements  y = data, then y[..., indices[...], ...] = updates[...] along `axis`, or
 *                      combined with what is there by `reduction` add, mul, max or min (none: the
 *                      last write wins, in updates' memory order)
 *     Trilu            x (..., N, M), optional i64 scalar k (default 0): upper = 1 keeps j - i >= k,
 *                      upper = 0 keeps j - i <= k; the rest become 0
 *
 * Indices are i64 or i32, negative ones count from the end of the axis; one outside the axis fails
 * with KILN_ERR_INVALID_ARG. Data of any dtype moves by element size; ScatterElements' reductions take
 * f32 only. No gradients.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

/* The index at element i of `indices`, normalised into [0, dim). */
static kiln_status index_at(const kn_tensor *indices, int64_t i, int64_t dim, int64_t *out) {
    int64_t v = kn_int_at(indices, i);
    int64_t k = v < 0 ? v + dim : v;
    if (k < 0 || k >= dim)
        return kn_fail(KILN_ERR_INVALID_ARG, "index %lld is outside an axis of %lld", (long long)v,
                       (long long)dim);
    *out = k;
    return KILN_OK;
}

static kiln_status check_indices(const kn_value *data, const kn_value *indices, int64_t axis_attr,
                                 int *axis) {
    if (indices->dtype != KN_I64 && indices->dtype != KN_I32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "indices '%s' are %s; expected i64 or i32",
                       indices->name, kn_dtype_name(indices->dtype));
    if (indices->shape.ndim != data->shape.ndim || data->shape.ndim == 0)
        return kn_fail(KILN_ERR_SHAPE, "indices have %d dims and data %d; they must match (>= 1)",
                       indices->shape.ndim, data->shape.ndim);
    *axis = kn_axis_normalize(axis_attr, data->shape.ndim);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d",
                       (long long)axis_attr, data->shape.ndim);
    return KILN_OK;
}

/* The offset in a tensor of `shape` of the element at the coordinates of element e of `walk`
 * (a shape of the same rank), with the coordinate on `axis` replaced by k. */
static int64_t offset_with(const kn_shape *walk, const int64_t *strides, int64_t e, int axis,
                           int64_t k) {
    int64_t off = 0;
    for (int d = walk->ndim - 1; d >= 0; d--) {
        int64_t c = e % walk->d[d];
        e /= walk->d[d];
        off += (d == axis ? k : c) * strides[d];
    }
    return off;
}

static kiln_status gather_elements_infer(kn_graph *g, const kn_node *node) {
    const kn_value *data = kn_node_input(g, node, 0), *indices = kn_node_input(g, node, 1);
    if (!data || !indices)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and indices are required");
    int axis;
    KN_TRY(check_indices(data, indices, kn_node_int(node, "axis", 0), &axis));
    for (int d = 0; d < data->shape.ndim; d++)
        if (d != axis && indices->shape.d[d] > data->shape.d[d])
            return kn_fail(KILN_ERR_SHAPE, "indices dim %d (%lld) exceeds data's (%lld)", d,
                           (long long)indices->shape.d[d], (long long)data->shape.d[d]);
    kn_set_output(g, node, 0, &indices->shape, data->dtype);
    return KILN_OK;
}

static kiln_status gather_elements_forward(const kn_op_call *call) {
    const kn_tensor *data = call->in[0], *indices = call->in[1];
    int axis = kn_axis_normalize(kn_node_int(call->node, "axis", 0), data->shape.ndim);
    size_t size = kn_dtype_size(data->dtype);
    int64_t strides[KN_MAX_DIMS];
    kn_shape_strides(&data->shape, strides);
    const char *src = data->data;
    char *dst = call->out[0]->data; /* indices' shape */
    int64_t n = kn_numel(indices);
    for (int64_t e = 0; e < n; e++) {
        int64_t k = 0;
        KN_TRY(index_at(indices, e, data->shape.d[axis], &k));
        memcpy(dst + (size_t)e * size,
               src + (size_t)offset_with(&indices->shape, strides, e, axis, k) * size, size);
    }
    return KILN_OK;
}

typedef enum scatter_reduction {
    SCATTER_NONE, SCATTER_ADD, SCATTER_MUL, SCATTER_MAX, SCATTER_MIN
} scatter_reduction;

static kiln_status scatter_reduction_of(const kn_node *node, scatter_reduction *r) {
    const char *s = kn_node_string(node, "reduction", "none");
    static const char *const names[] = {"none", "add", "mul", "max", "min"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *r = (scatter_reduction)i;
            return KILN_OK;
        }
    return kn_fail(KILN_ERR_INVALID_ARG, "reduction '%s' is not none, add, mul, max or min", s);
}

static kiln_status scatter_elements_infer(kn_graph *g, const kn_node *node) {
    const kn_value *data = kn_node_input(g, node, 0), *indices = kn_node_input(g, node, 1),
                   *updates = kn_node_input(g, node, 2);
    if (!data || !indices || !updates)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data, indices and updates are required");
    int axis;
    KN_TRY(check_indices(data, indices, kn_node_int(node, "axis", 0), &axis));
    if (!kn_shape_equal(&indices->shape, &updates->shape) || updates->dtype != data->dtype)
        return kn_fail(KILN_ERR_SHAPE, "updates must have indices' shape and data's dtype");
    for (int d = 0; d < data->shape.ndim; d++)
        if (d != axis && indices->shape.d[d] > data->shape.d[d])
            return kn_fail(KILN_ERR_SHAPE, "indices dim %d (%lld) exceeds data's (%lld)", d,
                           (long long)indices->shape.d[d], (long long)data->shape.d[d]);
    scatter_reduction r = SCATTER_NONE;
    KN_TRY(scatter_reduction_of(node, &r));
    if (r != SCATTER_NONE && data->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "reduction '%s' takes f32 data, not %s",
                       kn_node_string(node, "reduction", "none"), kn_dtype_name(data->dtype));
    kn_set_output(g, node, 0, &data->shape, data->dtype);
    return KILN_OK;
}

static kiln_status scatter_elements_forward(const kn_op_call *call) {
    const kn_tensor *data = call->in[0], *indices = call->in[1], *updates = call->in[2];
    int axis = kn_axis_normalize(kn_node_int(call->node, "axis", 0), data->shape.ndim);
    scatter_reduction r = SCATTER_NONE;
    KN_TRY(scatter_reduction_of(call->node, &r));
    size_t size = kn_dtype_size(data->dtype);
    memcpy(call->out[0]->data, data->data, size * (size_t)kn_numel(data));
    int64_t strides[KN_MAX_DIMS];
    kn_shape_strides(&data->shape, strides);
    char *dst = call->out[0]->data; /* data's shape */
    const char *src = updates->data; /* indices' shape */
    int64_t n = kn_numel(indices);
    for (int64_t e = 0; e < n; e++) {
        int64_t k = 0;
        KN_TRY(index_at(indices, e, data->shape.d[axis], &k));
        int64_t at = offset_with(&indices->shape, strides, e, axis, k);
        if (r == SCATTER_NONE) {
            memcpy(dst + (size_t)at * size, src + (size_t)e * size, size);
            continue;
        }
        float *y = (float *)dst + at, u = ((const float *)src)[e];
        *y = r == SCATTER_ADD ? *y + u : r == SCATTER_MUL ? *y * u
             : r == SCATTER_MAX ? fmaxf(*y, u) : fminf(*y, u);
    }
    return KILN_OK;
}

static kiln_status trilu_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0), *k = kn_node_input(g, node, 1);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->shape.ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' has %d dims; Trilu needs at least 2", x->name,
                       x->shape.ndim);
    if (k && (k->dtype != KN_I64 || kn_shape_numel(&k->shape) != 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "k must be one i64");
    kn_set_output(g, node, 0, &x->shape, x->dtype);
    return KILN_OK;
}

static kiln_status trilu_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const kn_tensor *kt = call->node->n_in > 1 ? call->in[1] : NULL;
    int64_t k = kt ? *(const int64_t *)kt->data : 0;
    bool upper = kn_node_int(call->node, "upper", 1) != 0;
    int r = x->shape.ndim;
    int64_t rows = x->shape.d[r - 2], cols = x->shape.d[r - 1];
    int64_t mats = kn_shape_span(&x->shape, 0, r - 2);
    size_t size = kn_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = call->out[0]->data; /* (mats, rows, cols) */
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                size_t at = (size_t)((m * rows + i) * cols + j) * size;
                bool keep = upper ? j - i >= k : j - i <= k; /* j - i is small: no overflow */
                if (keep)
                    memcpy(dst + at, src + at, size);
                else
                    memset(dst + at, 0, size);
            }
    return KILN_OK;
}

const kn_op kn_op_gatherelements = {.name = "GatherElements", .min_inputs = 2, .max_inputs = 2,
                                    .infer = gather_elements_infer,
                                    .forward = gather_elements_forward};
const kn_op kn_op_scatterelements = {.name = "ScatterElements", .min_inputs = 3, .max_inputs = 3,
                                     .infer = scatter_elements_infer,
                                     .forward = scatter_elements_forward};
const kn_op kn_op_trilu = {.name = "Trilu", .min_inputs = 1, .max_inputs = 2, .infer = trilu_infer,
                           .forward = trilu_forward};
