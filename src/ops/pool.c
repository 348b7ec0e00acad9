/* Pools (ONNX): MaxPool and AveragePool slide a window over the two spatial axes of an NCHW tensor
 * (or the one axis of an NCL tensor, run as 2-D of height 1); pool_nd.c runs the rest (more axes,
 * MaxPool on u8 and i8 and its Indices output). GlobalMaxPool and GlobalAveragePool reduce all
 * spatial positions of each (n, c) plane, any rank. Every plane is independent, so loops run in
 * parallel over planes.
 */
#include <math.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/pool2x2.h"
#include "ops/lane_sum.h"
#include "ops/op.h"
#include "ops/pool_2x2.h"
#include "ops/pool_nd.h"
#include "ops/window.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_POOL_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

typedef struct pool_geom {
    int64_t planes; /* N * C */
    kn_window_axis h, w;
    int64_t in_plane, out_plane;
} pool_geom;

static kiln_status pool_geom_of(const kn_node *node, const kn_shape *x, pool_geom *g) {
    char sx[96];
    if (x->ndim != 3 && x->ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, L) or (N, C, H, W)",
                       kn_shape_str(x, sx, sizeof sx));
    for (int i = 0; i < x->ndim; i++)
        if (x->d[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "X %s has a zero or negative dimension",
                           kn_shape_str(x, sx, sizeof sx));
    int rank = x->ndim - 2;
    int64_t kernel[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel, 2);
    if (n_kernel != rank)
        return kn_fail(KILN_ERR_INVALID_ARG, "kernel_shape must hold %d values, it has %d", rank,
                       n_kernel < 0 ? 0 : n_kernel);
    bool ceil_mode = kn_node_int(node, "ceil_mode", 0) != 0;
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve_as_2d(node, rank, &x->d[2], kernel, ceil_mode, axes));
    KN_TRY(kn_window_check_reads_input(axes, 2));
    g->planes = x->d[0] * x->d[1];
    g->h = axes[0];
    g->w = axes[1];
    g->in_plane = g->h.in * g->w.in;
    g->out_plane = kn_count_mul(g->h.out, g->w.out); /* pads can take it past 2^62 */
    return KILN_OK;
}

/* Whether a pool's planes are worth the threads. */
static int pool_threads(const pool_geom *g) {
    return kn_threads_for(g->planes * g->in_plane, KN_POOL_PARALLEL_MIN);
}

/* One output row or column: its window's taps [lo, hi) that read real pixels, and the number of
 * positions AveragePool divides by along this axis. */
typedef struct pool_taps {
    int64_t lo, hi, count;
} pool_taps;

/* The geometry plus a pool_taps for every output row and column, and for every kernel column j the
 * output columns [lo, hi) at which it reads a real pixel, so that the inner loops run over real pixels
 * only, without bounds tests. */
typedef struct pool_plan {
    pool_geom g;
    pool_taps *rows;  /* (OH) */
    pool_taps *cols;  /* (OW) */
    pool_taps *spans; /* (kW) output columns, as lo and hi; count unused */
} pool_plan;

/* count_include_pad counts the window's positions inside the padded input [-pad_begin,
 * in + pad_end); with ceil_mode the last window can reach past it. Otherwise only real pixels count. */
static void pool_axis_taps(const kn_window_axis *a, bool count_include_pad, pool_taps *taps) {
    for (int64_t o = 0; o < a->out; o++) {
        pool_taps *t = &taps[o];
        kn_window_taps_inside(a, o, &t->lo, &t->hi);
        t->count = t->hi - t->lo;
        if (count_include_pad) {
            int64_t room = a->in + a->pad_end - 1 - kn_window_start(a, o);
            int64_t padded = room / a->dilation + 1;
            t->count = padded < a->kernel ? padded : a->kernel;
        }
    }
}

/* Bytes of the tap tables, forward's scratch. */
static size_t pool_plan_bytes(const pool_geom *g) {
    return sizeof(pool_taps) * (size_t)(g->h.out + g->w.out + g->w.kernel);
}

