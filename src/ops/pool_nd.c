/* MaxPool and AveragePool as plain loops over kn_window_walk (ops/window.h): any number of spatial
 * axes, MaxPool on f32, u8 and i8, and MaxPool's Indices output. pool.c hands over whatever its
 * 2-D code does not run (kn_pool_is_nd). Every (n, c) plane is independent, so loops run in parallel
 * over planes; each window is scanned in kernel order, so ties and sums come out as in pool.c.
 */
#include "core/threads.h"
#include "ops/pool_nd.h"

#include <math.h>
#include <string.h>

#include "ops/window.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_POOL_ND_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

typedef struct pool_nd {
    int64_t planes; /* N * C */
    kn_window_nd win;
} pool_nd;

static kiln_status pool_nd_of(const kn_node *node, const kn_shape *x, pool_nd *p) {
    char sx[96];
    if (x->ndim < 3)
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, spatial...)", kn_shape_str(x, sx, sizeof sx));
    for (int i = 0; i < x->ndim; i++)
        if (x->d[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "X %s has a zero or negative dimension",
                           kn_shape_str(x, sx, sizeof sx));
    int rank = x->ndim - 2;
    int64_t kernel[KN_WINDOW_MAX_RANK];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel, KN_WINDOW_MAX_RANK);
    if (n_kernel != rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "kernel_shape must hold %d values for X %s, it has %d",
                       rank, kn_shape_str(x, sx, sizeof sx), n_kernel < 0 ? 0 : n_kernel);
    bool ceil_mode = kn_node_int(node, "ceil_mode", 0) != 0;
    p->win.rank = rank;
    KN_TRY(kn_window_resolve_nd(node, rank, &x->d[2], kernel, ceil_mode, p->win.axes));
    KN_TRY(kn_window_check_reads_input(p->win.axes, rank));
    kn_window_nd_sizes(&p->win);
    p->planes = x->d[0] * x->d[1];
    return KILN_OK;
}

static kiln_status pool_nd_of_call(const kn_op_call *call, pool_nd *p) {
    return pool_nd_of(call->node, &call->in[0]->shape, p);
}

/* Sets output `i` of `node` to (N, C, out...) of `dtype`. */
static void set_output(kn_graph *g, const kn_node *node, int i, const kn_shape *x, const pool_nd *p,
                       kn_dtype dtype) {
    kn_value *y = kn_node_output(g, node, i);
    y->shape = *x;
    for (int d = 0; d < p->win.rank; d++)
        y->shape.d[2 + d] = p->win.axes[d].out;
    y->dtype = dtype;
}

/* ---- MaxPool ---- */

/* storage_order 0: Indices count positions row-major (the last axis fastest); 1: column-major. */
static kiln_status storage_order_of(const kn_node *node, int64_t *order) {
    *order = kn_node_int(node, "storage_order", 0);
    if (*order != 0 && *order != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "storage_order is %lld, not 0 (row-major) or 1 "
                       "(column-major)", (long long)*order);
    return KILN_OK;
}

kiln_status kn_maxpool_nd_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1 && node->n_out != 2)
        return kn_fail(KILN_ERR_INVALID_ARG, "MaxPool has outputs Y and optionally Indices, got %d "
                       "outputs", node->n_out);
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    if (x->dtype != KN_F32 && x->dtype != KN_U8 && x->dtype != KN_I8)
        return kn_fail(KILN_ERR_UNSUPPORTED, "MaxPool takes f32, u8 or i8 input, not %s",
                       kn_dtype_name(x->dtype));
    int64_t order;
    KN_TRY(storage_order_of(node, &order));
    pool_nd p;
    KN_TRY(pool_nd_of(node, &x->shape, &p));
    set_output(g, node, 0, &x->shape, &p, x->dtype);
    if (node->n_out == 2)
        set_output(g, node, 1, &x->shape, &p, KN_I64);
    return KILN_OK;
}

/* Element `at` of a plane of `dtype`, as a float (exact for u8 and i8). */
static float value_at(const void *plane, kn_dtype dtype, int64_t at) {
    switch (dtype) {
    case KN_U8: return ((const uint8_t *)plane)[at];
    case KN_I8: return ((const int8_t *)plane)[at];
    default: return ((const float *)plane)[at];
    }
}

