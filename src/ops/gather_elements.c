/* Element-wise indexing along one axis: GatherElements and ScatterElements; slice indexing by index
 * tuples: GatherND and ScatterND; and Trilu, which keeps one triangle of the last two dims.
 *
 *     GatherElements   y[i..., j, k...] = data[i..., indices[i..., j, k...], k...] along `axis`
 *                      (default 0); y has indices' shape, which matches data's in rank
 *     ScatterElements  y = data, then y[..., indices[...], ...] = updates[...] along `axis`, or
 *                      combined with what is there by `reduction` add, mul, max or min (none: the
 *                      last write wins, in updates' memory order)
 *     GatherND         indices (..., k) (i64) pick slices data[i_1, ..., i_k, :] after `batch_dims`
 *                      leading dims both share: y is indices.shape[:-1] + data.shape[b + k:]
 *     ScatterND        y = data, then the slices indices name replaced by (or combined by
 *                      `reduction` with) the slices of updates, in index order
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

/* ---- GatherND and ScatterND: indices (..., k) address slices of data's dims [b, b + k) ---- */

/* The shape facts GatherND and ScatterND share: b batch dims, k indexed dims, `slice` elements per
 * indexed slice, `count` index tuples per batch. */
typedef struct nd_plan {
    int b, k;
    int64_t batches, count, slice;
} nd_plan;

static kiln_status nd_plan_make(const kn_shape *data, const kn_value *indices, int64_t batch_dims,
                                nd_plan *p) {
    if (indices->dtype != KN_I64)
        return kn_fail(KILN_ERR_UNSUPPORTED, "indices '%s' are %s; expected i64", indices->name,
                       kn_dtype_name(indices->dtype));
    const kn_shape *is = &indices->shape;
    if (is->ndim < 1 || batch_dims < 0 || batch_dims >= is->ndim || batch_dims >= data->ndim)
        return kn_fail(KILN_ERR_SHAPE, "batch_dims %lld does not fit indices of rank %d and data of "
                       "rank %d", (long long)batch_dims, is->ndim, data->ndim);
    p->b = (int)batch_dims;
    int64_t k = is->d[is->ndim - 1];
    if (k < 1 || k > data->ndim - p->b)
        return kn_fail(KILN_ERR_SHAPE, "index tuples of %lld do not fit data of rank %d after %d "
                       "batch dims", (long long)k, data->ndim, p->b);
    p->k = (int)k;
    for (int d = 0; d < p->b; d++)
        if (is->d[d] != data->d[d])
            return kn_fail(KILN_ERR_SHAPE, "batch dim %d differs: indices %lld, data %lld", d,
                           (long long)is->d[d], (long long)data->d[d]);
    p->batches = kn_shape_span(data, 0, p->b);
    p->count = kn_shape_span(is, p->b, is->ndim - 1);
    p->slice = kn_shape_span(data, p->b + p->k, data->ndim);
    return KILN_OK;
}

/* The element offset, within one batch of data, of the slice index tuple t names. */
static kiln_status nd_offset(const nd_plan *p, const kn_shape *data, const int64_t *tuple,
                             int64_t *offset) {
    int64_t off = 0;
    for (int t = 0; t < p->k; t++) {
        int64_t dim = data->d[p->b + t], v = tuple[t] < 0 ? tuple[t] + dim : tuple[t];
        if (v < 0 || v >= dim)
            return kn_fail(KILN_ERR_INVALID_ARG, "index %lld is outside a dim of %lld",
                           (long long)tuple[t], (long long)dim);
        off = off * dim + v;
    }
    *offset = off * p->slice;
    return KILN_OK;
}

static kiln_status gather_nd_infer(kn_graph *g, const kn_node *node) {
    const kn_value *data = kn_node_input(g, node, 0), *indices = kn_node_input(g, node, 1);
    if (!data || !indices)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data and indices are required");
    nd_plan p = {0};
    KN_TRY(nd_plan_make(&data->shape, indices, kn_node_int(node, "batch_dims", 0), &p));
    kn_shape y = {0};
    for (int d = 0; d < indices->shape.ndim - 1; d++)
        y.d[y.ndim++] = indices->shape.d[d];
    for (int d = p.b + p.k; d < data->shape.ndim; d++) {
        if (y.ndim == KN_MAX_DIMS)
            return kn_fail(KILN_ERR_UNSUPPORTED, "the output would have more than %d dims",
                           KN_MAX_DIMS);
        y.d[y.ndim++] = data->shape.d[d];
    }
    kn_set_output(g, node, 0, &y, data->dtype);
    return KILN_OK;
}