static kiln_status pool_plan_make(const kn_op_call *call, bool count_include_pad, pool_plan *p) {
    KN_TRY(pool_geom_of(call->node, &call->in[0]->shape, &p->g));
    size_t bytes = pool_plan_bytes(&p->g);
    p->rows = kn_op_scratch(call->ctx, bytes);
    if (!p->rows)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the pool's tap tables (%zu bytes)", bytes);
    p->cols = p->rows + p->g.h.out;
    p->spans = p->cols + p->g.w.out;
    pool_axis_taps(&p->g.h, count_include_pad, p->rows);
    pool_axis_taps(&p->g.w, count_include_pad, p->cols);
    for (int64_t j = 0; j < p->g.w.kernel; j++) {
        kn_window_tap_range(&p->g.w, j, &p->spans[j].lo, &p->spans[j].hi);
        p->spans[j].count = p->spans[j].hi - p->spans[j].lo;
    }
    return KILN_OK;
}

/* Plane index of tap (0, 0) of output (oh, ow)'s window; may lie outside the plane (padding). */
static int64_t pool_corner(const pool_geom *g, int64_t oh, int64_t ow) {
    return kn_window_start(&g->h, oh) * g->w.in + kn_window_start(&g->w, ow);
}

static kiln_status pool_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has one output, got %d", node->op->name,
                       node->n_out);
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 input is supported");
    pool_geom geom;
    KN_TRY(pool_geom_of(node, &x->shape, &geom));
    kn_value *y = &g->values[node->out[0]];
    y->shape = x->shape;
    y->shape.d[x->shape.ndim - 1] = geom.w.out;
    if (x->shape.ndim == 4)
        y->shape.d[2] = geom.h.out;
    y->dtype = KN_F32;
    return KILN_OK;
}

static int64_t pool_flops(const kn_graph *g, const kn_node *node) {
    const kn_value *y = kn_node_output(g, node, 0);
    int64_t kernel[KN_WINDOW_MAX_RANK];
    int rank = kn_node_ints(node, "kernel_shape", kernel, KN_WINDOW_MAX_RANK);
    if (rank < 1 || rank > KN_WINDOW_MAX_RANK)
        return 0;
    int64_t taps = 1;
    for (int i = 0; i < rank; i++)
        taps = kn_count_mul(taps, kernel[i]);
    return kn_count_mul(kn_shape_numel(&y->shape), taps);
}

/* What forward takes from the scratch: the tap tables (pool_nd.c takes none). */
static size_t pool_workspace(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    pool_geom geom;
    if (kn_pool_is_nd(x->shape.ndim, x->dtype, node->n_out) ||
        pool_geom_of(node, &x->shape, &geom) != KILN_OK)
        return 0;
    return pool_plan_bytes(&geom);
}

/* ---- MaxPool ---- */

/* Plane index of the first largest pixel in the window of output (oh, ow), scanning rows then
 * columns; so ties go to the first maximum, as in PyTorch. A NaN wins so that it propagates. */
static int64_t maxpool_argmax(const pool_plan *p, const float *x /* (H, W) */, int64_t oh,
                              int64_t ow) {
    const pool_taps *r = &p->rows[oh], *c = &p->cols[ow];
    int64_t row_step = p->g.h.dilation * p->g.w.in, col_step = p->g.w.dilation;
    int64_t corner = pool_corner(&p->g, oh, ow);
    int64_t best = corner + r->lo * row_step + c->lo * col_step;
    float best_value = x[best];
    bool saw_nan = false;
    for (int64_t i = r->lo; i < r->hi; i++) {
        for (int64_t j = c->lo; j < c->hi; j++) {
            int64_t at = corner + i * row_step + j * col_step;
            float v = x[at];
            // Selects instead of branching: on real data which pixel wins is unpredictable.
            bool wins = v > best_value;
            best = wins ? at : best;
            best_value = wins ? v : best_value;
            saw_nan |= isnan(v);
        }
    }
    if (!saw_nan)
        return best;
    for (int64_t i = r->lo; i < r->hi; i++)
        for (int64_t j = c->lo; j < c->hi; j++)
            if (isnan(x[corner + i * row_step + j * col_step]))
                return corner + i * row_step + j * col_step;
    return best;
}

/* The common 2x2 window with stride 2 and no padding or dilation: every window lies inside the image,
 * so a row pair is scanned directly. */
static bool maxpool_is_plain_2x2(const pool_geom *g) {
    return g->h.kernel == 2 && g->w.kernel == 2 && g->h.stride == 2 && g->w.stride == 2 &&
           g->h.dilation == 1 && g->w.dilation == 1 && g->h.pad_begin == 0 && g->w.pad_begin == 0 &&
           2 * g->h.out <= g->h.in && 2 * g->w.out <= g->w.in;
}

