/* Elementwise ONNX math: Erf, Sqrt, Exp, Log, Neg, Abs, Reciprocal, Floor, Ceil, HardSigmoid,
 * HardSwish, Softplus, and the two that take bounds or slopes as inputs, Clip and PRelu.
 *
 * Dtypes: f32 everywhere; Neg also i64, i32, i8; Abs and Clip also i64, i32, u8, i8. Integers
 * never go through float math, and Neg / Abs of the lowest value wrap to itself, as in numpy
 * (ops/elements.h).
 *
 *     HardSigmoid  max(0, min(1, alpha x + beta)), alpha 0.2 and beta 0.5 by default
 *     HardSwish    x HardSigmoid(x) with alpha 1/6, beta 1/2
 *     Softplus     ln(1 + e^x), as max(x, 0) + ln(1 + e^-|x|) so that e^x cannot overflow
 *     Clip         min(max(x, min), max), min and max optional scalar inputs (opset 11+); with
 *                  min > max every element becomes max, as in numpy and ONNX
 *     PRelu        x where x >= 0, slope x below; slope broadcasts to X's shape (unidirectionally)
 *
 * Backward adds dy f'(x) into dx (f32 only). Floor and Ceil have none: their derivative is zero
 * wherever it exists, so no model learns through them. At kinks the derivative takes the value
 * PyTorch uses: Abs 0 at 0; Clip passes dy where min <= x <= max (the bounds get no gradient);
 * HardSigmoid and HardSwish are flat at the ends of their ramps; PRelu takes the x >= 0 side at 0,
 * and its slope gradient is dy x summed over the dims the slope was broadcast along.
 *
 * FLOPs count one per add, multiply, divide or compare and one per exp / log / erf / sqrt call.
 */
#include <math.h>

#include "core/threads.h"
#include "core/status.h"
#include "kernels/vmath.h"
#include "ops/broadcast.h"
#include "ops/elements.h"
#include "ops/fused_act.h"
#include "ops/op.h"
#include "ops/reduce.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_UNARY_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

#define KN_TWO_OVER_SQRT_PI 1.12837916709551257390f /* d/dx erf(x) = 2/sqrt(pi) e^(-x^2) */

typedef enum unary_kind {
    UNARY_ERF, UNARY_SQRT, UNARY_EXP, UNARY_LOG, UNARY_NEG, UNARY_ABS, UNARY_RECIPROCAL,
    UNARY_FLOOR, UNARY_CEIL, UNARY_HARDSIGMOID, UNARY_HARDSWISH, UNARY_SOFTPLUS
} unary_kind;

/* Which integer dtypes an op takes besides f32. */
typedef enum integer_support { INTEGERS_NONE, INTEGERS_SIGNED, INTEGERS_ALL } integer_support;

static bool dtype_supported(kn_dtype dtype, integer_support integers) {
    switch (integers) {
    case INTEGERS_NONE: return dtype == KN_F32;
    case INTEGERS_SIGNED:
        return dtype == KN_F32 || dtype == KN_I64 || dtype == KN_I32 || dtype == KN_I8;
    default: return dtype == KN_F32 || kn_dtype_is_integer(dtype);
    }
}

static const char *supported_names(integer_support integers) {
    switch (integers) {
    case INTEGERS_NONE: return "f32";
    case INTEGERS_SIGNED: return "f32, i64, i32, i8";
    default: return "f32, i64, i32, u8, i8";
    }
}

/* Output 0 takes input 0's shape and dtype. */
static kiln_status same_shape_infer(kn_graph *g, const kn_node *node, integer_support integers) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (!dtype_supported(x->dtype, integers))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: %s", x->name,
                       kn_dtype_name(x->dtype), supported_names(integers));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = x->dtype;
    return KILN_OK;
}

static kiln_status float_infer(kn_graph *g, const kn_node *node) {
    return same_shape_infer(g, node, INTEGERS_NONE);
}

static int64_t output_numel(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_output(g, node, 0)->shape);
}

/* True when backward has something to do: a gradient flows in and one is wanted for X. */
static bool gradient_wanted(const kn_op_call *call) {
    return call->dout && call->dout[0] && call->din && call->din[0] && call->in[0]->dtype == KN_F32;
}

/* ---- the elementwise functions ---- */

/* Written so that NaN passes through: both compares are false for it. */
static inline float softplus(float x) {
    return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
}