/* Plane offset of the first largest value in the window of output o, scanning in kernel order: ties go
 * to the first maximum, as in PyTorch, and a NaN wins so that it propagates. */
static int64_t window_argmax(const kn_window_nd *win, const void *plane, kn_dtype dtype, int64_t o) {
    kn_window_walk walk;
    kn_window_walk_begin(&walk, win, o); // every window reads an input position (pool_nd_of)
    int64_t best = walk.at;
    float best_value = value_at(plane, dtype, best);
    for (kn_window_walk_next(&walk); !walk.done && !isnan(best_value); kn_window_walk_next(&walk)) {
        float v = value_at(plane, dtype, walk.at);
        if (v > best_value || isnan(v)) {
            best = walk.at;
            best_value = v;
        }
    }
    return best;
}

/* Plane offset `at` (row-major: the last axis fastest) counted column-major: the first axis fastest. */
static int64_t column_major(const kn_window_nd *win, int64_t at) {
    int64_t coords[KN_WINDOW_MAX_RANK];
    for (int d = win->rank - 1; d >= 0; d--) {
        coords[d] = at % win->axes[d].in;
        at /= win->axes[d].in;
    }
    int64_t index = 0;
    for (int d = win->rank - 1; d >= 0; d--)
        index = index * win->axes[d].in + coords[d];
    return index;
}

/* A pool's planes for kn_parallel_for: MaxPool forward (x to y and indices), backward (x and dy to dx),
 * AveragePool forward (x to y), backward (dy to dx). */
typedef struct pool_nd_planes {
    const kn_window_nd *win;
    kn_dtype dtype;
    int64_t order;          /* MaxPool's storage_order */
    bool count_include_pad; /* AveragePool's */
    const void *x;
    const float *dy;
    void *y;
    int64_t *indices; /* NULL when MaxPool has no Indices output */
    float *dx;
} pool_nd_planes;

/* Whether a pool's planes are worth the threads. */
static int pool_nd_threads(const pool_nd *p) {
    return kn_threads_for(p->planes * p->win.in_size, KN_POOL_ND_PARALLEL_MIN);
}

static void maxpool_nd_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const pool_nd_planes *m = ctx;
    const kn_window_nd *win = m->win;
    size_t size = kn_dtype_size(m->dtype);
    const char *xp = (const char *)m->x + (size_t)(plane * win->in_size) * size;
    for (int64_t o = 0; o < win->out_size; o++) {
        int64_t at = window_argmax(win, xp, m->dtype, o), out = plane * win->out_size + o;
        memcpy((char *)m->y + (size_t)out * size, xp + (size_t)at * size, size);
        if (m->indices)
            m->indices[out] = plane * win->in_size + (m->order ? column_major(win, at) : at);
    }
}

kiln_status kn_maxpool_nd_forward(const kn_op_call *call) {
    pool_nd p;
    KN_TRY(pool_nd_of_call(call, &p));
    int64_t order;
    KN_TRY(storage_order_of(call->node, &order));
    pool_nd_planes m = {
        .win = &p.win, .dtype = call->in[0]->dtype, .order = order,
        .x = call->in[0]->data,  // (N*C, in...)
        .y = call->out[0]->data, // (N*C, out...)
        .indices = call->node->n_out == 2 && call->out[1] ? call->out[1]->data : NULL, // (N*C, out...)
    };
    kn_parallel_for(p.planes, pool_nd_threads(&p), maxpool_nd_plane_of, &m);
    return KILN_OK;
}

static void maxpool_nd_grad_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const pool_nd_planes *m = ctx;
    const kn_window_nd *win = m->win;
    const float *xp = (const float *)m->x + plane * win->in_size;
    for (int64_t o = 0; o < win->out_size; o++)
        m->dx[plane * win->in_size + window_argmax(win, xp, KN_F32, o)] += m->dy[plane * win->out_size + o];
}