/* A plain 2x2 window whose windows tile the plane exactly (no rows or columns left over). */
static bool maxpool_tiles_2x2(const pool_geom *g) {
    return maxpool_is_plain_2x2(g) && 2 * g->h.out == g->h.in && 2 * g->w.out == g->w.in;
}

static kiln_status maxpool_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (x && kn_pool_is_nd(x->shape.ndim, x->dtype, node->n_out))
        return kn_maxpool_nd_infer(g, node);
    return pool_infer(g, node);
}

/* y[t] = the larger of y[t] and x[t * stride] for t in [0, count); a NaN wins and then stays, so a
 * window holding one gives NaN. Strides 1 and 2 get their own loops so that they vectorize. */
static void max_into(const float *x, int64_t stride, int64_t count, float *y) {
#define KN_MAX_INTO(v, t) y[t] = (v) > y[t] || (v) != (v) ? (v) : y[t]
    if (stride == 1)
        for (int64_t t = 0; t < count; t++)
            KN_MAX_INTO(x[t], t);
    else if (stride == 2)
        for (int64_t t = 0; t < count; t++)
            KN_MAX_INTO(x[2 * t], t);
    else
        for (int64_t t = 0; t < count; t++)
            KN_MAX_INTO(x[t * stride], t);
#undef KN_MAX_INTO
}

/* Forward needs each window's largest value, not where it is: one pass over an output row per kernel
 * tap that reads real pixels, keeping the larger value, vectorizes over the row, where searching each
 * window as maxpool_argmax does branches on the data. */
static void maxpool_forward_plane(const pool_plan *p, const float *xp /* (H, W) */,
                                  float *yp /* (OH, OW) */) {
    const pool_geom *g = &p->g;
    for (int64_t oh = 0; oh < g->h.out; oh++) {
        float *y = yp + oh * g->w.out;
        for (int64_t ow = 0; ow < g->w.out; ow++)
            y[ow] = -INFINITY; // every window reads at least one real pixel (pool_geom_of)
        for (int64_t i = p->rows[oh].lo; i < p->rows[oh].hi; i++) {
            const float *x_row = xp + (kn_window_start(&g->h, oh) + i * g->h.dilation) * g->w.in;
            for (int64_t j = 0; j < g->w.kernel; j++) {
                const pool_taps *span = &p->spans[j];
                if (span->lo < span->hi)
                    max_into(x_row + (kn_window_start(&g->w, span->lo) + j * g->w.dilation), g->w.stride,
                             span->hi - span->lo, y + span->lo);
            }
        }
    }
}

bool kn_maxpool_tiles_2x2(const kn_graph *g, const kn_node *n) {
    if (n->op != &kn_op_maxpool || n->n_in != 1 || n->n_out != 1)
        return false;
    const kn_value *x = kn_node_input(g, n, 0);
    if (!x || x->dtype != KN_F32 || x->shape.ndim != 4)
        return false;
    kn_shape one = x->shape; // the batch and channels may be open; the image size is what counts
    one.d[0] = one.d[1] = 1;
    pool_geom geom;
    if (pool_geom_of(n, &one, &geom) != KILN_OK) {
        kn_error_clear();
        return false;
    }
    return maxpool_tiles_2x2(&geom);
}

/* The plain 2x2 window's plane geometry for kernels/pool2x2.h. */
static kn_pool2x2 maxpool_2x2_of(const pool_geom *g) { return (kn_pool2x2){g->h.out, g->w.out, g->w.in}; }

/* MaxPool's planes, forward (x to y) or backward (x and dy to dx), for kn_parallel_for. */
typedef struct maxpool_planes {
    const pool_plan *p;
    bool plain_2x2;
    kn_pool2x2 two;
    kn_maxpool2x2_forward_fn forward_2x2;
    kn_maxpool2x2_backward_fn backward_2x2;
    bool fresh, tiled;
    const float *x, *dy;
    float *y, *dx;
} maxpool_planes;