/* One elementwise f32 pass of a unary op: forward (y from x) or backward (dx from x, y and dy). */
typedef struct unary_pass {
    unary_kind kind;
    const float *x, *y, *dy;
    float *out; /* forward: y; backward: dx */
    float alpha, beta;
} unary_pass;

/* y[i] = EXPR(v = x[i]) for i in [begin, end). */
#define KN_UNARY_LOOP(EXPR)                                                      \
    do {                                                                         \
        for (int64_t i = begin; i < end; i++) {                                  \
            float v = x[i];                                                      \
            y[i] = (EXPR);                                                       \
        }                                                                        \
    } while (0)

static void unary_f32_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const unary_pass *u = ctx;
    const float *x = u->x;
    float *y = u->out;
    const float alpha = u->alpha, beta = u->beta;
    switch (u->kind) {
    case UNARY_ERF:
    case UNARY_EXP: break; /* kn_vmath_run's, in unary_f32 */
    case UNARY_SQRT: KN_UNARY_LOOP(sqrtf(v)); break;
    case UNARY_LOG: KN_UNARY_LOOP(logf(v)); break;
    case UNARY_NEG: KN_UNARY_LOOP(-v); break;
    case UNARY_ABS: KN_UNARY_LOOP(fabsf(v)); break;
    case UNARY_RECIPROCAL: KN_UNARY_LOOP(1.0f / v); break;
    case UNARY_FLOOR: KN_UNARY_LOOP(floorf(v)); break;
    case UNARY_CEIL: KN_UNARY_LOOP(ceilf(v)); break;
    case UNARY_HARDSIGMOID: KN_UNARY_LOOP(kn_hard_sigmoid(v, alpha, beta)); break;
    case UNARY_HARDSWISH: KN_UNARY_LOOP(v * kn_hard_sigmoid(v, 1.0f / 6.0f, 0.5f)); break;
    case UNARY_SOFTPLUS: KN_UNARY_LOOP(softplus(v)); break;
    }
}

static void unary_f32(unary_kind kind, const float *x, float *y, int64_t n, float alpha,
                      float beta) {
    switch (kind) {
    case UNARY_ERF: kn_vmath_run(kn_vmath_best()->erf, y, x, n); return;
    case UNARY_EXP: kn_vmath_run(kn_vmath_best()->exp, y, x, n); return;
    default: break;
    }
    unary_pass u = {.kind = kind, .x = x, .out = y, .alpha = alpha, .beta = beta};
    kn_parallel_range(n, kn_threads_for(n, KN_UNARY_PARALLEL_MIN), unary_f32_range, &u);
}

/* dx[i] += EXPR for i in [begin, end), EXPR in terms of x[i], y[i] and dy[i]. */
#define KN_UNARY_GRAD_LOOP(EXPR)                                                 \
    do {                                                                         \
        for (int64_t i = begin; i < end; i++)                                    \
            dx[i] += (EXPR);                                                     \
    } while (0)

static void unary_f32_backward_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const unary_pass *u = ctx;
    const float *x = u->x, *y = u->y, *dy = u->dy;
    float *dx = u->out;
    const float alpha = u->alpha, beta = u->beta;
    switch (u->kind) {
    case UNARY_ERF: KN_UNARY_GRAD_LOOP(dy[i] * KN_TWO_OVER_SQRT_PI * expf(-x[i] * x[i])); break;
    case UNARY_SQRT: KN_UNARY_GRAD_LOOP(dy[i] * 0.5f / y[i]); break;
    case UNARY_EXP: KN_UNARY_GRAD_LOOP(dy[i] * y[i]); break;
    case UNARY_LOG: KN_UNARY_GRAD_LOOP(dy[i] / x[i]); break;
    case UNARY_NEG: KN_UNARY_GRAD_LOOP(-dy[i]); break;
    case UNARY_ABS: KN_UNARY_GRAD_LOOP(x[i] > 0.0f ? dy[i] : x[i] < 0.0f ? -dy[i] : 0.0f); break;
    case UNARY_RECIPROCAL: KN_UNARY_GRAD_LOOP(-dy[i] * y[i] * y[i]); break;
    case UNARY_HARDSIGMOID: /* alpha on the ramp 0 < alpha x + beta < 1 */
        KN_UNARY_GRAD_LOOP(alpha * x[i] + beta > 0.0f && alpha * x[i] + beta < 1.0f ? dy[i] * alpha
                                                                                    : 0.0f);
        break;
    case UNARY_HARDSWISH: /* d/dx x (x + 3) / 6 = x / 3 + 1/2 on the ramp (-3, 3) */
        KN_UNARY_GRAD_LOOP(x[i] <= -3.0f  ? 0.0f
                           : x[i] >= 3.0f ? dy[i]
                                          : dy[i] * (x[i] / 3.0f + 0.5f));
        break;
    case UNARY_SOFTPLUS: /* sigmoid(x) = 1 - e^-softplus(x), exact for tiny y through expm1 */
        KN_UNARY_GRAD_LOOP(-dy[i] * expm1f(-y[i]));
        break;
    case UNARY_FLOOR:
    case UNARY_CEIL: break; /* no backward */
    }
}