/* The gradient of each output goes to the input position it copied, found again from X. */
kiln_status kn_maxpool_nd_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    if (call->in[0]->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "MaxPool on %s has no gradient",
                       kn_dtype_name(call->in[0]->dtype));
    pool_nd p;
    KN_TRY(pool_nd_of_call(call, &p));
    pool_nd_planes m = {
        .win = &p.win,
        .x = call->in[0]->data,      // (N*C, in...)
        .dy = kn_f32(call->dout[0]), // (N*C, out...)
        .dx = kn_f32(call->din[0]),  // (N*C, in...)
    };
    kn_parallel_for(p.planes, pool_nd_threads(&p), maxpool_nd_grad_plane_of, &m);
    return KILN_OK;
}

/* ---- AveragePool ---- */

kiln_status kn_avgpool_nd_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "AveragePool has one output, got %d", node->n_out);
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 input is supported");
    pool_nd p;
    KN_TRY(pool_nd_of(node, &x->shape, &p));
    set_output(g, node, 0, &x->shape, &p, KN_F32);
    return KILN_OK;
}

/* 1 / the number of positions output o averages: along each axis, its window's real taps, or with
 * count_include_pad its taps inside the padded input [-pad_begin, in + pad_end) (with ceil_mode the
 * last window can reach past it). */
static float avgpool_scale(const kn_window_nd *win, bool count_include_pad, int64_t o) {
    int64_t count = 1;
    for (int d = win->rank - 1; d >= 0; d--) {
        const kn_window_axis *a = &win->axes[d];
        int64_t od = o % a->out, lo, hi;
        o /= a->out;
        kn_window_taps_inside(a, od, &lo, &hi);
        int64_t along = hi - lo;
        if (count_include_pad) {
            int64_t padded = (a->in + a->pad_end - 1 - kn_window_start(a, od)) / a->dilation + 1;
            along = padded < a->kernel ? padded : a->kernel;
        }
        count *= along;
    }
    return 1.0f / (float)count;
}

static void avgpool_nd_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const pool_nd_planes *a = ctx;
    const kn_window_nd *win = a->win;
    const float *xp = (const float *)a->x + plane * win->in_size;
    float *y = a->y;
    for (int64_t o = 0; o < win->out_size; o++) {
        float sum = 0.0f;
        kn_window_walk walk;
        for (kn_window_walk_begin(&walk, win, o); !walk.done; kn_window_walk_next(&walk))
            sum += xp[walk.at];
        y[plane * win->out_size + o] = sum * avgpool_scale(win, a->count_include_pad, o);
    }
}

kiln_status kn_avgpool_nd_forward(const kn_op_call *call) {
    pool_nd p;
    KN_TRY(pool_nd_of_call(call, &p));
    pool_nd_planes a = {
        .win = &p.win, .count_include_pad = kn_node_int(call->node, "count_include_pad", 0) != 0,
        .x = call->in[0]->data,  // (N*C, in...)
        .y = call->out[0]->data, // (N*C, out...)
    };
    kn_parallel_for(p.planes, pool_nd_threads(&p), avgpool_nd_plane_of, &a);
    return KILN_OK;
}

static void avgpool_nd_grad_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const pool_nd_planes *a = ctx;
    const kn_window_nd *win = a->win;
    float *dxp = a->dx + plane * win->in_size;
    for (int64_t o = 0; o < win->out_size; o++) {
        float share = a->dy[plane * win->out_size + o] * avgpool_scale(win, a->count_include_pad, o);
        kn_window_walk walk;
        for (kn_window_walk_begin(&walk, win, o); !walk.done; kn_window_walk_next(&walk))
            dxp[walk.at] += share;
    }
}

kiln_status kn_avgpool_nd_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    pool_nd p;
    KN_TRY(pool_nd_of_call(call, &p));
    pool_nd_planes a = {
        .win = &p.win, .count_include_pad = kn_node_int(call->node, "count_include_pad", 0) != 0,
        .dy = kn_f32(call->dout[0]), // (N*C, out...)
        .dx = kn_f32(call->din[0]),  // (N*C, in...)
    };
    kn_parallel_for(p.planes, pool_nd_threads(&p), avgpool_nd_grad_plane_of, &a);
    return KILN_OK;
}
