/* Softmax and LogSoftmax along one axis (opset-13 semantics: attribute axis, default -1, normalises
 * along that axis only).
 *
 * The input is seen as (outer, axis_len, inner): every (outer, inner) pair is one lane of axis_len
 * values `inner` apart, normalised on its own. Both forms subtract the lane's max before exp, so large
 * logits (1000) neither overflow nor lose the small entries:
 *     softmax:    y_k = exp(x_k - m) / s             s = sum_j exp(x_j - m),  m = max_j x_j
 *     logsoftmax: y_k = (x_k - m) - log(s)
 * exp comes from kernels/vmath (vectorized, within a few ULP of libm), forward and backward.
 * Backward, from the saved output:
 *     softmax:    dx_k += y_k (dy_k - sum_j dy_j y_j)
 *     logsoftmax: dx_k += dy_k - exp(y_k) sum_j dy_j
 */
#include <math.h>

#include "core/threads.h"
#include "core/status.h"
#include "kernels/vmath.h"
#include "ops/lane_sum.h"
#include "ops/op.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_SOFTMAX_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

typedef struct softmax_lanes {
    int64_t outer, axis_len, inner;
} softmax_lanes;

static kiln_status softmax_axis(const kn_node *node, const kn_shape *shape, int *axis) {
    int64_t attr = kn_node_int(node, "axis", -1);
    *axis = kn_axis_normalize(attr, shape->ndim);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for a %d-D input", (long long)attr,
                       shape->ndim);
    return KILN_OK;
}

static kiln_status softmax_lanes_of(const kn_node *node, const kn_shape *shape, softmax_lanes *lanes) {
    int axis;
    KN_TRY(softmax_axis(node, shape, &axis));
    lanes->outer = kn_shape_span(shape, 0, axis);
    lanes->axis_len = shape->d[axis];
    lanes->inner = kn_shape_span(shape, axis + 1, shape->ndim);
    return KILN_OK;
}

static kiln_status softmax_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; only f32 is supported", x->name,
                       kn_dtype_name(x->dtype));
    int axis;
    KN_TRY(softmax_axis(node, &x->shape, &axis));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = KN_F32;
    return KILN_OK;
}

/* Softmax lanes are computed in blocks that keep every loop contiguous, so that it vectorizes and exp
 * runs through kernels/vmath over many values at a time:
 *   - a last axis (inner = 1): a block of whole rows, one vmath call for the block;
 *   - an inner axis: for one outer index, a chunk of up to SOFTMAX_CHUNK lanes side by side; each step
 *     along the axis is then a contiguous row of the chunk, and the lanes' max, sum and dot products
 *     are vectors of the chunk.
 * A row's sums take kn_lane_sum's lanes (ops/lane_sum.h); side-by-side lanes sum along the axis in
 * order, in double. Either way results do not depend on the blocking or on the thread count. */
enum { SOFTMAX_ROW_BLOCK = 2048 }; /* values per block of whole rows */
enum { SOFTMAX_CHUNK = 256 };      /* lanes side by side in the inner-axis case */

/* The largest of x[0..n) that is not NaN (-inf when none), in KN_SUM_LANES lanes that vectorize: one
 * running maximum is a chain of dependent compares (a row of 49 scores took longer than its exp). The
 * maximum does not depend on the order; only which of +0 and -0 wins a tie may, and x - max is the
 * same either way but for the sign of a zero, which exp maps to 1. */
static float lane_max(const float *x, int64_t n) {
    float lane[KN_SUM_LANES];
    for (int k = 0; k < KN_SUM_LANES; k++)
        lane[k] = -INFINITY;
    int64_t i = 0;
    for (; i + KN_SUM_LANES <= n; i += KN_SUM_LANES)
        for (int k = 0; k < KN_SUM_LANES; k++)
            lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
    float m = -INFINITY;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    for (int k = 0; k < KN_SUM_LANES; k++)
        m = lane[k] > m ? lane[k] : m;
    return m;
}

/* A block of `rows` rows of n values (rows of x and y contiguous). */
static void softmax_rows(const float *x, float *y, int64_t rows, int64_t n, bool log_form) {
    float max[SOFTMAX_ROW_BLOCK]; // (rows): the block holds at most SOFTMAX_ROW_BLOCK rows
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float m = lane_max(xr, n);
        max[r] = m;
        for (int64_t k = 0; k < n; k++)
            y[r * n + k] = xr[k] - m;
    }
    kn_vmath_best()->exp(y, y, rows * n);
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * n, s = (float)kn_lane_sum(yr, n);
        if (log_form) { /* (x - m) first: exact for the large entries, log(s) then adds */
            float log_s = logf(s);
            for (int64_t k = 0; k < n; k++)
                yr[k] = (x[r * n + k] - max[r]) - log_s;
        } else {
            float inv_s = 1.0f / s;
            for (int64_t k = 0; k < n; k++)
                yr[k] *= inv_s;
        }
    }
}

