/* Elementwise ops: activations, Softmax / LogSoftmax, broadcasting Add / Sub / Mul / Div, ReduceMean.
 *
 * Every backward is checked against finite differences (opcheck), forwards against closed forms and
 * double-precision references, large shapes against naive loops (which also runs the threaded paths),
 * and bad shapes and attributes must give an error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/threads.h"
#include "ops/op.h"
#include "support/opcheck.h"

#define N_ARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define DIMS(...) {.ndim = N_ARGS(__VA_ARGS__), .d = {__VA_ARGS__}} /* a kn_shape initializer */
#define SHAPE(...) ((kn_shape)DIMS(__VA_ARGS__))
static const kn_shape SCALAR = {0};

/* ---- the op table ---- */

/* Named here (not only through the registry's weak references) so the linker takes the op files out
 * of the static library; the test then checks that the registry finds each under its ONNX name. */
extern const kn_op kn_op_relu, kn_op_sigmoid, kn_op_tanh, kn_op_leakyrelu, kn_op_elu, kn_op_gelu,
    kn_op_softmax, kn_op_logsoftmax, kn_op_add, kn_op_sub, kn_op_mul, kn_op_div, kn_op_reducemean;

static void test_registry(void) {
    const struct {
        const char *name;
        const kn_op *op;
    } entries[] = {
        {"Relu", &kn_op_relu},       {"Sigmoid", &kn_op_sigmoid},       {"Tanh", &kn_op_tanh},
        {"LeakyRelu", &kn_op_leakyrelu}, {"Elu", &kn_op_elu},           {"Gelu", &kn_op_gelu},
        {"Softmax", &kn_op_softmax}, {"LogSoftmax", &kn_op_logsoftmax}, {"Add", &kn_op_add},
        {"Sub", &kn_op_sub},         {"Mul", &kn_op_mul},               {"Div", &kn_op_div},
        {"ReduceMean", &kn_op_reducemean},
    };
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        const kn_op *op = entries[i].op;
        CHECK_MSG(kn_op_find(entries[i].name) == op, "%s not found in the op table", entries[i].name);
        CHECK(op->infer && op->forward && op->backward && op->flops);
    }
}

/* ---- a graph of one node, and running it directly ---- */

typedef struct single_op {
    kn_graph g;
    int node;
    int n_in;
    int in[2];
    int out;
} single_op;

/* One node of `op` over f32 inputs of the given shapes: PARAMs, or CONSTs where const_mask has the
 * input's bit (a CONST gets no gradient). */
static void single_op_init(single_op *t, const char *op, int n_in, const kn_shape *shapes,
                           unsigned const_mask) {
    kn_graph_init(&t->g);
    t->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        kn_value_kind kind = ((const_mask >> i) & 1u) ? KN_VALUE_CONST : KN_VALUE_PARAM;
        t->in[i] = test_add_value(&t->g, i ? "b" : "a", kind, KN_F32, &shapes[i]);
    }
    t->out = test_add_value(&t->g, "y", KN_VALUE_ACT, KN_F32, &SCALAR);
    t->node = test_add_node(&t->g, op, "node", n_in, t->in, 1, &t->out);
    CHECK(t->node == 0);
}

static void single_op_unary(single_op *t, const char *op, kn_shape shape) {
    single_op_init(t, op, 1, &shape, 0);
}

static void single_op_binary(single_op *t, const char *op, kn_shape a, kn_shape b) {
    kn_shape shapes[2] = {a, b};
    single_op_init(t, op, 2, shapes, 0);
}

static float *data_of(single_op *t, int input) { return t->g.values[t->in[input]].data; }
static int64_t numel_of(single_op *t, int input) {
    return kn_shape_numel(&t->g.values[t->in[input]].shape);
}
static kn_shape *out_shape(single_op *t) { return &t->g.values[t->out].shape; }

static void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * kn_rng_uniform(&rng);
}

/* Magnitudes in [0.1, 2) with random signs: nothing within the finite-difference step of a kink at 0. */
static void fill_away_from_zero(float *x, int64_t n, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++) {
        float magnitude = 0.1f + 1.9f * kn_rng_uniform(&rng);
        x[i] = kn_rng_uniform(&rng) < 0.5f ? -magnitude : magnitude;
    }
}

/* Tensors to run a single_op's node directly: inputs view the graph's data; the output, a random
 * output gradient and zeroed gradients for the PARAM inputs are malloc'd. */
typedef struct bound_op {
    single_op *t;
    kn_tensor in[2], out, dout, din[2];
    kn_tensor *in_p[2], *out_p[1], *din_p[2];
    const kn_tensor *dout_p[1];
    kn_op_ctx ctx;
} bound_op;

static bool bound_op_init(bound_op *b, single_op *t) {
    memset(b, 0, sizeof *b);
    b->t = t;
    if (kn_graph_infer_shapes(&t->g) != KILN_OK)
        return false;
    kn_shape y_shape = *out_shape(t);
    int64_t n_y = kn_shape_numel(&y_shape);
    b->out = (kn_tensor){y_shape, KN_F32, calloc((size_t)n_y + 1, sizeof(float))};
    b->dout = (kn_tensor){y_shape, KN_F32, calloc((size_t)n_y + 1, sizeof(float))};
    fill_uniform(b->dout.data, n_y, 4242, -1.0f, 1.0f);
    b->out_p[0] = &b->out;
    b->dout_p[0] = &b->dout;
    for (int i = 0; i < t->n_in; i++) {
        kn_value *v = &t->g.values[t->in[i]];
        b->in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        b->in_p[i] = &b->in[i];
        if (v->kind == KN_VALUE_PARAM) {
            b->din[i] = (kn_tensor){v->shape, KN_F32, calloc((size_t)numel_of(t, i) + 1, sizeof(float))};
            b->din_p[i] = &b->din[i];
        }
    }
    return true;
}