static void maxpool_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const maxpool_planes *m = ctx;
    const pool_geom *g = &m->p->g;
    if (m->plain_2x2)
        m->forward_2x2(&m->two, m->x + plane * g->in_plane, m->y + plane * g->out_plane);
    else
        maxpool_forward_plane(m->p, m->x + plane * g->in_plane, m->y + plane * g->out_plane);
}

static kiln_status maxpool_forward(const kn_op_call *call) {
    if (kn_pool_is_nd(call->in[0]->shape.ndim, call->in[0]->dtype, call->node->n_out))
        return kn_maxpool_nd_forward(call);
    pool_plan p;
    KN_TRY(pool_plan_make(call, false, &p));
    maxpool_planes m = {
        .p = &p, .plain_2x2 = maxpool_is_plain_2x2(&p.g), .two = maxpool_2x2_of(&p.g),
        .forward_2x2 = kn_pool2x2_best()->forward,
        .x = kn_f32(call->in[0]),  // (N*C, H, W)
        .y = kn_f32(call->out[0]), // (N*C, OH, OW)
    };
    kn_parallel_for(p.g.planes, pool_threads(&p.g), maxpool_plane_of, &m);
    return KILN_OK;
}

static void maxpool_grad_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const maxpool_planes *m = ctx;
    const pool_plan *p = m->p;
    const float *xp = m->x + plane * p->g.in_plane, *dyp = m->dy + plane * p->g.out_plane;
    float *dxp = m->dx + plane * p->g.in_plane;
    if (m->fresh && !m->tiled)
        memset(dxp, 0, sizeof(float) * (size_t)p->g.in_plane);
    if (m->plain_2x2) {
        m->backward_2x2(&m->two, xp, dyp, dxp, m->fresh && m->tiled);
        return;
    }
    for (int64_t oh = 0; oh < p->g.h.out; oh++)
        for (int64_t ow = 0; ow < p->g.w.out; ow++)
            dxp[maxpool_argmax(p, xp, oh, ow)] += dyp[oh * p->g.w.out + ow];
}

/* The gradient of each output goes to the input pixel it copied, found again from X. */
static kiln_status maxpool_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    if (kn_pool_is_nd(call->in[0]->shape.ndim, call->in[0]->dtype, call->node->n_out)) {
        if (kn_din_fresh(call, 0)) /* the N-D backward adds */
            memset(call->din[0]->data, 0, sizeof(float) * (size_t)kn_numel(call->din[0]));
        return kn_maxpool_nd_backward(call);
    }
    pool_plan p;
    KN_TRY(pool_plan_make(call, false, &p));
    /* A fresh gradient is stored by the 2x2 loop where its windows tile the plane, else zeroed first. */
    maxpool_planes m = {
        .p = &p, .plain_2x2 = maxpool_is_plain_2x2(&p.g), .two = maxpool_2x2_of(&p.g),
        .backward_2x2 = kn_pool2x2_best()->backward,
        .fresh = kn_din_fresh(call, 0), .tiled = maxpool_tiles_2x2(&p.g),
        .x = kn_f32(call->in[0]),    // (N*C, H, W)
        .dy = kn_f32(call->dout[0]), // (N*C, OH, OW)
        .dx = kn_f32(call->din[0]),  // (N*C, H, W)
    };
    kn_parallel_for(p.g.planes, pool_threads(&p.g), maxpool_grad_plane_of, &m);
    return KILN_OK;
}

const kn_op kn_op_maxpool = {
    .name = "MaxPool", .per_image = true,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = maxpool_infer,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .flops = pool_flops,
    .workspace = pool_workspace,
    .backward_stores = true,
};

/* ---- AveragePool ---- */

static kiln_status avgpool_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (x && kn_pool_is_nd(x->shape.ndim, x->dtype, node->n_out))
        return kn_avgpool_nd_infer(g, node);
    return pool_infer(g, node);
}

static kiln_status avgpool_plan_make(const kn_op_call *call, pool_plan *p) {
    return pool_plan_make(call, kn_node_int(call->node, "count_include_pad", 0) != 0, p);
}

static float avgpool_scale(const pool_plan *p, int64_t oh, int64_t ow) {
    return 1.0f / (float)(p->rows[oh].count * p->cols[ow].count);
}

/* AveragePool's planes, forward (x to y) or backward (dy to dx), for kn_parallel_for. */
typedef struct avgpool_planes {
    const pool_plan *p;
    int64_t row_step, col_step;
    const float *x, *dy;
    float *y, *dx;
} avgpool_planes;

