#include "core/threads.h"
#include "ops/movement.h"

#include <string.h>

kiln_status kn_infer_inputs_get(const kn_graph *g, const kn_node *node, kn_infer_inputs *inputs) {
    if (node->n_in > KN_INFER_MAX_INPUTS)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d inputs; at most %d expected", node->n_in,
                       KN_INFER_MAX_INPUTS);
    inputs->n = node->n_in;
    for (int i = 0; i < node->n_in; i++) {
        const kn_value *v = kn_node_input(g, node, i);
        inputs->in[i] = NULL;
        if (v) {
            inputs->tensors[i] = (kn_tensor){v->shape, v->dtype, v->data};
            inputs->in[i] = &inputs->tensors[i];
        }
    }
    return KILN_OK;
}

int64_t kn_int_at(const kn_tensor *t, int64_t i) {
    if (t->dtype == KN_I32)
        return ((const int32_t *)t->data)[i];
    return ((const int64_t *)t->data)[i];
}

kiln_status kn_require_data(const kn_tensor *t, const char *what) {
    if (!t->data && kn_numel(t) > 0)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "the %s input must be constant: its values decide the output shape, and shape "
                       "inference does not know them (a session reads small ones once the run computed them)",
                       what);
    return KILN_OK;
}

kiln_status kn_read_ints(const kn_tensor *t, const char *what, int64_t *out, int max, int *n) {
    if (t->dtype != KN_I64 && t->dtype != KN_I32)
        return kn_fail(KILN_ERR_INVALID_ARG, "the %s input must be i64 or i32, got %s", what,
                       kn_dtype_name(t->dtype));
    if (t->shape.ndim > 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the %s input must be a scalar or 1-D, got rank %d",
                       what, t->shape.ndim);
    int64_t count = kn_numel(t);
    if (count > max)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the %s input has %lld elements; at most %d supported",
                       what, (long long)count, max);
    KN_TRY(kn_require_data(t, what));
    for (int64_t i = 0; i < count; i++)
        out[i] = kn_int_at(t, i);
    *n = (int)count;
    return KILN_OK;
}

kiln_status kn_check_outputs(const kn_node *node, int n) {
    if (node->n_out != n)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs; expected %d", node->n_out, n);
    return KILN_OK;
}

void kn_set_output(kn_graph *g, const kn_node *node, int i, const kn_shape *shape, kn_dtype dtype) {
    kn_value *y = kn_node_output(g, node, i);
    y->shape = *shape;
    y->dtype = dtype;
}

void kn_shape_strides(const kn_shape *shape, int64_t *strides) {
    int64_t stride = 1;
    for (int d = shape->ndim - 1; d >= 0; d--) {
        strides[d] = stride;
        stride *= shape->d[d];
    }
}

void kn_copy_strided(void *dst, const void *src, int64_t n, int64_t stride, size_t esize) {
    char *d = dst;
    const char *s = src;
    if (stride == 1) {
        if (n > 0)
            memcpy(d, s, (size_t)n * esize);
        return;
    }
    /* Fixed-size memcpy compiles to one load and store per element, without aliasing concerns. */
    switch (esize) {
    case 1:
        for (int64_t j = 0; j < n; j++)
            d[j] = s[j * stride];
        break;
    case 2:
        for (int64_t j = 0; j < n; j++)
            memcpy(d + 2 * j, s + 2 * j * stride, 2);
        break;
    case 4:
        for (int64_t j = 0; j < n; j++)
            memcpy(d + 4 * j, s + 4 * j * stride, 4);
        break;
    case 8:
        for (int64_t j = 0; j < n; j++)
            memcpy(d + 8 * j, s + 8 * j * stride, 8);
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            memcpy(d + esize * (size_t)j, s + (int64_t)esize * j * stride, esize);
    }
}

/* ---- strided views ---- */

static int64_t view_count(const kn_view *v) {
    int64_t count = 1;
    for (int k = 0; k < v->ndim; k++)
        count *= v->dims[k];
    return count;
}

/* The same walk with size-1 dims dropped and neighbours merged where one step of the outer equals a
 * full run of the inner, so contiguous stretches become one long last dim. */
static kn_view view_simplify(const kn_view *v) {
    kn_view s = {.ndim = 0, .offset = v->offset};
    for (int k = 0; k < v->ndim; k++) {
        if (v->dims[k] == 1)
            continue;
        if (s.ndim > 0 && s.stride[s.ndim - 1] == v->stride[k] * v->dims[k]) {
            s.dims[s.ndim - 1] *= v->dims[k];
            s.stride[s.ndim - 1] = v->stride[k];
            continue;
        }
        s.dims[s.ndim] = v->dims[k];
        s.stride[s.ndim] = v->stride[k];
        s.ndim++;
    }
    if (s.ndim == 0) {
        s.ndim = 1;
        s.dims[0] = 1;
        s.stride[0] = 1;
    }
    return s;
}

/* A position among the first `ndim` dims of a view, with its element offset. */
typedef struct view_walk {
    int64_t index[KN_VIEW_MAX_DIMS];
    int64_t offset;
} view_walk;

