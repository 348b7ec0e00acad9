/* Elementwise activations: Relu, Sigmoid, Tanh, LeakyRelu, Elu, Gelu (f32, any shape).
 *
 * Backward adds dy * f'(x) into dx. Where f' is cheaper in terms of the saved output y it uses y:
 * sigmoid' = y (1 - y), tanh' = 1 - y^2, elu'(x < 0) = y + alpha.
 *
 * Sigmoid, Tanh and Gelu compute their transcendental functions with kernels/vmath (vectorized; within
 * a few ULP of libm, see kernels/vmath.h), forward and backward.
 *
 * FLOPs count one per add, multiply, divide or compare and one per exp / erf / tanh call.
 */
#include <math.h>
#include <string.h>

#include "core/threads.h"
#include "core/status.h"
#include "kernels/vmath.h"
#include "ops/op.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_ACTIVATION_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE

#define KN_SQRT1_2 0.70710678118654752440f      /* 1 / sqrt(2) */
#define KN_SQRT_2_PI 0.79788456080286535588f    /* sqrt(2 / pi) */
#define KN_INV_SQRT_2PI 0.39894228040143267794f /* 1 / sqrt(2 pi), the normal density at 0 */
#define KN_GELU_CUBIC 0.044715f

static kiln_status unary_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; only f32 is supported", x->name,
                       kn_dtype_name(x->dtype));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = KN_F32;
    return KILN_OK;
}

static int64_t output_numel(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_output(g, node, 0)->shape);
}

/* True when backward has something to do: a gradient flows in and one is wanted out. */
static bool gradient_wanted(const kn_op_call *call) {
    return call->dout && call->dout[0] && call->din && call->din[0];
}

/* One activation loop's operands: forward y from x, or backward dx from x, y (the saved output) and dy. */
typedef struct activation_pass {
    const float *x, *y, *dy;
    float *out;  /* forward: y; backward: dx */
    float alpha;
    bool store;  /* backward: dx is fresh (stored, not added to) */
} activation_pass;

/* Writes name_forward, y[i] = FORWARD for every element, and name_backward, dx[i] += BACKWARD (or
 * dx[i] = BACKWARD into a fresh gradient, see kn_op_call). The expressions read x[i], y[i] (the
 * saved output), g (= dy[i], loaded unconditionally so that selects need no branch) and alpha, the
 * node's "alpha" attribute (default ALPHA; unused by the activations without one). One loop each, its
 * range shared among the threads when the tensor is large; the expressions inline into the loops,
 * which vectorise. The backward loop is instantiated twice, with `store` constant, so that neither
 * has a branch. ACTIVATION_BACKWARD writes only the backward, for the activations whose forward is a
 * kernels/vmath function (vmath_forward). */
#define ACTIVATION_BACKWARD(name, ALPHA, BACKWARD)                                          \
    static inline void name##_backward_loop(const activation_pass *p, int64_t begin,        \
                                            int64_t end, bool store) {                      \
        const float *x = p->x, *y = p->y, *dy = p->dy;                                      \
        float *dx = p->out;                                                                 \
        const float alpha = p->alpha;                                                       \
        (void)alpha, (void)x, (void)y;                                                      \
        for (int64_t i = begin; i < end; i++) {                                             \
            float g = dy[i];                                                                \
            dx[i] = (store ? 0.0f : dx[i]) + (BACKWARD);                                    \
        }                                                                                   \
    }                                                                                       \
    static void name##_backward_range(void *ctx, int64_t begin, int64_t end, int slot) {    \
        (void)slot;                                                                         \
        const activation_pass *p = ctx;                                                     \
        if (p->store)                                                                       \
            name##_backward_loop(p, begin, end, true);                                      \
        else                                                                                \
            name##_backward_loop(p, begin, end, false);                                     \
    }                                                                                       \
    static kiln_status name##_backward(const kn_op_call *call) {                            \
        if (!gradient_wanted(call))                                                         \
            return KILN_OK;                                                                 \
        activation_pass p = {kn_f32(call->in[0]), kn_f32(call->out[0]), kn_f32(call->dout[0]), \
                             kn_f32(call->din[0]), kn_node_float(call->node, "alpha", ALPHA), \
                             kn_din_fresh(call, 0)};                                        \
        int64_t n = kn_numel(call->in[0]);                                                  \
        kn_parallel_range(n, kn_threads_for(n, KN_ACTIVATION_PARALLEL_MIN), name##_backward_range, &p); \
        return KILN_OK;                                                                     \
    }