static avgpool_planes avgpool_planes_of(const pool_plan *p) {
    return (avgpool_planes){.p = p, .row_step = p->g.h.dilation * p->g.w.in, .col_step = p->g.w.dilation};
}

static void avgpool_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const avgpool_planes *a = ctx;
    const pool_plan *p = a->p;
    const float *xp = a->x + plane * p->g.in_plane;
    float *yp = a->y + plane * p->g.out_plane;
    for (int64_t oh = 0; oh < p->g.h.out; oh++) {
        const pool_taps *r = &p->rows[oh];
        for (int64_t ow = 0; ow < p->g.w.out; ow++) {
            const pool_taps *c = &p->cols[ow];
            int64_t corner = pool_corner(&p->g, oh, ow);
            float sum = 0.0f;
            for (int64_t i = r->lo; i < r->hi; i++)
                for (int64_t j = c->lo; j < c->hi; j++)
                    sum += xp[corner + i * a->row_step + j * a->col_step];
            yp[oh * p->g.w.out + ow] = sum * avgpool_scale(p, oh, ow);
        }
    }
}

static kiln_status avgpool_forward(const kn_op_call *call) {
    if (kn_pool_is_nd(call->in[0]->shape.ndim, call->in[0]->dtype, call->node->n_out))
        return kn_avgpool_nd_forward(call);
    pool_plan p;
    KN_TRY(avgpool_plan_make(call, &p));
    avgpool_planes a = avgpool_planes_of(&p);
    a.x = kn_f32(call->in[0]);  // (N*C, H, W)
    a.y = kn_f32(call->out[0]); // (N*C, OH, OW)
    kn_parallel_for(p.g.planes, pool_threads(&p.g), avgpool_plane_of, &a);
    return KILN_OK;
}

static void avgpool_grad_plane_of(void *ctx, int64_t plane, int slot) {
    (void)slot;
    const avgpool_planes *a = ctx;
    const pool_plan *p = a->p;
    const float *dyp = a->dy + plane * p->g.out_plane;
    float *dxp = a->dx + plane * p->g.in_plane;
    for (int64_t oh = 0; oh < p->g.h.out; oh++) {
        const pool_taps *r = &p->rows[oh];
        for (int64_t ow = 0; ow < p->g.w.out; ow++) {
            const pool_taps *c = &p->cols[ow];
            int64_t corner = pool_corner(&p->g, oh, ow);
            float share = dyp[oh * p->g.w.out + ow] * avgpool_scale(p, oh, ow);
            for (int64_t i = r->lo; i < r->hi; i++)
                for (int64_t j = c->lo; j < c->hi; j++)
                    dxp[corner + i * a->row_step + j * a->col_step] += share;
        }
    }
}

static kiln_status avgpool_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    if (kn_pool_is_nd(call->in[0]->shape.ndim, call->in[0]->dtype, call->node->n_out))
        return kn_avgpool_nd_backward(call);
    pool_plan p;
    KN_TRY(avgpool_plan_make(call, &p));
    avgpool_planes a = avgpool_planes_of(&p);
    a.dy = kn_f32(call->dout[0]); // (N*C, OH, OW)
    a.dx = kn_f32(call->din[0]);  // (N*C, H, W)
    kn_parallel_for(p.g.planes, pool_threads(&p.g), avgpool_grad_plane_of, &a);
    return KILN_OK;
}

const kn_op kn_op_averagepool = {
    .name = "AveragePool", .per_image = true,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = avgpool_infer,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .flops = pool_flops,
    .workspace = pool_workspace,
};

/* ---- GlobalAveragePool, GlobalMaxPool ---- */

static kiln_status global_pool_infer(kn_graph *g, const kn_node *node) {
    char sx[96];
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has one output, got %d", node->op->name,
                       node->n_out);
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input X is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 input is supported");
    if (x->shape.ndim < 3)
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, spatial...)",
                       kn_shape_str(&x->shape, sx, sizeof sx));
    for (int i = 0; i < x->shape.ndim; i++)
        if (x->shape.d[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "X %s has a zero or negative dimension",
                           kn_shape_str(&x->shape, sx, sizeof sx));
    kn_value *y = &g->values[node->out[0]];
    y->shape = x->shape;
    for (int i = 2; i < y->shape.ndim; i++)
        y->shape.d[i] = 1;
    y->dtype = KN_F32;
    return KILN_OK;
}