static view_walk view_walk_at(const kn_view *v, int ndim, int64_t position) {
    view_walk w = {{0}, v->offset};
    for (int k = ndim - 1; k >= 0; k--) {
        w.index[k] = position % v->dims[k];
        position /= v->dims[k];
        w.offset += w.index[k] * v->stride[k];
    }
    return w;
}

static void view_walk_next(view_walk *w, const kn_view *v, int ndim) {
    for (int k = ndim - 1; k >= 0; k--) {
        w->offset += v->stride[k];
        if (++w->index[k] < v->dims[k])
            return;
        w->offset -= v->stride[k] * v->dims[k];
        w->index[k] = 0;
    }
}

/* A walk of kn_view_copy or kn_view_add over rows of the simplified view (its last dim a row). */
typedef struct view_rows {
    kn_view v;
    int last;
    int64_t length, step;
    size_t esize;
    void *dst;
    const void *src;
} view_rows;

static void view_copy_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const view_rows *w = ctx;
    char *out = w->dst;
    const char *in = w->src;
    size_t esize = w->esize;
    int64_t length = w->length, step = w->step;
    view_walk at = view_walk_at(&w->v, w->last, begin);
    for (int64_t r = begin; r < end; r++) {
        kn_copy_strided(out + (size_t)(r * length) * esize, in + at.offset * (int64_t)esize, length, step, esize);
        view_walk_next(&at, &w->v, w->last);
    }
}

void kn_view_copy(void *dst, const void *src, size_t esize, const kn_view *view) {
    kn_view v = view_simplify(view);
    int64_t count = view_count(&v);
    if (count == 0)
        return;
    int last = v.ndim - 1;
    view_rows w = {v, last, v.dims[last], v.stride[last], esize, dst, src};
    kn_parallel_range(count / w.length, kn_threads_for(count, KN_MOVE_PARALLEL_MIN), view_copy_range, &w);
}

static void view_add_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const view_rows *w = ctx;
    float *dst = w->dst;
    const float *src = w->src;
    int64_t length = w->length, step = w->step;
    view_walk at = view_walk_at(&w->v, w->last, begin);
    for (int64_t r = begin; r < end; r++) {
        float *d = dst + at.offset;
        const float *s = src + r * length;
        for (int64_t j = 0; j < length; j++)
            d[j * step] += s[j];
        view_walk_next(&at, &w->v, w->last);
    }
}

void kn_view_add(float *dst, const float *src, const kn_view *view) {
    kn_view v = view_simplify(view);
    int64_t count = view_count(&v);
    if (count == 0)
        return;
    bool shared = false; /* positions that share an element must add in one fixed order */
    for (int k = 0; k < v.ndim; k++)
        shared = shared || v.stride[k] == 0;
    int last = v.ndim - 1;
    view_rows w = {v, last, v.dims[last], v.stride[last], sizeof(float), dst, src};
    kn_parallel_range(count / w.length, shared ? 1 : kn_threads_for(count, KN_MOVE_PARALLEL_MIN), view_add_range, &w);
}

/* ---- ops that keep the elements in order ---- */

kiln_status kn_copy_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    if (kn_numel(x) != kn_numel(y) || x->dtype != y->dtype)
        return kn_fail(KILN_ERR_SHAPE, "%s: input has %lld %s elements but output %lld %s",
                       call->node->op->name, (long long)kn_numel(x), kn_dtype_name(x->dtype),
                       (long long)kn_numel(y), kn_dtype_name(y->dtype));
    size_t bytes = (size_t)kn_numel(x) * kn_dtype_size(x->dtype);
    if (y->data != x->data && bytes > 0)
        memcpy(y->data, x->data, bytes);
    return KILN_OK;
}

kiln_status kn_check_f32_gradient(const kn_op_call *call, int i) {
    if (call->din[i] && call->in[i]->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s: no gradient for input %d of dtype %s (only f32)",
                       call->node->op->name, i, kn_dtype_name(call->in[i]->dtype));
    return KILN_OK;
}

/* dx += dy over a range of elements. */
typedef struct gradient_add {
    float *dx;
    const float *dy;
} gradient_add;

static void gradient_add_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gradient_add *a = ctx;
    float *dx = a->dx;
    const float *dy = a->dy;
    for (int64_t i = begin; i < end; i++)
        dx[i] += dy[i];
}

kiln_status kn_copy_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    KN_TRY(kn_check_f32_gradient(call, 0));
    float *dx = kn_f32(call->din[0]);
    const float *dy = kn_f32(call->dout[0]);
    int64_t n = kn_numel(call->din[0]);
    if (dx == dy) // the caller aliased the two gradients (only ever for a fresh dX): nothing to move
        return KILN_OK;
    if (kn_din_fresh(call, 0)) {
        memcpy(dx, dy, sizeof(float) * (size_t)n);
        return KILN_OK;
    }
    gradient_add a = {dx, dy};
    kn_parallel_range(n, kn_threads_for(n, KN_MOVE_PARALLEL_MIN), gradient_add_range, &a);
    return KILN_OK;
}