/* `width` lanes side by side, lane i at x[i], x[inner + i], ..., x[(n - 1) inner + i]. */
static void softmax_columns(const float *x, float *y, int64_t n, int64_t inner, int64_t width, bool log_form) {
    float max[SOFTMAX_CHUNK], scale[SOFTMAX_CHUNK]; // (width)
    double sum[SOFTMAX_CHUNK];                       // (width)
    for (int64_t i = 0; i < width; i++) {
        max[i] = -INFINITY;
        sum[i] = 0.0;
    }
    for (int64_t k = 0; k < n; k++)
        for (int64_t i = 0; i < width; i++)
            max[i] = x[k * inner + i] > max[i] ? x[k * inner + i] : max[i];
    for (int64_t k = 0; k < n; k++) {
        const float *xk = x + k * inner;
        float *yk = y + k * inner;
        for (int64_t i = 0; i < width; i++)
            yk[i] = xk[i] - max[i];
        kn_vmath_best()->exp(yk, yk, width);
        for (int64_t i = 0; i < width; i++)
            sum[i] += yk[i];
    }
    for (int64_t i = 0; i < width; i++) /* log(s) to subtract, or 1 / s to multiply by */
        scale[i] = log_form ? logf((float)sum[i]) : 1.0f / (float)sum[i];
    for (int64_t k = 0; k < n; k++) {
        const float *xk = x + k * inner;
        float *yk = y + k * inner;
        if (log_form)
            for (int64_t i = 0; i < width; i++)
                yk[i] = (xk[i] - max[i]) - scale[i];
        else
            for (int64_t i = 0; i < width; i++)
                yk[i] *= scale[i];
    }
}

/* Backward of `width` lanes side by side (width = 1, inner = 1 for one contiguous lane):
 *   softmax:    dx += y (dy - sum_k dy y)
 *   logsoftmax: dx += dy - exp(y) sum_k dy */
static void softmax_columns_backward(const float *y, const float *dy, float *dx, int64_t n, int64_t inner,
                                     int64_t width, bool log_form, bool store) {
    double sums[SOFTMAX_CHUNK];                  // (width)
    float total[SOFTMAX_CHUNK], e[SOFTMAX_CHUNK]; // (width)
    for (int64_t i = 0; i < width; i++)
        sums[i] = 0.0;
    for (int64_t k = 0; k < n; k++)
        for (int64_t i = 0; i < width; i++)
            sums[i] += log_form ? dy[k * inner + i] : dy[k * inner + i] * y[k * inner + i];
    for (int64_t i = 0; i < width; i++)
        total[i] = (float)sums[i];
    for (int64_t k = 0; k < n; k++) {
        const float *yk = y + k * inner, *dyk = dy + k * inner;
        float *dxk = dx + k * inner;
        if (log_form)
            kn_vmath_best()->exp(e, yk, width);
        for (int64_t i = 0; i < width; i++) /* stored as 0 + g, the sum the first gradient has */
            dxk[i] = (store ? 0.0f : dxk[i]) + (log_form ? dyk[i] - e[i] * total[i] : yk[i] * (dyk[i] - total[i]));
    }
}

/* One contiguous lane's backward, in chunks of SOFTMAX_CHUNK for exp's buffer; dx stored (store) or
 * added to. */
static void softmax_lane_backward(const float *y, const float *dy, float *dx, int64_t n, bool log_form,
                                  bool store) {
    float total = (float)(log_form ? kn_lane_sum(dy, n) : kn_lane_dot(dy, y, n)), e[SOFTMAX_CHUNK];
    for (int64_t k0 = 0; k0 < n; k0 += SOFTMAX_CHUNK) {
        int64_t width = n - k0 < SOFTMAX_CHUNK ? n - k0 : SOFTMAX_CHUNK;
        if (log_form)
            kn_vmath_best()->exp(e, y + k0, width);
        for (int64_t k = 0; k < width; k++) {
            float g = log_form ? dy[k0 + k] - e[k] * total : y[k0 + k] * (dy[k0 + k] - total);
            dx[k0 + k] = store ? g : dx[k0 + k] + g;
        }
    }
}

/* The work is split into units: blocks of rows for a last axis, (outer index, chunk of lanes) pairs
 * otherwise. */
typedef struct softmax_units {
    int64_t count, rows_per_unit, chunks_per_outer;
} softmax_units;

static softmax_units softmax_units_of(const softmax_lanes *l) {
    softmax_units u = {0};
    if (l->inner == 1) {
        u.rows_per_unit = l->axis_len >= SOFTMAX_ROW_BLOCK ? 1 : SOFTMAX_ROW_BLOCK / l->axis_len;
        u.count = (l->outer + u.rows_per_unit - 1) / u.rows_per_unit;
    } else {
        u.chunks_per_outer = (l->inner + SOFTMAX_CHUNK - 1) / SOFTMAX_CHUNK;
        u.count = l->outer * u.chunks_per_outer;
    }
    return u;
}