static int64_t global_pool_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}

/* A global pool's planes, (N*C, spatial) to (N*C): forward x to y, backward dy (and x) to dx, for
 * kn_parallel_range. */
typedef struct global_planes {
    int64_t planes, plane; /* N*C, and the spatial elements of each */
    const float *x, *dy;
    float *y, *dx;
} global_planes;

static global_planes global_planes_of(const kn_op_call *call) {
    const kn_shape *s = &call->in[0]->shape;
    return (global_planes){.planes = s->d[0] * s->d[1], .plane = kn_shape_span(s, 2, s->ndim)};
}

/* Whether a global pool's planes are worth the threads. */
static int global_pool_threads(const global_planes *g) {
    return kn_threads_for(g->planes * g->plane, KN_POOL_PARALLEL_MIN);
}

static void global_avgpool_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const global_planes *g = ctx;
    for (int64_t p = begin; p < end; p++) // in lanes: one running sum was a chain of dependent adds
        g->y[p] = (float)(kn_lane_sum(g->x + p * g->plane, g->plane) / (double)g->plane);
}

static kiln_status global_avgpool_forward(const kn_op_call *call) {
    global_planes g = global_planes_of(call);
    g.x = kn_f32(call->in[0]);  // (N*C, spatial)
    g.y = kn_f32(call->out[0]); // (N*C)
    kn_parallel_range(g.planes, global_pool_threads(&g), global_avgpool_range, &g);
    return KILN_OK;
}

static void global_avgpool_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const global_planes *g = ctx;
    float scale = 1.0f / (float)g->plane;
    for (int64_t p = begin; p < end; p++) {
        float share = g->dy[p] * scale;
        for (int64_t i = 0; i < g->plane; i++)
            g->dx[p * g->plane + i] += share;
    }
}

static kiln_status global_avgpool_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    global_planes g = global_planes_of(call);
    g.dy = kn_f32(call->dout[0]); // (N*C)
    g.dx = kn_f32(call->din[0]);  // (N*C, spatial)
    kn_parallel_range(g.planes, global_pool_threads(&g), global_avgpool_grad_range, &g);
    return KILN_OK;
}

const kn_op kn_op_globalaveragepool = {
    .name = "GlobalAveragePool", .per_image = true,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = global_pool_infer,
    .forward = global_avgpool_forward,
    .backward = global_avgpool_backward,
    .flops = global_pool_flops,
};

/* Index of the first largest element of x[0, n); a NaN wins so that it propagates. */
static int64_t first_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[i]) && !isnan(x[best])))
            best = i;
    return best;
}

static void global_maxpool_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const global_planes *g = ctx;
    for (int64_t p = begin; p < end; p++)
        g->y[p] = g->x[p * g->plane + first_argmax(g->x + p * g->plane, g->plane)];
}

static kiln_status global_maxpool_forward(const kn_op_call *call) {
    global_planes g = global_planes_of(call);
    g.x = kn_f32(call->in[0]);  // (N*C, spatial)
    g.y = kn_f32(call->out[0]); // (N*C)
    kn_parallel_range(g.planes, global_pool_threads(&g), global_maxpool_range, &g);
    return KILN_OK;
}

static void global_maxpool_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const global_planes *g = ctx;
    for (int64_t p = begin; p < end; p++)
        g->dx[p * g->plane + first_argmax(g->x + p * g->plane, g->plane)] += g->dy[p];
}

static kiln_status global_maxpool_backward(const kn_op_call *call) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    global_planes g = global_planes_of(call);
    g.x = kn_f32(call->in[0]);    // (N*C, spatial)
    g.dy = kn_f32(call->dout[0]); // (N*C)
    g.dx = kn_f32(call->din[0]);  // (N*C, spatial)
    kn_parallel_range(g.planes, global_pool_threads(&g), global_maxpool_grad_range, &g);
    return KILN_OK;
}

const kn_op kn_op_globalmaxpool = {
    .name = "GlobalMaxPool", .per_image = true,
    .min_inputs = 1,
    .max_inputs = 1,
    .infer = global_pool_infer,
    .forward = global_maxpool_forward,
    .backward = global_maxpool_backward,
    .flops = global_pool_flops,
};