#define ACTIVATION(name, ALPHA, FORWARD, BACKWARD)                                          \
    static void name##_forward_range(void *ctx, int64_t begin, int64_t end, int slot) {     \
        (void)slot;                                                                         \
        const activation_pass *p = ctx;                                                     \
        const float *x = p->x;                                                              \
        float *y = p->out;                                                                  \
        const float alpha = p->alpha;                                                       \
        (void)alpha;                                                                        \
        for (int64_t i = begin; i < end; i++)                                               \
            y[i] = (FORWARD);                                                               \
    }                                                                                       \
    static kiln_status name##_forward(const kn_op_call *call) {                             \
        activation_pass p = {.x = kn_f32(call->in[0]), .out = kn_f32(call->out[0]),         \
                             .alpha = kn_node_float(call->node, "alpha", ALPHA)};           \
        int64_t n = kn_numel(call->in[0]);                                                  \
        kn_parallel_range(n, kn_threads_for(n, KN_ACTIVATION_PARALLEL_MIN), name##_forward_range, &p); \
        return KILN_OK;                                                                     \
    }                                                                                       \
    ACTIVATION_BACKWARD(name, ALPHA, BACKWARD)

/* y = f(x) by the fastest kernels/vmath build: vectorized range reduction and polynomial instead of
 * libm (accuracy stated in kernels/vmath.h). */
static kiln_status vmath_forward(const kn_op_call *call, kn_vmath_fn fn) {
    kn_vmath_run(fn, kn_f32(call->out[0]), kn_f32(call->in[0]), kn_numel(call->in[0]));
    return KILN_OK;
}

/* ---- Relu: max(x, 0), written so that NaN passes through ---- */

ACTIVATION(relu, 0.0f, x[i] < 0.0f ? 0.0f : x[i], x[i] > 0.0f ? g : 0.0f)

static int64_t relu_flops(const kn_graph *g, const kn_node *node) { return output_numel(g, node); }

/* ---- Sigmoid: 1 / (1 + exp(-x)) ---- */

static kiln_status sigmoid_forward(const kn_op_call *call) {
    return vmath_forward(call, kn_vmath_best()->sigmoid);
}

ACTIVATION_BACKWARD(sigmoid, 0.0f, g * y[i] * (1.0f - y[i]))

static int64_t sigmoid_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(3, output_numel(g, node)); /* exp, add, divide */
}

/* ---- Tanh ---- */

static kiln_status tanh_forward(const kn_op_call *call) { return vmath_forward(call, kn_vmath_best()->tanh); }

ACTIVATION_BACKWARD(tanh, 0.0f, g * (1.0f - y[i] * y[i]))

static int64_t tanh_flops(const kn_graph *g, const kn_node *node) { return output_numel(g, node); }

/* ---- LeakyRelu: x for x >= 0, alpha x below (alpha default 0.01) ---- */

/* The slope is chosen by the sign of x, not y: with a negative alpha, y alone would not tell. */
ACTIVATION(leakyrelu, 0.01f, x[i] < 0.0f ? alpha * x[i] : x[i], x[i] < 0.0f ? alpha * g : g)

static int64_t leakyrelu_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(2, output_numel(g, node)); /* compare, multiply */
}

/* ---- Elu: x for x >= 0, alpha (exp(x) - 1) below (alpha default 1) ---- */

/* expm1f keeps precision near 0. Below 0, d/dx alpha (exp(x) - 1) = alpha exp(x) = y + alpha. */
ACTIVATION(elu, 1.0f, x[i] < 0.0f ? alpha * expm1f(x[i]) : x[i],
           x[i] < 0.0f ? g * (y[i] + alpha) : g)

static int64_t elu_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(3, output_numel(g, node)); /* compare, exp, multiply */
}

/* ---- Gelu: x Phi(x), Phi the standard normal CDF; approximate="tanh" uses the tanh fit ---- */

typedef enum gelu_form { GELU_EXACT, GELU_TANH } gelu_form;

static kiln_status gelu_form_of(const kn_node *node, gelu_form *form) {
    const char *approximate = kn_node_string(node, "approximate", "none");
    if (strcmp(approximate, "none") == 0)
        *form = GELU_EXACT;
    else if (strcmp(approximate, "tanh") == 0)
        *form = GELU_TANH;
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "approximate is \"%s\"; expected \"none\" or \"tanh\"",
                       approximate);
    return KILN_OK;
}

static kiln_status gelu_infer(kn_graph *g, const kn_node *node) {
    gelu_form form = GELU_EXACT;
    KN_TRY(gelu_form_of(node, &form));
    return unary_infer(g, node);
}

/* The gradient a chunk at a time, its erf / exp / tanh from kernels/vmath:
 * exact: 0.5 x (1 + erf(x / sqrt 2));  d/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
 * tanh:  0.5 x (1 + tanh(u)),  u = sqrt(2 / pi) (x + 0.044715 x^3);
 *        d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,  t = tanh(u),  du/dx = sqrt(2 / pi) (1 + 3 0.044715 x^2) */
enum { GELU_CHUNK = 512 };