static void unary_f32_backward(unary_kind kind, const float *x, const float *y, const float *dy,
                               float *dx, int64_t n, float alpha, float beta) {
    unary_pass u = {kind, x, y, dy, dx, alpha, beta};
    kn_parallel_range(n, kn_threads_for(n, KN_UNARY_PARALLEL_MIN), unary_f32_backward_range, &u);
}

/* Neg and Abs of integers, in uint64 so that the lowest value wraps instead of overflowing. */
static void unary_int(unary_kind kind, const kn_tensor *x, kn_tensor *y) {
    int64_t n = kn_numel(x);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = kn_int_load(x->data, x->dtype, i);
        int64_t negated = (int64_t)(0 - (uint64_t)v);
        kn_int_store(y->data, y->dtype, i, kind == UNARY_NEG || v < 0 ? negated : v);
    }
}

/* HardSigmoid's attributes; the other ops have none. */
static void unary_attributes(const kn_node *node, unary_kind kind, float *alpha, float *beta) {
    *alpha = kind == UNARY_HARDSIGMOID ? kn_node_float(node, "alpha", 0.2f) : 0.0f;
    *beta = kind == UNARY_HARDSIGMOID ? kn_node_float(node, "beta", 0.5f) : 0.0f;
}

static kiln_status unary_forward(const kn_op_call *call, unary_kind kind) {
    const kn_tensor *x = call->in[0];
    kn_tensor *y = call->out[0];
    if (x->dtype != KN_F32) {
        unary_int(kind, x, y);
        return KILN_OK;
    }
    float alpha, beta;
    unary_attributes(call->node, kind, &alpha, &beta);
    unary_f32(kind, kn_f32(x), kn_f32(y), kn_numel(x), alpha, beta);
    return KILN_OK;
}

static kiln_status unary_backward(const kn_op_call *call, unary_kind kind) {
    if (!gradient_wanted(call))
        return KILN_OK;
    float alpha, beta;
    unary_attributes(call->node, kind, &alpha, &beta);
    unary_f32_backward(kind, kn_f32(call->in[0]), kn_f32(call->out[0]), kn_f32(call->dout[0]),
                       kn_f32(call->din[0]), kn_numel(call->in[0]), alpha, beta);
    return KILN_OK;
}

static kiln_status signed_infer(kn_graph *g, const kn_node *node) {
    return same_shape_infer(g, node, INTEGERS_SIGNED);
}
static kiln_status numeric_infer(kn_graph *g, const kn_node *node) {
    return same_shape_infer(g, node, INTEGERS_ALL);
}