static kn_op_call bound_call(bound_op *b) {
    return (kn_op_call){.node = &b->t->g.nodes[b->t->node], .in = b->in_p, .out = b->out_p,
                        .dout = b->dout_p, .din = b->din_p, .ctx = &b->ctx};
}

static kiln_status bound_forward(bound_op *b) {
    kn_op_call call = bound_call(b);
    return call.node->op->forward(&call);
}

static kiln_status bound_backward(bound_op *b) {
    kn_op_call call = bound_call(b);
    return call.node->op->backward(&call);
}

static void bound_op_free(bound_op *b) {
    free(b->out.data);
    free(b->dout.data);
    for (int i = 0; i < 2; i++)
        free(b->din[i].data);
    kn_op_ctx_release(&b->ctx);
}

/* Finite-difference check of every PARAM input's gradient; opcheck prints the max differences. */
static void check_gradients(const char *what, single_op *t) {
    printf("%s\n", what);
    double worst = opcheck_gradients(&t->g, t->node, NULL);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst |analytic - numeric| / tolerance = %.3g", what, worst);
}

/* Backward must ADD into din: starting from 0.5 gives exactly 0.5 + the gradient from 0. */
static void check_backward_accumulates(const char *what, single_op *t) {
    bound_op b;
    CHECK_MSG(bound_op_init(&b, t), "%s: %s", what, kiln_last_error());
    CHECK_OK(bound_forward(&b));
    CHECK_OK(bound_backward(&b));
    float *from_zero[2] = {0};
    for (int i = 0; i < t->n_in; i++) {
        if (!b.din_p[i])
            continue;
        int64_t n = numel_of(t, i);
        from_zero[i] = malloc(sizeof(float) * (size_t)(n + 1));
        memcpy(from_zero[i], b.din[i].data, sizeof(float) * (size_t)n);
        for (int64_t e = 0; e < n; e++)
            kn_f32(&b.din[i])[e] = 0.5f;
    }
    CHECK_OK(bound_backward(&b));
    double max_diff = 0;
    for (int i = 0; i < t->n_in; i++)
        for (int64_t e = 0; from_zero[i] && e < numel_of(t, i); e++)
            max_diff = fmax(max_diff, fabs(kn_f32(&b.din[i])[e] - (0.5f + from_zero[i][e])));
    CHECK_MSG(max_diff == 0, "%s: backward does not accumulate (max diff %.3g)", what, max_diff);
    free(from_zero[0]);
    free(from_zero[1]);
    bound_op_free(&b);
}

/* ---- activations ---- */