static void gelu_grad_chunk(const kn_vmath *vm, gelu_form form, const float *x, float *grad, int64_t n) {
    float a[GELU_CHUNK], b[GELU_CHUNK];
    if (form == GELU_EXACT) {
        for (int64_t i = 0; i < n; i++) {
            a[i] = x[i] * KN_SQRT1_2;
            b[i] = -0.5f * x[i] * x[i];
        }
        vm->erf(a, a, n);
        vm->exp(b, b, n);
        for (int64_t i = 0; i < n; i++)
            grad[i] = 0.5f * (1.0f + a[i]) + x[i] * (KN_INV_SQRT_2PI * b[i]);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        a[i] = KN_SQRT_2_PI * (x[i] + KN_GELU_CUBIC * x[i] * x[i] * x[i]);
    vm->tanh(a, a, n);
    for (int64_t i = 0; i < n; i++) {
        float t = a[i], du = KN_SQRT_2_PI * (1.0f + 3.0f * KN_GELU_CUBIC * x[i] * x[i]);
        grad[i] = 0.5f * (1.0f + t) + 0.5f * x[i] * (1.0f - t * t) * du;
    }
}

static kiln_status gelu_forward(const kn_op_call *call) {
    gelu_form form = GELU_EXACT;
    KN_TRY(gelu_form_of(call->node, &form));
    const kn_vmath *vm = kn_vmath_best();
    return vmath_forward(call, form == GELU_EXACT ? vm->gelu : vm->gelu_tanh);
}

typedef struct gelu_backward_chunks {
    const kn_vmath *vm;
    gelu_form form;
    const float *x, *dy;
    float *dx;
    int64_t n;
    bool store;
} gelu_backward_chunks;

static void gelu_backward_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const gelu_backward_chunks *g = ctx;
    const float *x = g->x, *dy = g->dy;
    float *dx = g->dx;
    const bool store = g->store;
    for (int64_t chunk = begin; chunk < end; chunk++) {
        int64_t start = chunk * GELU_CHUNK, len = g->n - start < GELU_CHUNK ? g->n - start : GELU_CHUNK;
        float grad[GELU_CHUNK];
        gelu_grad_chunk(g->vm, g->form, x + start, grad, len);
        for (int64_t i = 0; i < len; i++)
            dx[start + i] = (store ? 0.0f : dx[start + i]) + dy[start + i] * grad[i];
    }
}

static kiln_status gelu_backward(const kn_op_call *call) {
    if (!gradient_wanted(call))
        return KILN_OK;
    gelu_form form = GELU_EXACT;
    KN_TRY(gelu_form_of(call->node, &form));
    gelu_backward_chunks g = {kn_vmath_best(), form, kn_f32(call->in[0]), kn_f32(call->dout[0]), kn_f32(call->din[0]),
                              kn_numel(call->in[0]), kn_din_fresh(call, 0)};
    kn_parallel_range((g.n + GELU_CHUNK - 1) / GELU_CHUNK, kn_threads_for(g.n, KN_ACTIVATION_PARALLEL_MIN),
                      gelu_backward_range, &g);
    return KILN_OK;
}

static int64_t gelu_flops(const kn_graph *g, const kn_node *node) {
    bool tanh_form = strcmp(kn_node_string(node, "approximate", "none"), "tanh") == 0;
    /* exact: scale, erf, add, 2 multiplies; tanh: cube (2), scale, add, scale, tanh, add, 2 multiplies */
    return kn_count_mul(tanh_form ? 9 : 5, output_numel(g, node));
}

const kn_op kn_op_relu = {.name = "Relu", .per_image = true, .min_inputs = 1, .max_inputs = 1, .infer = unary_infer,
                          .forward = relu_forward, .backward = relu_backward, .flops = relu_flops,
                          .backward_stores = true, .in_place = true};
const kn_op kn_op_sigmoid = {.name = "Sigmoid", .per_image = true, .min_inputs = 1, .max_inputs = 1,
                             .infer = unary_infer, .forward = sigmoid_forward,
                             .backward = sigmoid_backward, .flops = sigmoid_flops,
                          .backward_stores = true, .in_place = true};
const kn_op kn_op_tanh = {.name = "Tanh", .per_image = true, .min_inputs = 1, .max_inputs = 1, .infer = unary_infer,
                          .forward = tanh_forward, .backward = tanh_backward, .flops = tanh_flops,
                          .backward_stores = true, .in_place = true};
const kn_op kn_op_leakyrelu = {.name = "LeakyRelu", .per_image = true, .min_inputs = 1, .max_inputs = 1,
                               .infer = unary_infer, .forward = leakyrelu_forward,
                               .backward = leakyrelu_backward, .flops = leakyrelu_flops,
                          .backward_stores = true, .in_place = true};
const kn_op kn_op_elu = {.name = "Elu", .min_inputs = 1, .max_inputs = 1, .infer = unary_infer,
                         .forward = elu_forward, .backward = elu_backward, .flops = elu_flops,
                          .backward_stores = true, .in_place = true};
const kn_op kn_op_gelu = {.name = "Gelu", .min_inputs = 1, .max_inputs = 1, .infer = gelu_infer,
                          .forward = gelu_forward, .backward = gelu_backward, .flops = gelu_flops,
                          .backward_stores = true, .in_place = true};