static kiln_status erf_forward(const kn_op_call *call) { return unary_forward(call, UNARY_ERF); }
static kiln_status erf_backward(const kn_op_call *call) { return unary_backward(call, UNARY_ERF); }
static kiln_status sqrt_forward(const kn_op_call *call) { return unary_forward(call, UNARY_SQRT); }
static kiln_status sqrt_backward(const kn_op_call *call) {
    return unary_backward(call, UNARY_SQRT);
}
static kiln_status exp_forward(const kn_op_call *call) { return unary_forward(call, UNARY_EXP); }
static kiln_status exp_backward(const kn_op_call *call) { return unary_backward(call, UNARY_EXP); }
static kiln_status log_forward(const kn_op_call *call) { return unary_forward(call, UNARY_LOG); }
static kiln_status log_backward(const kn_op_call *call) { return unary_backward(call, UNARY_LOG); }
static kiln_status neg_forward(const kn_op_call *call) { return unary_forward(call, UNARY_NEG); }
static kiln_status neg_backward(const kn_op_call *call) { return unary_backward(call, UNARY_NEG); }
static kiln_status abs_forward(const kn_op_call *call) { return unary_forward(call, UNARY_ABS); }
static kiln_status abs_backward(const kn_op_call *call) { return unary_backward(call, UNARY_ABS); }
static kiln_status reciprocal_forward(const kn_op_call *call) {
    return unary_forward(call, UNARY_RECIPROCAL);
}
static kiln_status reciprocal_backward(const kn_op_call *call) {
    return unary_backward(call, UNARY_RECIPROCAL);
}
static kiln_status floor_forward(const kn_op_call *call) {
    return unary_forward(call, UNARY_FLOOR);
}
static kiln_status ceil_forward(const kn_op_call *call) { return unary_forward(call, UNARY_CEIL); }
static kiln_status hardsigmoid_forward(const kn_op_call *call) {
    return unary_forward(call, UNARY_HARDSIGMOID);
}
static kiln_status hardsigmoid_backward(const kn_op_call *call) {
    return unary_backward(call, UNARY_HARDSIGMOID);
}
static kiln_status hardswish_forward(const kn_op_call *call) {
    return unary_forward(call, UNARY_HARDSWISH);
}
static kiln_status hardswish_backward(const kn_op_call *call) {
    return unary_backward(call, UNARY_HARDSWISH);
}
static kiln_status softplus_forward(const kn_op_call *call) {
    return unary_forward(call, UNARY_SOFTPLUS);
}
static kiln_status softplus_backward(const kn_op_call *call) {
    return unary_backward(call, UNARY_SOFTPLUS);
}

/* ---- Clip ---- */

static kiln_status clip_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(same_shape_infer(g, node, INTEGERS_ALL));
    const kn_value *x = kn_node_input(g, node, 0);
    for (int i = 1; i <= 2; i++) {
        const kn_value *bound = kn_node_input(g, node, i);
        if (!bound)
            continue;
        const char *name = i == 1 ? "min" : "max";
        if (bound->dtype != x->dtype)
            return kn_fail(KILN_ERR_UNSUPPORTED, "%s '%s' is %s but input '%s' is %s", name,
                           bound->name, kn_dtype_name(bound->dtype), x->name,
                           kn_dtype_name(x->dtype));
        if (kn_shape_numel(&bound->shape) != 1) {
            char s[96];
            return kn_fail(KILN_ERR_SHAPE, "%s '%s' has shape %s; it must be a scalar", name,
                           bound->name, kn_shape_str(&bound->shape, s, sizeof s));
        }
    }
    return KILN_OK;
}

/* Input i (min or max) when given. */
static const kn_tensor *clip_bound(const kn_op_call *call, int i) {
    return call->node->n_in > i ? call->in[i] : NULL;
}

/* Clip's f32 pass, forward (out = y) or backward (out = dx), over a range of elements. */
typedef struct clip_pass {
    const float *x, *dy;
    float *out;
    float lo, hi;
} clip_pass;

/* min(max(x, lo), hi) as two compares, so that a NaN x stays NaN. */
static void clip_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const clip_pass *c = ctx;
    const float *xs = c->x;
    float *ys = c->out;
    const float lo = c->lo, hi = c->hi;
    for (int64_t i = begin; i < end; i++) {
        float v = xs[i] < lo ? lo : xs[i];
        ys[i] = v > hi ? hi : v;
    }
}

static kiln_status clip_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *min = clip_bound(call, 1), *max = clip_bound(call, 2);
    kn_tensor *y = call->out[0];
    int64_t n = kn_numel(x);
    if (x->dtype == KN_F32) {
        clip_pass c = {.x = kn_f32(x), .out = kn_f32(y), .lo = min ? kn_f32(min)[0] : -INFINITY,
                       .hi = max ? kn_f32(max)[0] : INFINITY};
        kn_parallel_range(n, kn_threads_for(n, KN_UNARY_PARALLEL_MIN), clip_range, &c);
        return KILN_OK;
    }
    int64_t lo = min ? kn_int_load(min->data, min->dtype, 0) : kn_int_lowest(x->dtype);
    int64_t hi = max ? kn_int_load(max->data, max->dtype, 0) : kn_int_highest(x->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = kn_int_load(x->data, x->dtype, i);
        v = v < lo ? lo : v;
        kn_int_store(y->data, y->dtype, i, v > hi ? hi : v);
    }
    return KILN_OK;
}

static void clip_grad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const clip_pass *c = ctx;
    const float *x = c->x, *dy = c->dy;
    float *dx = c->out;
    const float lo = c->lo, hi = c->hi;
    for (int64_t i = begin; i < end; i++)
        dx[i] += x[i] >= lo && x[i] <= hi ? dy[i] : 0.0f;
}

