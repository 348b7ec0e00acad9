/* The p-norm ops:
 *
 *     LpNormalization(x): x / ||x||_p along `axis` (default -1), p 1 or 2 (default 2); a slice whose
 *         norm is 0 gives zeros, as onnxruntime does (numpy's reference would divide by zero)
 *     LpPool(X (N, C, spatial...)): (sum over each window of |x|^p)^(1/p), p (default 2) any positive
 *         integer; Conv's window attributes (kernel_shape, strides, pads, dilations, auto_pad) and
 *         ceil_mode; padding adds nothing
 *     GlobalLpPool(X (N, C, spatial...)): the same over the whole spatial extent -> (N, C, 1, ...)
 *
 * f32; sums in double. No gradients.
 */
#include <math.h>

#include "core/status.h"
#include "ops/movement.h"
#include "ops/window.h"

static kiln_status f32_input(const kn_value *x, int min_rank) {
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32", x->name, kn_dtype_name(x->dtype));
    if (x->shape.ndim < min_rank)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' has %d dims; at least %d needed", x->name, x->shape.ndim,
                       min_rank);
    return KILN_OK;
}

static kiln_status p_of(const kn_node *node, bool one_or_two, int64_t *p) {
    *p = kn_node_int(node, "p", 2);
    if (*p < 1 || (one_or_two && *p > 2))
        return kn_fail(KILN_ERR_INVALID_ARG, "p is %lld; supported: %s", (long long)*p,
                       one_or_two ? "1 or 2" : "a positive integer");
    return KILN_OK;
}

/* |v|^p, and its inverse on a sum. */
static double abs_pow(double v, int64_t p) {
    v = fabs(v);
    return p == 1 ? v : p == 2 ? v * v : pow(v, (double)p);
}

static double root(double sum, int64_t p) {
    return p == 1 ? sum : p == 2 ? sqrt(sum) : pow(sum, 1.0 / (double)p);
}

/* ---- LpNormalization ---- */

static kiln_status lpnorm_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(f32_input(x, 1));
    int64_t p;
    KN_TRY(p_of(node, true, &p));
    int64_t a = kn_node_int(node, "axis", -1);
    if (kn_axis_normalize(a, x->shape.ndim) < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d", (long long)a, x->shape.ndim);
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

static kiln_status lpnorm_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int64_t p;
    KN_TRY(p_of(call->node, true, &p));
    int axis = kn_axis_normalize(kn_node_int(call->node, "axis", -1), x->shape.ndim);
    /* x as (outer, extent, inner): each (o, i) is one vector along the axis, stride inner. */
    int64_t outer = kn_shape_span(&x->shape, 0, axis), extent = x->shape.d[axis];
    int64_t inner = kn_shape_span(&x->shape, axis + 1, x->shape.ndim);
    const float *src = x->data;
    float *dst = call->out[0]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const float *v = src + o * extent * inner + i;
            float *y = dst + o * extent * inner + i;
            double sum = 0;
            for (int64_t k = 0; k < extent; k++)
                sum += abs_pow(v[k * inner], p);
            double norm = root(sum, p);
            for (int64_t k = 0; k < extent; k++)
                y[k * inner] = norm != 0 ? (float)(v[k * inner] / norm) : 0.0f;
        }
    return KILN_OK;
}

const kn_op kn_op_lpnormalization = {.name = "LpNormalization", .min_inputs = 1, .max_inputs = 1,
                                     .infer = lpnorm_infer, .forward = lpnorm_forward};

/* ---- LpPool and GlobalLpPool ---- */

/* The window of a pool over x's spatial axes: LpPool's attributes, or (global) the whole extent. */
static kiln_status lppool_window(const kn_node *node, const kn_shape *x, bool global, kn_window_nd *win) {
    int rank = x->ndim - 2;
    win->rank = rank;
    if (global) {
        for (int i = 0; i < rank; i++)
            win->axes[i] = (kn_window_axis){.in = x->d[2 + i], .kernel = x->d[2 + i], .stride = 1, .dilation = 1,
                                            .out = 1};
    } else {
        int64_t kernel[KN_WINDOW_MAX_RANK];
        if (kn_node_ints(node, "kernel_shape", kernel, KN_WINDOW_MAX_RANK) != rank)
            return kn_fail(KILN_ERR_INVALID_ARG, "kernel_shape must give %d sizes, one per spatial axis", rank);
        KN_TRY(kn_window_resolve_nd(node, rank, &x->d[2], kernel, kn_node_int(node, "ceil_mode", 0) != 0,
                                    win->axes));
    }
    kn_window_nd_sizes(win);
    return KILN_OK;
}

static kiln_status lppool_infer_as(kn_graph *g, const kn_node *node, bool global) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(f32_input(x, 3));
    int64_t p;
    KN_TRY(p_of(node, false, &p));
    kn_window_nd win;
    KN_TRY(lppool_window(node, &x->shape, global, &win));
    kn_shape y = kn_shape_of(2, x->shape.d);
    for (int i = 0; i < win.rank; i++)
        y.d[y.ndim++] = win.axes[i].out;
    kn_set_output(g, node, 0, &y, KN_F32);
    return KILN_OK;
}

static kiln_status lppool_forward_as(const kn_op_call *call, bool global) {
    const kn_tensor *x = call->in[0];
    int64_t p;
    KN_TRY(p_of(call->node, false, &p));
    kn_window_nd win;
    KN_TRY(lppool_window(call->node, &x->shape, global, &win));
    int64_t planes = x->shape.d[0] * x->shape.d[1];
    const float *src = x->data;
    float *dst = call->out[0]->data;
    for (int64_t c = 0; c < planes; c++)
        for (int64_t o = 0; o < win.out_size; o++) {
            double sum = 0;
            kn_window_walk walk;
            for (kn_window_walk_begin(&walk, &win, o); !walk.done; kn_window_walk_next(&walk))
                sum += abs_pow(src[c * win.in_size + walk.at], p);
            dst[c * win.out_size + o] = (float)root(sum, p);
        }
    return KILN_OK;
}

static kiln_status lppool_infer(kn_graph *g, const kn_node *node) { return lppool_infer_as(g, node, false); }
static kiln_status lppool_forward(const kn_op_call *call) { return lppool_forward_as(call, false); }
static kiln_status globallppool_infer(kn_graph *g, const kn_node *node) { return lppool_infer_as(g, node, true); }
static kiln_status globallppool_forward(const kn_op_call *call) { return lppool_forward_as(call, true); }

const kn_op kn_op_lppool = {.name = "LpPool", .min_inputs = 1, .max_inputs = 1, .infer = lppool_infer,
                            .forward = lppool_forward};
const kn_op kn_op_globallppool = {.name = "GlobalLpPool", .min_inputs = 1, .max_inputs = 1,
                                  .infer = globallppool_infer, .forward = globallppool_forward};