static kiln_status gather_nd_forward(const kn_op_call *call) {
    const kn_tensor *data = call->in[0], *indices = call->in[1];
    nd_plan p = {0};
    kn_value iv = {.dtype = indices->dtype, .shape = indices->shape, .name = "indices"};
    KN_TRY(nd_plan_make(&data->shape, &iv, kn_node_int(call->node, "batch_dims", 0), &p));
    size_t size = kn_dtype_size(data->dtype), slice_bytes = (size_t)p.slice * size;
    int64_t batch_elems = kn_shape_span(&data->shape, p.b, data->shape.ndim);
    const int64_t *tuples = indices->data; /* (batches, count, k) */
    const char *src = data->data;
    char *dst = call->out[0]->data;        /* (batches, count, slice) */
    for (int64_t bi = 0; bi < p.batches; bi++)
        for (int64_t j = 0; j < p.count; j++) {
            int64_t off = 0;
            KN_TRY(nd_offset(&p, &data->shape, tuples + (bi * p.count + j) * p.k, &off));
            memcpy(dst + (size_t)(bi * p.count + j) * slice_bytes,
                   src + (size_t)(bi * batch_elems + off) * size, slice_bytes);
        }
    return KILN_OK;
}

static kiln_status scatter_nd_infer(kn_graph *g, const kn_node *node) {
    const kn_value *data = kn_node_input(g, node, 0), *indices = kn_node_input(g, node, 1),
                   *updates = kn_node_input(g, node, 2);
    if (!data || !indices || !updates)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs data, indices and updates are required");
    nd_plan p = {0};
    KN_TRY(nd_plan_make(&data->shape, indices, 0, &p));
    if (updates->dtype != data->dtype || kn_shape_numel(&updates->shape) != p.count * p.slice)
        return kn_fail(KILN_ERR_SHAPE, "updates must have data's dtype and one slice per index");
    scatter_reduction r = SCATTER_NONE;
    KN_TRY(scatter_reduction_of(node, &r));
    if (r != SCATTER_NONE && data->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "reduction takes f32 data, not %s",
                       kn_dtype_name(data->dtype));
    kn_set_output(g, node, 0, &data->shape, data->dtype);
    return KILN_OK;
}

static kiln_status scatter_nd_forward(const kn_op_call *call) {
    const kn_tensor *data = call->in[0], *indices = call->in[1], *updates = call->in[2];
    nd_plan p = {0};
    kn_value iv = {.dtype = indices->dtype, .shape = indices->shape, .name = "indices"};
    KN_TRY(nd_plan_make(&data->shape, &iv, 0, &p));
    scatter_reduction r = SCATTER_NONE;
    KN_TRY(scatter_reduction_of(call->node, &r));
    size_t size = kn_dtype_size(data->dtype);
    memcpy(call->out[0]->data, data->data, size * (size_t)kn_numel(data));
    const int64_t *tuples = indices->data; /* (count, k) */
    char *dst = call->out[0]->data;
    const char *src = updates->data;       /* (count, slice) */
    for (int64_t j = 0; j < p.count; j++) {
        int64_t off = 0;
        KN_TRY(nd_offset(&p, &data->shape, tuples + j * p.k, &off));
        if (r == SCATTER_NONE) {
            memcpy(dst + (size_t)off * size, src + (size_t)(j * p.slice) * size, (size_t)p.slice * size);
            continue;
        }
        for (int64_t e = 0; e < p.slice; e++) {
            float *y = (float *)dst + off + e, u = ((const float *)src)[j * p.slice + e];
            *y = r == SCATTER_ADD ? *y + u : r == SCATTER_MUL ? *y * u
                 : r == SCATTER_MAX ? fmaxf(*y, u) : fminf(*y, u);
        }
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
const kn_op kn_op_gathernd = {.name = "GatherND", .min_inputs = 2, .max_inputs = 2,
                              .infer = gather_nd_infer, .forward = gather_nd_forward};
const kn_op kn_op_scatternd = {.name = "ScatterND", .min_inputs = 3, .max_inputs = 3,
                               .infer = scatter_nd_infer, .forward = scatter_nd_forward};
const kn_op kn_op_trilu = {.name = "Trilu", .min_inputs = 1, .max_inputs = 2, .infer = trilu_infer,
                           .forward = trilu_forward};