static kiln_status clip_backward(const kn_op_call *call) {
    if (!gradient_wanted(call))
        return KILN_OK;
    const kn_tensor *min = clip_bound(call, 1), *max = clip_bound(call, 2);
    clip_pass c = {.x = kn_f32(call->in[0]), .dy = kn_f32(call->dout[0]), .out = kn_f32(call->din[0]),
                   .lo = min ? kn_f32(min)[0] : -INFINITY, .hi = max ? kn_f32(max)[0] : INFINITY};
    int64_t n = kn_numel(call->in[0]);
    kn_parallel_range(n, kn_threads_for(n, KN_UNARY_PARALLEL_MIN), clip_grad_range, &c);
    return KILN_OK;
}

/* Two compares per element. */
static int64_t clip_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(2, output_numel(g, node));
}

/* ---- PRelu ---- */

static kiln_status prelu_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(float_infer(g, node));
    const kn_value *x = kn_node_input(g, node, 0), *slope = kn_node_input(g, node, 1);
    if (!slope)
        return kn_fail(KILN_ERR_INVALID_ARG, "input slope is required");
    if (slope->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "slope '%s' is %s; only f32 is supported", slope->name,
                       kn_dtype_name(slope->dtype));
    kn_shape both;
    kiln_status st = kn_broadcast_shape(&x->shape, &slope->shape, &both);
    if (st != KILN_OK || !kn_shape_equal(&both, &x->shape)) {
        char sx[96], ss[96];
        return kn_fail(KILN_ERR_SHAPE, "slope %s does not broadcast to the shape of X %s",
                       kn_shape_str(&slope->shape, ss, sizeof ss),
                       kn_shape_str(&x->shape, sx, sizeof sx));
    }
    return KILN_OK;
}

typedef struct prelu_args {
    const float *slope; /* operand 0 */
    const float *x, *dy;
    float *out;         /* forward: y; backward: dx, or the slope gradient's terms */
} prelu_args;

static void prelu_row(const kn_broadcast_row *row, void *ctx) {
    const prelu_args *args = ctx;
    const float *x = args->x + row->at, *slope = args->slope + row->offset[0];
    float *y = args->out + row->at;
    for (int64_t i = 0; i < row->n; i++)
        y[i] = x[i] < 0.0f ? slope[i * row->step[0]] * x[i] : x[i];
}

static void prelu_dx_row(const kn_broadcast_row *row, void *ctx) {
    const prelu_args *args = ctx;
    const float *x = args->x + row->at, *dy = args->dy + row->at;
    const float *slope = args->slope + row->offset[0];
    float *dx = args->out + row->at;
    for (int64_t i = 0; i < row->n; i++)
        dx[i] += x[i] < 0.0f ? slope[i * row->step[0]] * dy[i] : dy[i];
}

/* The slope gradient's terms before the reduction: dy x where x < 0. */
static void prelu_slope_term_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const prelu_args *args = ctx;
    const float *xs = args->x, *g = args->dy;
    float *term = args->out;
    for (int64_t i = begin; i < end; i++)
        term[i] = xs[i] < 0.0f ? g[i] * xs[i] : 0.0f;
}

/* Plans the walk over X's shape with the slope as the one broadcast operand. */
static void prelu_plan(const kn_tensor *x, const kn_tensor *slope, kn_broadcast_plan *p) {
    const kn_shape *shapes[1] = {&slope->shape};
    kn_broadcast_plan_make(p, 1, shapes, &x->shape);
}

static kiln_status prelu_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *slope = call->in[1];
    kn_broadcast_plan p;
    prelu_plan(x, slope, &p);
    prelu_args args = {kn_f32(slope), kn_f32(x), NULL, kn_f32(call->out[0])};
    kn_broadcast_run(&p, prelu_row, &args);
    return KILN_OK;
}

/* dx += dy where x >= 0, slope dy below; dslope += (dy x where x < 0) summed over the slope's
 * broadcast dims. */