/* What the units read, forward or backward. */
typedef struct softmax_run {
    softmax_lanes l;
    softmax_units u;
    bool log_form, store;      /* store: backward stores dx rather than adding to it */
    const float *x, *y, *dy;   /* (outer, axis_len, inner): forward reads x, backward y and dy */
    float *out;                /* forward's y, or backward's dx */
} softmax_run;

static void softmax_unit_forward(void *ctx, int64_t unit, int slot) {
    (void)slot;
    const softmax_run *s = ctx;
    const softmax_lanes l = s->l;
    const softmax_units u = s->u;
    if (l.inner == 1) {
        int64_t r0 = unit * u.rows_per_unit;
        int64_t rows = l.outer - r0 < u.rows_per_unit ? l.outer - r0 : u.rows_per_unit;
        softmax_rows(s->x + r0 * l.axis_len, s->out + r0 * l.axis_len, rows, l.axis_len, s->log_form);
    } else {
        int64_t o = unit / u.chunks_per_outer, i0 = (unit % u.chunks_per_outer) * SOFTMAX_CHUNK;
        int64_t width = l.inner - i0 < SOFTMAX_CHUNK ? l.inner - i0 : SOFTMAX_CHUNK;
        int64_t start = o * l.axis_len * l.inner + i0;
        softmax_columns(s->x + start, s->out + start, l.axis_len, l.inner, width, s->log_form);
    }
}

static kiln_status softmax_forward_either(const kn_op_call *call, bool log_form) {
    softmax_run s = {.log_form = log_form, .x = kn_f32(call->in[0]), .out = kn_f32(call->out[0])};
    KN_TRY(softmax_lanes_of(call->node, &call->in[0]->shape, &s.l));
    int64_t n_elements = kn_numel(call->in[0]);
    if (n_elements == 0)
        return KILN_OK;
    s.u = softmax_units_of(&s.l);
    kn_parallel_for(s.u.count, kn_threads_for(n_elements, KN_SOFTMAX_PARALLEL_MIN), softmax_unit_forward, &s);
    return KILN_OK;
}

static void softmax_unit_backward(void *ctx, int64_t unit, int slot) {
    (void)slot;
    const softmax_run *s = ctx;
    const softmax_lanes l = s->l;
    const softmax_units u = s->u;
    if (l.inner == 1) {
        int64_t r0 = unit * u.rows_per_unit;
        int64_t r1 = l.outer - r0 < u.rows_per_unit ? l.outer : r0 + u.rows_per_unit;
        for (int64_t r = r0; r < r1; r++)
            softmax_lane_backward(s->y + r * l.axis_len, s->dy + r * l.axis_len, s->out + r * l.axis_len, l.axis_len,
                                  s->log_form, s->store);
    } else {
        int64_t o = unit / u.chunks_per_outer, i0 = (unit % u.chunks_per_outer) * SOFTMAX_CHUNK;
        int64_t width = l.inner - i0 < SOFTMAX_CHUNK ? l.inner - i0 : SOFTMAX_CHUNK;
        int64_t start = o * l.axis_len * l.inner + i0;
        softmax_columns_backward(s->y + start, s->dy + start, s->out + start, l.axis_len, l.inner, width, s->log_form,
                                 s->store);
    }
}

static kiln_status softmax_backward_either(const kn_op_call *call, bool log_form) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    softmax_run s = {.log_form = log_form, .store = kn_din_fresh(call, 0), .y = kn_f32(call->out[0]),
                     .dy = kn_f32(call->dout[0]), .out = kn_f32(call->din[0])};
    KN_TRY(softmax_lanes_of(call->node, &call->out[0]->shape, &s.l));
    int64_t n_elements = kn_numel(call->out[0]);
    if (n_elements == 0)
        return KILN_OK;
    s.u = softmax_units_of(&s.l);
    kn_parallel_for(s.u.count, kn_threads_for(n_elements, KN_SOFTMAX_PARALLEL_MIN), softmax_unit_backward, &s);
    return KILN_OK;
}

static kiln_status softmax_forward(const kn_op_call *call) {
    return softmax_forward_either(call, false);
}

static kiln_status logsoftmax_forward(const kn_op_call *call) {
    return softmax_forward_either(call, true);
}

static kiln_status softmax_backward(const kn_op_call *call) {
    return softmax_backward_either(call, false);
}

static kiln_status logsoftmax_backward(const kn_op_call *call) {
    return softmax_backward_either(call, true);
}

/* Per element: max compare, subtract, exp, add to the sum, and the final scale or subtract. */
static int64_t softmax_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(5, kn_shape_numel(&kn_node_output(g, node, 0)->shape));
}

const kn_op kn_op_softmax = {.name = "Softmax", .min_inputs = 1, .max_inputs = 1,
                             .infer = softmax_infer, .forward = softmax_forward,
                             .backward = softmax_backward, .backward_stores = true, .flops = softmax_flops};
const kn_op kn_op_logsoftmax = {.name = "LogSoftmax", .min_inputs = 1, .max_inputs = 1,
                                .infer = softmax_infer, .forward = logsoftmax_forward,
                                .backward = logsoftmax_backward, .backward_stores = true,
                                .flops = softmax_flops};