static double ref_gelu_exact(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double ref_gelu_tanh(double x) {
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Runs a unary op over `x` (n values) with one optional attribute; returns malloc'd outputs. */
static float *run_unary(const char *op, const char *attr, float alpha, const char *approximate,
                        const float *x, int64_t n) {
    single_op t;
    single_op_unary(&t, op, SHAPE(n));
    if (attr && approximate)
        CHECK_OK(kn_node_set_string(&t.g, t.node, attr, approximate));
    else if (attr)
        CHECK_OK(kn_node_set_float(&t.g, t.node, attr, alpha));
    memcpy(data_of(&t, 0), x, sizeof(float) * (size_t)n);
    kn_tensor *outs = opcheck_forward(&t.g, t.node, false);
    CHECK_MSG(outs != NULL, "%s forward: %s", op, kiln_last_error());
    float *y = malloc(sizeof(float) * (size_t)n);
    if (outs)
        memcpy(y, outs[0].data, sizeof(float) * (size_t)n);
    opcheck_free_outputs(outs, 1);
    kn_graph_free(&t.g);
    return y;
}

static void test_activation_points(void) {
    const float x[] = {1.0f, -1.0f, 2.0f, -3.0f};
    float *exact = run_unary("Gelu", NULL, 0, NULL, x, 4);
    float *fit = run_unary("Gelu", "approximate", 0, "tanh", x, 4);
    const double want_exact[] = {0.8413447460685429, -0.15865525393145707, 1.9544997361036416,
                                 -0.00404969409489031};
    const double want_fit[] = {0.8411919906082768, -0.15880800939172324, 1.954597694087775,
                               -0.0036373920817729943};
    double max_diff = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(exact[i], want_exact[i], 1e-6);
        CHECK_NEAR(fit[i], want_fit[i], 1e-6);
        max_diff = fmax(max_diff, fmax(fabs(exact[i] - want_exact[i]), fabs(fit[i] - want_fit[i])));
    }
    printf("gelu at 1, -1, 2, -3 (exact and tanh): max diff from closed form %.3g\n", max_diff);
    free(exact);
    free(fit);

    const float big[] = {-1000.0f, -100.0f, 0.0f, 100.0f, 1000.0f};
    float *s = run_unary("Sigmoid", NULL, 0, NULL, big, 5);
    for (int i = 0; i < 5; i++)
        CHECK_MSG(isfinite(s[i]) && s[i] >= 0 && s[i] <= 1, "sigmoid(%g) = %g", big[i], s[i]);
    CHECK(s[0] == 0.0f && s[1] < 1e-40f && s[2] == 0.5f && s[3] == 1.0f && s[4] == 1.0f);
    free(s);
    float *t = run_unary("Tanh", NULL, 0, NULL, big, 5);
    CHECK(t[0] == -1.0f && t[2] == 0.0f && t[4] == 1.0f);
    free(t);

    const float small[] = {-2.0f, -1.0f, 0.0f, 3.0f};
    float *relu = run_unary("Relu", NULL, 0, NULL, small, 4);
    float *leaky = run_unary("LeakyRelu", NULL, 0, NULL, small, 4);
    float *leaky3 = run_unary("LeakyRelu", "alpha", 0.3f, NULL, small, 4);
    float *elu = run_unary("Elu", NULL, 0, NULL, small, 4);
    float *elu2 = run_unary("Elu", "alpha", 2.0f, NULL, small, 4);
    CHECK(relu[0] == 0 && relu[1] == 0 && relu[2] == 0 && relu[3] == 3);
    CHECK_NEAR(leaky[0], -0.02, 1e-7);
    CHECK_NEAR(leaky3[0], -0.6, 1e-7);
    CHECK(leaky[3] == 3 && leaky3[3] == 3);
    CHECK_NEAR(elu[1], -0.6321205588285577, 1e-7);
    CHECK_NEAR(elu2[1], 2 * -0.6321205588285577, 2e-7);
    CHECK(elu[2] == 0 && elu[3] == 3);
    free(relu);
    free(leaky);
    free(leaky3);
    free(elu);
    free(elu2);
}

/* Every activation over a dense grid on [-8, 8] (large enough to run threaded) against doubles. */
static void test_activation_grid(void) {
    enum { N = 65537 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = -8.0f + 16.0f * (float)i / (N - 1);
    const struct {
        const char *op, *attr, *approximate;
        float alpha;
    } cases[] = {
        {"Relu", NULL, NULL, 0},       {"Sigmoid", NULL, NULL, 0},   {"Tanh", NULL, NULL, 0},
        {"LeakyRelu", NULL, NULL, 0},  {"Elu", "alpha", NULL, 0.5f}, {"Gelu", NULL, NULL, 0},
        {"Gelu", "approximate", "tanh", 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *y = run_unary(cases[c].op, cases[c].attr, cases[c].alpha, cases[c].approximate, x, N);
        double max_rel = 0;
        for (int i = 0; i < N; i++) {
            double v = x[i], want;
            const char *op = cases[c].op;
            if (!strcmp(op, "Relu"))
                want = v > 0 ? v : 0;
            else if (!strcmp(op, "Sigmoid"))
                want = 1 / (1 + exp(-v));
            else if (!strcmp(op, "Tanh"))
                want = tanh(v);
            else if (!strcmp(op, "LeakyRelu"))
                want = v > 0 ? v : 0.01 * v;
            else if (!strcmp(op, "Elu"))
                want = v > 0 ? v : 0.5 * expm1(v);
            else
                want = cases[c].approximate ? ref_gelu_tanh(v) : ref_gelu_exact(v);
            max_rel = fmax(max_rel, fabs(y[i] - want) / fmax(1.0, fabs(want)));
        }
        printf("%-9s %-4s on [-8, 8]: max |y - ref| / max(1, |ref|) = %.3g\n", cases[c].op,
               cases[c].approximate ? "tanh" : "", max_rel);
        CHECK_MSG(max_rel < 1e-6, "%s: %.3g", cases[c].op, max_rel);
        free(y);
    }
    free(x);
}

static void test_activation_gradients(void) {
    const kn_shape shapes[] = {DIMS(3, 4, 5), DIMS(7)};
    const struct {
        const char *op, *attr, *approximate;
        float alpha;
        bool kink_at_zero;
    } cases[] = {
        {"Relu", NULL, NULL, 0, true},           {"LeakyRelu", NULL, NULL, 0, true},
        {"LeakyRelu", "alpha", NULL, 0.2f, true}, {"Elu", NULL, NULL, 0, false},
        {"Elu", "alpha", NULL, 0.5f, true},        {"Sigmoid", NULL, NULL, 0, false},
        {"Tanh", NULL, NULL, 0, false},            {"Gelu", NULL, NULL, 0, false},
        {"Gelu", "approximate", "none", 0, false}, {"Gelu", "approximate", "tanh", 0, false},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            single_op t;
            single_op_unary(&t, cases[c].op, shapes[s]);
            if (cases[c].approximate)
                CHECK_OK(kn_node_set_string(&t.g, t.node, cases[c].attr, cases[c].approximate));
            else if (cases[c].attr)
                CHECK_OK(kn_node_set_float(&t.g, t.node, cases[c].attr, cases[c].alpha));
            if (cases[c].kink_at_zero)
                fill_away_from_zero(data_of(&t, 0), numel_of(&t, 0), 11 + c);
            else
                fill_uniform(data_of(&t, 0), numel_of(&t, 0), 11 + c, -4.0f, 4.0f);
            char what[128], attr[64] = "";
            if (cases[c].approximate)
                snprintf(attr, sizeof attr, " %s=%s", cases[c].attr, cases[c].approximate);
            else if (cases[c].attr)
                snprintf(attr, sizeof attr, " %s=%g", cases[c].attr, cases[c].alpha);
            snprintf(what, sizeof what, "%s%s, %d-D input", cases[c].op, attr, shapes[s].ndim);
            check_gradients(what, &t);
            if (s == 0)
                check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }
}

/* ---- Softmax / LogSoftmax ---- */

/* Softmax or LogSoftmax of `shape` along `axis` against the formula in double. */
static void check_softmax_case(kn_shape shape, int axis_attr, bool log_form, uint64_t seed) {
    single_op t;
    single_op_unary(&t, log_form ? "LogSoftmax" : "Softmax", shape);
    CHECK_OK(kn_node_set_int(&t.g, t.node, "axis", axis_attr));
    float *x = data_of(&t, 0);
    fill_uniform(x, numel_of(&t, 0), seed, -5.0f, 5.0f);
    kn_tensor *outs = opcheck_forward(&t.g, t.node, false);
    CHECK(outs != NULL);
    if (!outs) {
        kn_graph_free(&t.g);
        return;
    }
    const float *y = outs[0].data;
    int axis = kn_axis_normalize(axis_attr, shape.ndim);
    int64_t len = shape.d[axis], inner = kn_shape_span(&shape, axis + 1, shape.ndim);
    double max_diff = 0, max_sum_error = 0;
    for (int64_t o = 0; o < kn_shape_span(&shape, 0, axis); o++) {
        for (int64_t i = 0; i < inner; i++) {
            const float *xl = x + o * len * inner + i;
            const float *yl = y + o * len * inner + i;
            double denominator = 0, sum = 0;
            for (int64_t k = 0; k < len; k++)
                denominator += exp((double)xl[k * inner]);
            for (int64_t k = 0; k < len; k++) {
                double p = exp((double)xl[k * inner]) / denominator;
                double want = log_form ? log(p) : p;
                max_diff = fmax(max_diff, fabs(yl[k * inner] - want));
                sum += log_form ? exp((double)yl[k * inner]) : yl[k * inner];
            }
            max_sum_error = fmax(max_sum_error, fabs(sum - 1));
        }
    }
    char dims[64];
    printf("%-10s %s axis %2d: max diff from double %.3g, max |sum of probabilities - 1| %.3g\n",
           t.g.nodes[0].op->name, kn_shape_str(&shape, dims, sizeof dims), axis_attr, max_diff, max_sum_error);
    CHECK(max_diff < 1e-6);
    CHECK(max_sum_error < 1e-6);
    opcheck_free_outputs(outs, 1);
    kn_graph_free(&t.g);
}

static void test_softmax_values(void) {
    const int axes[] = {0, 1, 2, -1, -3};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++)
        for (int log_form = 0; log_form < 2; log_form++)
            check_softmax_case(SHAPE(3, 4, 5), axes[a], log_form, 5 + a);
    /* The blocked paths' edges (ops/softmax.c): lanes side by side in more than one chunk with a
     * partial last one, row blocks with a partial last one, one row longer than a block. */
    for (int log_form = 0; log_form < 2; log_form++) {
        check_softmax_case(SHAPE(2, 3, 300), 1, log_form, 11);
        check_softmax_case(SHAPE(5, 520), 0, log_form, 12);
        check_softmax_case(SHAPE(700, 5), -1, log_form, 13);
        check_softmax_case(SHAPE(2, 2100), -1, log_form, 14);
    }

    /* Large logits: without the max subtracted, exp(1000) would overflow to inf and give NaN. */
    const float logits[] = {1000.0f, 1000.0f, 0.0f, -1000.0f};
    for (int log_form = 0; log_form < 2; log_form++) {
        single_op t;
        single_op_unary(&t, log_form ? "LogSoftmax" : "Softmax", SHAPE(1, 4));
        memcpy(data_of(&t, 0), logits, sizeof logits);
        kn_tensor *outs = opcheck_forward(&t.g, t.node, false);
        CHECK(outs != NULL);
        if (outs) {
            const float *y = outs[0].data;
            double ln2 = log(2.0);
            if (log_form) {
                CHECK_NEAR(y[0], -ln2, 1e-6);
                CHECK_NEAR(y[1], -ln2, 1e-6);
                CHECK_NEAR(y[2], -1000 - ln2, 1e-3);
                CHECK_NEAR(y[3], -2000 - ln2, 1e-3);
            } else {
                CHECK(y[0] == 0.5f && y[1] == 0.5f && y[2] == 0.0f && y[3] == 0.0f);
            }
            printf("%-10s of (1000, 1000, 0, -1000) = (%g, %g, %g, %g)\n", log_form ? "LogSoftmax" : "Softmax",
                   y[0], y[1], y[2], y[3]);
        }
        opcheck_free_outputs(outs, 1);
        kn_graph_free(&t.g);
    }
}

static void test_softmax_gradients(void) {
    const int axes[] = {0, 1, -1};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
        for (int log_form = 0; log_form < 2; log_form++) {
            single_op t;
            single_op_unary(&t, log_form ? "LogSoftmax" : "Softmax", SHAPE(3, 4, 5));
            CHECK_OK(kn_node_set_int(&t.g, t.node, "axis", axes[a]));
            fill_uniform(data_of(&t, 0), numel_of(&t, 0), 21 + a, -3.0f, 3.0f);
            char what[64];
            snprintf(what, sizeof what, "%s axis %d of (3, 4, 5)", log_form ? "LogSoftmax" : "Softmax",
                     axes[a]);
            check_gradients(what, &t);
            check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }
    /* More than one chunk of lanes side by side, and a row longer than one chunk of the backward. */
    const struct { kn_shape shape; int axis; } wide[] = {{SHAPE(2, 3, 260), 1}, {SHAPE(2, 300), -1}};
    for (size_t c = 0; c < sizeof wide / sizeof wide[0]; c++) {
        for (int log_form = 0; log_form < 2; log_form++) {
            single_op t;
            single_op_unary(&t, log_form ? "LogSoftmax" : "Softmax", wide[c].shape);
            CHECK_OK(kn_node_set_int(&t.g, t.node, "axis", wide[c].axis));
            fill_uniform(data_of(&t, 0), numel_of(&t, 0), 41 + c, -3.0f, 3.0f);
            char what[64];
            snprintf(what, sizeof what, "%s wide case %zu", log_form ? "LogSoftmax" : "Softmax", c);
            check_gradients(what, &t);
            check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }
    single_op t; /* default axis = -1 */
    single_op_unary(&t, "Softmax", SHAPE(2, 6));
    fill_uniform(data_of(&t, 0), 12, 29, -3.0f, 3.0f);
    check_gradients("Softmax default axis of (2, 6)", &t);
    kn_graph_free(&t.g);
}

/* ---- Add, Sub, Mul, Div ---- */

static const char *const BINARY_OPS[] = {"Add", "Sub", "Mul", "Div"};

static float naive_op(const char *op, float u, float v) {
    switch (op[0]) {
    case 'A': return u + v;
    case 'S': return u - v;
    case 'M': return u * v;
    default: return u / v;
    }
}

/* The flat index into x (broadcast to y_shape) of y's multi-index `index`. */
static int64_t broadcast_index(const kn_shape *x, const kn_shape *y_shape, const int64_t *index) {
    int64_t at = 0;
    for (int j = 0; j < x->ndim; j++) {
        int k = j + y_shape->ndim - x->ndim;
        at = at * x->d[j] + (x->d[j] == 1 ? 0 : index[k]);
    }
    return at;
}

static void unravel(int64_t flat, const kn_shape *shape, int64_t *index) {
    for (int k = shape->ndim - 1; k >= 0; k--) {
        index[k] = flat % shape->d[k];
        flat /= shape->d[k];
    }
}

/* Broadcasting pairs: bias (N,T,F) + (F); residual; channel scale (N,1,H,W) * (C,1,1); an outer
 * (3,1) op (1,4); scalar either side; a 6-D criss-cross; and a few larger ones for the threaded paths. */
static const struct {
    kn_shape a, b;
    bool large;
} BINARY_CASES[] = {
    {DIMS(2, 3, 4), DIMS(4), false},
    {DIMS(2, 3, 4), DIMS(2, 3, 4), false},
    {DIMS(2, 1, 3, 4), DIMS(5, 1, 1), false},
    {DIMS(3, 1), DIMS(1, 4), false},
    {DIMS(2, 3), {0}, false},
    {{0}, DIMS(2, 3), false},
    {DIMS(4, 1), DIMS(4), false},
    {DIMS(2, 1, 3, 1, 2, 1), DIMS(1, 2, 1, 3, 1, 2), false},
    {DIMS(64, 50, 96), DIMS(96), true},
    {DIMS(8, 1, 32, 32), DIMS(16, 1, 1), true},
    {DIMS(100003), DIMS(100003), true},
    {DIMS(3, 40000), DIMS(3, 1), true},
};

static void test_binary_values(void) {
    for (size_t c = 0; c < sizeof BINARY_CASES / sizeof BINARY_CASES[0]; c++) {
        for (int o = 0; o < 4; o++) {
            single_op t;
            single_op_binary(&t, BINARY_OPS[o], BINARY_CASES[c].a, BINARY_CASES[c].b);
            fill_uniform(data_of(&t, 0), numel_of(&t, 0), 31 + c, -2.0f, 2.0f);
            fill_uniform(data_of(&t, 1), numel_of(&t, 1), 37 + c, 0.5f, 2.0f);
            kn_tensor *outs = opcheck_forward(&t.g, t.node, false);
            CHECK_MSG(outs != NULL, "%s", kiln_last_error());
            if (!outs) {
                kn_graph_free(&t.g);
                continue;
            }
            const kn_shape *ys = out_shape(&t);
            const kn_shape *as = &BINARY_CASES[c].a, *bs = &BINARY_CASES[c].b;
            double max_diff = 0;
            for (int64_t i = 0; i < kn_shape_numel(ys); i++) {
                int64_t index[KN_MAX_DIMS];
                unravel(i, ys, index);
                float want = naive_op(BINARY_OPS[o], data_of(&t, 0)[broadcast_index(as, ys, index)],
                                      data_of(&t, 1)[broadcast_index(bs, ys, index)]);
                max_diff = fmax(max_diff, fabs(((float *)outs[0].data)[i] - want));
            }
            char sa[64], sb[64], sy[64];
            if (o == 0)
                printf("%s op %s -> %s: ", kn_shape_str(as, sa, sizeof sa), kn_shape_str(bs, sb, sizeof sb),
                       kn_shape_str(ys, sy, sizeof sy));
            printf("%s max diff %.3g%s", BINARY_OPS[o], max_diff, o == 3 ? "\n" : ", ");
            CHECK_MSG(max_diff == 0, "%s %s %s: forward differs from naive by %.3g", BINARY_OPS[o], sa,
                      sb, max_diff);
            opcheck_free_outputs(outs, 1);
            kn_graph_free(&t.g);
        }
    }
}

static void test_binary_gradients(void) {
    for (size_t c = 0; c < sizeof BINARY_CASES / sizeof BINARY_CASES[0]; c++) {
        if (BINARY_CASES[c].large)
            continue;
        for (int o = 0; o < 4; o++) {
            single_op t;
            single_op_binary(&t, BINARY_OPS[o], BINARY_CASES[c].a, BINARY_CASES[c].b);
            fill_uniform(data_of(&t, 0), numel_of(&t, 0), 41 + c, -2.0f, 2.0f);
            fill_uniform(data_of(&t, 1), numel_of(&t, 1), 43 + c, 0.5f, 2.0f); /* away from 0 for Div */
            char what[160], sa[64], sb[64];
            snprintf(what, sizeof what, "%s %s, %s", BINARY_OPS[o],
                     kn_shape_str(&BINARY_CASES[c].a, sa, sizeof sa),
                     kn_shape_str(&BINARY_CASES[c].b, sb, sizeof sb));
            check_gradients(what, &t);
            check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }
    /* A constant operand (x * 0.5, 1 / x): no gradient for it, din[1] / din[0] NULL. */
    for (int o = 2; o < 4; o++) {
        single_op t;
        kn_shape shapes[2] = {SHAPE(2, 3), SCALAR};
        unsigned const_mask = o == 2 ? 2u : 1u;
        if (o == 3) {
            shapes[0] = SCALAR;
            shapes[1] = SHAPE(2, 3);
        }
        single_op_init(&t, BINARY_OPS[o], 2, shapes, const_mask);
        int constant = o == 2 ? 1 : 0, variable = 1 - constant;
        data_of(&t, constant)[0] = o == 2 ? 0.5f : 1.0f;
        fill_uniform(data_of(&t, variable), 6, 47, 0.5f, 2.0f);
        check_gradients(o == 2 ? "Mul (2, 3) by a constant scalar" : "Div of a constant scalar by (2, 3)",
                        &t);
        check_backward_accumulates("constant operand", &t);
        kn_graph_free(&t.g);
    }
}

/* Large broadcast backwards against double sums, and bit-identical results for 1 and 2 threads. */
static void test_binary_backward_large(void) {
    const struct {
        const char *op;
        kn_shape a, b;
    } cases[] = {
        {"Add", DIMS(64, 50, 96), DIMS(96)},
        {"Mul", DIMS(8, 1, 32, 32), DIMS(16, 1, 1)},
        {"Div", DIMS(3, 40000), DIMS(3, 1)},
        {"Sub", {0}, DIMS(300, 400)},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        single_op t;
        single_op_binary(&t, cases[c].op, cases[c].a, cases[c].b);
        fill_uniform(data_of(&t, 0), numel_of(&t, 0), 51 + c, -2.0f, 2.0f);
        fill_uniform(data_of(&t, 1), numel_of(&t, 1), 53 + c, 0.5f, 2.0f);
        bound_op b;
        CHECK(bound_op_init(&b, &t));
        CHECK_OK(bound_forward(&b));
        CHECK_OK(bound_backward(&b));
        const kn_shape *ys = out_shape(&t);
        const float *a = data_of(&t, 0), *bb = data_of(&t, 1), *dy = b.dout.data;
        double *want[2], *magnitude[2];
        for (int i = 0; i < 2; i++) {
            want[i] = calloc((size_t)numel_of(&t, i), sizeof(double));
            magnitude[i] = calloc((size_t)numel_of(&t, i), sizeof(double));
        }
        for (int64_t e = 0; e < kn_shape_numel(ys); e++) {
            int64_t index[KN_MAX_DIMS];
            unravel(e, ys, index);
            int64_t ia = broadcast_index(&cases[c].a, ys, index), ib = broadcast_index(&cases[c].b, ys, index);
            double u = a[ia], v = bb[ib], g = dy[e], term_a, term_b;
            switch (cases[c].op[0]) {
            case 'A': term_a = g, term_b = g; break;
            case 'S': term_a = g, term_b = -g; break;
            case 'M': term_a = g * v, term_b = g * u; break;
            default: term_a = g / v, term_b = -g * u / (v * v); break;
            }
            want[0][ia] += term_a;
            want[1][ib] += term_b;
            magnitude[0][ia] += fabs(term_a);
            magnitude[1][ib] += fabs(term_b);
        }
        for (int i = 0; i < 2; i++) {
            double max_diff = 0, worst = 0;
            for (int64_t e = 0; e < numel_of(&t, i); e++) {
                double diff = fabs(kn_f32(&b.din[i])[e] - want[i][e]);
                max_diff = fmax(max_diff, diff);
                /* float summation error grows like sqrt(n) eps sum|terms| in practice; 1e-5 sum|terms|
                 * still catches one missing or doubled term */
                worst = fmax(worst, diff / (1e-5 * magnitude[i][e] + 1e-6));
            }
            char sa[64];
            printf("%s large backward, input %d %s: max diff from double sum %.3g\n", cases[c].op, i,
                   kn_shape_str(&t.g.values[t.in[i]].shape, sa, sizeof sa), max_diff);
            CHECK_MSG(worst <= 1, "%s input %d: %.3g", cases[c].op, i, worst);
        }

        /* Same again on one thread: the reduction order is fixed by the shape alone. */
        float *two_threads[2];
        for (int i = 0; i < 2; i++) {
            two_threads[i] = malloc(sizeof(float) * (size_t)numel_of(&t, i));
            memcpy(two_threads[i], b.din[i].data, sizeof(float) * (size_t)numel_of(&t, i));
            memset(b.din[i].data, 0, sizeof(float) * (size_t)numel_of(&t, i));
        }
        kn_threads_set(1);
        CHECK_OK(bound_backward(&b));
        kn_threads_set(2);
        for (int i = 0; i < 2; i++) {
            CHECK_MSG(memcmp(two_threads[i], b.din[i].data, sizeof(float) * (size_t)numel_of(&t, i)) == 0,
                      "%s input %d: 1 and 2 threads differ", cases[c].op, i);
            free(two_threads[i]);
            free(want[i]);
            free(magnitude[i]);
        }
        bound_op_free(&b);
        kn_graph_free(&t.g);
    }
}

/* ---- ReduceMean ---- */

typedef struct mean_case {
    const char *what;
    kn_shape x;
    int n_axes; /* -1: no axes at all */
    int64_t axes[3];
    bool axes_as_input; /* opset 18: a constant i64 input */
    int keepdims;
    int noop_with_empty_axes;
    kn_shape want;
} mean_case;

static void mean_node(single_op *t, const mean_case *m) {
    kn_graph_init(&t->g);
    t->in[0] = test_add_value(&t->g, "x", KN_VALUE_PARAM, KN_F32, &m->x);
    t->n_in = 1;
    if (m->axes_as_input) {
        kn_shape axes_shape = SHAPE(m->n_axes);
        t->in[1] = test_add_value(&t->g, "axes", KN_VALUE_CONST, KN_I64, &axes_shape);
        memcpy(t->g.values[t->in[1]].data, m->axes, sizeof(int64_t) * (size_t)m->n_axes);
        t->n_in = 2;
    }
    t->out = test_add_value(&t->g, "y", KN_VALUE_ACT, KN_F32, &SCALAR);
    t->node = test_add_node(&t->g, "ReduceMean", "mean", t->n_in, t->in, 1, &t->out);
    if (!m->axes_as_input && m->n_axes >= 0)
        CHECK_OK(kn_node_set_ints(&t->g, t->node, "axes", m->n_axes, m->axes));
    if (m->keepdims >= 0)
        CHECK_OK(kn_node_set_int(&t->g, t->node, "keepdims", m->keepdims));
    if (m->noop_with_empty_axes)
        CHECK_OK(kn_node_set_int(&t->g, t->node, "noop_with_empty_axes", 1));
}

static void test_reducemean(void) {
    const mean_case cases[] = {
        {"mean-pool (2, 3, 4) axes [1] keepdims 0", DIMS(2, 3, 4), 1, {1}, false, 0, 0, DIMS(2, 4)},
        {"(2, 3, 4) axes [1] keepdims 1", DIMS(2, 3, 4), 1, {1}, false, 1, 0, DIMS(2, 1, 4)},
        {"(2, 3, 4) axes [-1] default keepdims", DIMS(2, 3, 4), 1, {-1}, false, -1, 0, DIMS(2, 3, 1)},
        {"(2, 3, 4) axes [0, 2] keepdims 1", DIMS(2, 3, 4), 2, {0, 2}, false, 1, 0, DIMS(1, 3, 1)},
        {"(2, 3, 4) axes [2, 0] keepdims 0", DIMS(2, 3, 4), 2, {2, 0}, false, 0, 0, DIMS(3)},
        {"(2, 3, 4) all axes keepdims 1", DIMS(2, 3, 4), -1, {0}, false, 1, 0, DIMS(1, 1, 1)},
        {"(2, 3, 4) all axes keepdims 0", DIMS(2, 3, 4), 3, {0, 1, 2}, false, 0, 0, {0}},
        {"(2, 3, 4) axes input [1] keepdims 0", DIMS(2, 3, 4), 1, {1}, true, 0, 0, DIMS(2, 4)},
        {"(2, 3, 4) empty axes input = all", DIMS(2, 3, 4), 0, {0}, true, 0, 0, {0}},
        {"(2, 3, 4) noop_with_empty_axes", DIMS(2, 3, 4), -1, {0}, false, 0, 1, DIMS(2, 3, 4)},
        {"(2, 1, 3, 4, 5) axes [1, 3]", DIMS(2, 1, 3, 4, 5), 2, {1, 3}, false, 0, 0, DIMS(2, 3, 5)},
        {"large (16, 200, 64) axes [1]", DIMS(16, 200, 64), 1, {1}, false, 0, 0, DIMS(16, 64)},
        {"large (300, 500) all axes", DIMS(300, 500), -1, {0}, false, 0, 0, {0}},
        {"large (40, 3000) axes [1]", DIMS(40, 3000), 1, {1}, false, 1, 0, DIMS(40, 1)},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const mean_case *m = &cases[c];
        single_op t;
        mean_node(&t, m);
        fill_uniform(data_of(&t, 0), numel_of(&t, 0), 61 + c, -2.0f, 2.0f);
        bound_op b;
        CHECK_MSG(bound_op_init(&b, &t), "%s: %s", m->what, kiln_last_error());
        CHECK_MSG(kn_shape_equal(out_shape(&t), &m->want), "%s: wrong output shape", m->what);
        CHECK_OK(bound_forward(&b));

        /* which x dims are averaged, from the expected semantics */
        unsigned mask = 0;
        for (int i = 0; i < m->n_axes; i++)
            mask |= 1u << kn_axis_normalize(m->axes[i], m->x.ndim);
        if (m->n_axes <= 0 && !m->noop_with_empty_axes)
            mask = (1u << m->x.ndim) - 1;
        int64_t count = 1;
        kn_shape kept = m->x; /* x with averaged dims set to 1: y's layout */
        for (int k = 0; k < m->x.ndim; k++)
            if ((mask >> k) & 1u) {
                count *= m->x.d[k];
                kept.d[k] = 1;
            }
        int64_t n_y = kn_shape_numel(&kept);
        double *sum = calloc((size_t)n_y, sizeof(double));
        const float *x = data_of(&t, 0);
        for (int64_t e = 0; e < numel_of(&t, 0); e++) {
            int64_t index[KN_MAX_DIMS];
            unravel(e, &m->x, index);
            sum[broadcast_index(&kept, &m->x, index)] += x[e];
        }
        double max_diff = 0;
        for (int64_t j = 0; j < n_y; j++)
            max_diff = fmax(max_diff, fabs(kn_f32(&b.out)[j] - sum[j] / (double)count));
        CHECK_MSG(max_diff < 1e-6, "%s: forward max diff %.3g", m->what, max_diff);

        /* backward spreads dy / count over the averaged dims */
        CHECK_OK(bound_backward(&b));
        float scale = 1.0f / (float)count;
        double max_grad_diff = 0;
        for (int64_t e = 0; e < numel_of(&t, 0); e++) {
            int64_t index[KN_MAX_DIMS];
            unravel(e, &m->x, index);
            float want = scale * kn_f32(&b.dout)[broadcast_index(&kept, &m->x, index)];
            max_grad_diff = fmax(max_grad_diff, fabs(kn_f32(&b.din[0])[e] - want));
        }
        CHECK_MSG(max_grad_diff == 0, "%s: backward max diff %.3g", m->what, max_grad_diff);
        printf("ReduceMean %s: forward max diff from double %.3g, backward %.3g\n", m->what, max_diff,
               max_grad_diff);
        bound_op_free(&b);
        free(sum);

        if (numel_of(&t, 0) <= 1000) {
            char what[160];
            snprintf(what, sizeof what, "ReduceMean %s", m->what);
            check_gradients(what, &t);
            check_backward_accumulates(what, &t);
        }
        kn_graph_free(&t.g);
    }
}

/* ---- empty tensors: nothing to compute, nothing read out of bounds ---- */

static void test_empty(void) {
    single_op t;
    single_op_binary(&t, "Mul", SHAPE(0, 3), SHAPE(3));
    bound_op b;
    CHECK(bound_op_init(&b, &t));
    CHECK(kn_shape_numel(out_shape(&t)) == 0);
    CHECK_OK(bound_forward(&b));
    CHECK_OK(bound_backward(&b));
    CHECK(kn_f32(&b.din[1])[0] == 0 && kn_f32(&b.din[1])[2] == 0); /* a sum of nothing */
    bound_op_free(&b);
    kn_graph_free(&t.g);

    single_op_unary(&t, "Softmax", SHAPE(2, 0));
    CHECK(bound_op_init(&b, &t));
    CHECK_OK(bound_forward(&b));
    CHECK_OK(bound_backward(&b));
    bound_op_free(&b);
    kn_graph_free(&t.g);

    mean_case m = {"", DIMS(2, 0), 1, {1}, false, 0, 0, DIMS(2)};
    mean_node(&t, &m);
    CHECK(bound_op_init(&b, &t));
    CHECK_OK(bound_forward(&b));
    CHECK(isnan(kn_f32(&b.out)[0]) && isnan(kn_f32(&b.out)[1])); /* the mean of nothing, as numpy */
    CHECK_OK(bound_backward(&b));
    bound_op_free(&b);
    kn_graph_free(&t.g);
}

/* ---- FLOP counts ---- */

static void test_flops(void) {
    single_op t;
    single_op_binary(&t, "Add", SHAPE(2, 3, 4), SHAPE(4));
    CHECK_OK(kn_graph_infer_shapes(&t.g));
    CHECK(t.g.nodes[0].op->flops(&t.g, &t.g.nodes[0]) == 24);
    kn_graph_free(&t.g);
    single_op_unary(&t, "Gelu", SHAPE(10));
    CHECK_OK(kn_graph_infer_shapes(&t.g));
    int64_t exact = t.g.nodes[0].op->flops(&t.g, &t.g.nodes[0]);
    CHECK_OK(kn_node_set_string(&t.g, t.node, "approximate", "tanh"));
    int64_t fit = t.g.nodes[0].op->flops(&t.g, &t.g.nodes[0]);
    CHECK(exact == 50 && fit == 90);
    kn_graph_free(&t.g);
    mean_case m = {"", DIMS(4, 5, 6), 1, {1}, false, 0, 0, DIMS(4, 6)};
    mean_node(&t, &m);
    CHECK_OK(kn_graph_infer_shapes(&t.g));
    CHECK(t.g.nodes[0].op->flops(&t.g, &t.g.nodes[0]) == 120);
    kn_graph_free(&t.g);
}

/* ---- bad shapes and attributes ---- */

static void expect_error(const char *what, single_op *t, kiln_status want, const char *in_message) {
    kiln_status st = kn_graph_infer_shapes(&t->g);
    const char *message = kiln_last_error();
    printf("%s -> %s: %s\n", what, kiln_status_name(st), message);
    CHECK_MSG(st == want, "%s: status %s, expected %s", what, kiln_status_name(st), kiln_status_name(want));
    if (in_message)
        CHECK_MSG(strstr(message, in_message) != NULL, "%s: '%s' not in '%s'", what, in_message, message);
    kn_graph_free(&t->g);
}

static void test_errors(void) {
    single_op t;
    single_op_binary(&t, "Add", SHAPE(2, 3), SHAPE(4));
    expect_error("Add (2, 3) + (4)", &t, KILN_ERR_SHAPE, "(2, 3) and (4)");
    single_op_binary(&t, "Mul", SHAPE(5, 2, 3, 4), SHAPE(3, 1, 1));
    expect_error("Mul (5, 2, 3, 4) * (3, 1, 1)", &t, KILN_ERR_SHAPE, "(5, 2, 3, 4) and (3, 1, 1)");

    const int64_t bad_axes[] = {3, -4, 7};
    for (int i = 0; i < 3; i++) {
        single_op_unary(&t, i == 2 ? "LogSoftmax" : "Softmax", SHAPE(2, 3, 4));
        CHECK_OK(kn_node_set_int(&t.g, t.node, "axis", bad_axes[i]));
        expect_error("Softmax axis out of range for (2, 3, 4)", &t, KILN_ERR_INVALID_ARG, "out of range");
    }

    mean_case out_of_range = {"", DIMS(2, 3, 4), 1, {3}, false, 0, 0, {0}};
    mean_node(&t, &out_of_range);
    expect_error("ReduceMean axes [3] of (2, 3, 4)", &t, KILN_ERR_INVALID_ARG, "out of range");
    mean_case repeated = {"", DIMS(2, 3, 4), 2, {1, -2}, false, 0, 0, {0}};
    mean_node(&t, &repeated);
    expect_error("ReduceMean axes [1, -2]", &t, KILN_ERR_INVALID_ARG, "repeated");
    mean_case input_out_of_range = {"", DIMS(2, 3), 1, {-3}, true, 0, 0, {0}};
    mean_node(&t, &input_out_of_range);
    expect_error("ReduceMean axes input [-3] of (2, 3)", &t, KILN_ERR_INVALID_ARG, "out of range");

    single_op_unary(&t, "Gelu", SHAPE(4));
    CHECK_OK(kn_node_set_string(&t.g, t.node, "approximate", "fast"));
    expect_error("Gelu approximate=fast", &t, KILN_ERR_INVALID_ARG, "fast");

    kn_graph_init(&t.g);
    kn_shape s = SHAPE(3);
    int in[2] = {test_add_value(&t.g, "a", KN_VALUE_INPUT, KN_F32, &s),
                 test_add_value(&t.g, "b", KN_VALUE_INPUT, KN_I64, &s)};
    int out = test_add_value(&t.g, "y", KN_VALUE_ACT, KN_F32, &SCALAR);
    CHECK(test_add_node(&t.g, "Add", "add", 2, in, 1, &out) == 0);
    expect_error("Add f32 + i64", &t, KILN_ERR_UNSUPPORTED, "i64");
}

int main(void) {
    kn_threads_set(2);
    test_registry();
    test_activation_points();
    test_activation_grid();
    test_activation_gradients();
    test_softmax_values();
    test_softmax_gradients();
    test_binary_values();
    test_binary_gradients();
    test_binary_backward_large();
    test_reducemean();
    test_empty();
    test_flops();
    test_errors();
    return check_finish();
}