static kiln_status prelu_backward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *slope = call->in[1], *dy = call->dout[0];
    kn_tensor *dx = call->din[0], *dslope = call->din[1];
    if (!dy || (!dx && !dslope))
        return KILN_OK;
    if (dx) {
        kn_broadcast_plan p;
        prelu_plan(x, slope, &p);
        prelu_args args = {kn_f32(slope), kn_f32(x), kn_f32(dy), kn_f32(dx)};
        kn_broadcast_run(&p, prelu_dx_row, &args);
    }
    if (dslope) {
        unsigned axes = kn_broadcast_axes(&slope->shape, &x->shape);
        int64_t n = kn_numel(x);
        size_t term_bytes = kn_round_up_64((size_t)n * sizeof(float));
        size_t bytes = term_bytes + kn_reduce_sum_workspace(&x->shape, axes);
        char *work = kn_op_scratch(call->ctx, bytes);
        if (!work)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for a %zu-byte gradient workspace",
                           bytes);
        float *term = (float *)work; /* X's shape */
        prelu_args args = {NULL, kn_f32(x), kn_f32(dy), term};
        kn_parallel_range(n, kn_threads_for(n, KN_UNARY_PARALLEL_MIN), prelu_slope_term_range, &args);
        float *reduce_work = (float *)(work + term_bytes);
        kn_reduce_sum_add(term, &x->shape, axes, 1.0f, kn_f32(dslope), reduce_work);
    }
    return KILN_OK;
}

/* ---- FLOP counts and the op table entries ---- */

static int64_t one_flop(const kn_graph *g, const kn_node *node) { return output_numel(g, node); }
/* multiply, add, two compares */
static int64_t hardsigmoid_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(4, output_numel(g, node));
}
/* HardSigmoid's four and a multiply */
static int64_t hardswish_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(5, output_numel(g, node));
}
/* abs, exp, log1p, compare, add */
static int64_t softplus_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(5, output_numel(g, node));
}
/* compare, multiply */
static int64_t prelu_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(2, output_numel(g, node));
}

const kn_op kn_op_erf = {.name = "Erf", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                         .forward = erf_forward, .backward = erf_backward, .flops = one_flop};
const kn_op kn_op_sqrt = {.name = "Sqrt", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                          .forward = sqrt_forward, .backward = sqrt_backward, .flops = one_flop};
const kn_op kn_op_exp = {.name = "Exp", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                         .forward = exp_forward, .backward = exp_backward, .flops = one_flop};
const kn_op kn_op_log = {.name = "Log", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                         .forward = log_forward, .backward = log_backward, .flops = one_flop};
const kn_op kn_op_neg = {.name = "Neg", .min_inputs = 1, .max_inputs = 1, .infer = signed_infer,
                         .forward = neg_forward, .backward = neg_backward, .flops = one_flop};
const kn_op kn_op_abs = {.name = "Abs", .min_inputs = 1, .max_inputs = 1, .infer = numeric_infer,
                         .forward = abs_forward, .backward = abs_backward, .flops = one_flop};
const kn_op kn_op_reciprocal = {.name = "Reciprocal", .min_inputs = 1, .max_inputs = 1,
                                .infer = float_infer, .forward = reciprocal_forward,
                                .backward = reciprocal_backward, .flops = one_flop};
const kn_op kn_op_floor = {.name = "Floor", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                           .forward = floor_forward, .flops = one_flop};
const kn_op kn_op_ceil = {.name = "Ceil", .min_inputs = 1, .max_inputs = 1, .infer = float_infer,
                          .forward = ceil_forward, .flops = one_flop};
const kn_op kn_op_hardsigmoid = {.name = "HardSigmoid", .per_image = true, .min_inputs = 1, .max_inputs = 1,
                                 .infer = float_infer, .forward = hardsigmoid_forward,
                                 .backward = hardsigmoid_backward, .flops = hardsigmoid_flops};
const kn_op kn_op_hardswish = {.name = "HardSwish", .per_image = true, .min_inputs = 1, .max_inputs = 1,
                               .infer = float_infer, .forward = hardswish_forward,
                               .backward = hardswish_backward, .flops = hardswish_flops};
const kn_op kn_op_softplus = {.name = "Softplus", .min_inputs = 1, .max_inputs = 1,
                              .infer = float_infer, .forward = softplus_forward,
                              .backward = softplus_backward, .flops = softplus_flops};
const kn_op kn_op_clip = {.name = "Clip", .per_image = true, .min_inputs = 1, .max_inputs = 3, .infer = clip_infer,
                          .forward = clip_forward, .backward = clip_backward, .flops = clip_flops};
const kn_op kn_op_prelu = {.name = "PRelu", .min_inputs = 2, .max_inputs = 2, .infer = prelu_infer,
                           .forward = prelu_forward, .backward = prelu_backward,
                           .flops = prelu_flops};
