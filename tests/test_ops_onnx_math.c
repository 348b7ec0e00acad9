/* ONNX math ops: unary math (Erf ... Softplus, Clip, PRelu), the broadcasting binary family beyond
 * the training set (integer arithmetic, Pow, comparisons, logic, Where, Max / Min / Sum / Mean),
 * the reductions (ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2) and ConvTranspose.
 *
 * Every backward is checked against finite differences (opcheck) in several configurations;
 * forwards against closed forms and naive loops written here (ConvTranspose against a direct
 * scatter loop), and against the expected outputs of ONNX's own node tests (libonnx-testdata),
 * copied in as literals. Bad shapes and dtypes must give a clear error. */
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
#define COUNT(array) ((int)(sizeof(array) / sizeof((array)[0])))
static const kn_shape SCALAR = {0};

/* ---- a graph of one node ---- */

/* One input of the node: a PARAM (f32, gets a gradient) or a CONST holding `data` (or zeros). A
 * NULL name leaves the input out (an omitted optional input). */
typedef struct in_spec {
    const char *name;
    kn_dtype dtype;
    kn_shape shape;
    const void *data;
    bool param;
} in_spec;

typedef struct one_node {
    kn_graph g;
    int node;
    int n_in;
    int in[8];
    int out;
} one_node;

static void one_node_init(one_node *t, const char *op, int n_in, const in_spec *ins) {
    kn_graph_init(&t->g);
    t->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        t->in[i] = -1;
        if (!ins[i].name)
            continue;
        kn_value_kind kind = ins[i].param ? KN_VALUE_PARAM : KN_VALUE_CONST;
        t->in[i] = test_add_value(&t->g, ins[i].name, kind, ins[i].dtype, &ins[i].shape);
        if (ins[i].data)
            memcpy(t->g.values[t->in[i]].data, ins[i].data,
                   kn_dtype_size(ins[i].dtype) * (size_t)kn_shape_numel(&ins[i].shape));
    }
    t->out = test_add_value(&t->g, "y", KN_VALUE_ACT, KN_F32, &SCALAR);
    t->node = test_add_node(&t->g, op, "node", n_in, t->in, 1, &t->out);
    CHECK_MSG(t->node == 0, "%s: %s", op, kiln_last_error());
}

static void *input_data(one_node *t, int i) { return t->g.values[t->in[i]].data; }
static int64_t input_numel(one_node *t, int i) {
    return kn_shape_numel(&t->g.values[t->in[i]].shape);
}

/* Infers shapes and runs the node forward into a malloc'd y (free y->data); returns the status. */
static kiln_status run_forward(one_node *t, kn_tensor *y) {
    memset(y, 0, sizeof *y);
    KN_TRY(kn_graph_infer_shapes(&t->g));
    kn_tensor in[8], *in_p[8] = {0};
    for (int i = 0; i < t->n_in; i++) {
        if (t->in[i] < 0)
            continue;
        kn_value *v = &t->g.values[t->in[i]];
        in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        in_p[i] = &in[i];
    }
    kn_value *yv = &t->g.values[t->out];
    size_t bytes = 0;
    CHECK(kn_shape_bytes(&yv->shape, yv->dtype, &bytes));
    *y = (kn_tensor){yv->shape, yv->dtype, calloc(1, bytes + 8)};
    kn_tensor *out_p[1] = {y};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = &t->g.nodes[t->node], .in = in_p, .out = out_p, .ctx = &ctx};
    kiln_status st = t->g.nodes[t->node].op->forward(&call);
    kn_op_ctx_release(&ctx);
    return st;
}

/* Runs the node, which must succeed, and returns its output (free ->data). */
static kn_tensor forward_ok(const char *what, one_node *t) {
    kn_tensor y;
    kiln_status st = run_forward(t, &y);
    CHECK_MSG(st == KILN_OK, "%s: %s", what, kiln_last_error());
    return y;
}

/* Shape inference (or, with at_run_time, the forward) fails with `want`, naming `in_message`. */
static void expect_error(const char *what, one_node *t, kiln_status want, const char *in_message,
                         bool at_run_time) {
    kiln_status st;
    if (at_run_time) {
        kn_tensor y;
        st = run_forward(t, &y);
        free(y.data);
    } else {
        st = kn_graph_infer_shapes(&t->g);
    }
    const char *message = kiln_last_error();
    printf("  %s -> %s: %s\n", what, kiln_status_name(st), message);
    CHECK_MSG(st == want, "%s: status %s, expected %s", what, kiln_status_name(st),
              kiln_status_name(want));
    if (in_message)
        CHECK_MSG(strstr(message, in_message) != NULL, "%s: '%s' not in '%s'", what, in_message,
                  message);
    kn_graph_free(&t->g);
}

/* Finite-difference check of the inputs in grad_mask (0: every f32 PARAM input). */
static void check_gradients(const char *what, one_node *t, unsigned grad_mask) {
    printf("%s\n", what);
    opcheck_options o = {.grad_mask = grad_mask};
    double worst = opcheck_gradients(&t->g, t->node, &o);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst |analytic - numeric| / tolerance = %.3g", what,
              worst);
}

/* Backward must ADD into din: starting from 0.5 gives 0.5 + the gradient it gives from 0. */
static void check_backward_accumulates(const char *what, one_node *t) {
    kn_tensor y;
    CHECK_OK(run_forward(t, &y));
    const kn_node *n = &t->g.nodes[t->node];
    kn_tensor in[8], din[8], *in_p[8] = {0}, *din_p[8] = {0};
    for (int i = 0; i < t->n_in; i++) {
        if (t->in[i] < 0)
            continue;
        kn_value *v = &t->g.values[t->in[i]];
        in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        in_p[i] = &in[i];
        if (v->kind == KN_VALUE_PARAM) {
            din[i] =
                (kn_tensor){v->shape, KN_F32, calloc((size_t)kn_shape_numel(&v->shape) + 1, 4)};
            din_p[i] = &din[i];
        }
    }
    int64_t n_y = kn_numel(&y);
    kn_tensor dy = {y.shape, KN_F32, malloc(sizeof(float) * (size_t)(n_y + 1))};
    kn_rng rng = kn_rng_seeded(77);
    for (int64_t e = 0; e < n_y; e++)
        kn_f32(&dy)[e] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    kn_tensor *out_p[1] = {&y};
    const kn_tensor *dout_p[1] = {&dy};
    kn_op_ctx ctx = {0};
    kn_op_call call = {
        .node = n, .in = in_p, .out = out_p, .dout = dout_p, .din = din_p, .ctx = &ctx};
    CHECK_OK(n->op->backward(&call));
    float *from_zero[8] = {0};
    for (int i = 0; i < t->n_in; i++) {
        if (!din_p[i])
            continue;
        int64_t count = kn_numel(&din[i]);
        from_zero[i] = malloc(sizeof(float) * (size_t)(count + 1));
        memcpy(from_zero[i], din[i].data, sizeof(float) * (size_t)count);
        for (int64_t e = 0; e < count; e++)
            kn_f32(&din[i])[e] = 0.5f;
    }
    CHECK_OK(n->op->backward(&call));
    double max_diff = 0;
    for (int i = 0; i < t->n_in; i++)
        for (int64_t e = 0; from_zero[i] && e < kn_numel(&din[i]); e++)
            max_diff = fmax(max_diff, fabs(kn_f32(&din[i])[e] - (0.5 + from_zero[i][e])) /
                                          (1.0 + fabs(from_zero[i][e])));
    printf("%s: backward from 0.5 vs 0.5 + backward from 0: max rel diff %.3g\n", what, max_diff);
    CHECK_MSG(max_diff <= 1e-6, "%s: backward does not add into din (max diff %.3g)", what,
              max_diff);
    for (int i = 0; i < t->n_in; i++) {
        free(from_zero[i]);
        if (din_p[i])
            free(din[i].data);
    }
    free(dy.data);
    free(y.data);
    kn_op_ctx_release(&ctx);
}

/* ---- data ---- */

static void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * kn_rng_uniform(&rng);
}

/* Magnitudes in [lo, hi) with random signs: nothing within the finite-difference step of 0. */
static void fill_away_from_zero(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++) {
        float magnitude = lo + (hi - lo) * kn_rng_uniform(&rng);
        x[i] = kn_rng_uniform(&rng) < 0.5f ? -magnitude : magnitude;
    }
}

/* Moves values within 0.01 of a kink to 0.02 past it, out of the finite-difference step's reach. */
static void nudge_from_kinks(float *x, int64_t n, const float *kinks, int n_kinks) {
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < n_kinks; k++)
            if (fabsf(x[i] - kinks[k]) < 0.01f)
                x[i] = kinks[k] + 0.02f;
}

/* Distinct values 0.01 apart (a shuffled grid, plus `offset`): no two elements tie or come within a
 * finite-difference step of swapping order. */
static void fill_distinct(float *x, int64_t n, uint64_t seed, float offset) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.01f * (float)(i - n / 2) + offset;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(&rng, (uint64_t)i + 1);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* Integers in [lo, hi] stored as `dtype`. */
static void fill_ints(void *x, kn_dtype dtype, int64_t n, uint64_t seed, int64_t lo, int64_t hi) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = lo + (int64_t)kn_rng_below(&rng, (uint64_t)(hi - lo + 1));
        switch (dtype) {
        case KN_I64: ((int64_t *)x)[i] = v; break;
        case KN_I32: ((int32_t *)x)[i] = (int32_t)v; break;
        case KN_I8: ((int8_t *)x)[i] = (int8_t)v; break;
        case KN_F32: ((float *)x)[i] = (float)v; break;
        default: ((uint8_t *)x)[i] = (uint8_t)v; break;
        }
    }
}

static int64_t load_int(const void *x, kn_dtype dtype, int64_t i) {
    switch (dtype) {
    case KN_I64: return ((const int64_t *)x)[i];
    case KN_I32: return ((const int32_t *)x)[i];
    case KN_I8: return ((const int8_t *)x)[i];
    default: return ((const uint8_t *)x)[i];
    }
}

/* The element of a tensor of shape `s` read by element `flat` of `out` when s broadcasts to out. */
static int64_t bcast_index(const kn_shape *s, const kn_shape *out, int64_t flat) {
    int64_t index = 0, stride = 1;
    for (int k = out->ndim - 1; k >= 0; k--) {
        int64_t coord = flat % out->d[k];
        flat /= out->d[k];
        int j = k - (out->ndim - s->ndim);
        if (j >= 0) {
            if (s->d[j] != 1)
                index += coord * stride;
            stride *= s->d[j];
        }
    }
    return index;
}

static kn_shape bcast_shape(const kn_shape *a, const kn_shape *b) {
    kn_shape out = {.ndim = a->ndim > b->ndim ? a->ndim : b->ndim};
    for (int k = 1; k <= out.ndim; k++) {
        int64_t da = k <= a->ndim ? a->d[a->ndim - k] : 1,
                db = k <= b->ndim ? b->d[b->ndim - k] : 1;
        out.d[out.ndim - k] = da == 1 ? db : da;
    }
    return out;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(a[i]) != isnan(b[i]))
            d = INFINITY;
        else if (isnan(a[i]))
            d = 0;
        worst = fmax(worst, d);
    }
    return worst;
}

/* Runs the node and compares its f32 output with `want` (n values). */
static void expect_f32(const char *what, one_node *t, const float *want, int64_t n, double tol) {
    kn_tensor y = forward_ok(what, t);
    if (y.data) {
        CHECK_MSG(kn_numel(&y) == n && y.dtype == KN_F32, "%s: %lld %s outputs", what,
                  (long long)kn_numel(&y), kn_dtype_name(y.dtype));
        double diff = kn_numel(&y) == n ? max_abs_diff(kn_f32(&y), want, n) : INFINITY;
        printf("%-58s max |y - expected| = %.3g\n", what, diff);
        CHECK_MSG(diff <= tol, "%s: max diff %.3g > %.3g", what, diff, tol);
    }
    free(y.data);
    kn_graph_free(&t->g);
}

/* Runs the node and compares its integer or bool output with `want` exactly. */
static void expect_ints(const char *what, one_node *t, kn_dtype dtype, const int64_t *want,
                        int64_t n) {
    kn_tensor y = forward_ok(what, t);
    if (y.data) {
        CHECK_MSG(y.dtype == dtype && kn_numel(&y) == n, "%s: %lld %s outputs, expected %lld %s",
                  what, (long long)kn_numel(&y), kn_dtype_name(y.dtype), (long long)n,
                  kn_dtype_name(dtype));
        int mismatches = 0;
        for (int64_t i = 0; i < n && kn_numel(&y) == n; i++) {
            int64_t got = load_int(y.data, y.dtype, i);
            if (got != want[i] && mismatches++ < 4)
                fprintf(stderr, "  %s: element %lld is %lld, expected %lld\n", what, (long long)i,
                        (long long)got, (long long)want[i]);
        }
        printf("%-58s %d of %lld elements differ\n", what, mismatches, (long long)n);
        CHECK_MSG(mismatches == 0, "%s", what);
    }
    free(y.data);
    kn_graph_free(&t->g);
}

#define F32_IN(name, shape, data) ((in_spec){name, KN_F32, shape, data, false})
#define PARAM_IN(name, shape) ((in_spec){name, KN_F32, shape, NULL, true})
#define TYPED_IN(name, dtype, shape, data) ((in_spec){name, dtype, shape, data, false})
#define NO_INPUT ((in_spec){0})

/* ---- the op table ---- */

/* Named here so the linker takes the op files out of the static library. */
extern const kn_op kn_op_erf, kn_op_sqrt, kn_op_exp, kn_op_log, kn_op_neg, kn_op_abs,
    kn_op_reciprocal, kn_op_floor, kn_op_ceil, kn_op_hardsigmoid, kn_op_hardswish, kn_op_softplus,
    kn_op_clip, kn_op_prelu, kn_op_pow, kn_op_equal, kn_op_less, kn_op_greater, kn_op_and, kn_op_or,
    kn_op_not, kn_op_where, kn_op_max, kn_op_min, kn_op_sum, kn_op_mean, kn_op_reducesum,
    kn_op_reducemax, kn_op_reducemin, kn_op_reduceprod, kn_op_reducel2, kn_op_convtranspose;

static void test_registry(void) {
    const struct {
        const char *name;
        const kn_op *op;
        bool differentiable;
    } entries[] = {
        {"Erf", &kn_op_erf, true},         {"Sqrt", &kn_op_sqrt, true},
        {"Exp", &kn_op_exp, true},         {"Log", &kn_op_log, true},
        {"Neg", &kn_op_neg, true},         {"Abs", &kn_op_abs, true},
        {"Reciprocal", &kn_op_reciprocal, true}, {"Floor", &kn_op_floor, false},
        {"Ceil", &kn_op_ceil, false},      {"HardSigmoid", &kn_op_hardsigmoid, true},
        {"HardSwish", &kn_op_hardswish, true}, {"Softplus", &kn_op_softplus, true},
        {"Clip", &kn_op_clip, true},       {"PRelu", &kn_op_prelu, true},
        {"Pow", &kn_op_pow, true},         {"Equal", &kn_op_equal, false},
        {"Less", &kn_op_less, false},      {"Greater", &kn_op_greater, false},
        {"And", &kn_op_and, false},        {"Or", &kn_op_or, false},
        {"Not", &kn_op_not, false},        {"Where", &kn_op_where, true},
        {"Max", &kn_op_max, true},         {"Min", &kn_op_min, true},
        {"Sum", &kn_op_sum, true},         {"Mean", &kn_op_mean, true},
        {"ReduceSum", &kn_op_reducesum, true}, {"ReduceMax", &kn_op_reducemax, true},
        {"ReduceMin", &kn_op_reducemin, true}, {"ReduceProd", &kn_op_reduceprod, false},
        {"ReduceL2", &kn_op_reducel2, false}, {"ConvTranspose", &kn_op_convtranspose, true},
    };
    for (int i = 0; i < COUNT(entries); i++) {
        const kn_op *op = entries[i].op;
        CHECK_MSG(kn_op_find(entries[i].name) == op, "%s not found in the op table",
                  entries[i].name);
        CHECK_MSG(op->infer && op->forward && op->flops, "%s lacks an entry", entries[i].name);
        CHECK_MSG((op->backward != NULL) == entries[i].differentiable, "%s backward",
                  entries[i].name);
    }
}

/* ---- unary math ---- */

static double ref_erf(double x) { return erf(x); }
static double ref_sqrt(double x) { return sqrt(x); }
static double ref_exp(double x) { return exp(x); }
static double ref_log(double x) { return log(x); }
static double ref_neg(double x) { return -x; }
static double ref_abs(double x) { return fabs(x); }
static double ref_reciprocal(double x) { return 1 / x; }
static double ref_floor(double x) { return floor(x); }
static double ref_ceil(double x) { return ceil(x); }
static double ref_hardsigmoid(double x) { return fmax(0, fmin(1, 0.2 * x + 0.5)); }
static double ref_hardsigmoid_custom(double x) { return fmax(0, fmin(1, 0.5 * x + 0.6)); }
static double ref_hardswish(double x) { return x * fmax(0, fmin(1, x / 6 + 0.5)); }
static double ref_softplus(double x) { return log1p(exp(x)); }

typedef struct unary_case {
    const char *op;
    double (*ref)(double);
    float lo, hi;      /* the input range of the value check */
    bool custom_attrs; /* HardSigmoid alpha = 0.5, beta = 0.6 (ONNX's test_hardsigmoid_example) */
} unary_case;

static const unary_case unary_cases[] = {
    {"Erf", ref_erf, -4, 4, false},          {"Sqrt", ref_sqrt, 0, 100, false},
    {"Exp", ref_exp, -20, 20, false},        {"Log", ref_log, 1e-4f, 1e4f, false},
    {"Neg", ref_neg, -8, 8, false},          {"Abs", ref_abs, -8, 8, false},
    {"Reciprocal", ref_reciprocal, 0.05f, 8, false}, {"Floor", ref_floor, -8, 8, false},
    {"Ceil", ref_ceil, -8, 8, false},        {"HardSigmoid", ref_hardsigmoid, -8, 8, false},
    {"HardSigmoid", ref_hardsigmoid_custom, -8, 8, true},
    {"HardSwish", ref_hardswish, -8, 8, false},
    {"Softplus", ref_softplus, -30, 30, false},
};

static void unary_node(one_node *t, const unary_case *c, kn_shape shape, bool param) {
    in_spec x = {"x", KN_F32, shape, NULL, param};
    one_node_init(t, c->op, 1, &x);
    if (c->custom_attrs) {
        CHECK_OK(kn_node_set_float(&t->g, t->node, "alpha", 0.5f));
        CHECK_OK(kn_node_set_float(&t->g, t->node, "beta", 0.6f));
    }
}

/* Every op over a dense grid (large enough to run threaded) against double precision. */
static void test_unary_values(void) {
    enum { N = 65537 };
    for (int c = 0; c < COUNT(unary_cases); c++) {
        const unary_case *uc = &unary_cases[c];
        one_node t;
        unary_node(&t, uc, SHAPE(N), false);
        float *x = input_data(&t, 0);
        for (int i = 0; i < N; i++)
            x[i] = uc->lo + (uc->hi - uc->lo) * (float)i / (N - 1);
        kn_tensor y = forward_ok(uc->op, &t);
        double max_rel = 0;
        for (int i = 0; y.data && i < N; i++) {
            double want = uc->ref(x[i]);
            max_rel = fmax(max_rel, fabs(kn_f32(&y)[i] - want) / fmax(1.0, fabs(want)));
        }
        printf("%-11s%s on [%g, %g]: max |y - ref| / max(1, |ref|) = %.3g\n", uc->op,
               uc->custom_attrs ? " (0.5, 0.6)" : "", uc->lo, uc->hi, max_rel);
        CHECK_MSG(max_rel < 1e-6, "%s: %.3g", uc->op, max_rel);
        free(y.data);
        kn_graph_free(&t.g);
    }

    /* NaN passes through the clamps; Softplus and Exp at the ends of float's range */
    const float specials[] = {NAN, -100.0f, 100.0f, -1e30f, 1e30f};
    const char *ops[] = {"HardSigmoid", "HardSwish", "Softplus", "Exp"};
    for (int o = 0; o < COUNT(ops); o++) {
        one_node t;
        in_spec x = F32_IN("x", SHAPE(5), specials);
        one_node_init(&t, ops[o], 1, &x);
        kn_tensor y = forward_ok(ops[o], &t);
        const float *v = y.data;
        if (v) {
            CHECK_MSG(isnan(v[0]), "%s(NaN) = %g", ops[o], v[0]);
            if (strcmp(ops[o], "Softplus") == 0)
                CHECK(v[1] >= 0 && v[1] < 1e-40f && v[2] == 100.0f && v[3] == 0 && v[4] == 1e30f);
            if (strcmp(ops[o], "Exp") == 0)
                CHECK(v[1] >= 0 && v[3] == 0 && isinf(v[4]));
        }
        free(y.data);
        kn_graph_free(&t.g);
    }
}

/* ONNX node tests test_hardsigmoid_example, test_softplus_example, test_hardswish. */
static void test_unary_onnx_cases(void) {
    const float x3[] = {-1, 0, 1};
    one_node t;
    in_spec x = F32_IN("x", SHAPE(3), x3);
    one_node_init(&t, "HardSigmoid", 1, &x);
    CHECK_OK(kn_node_set_float(&t.g, t.node, "alpha", 0.5f));
    CHECK_OK(kn_node_set_float(&t.g, t.node, "beta", 0.6f));
    expect_f32("onnx test_hardsigmoid_example", &t, (const float[]){0.10000002f, 0.6f, 1.0f}, 3,
               1e-7);
    one_node_init(&t, "Softplus", 1, &x);
    expect_f32("onnx test_softplus_example", &t,
               (const float[]){0.31326166f, 0.6931472f, 1.3132617f}, 3, 1e-7);

    static const float hs_x[60] = {
        1.76405239f,   0.400157213f,  0.97873801f,   2.24089313f,   1.867558f,     -0.977277875f,
        0.950088441f,  -0.151357204f, -0.103218853f, 0.410598516f,  0.144043565f,  1.45427346f,
        0.761037707f,  0.121675014f,  0.443863243f,  0.333674341f,  1.49407911f,   -0.205158263f,
        0.313067704f,  -0.854095757f, -2.55298972f,  0.653618574f,  0.864436209f,  -0.742165029f,
        2.26975465f,   -1.45436573f,  0.0457585156f, -0.187183857f, 1.53277922f,   1.4693588f,
        0.15494743f,   0.378162533f,  -0.887785733f, -1.98079646f,  -0.347912163f, 0.156348974f,
        1.23029065f,   1.20237982f,   -0.387326807f, -0.302302748f, -1.04855299f,  -1.42001796f,
        -1.70627022f,  1.95077538f,   -0.509652197f, -0.438074291f, -1.25279534f,  0.777490377f,
        -1.6138978f,   -0.212740287f, -0.895466566f, 0.386902511f,  -0.51080513f,  -1.18063223f,
        -0.028182229f, 0.428331882f,  0.0665172189f, 0.302471906f,  -0.634322107f, -0.362741172f};
    static const float hs_y[60] = {
        1.40067303f,   0.226766244f,  0.649023712f,   1.95738029f,    1.51507449f,
        -0.329460263f, 0.625488877f,  -0.0718604326f, -0.0498337373f, 0.233397797f,
        0.0754798725f, 1.07962203f,   0.477048606f,   0.0633049756f,  0.254767388f,
        0.185393602f,  1.11908495f,   -0.0955641493f, 0.172869086f,   -0.305467933f,
        -0.190202057f, 0.398012161f,  0.556759775f,   -0.27928102f,   1.99350834f,
        -0.374652892f, 0.0232282318f, -0.0877522975f, 1.15795839f,    1.09451532f,
        0.081475161f,  0.212915748f,  -0.312532276f,  -0.336472452f,  -0.153782263f,
        0.0822486505f, 0.867414534f,  0.84214282f,    -0.168659732f,  -0.135920212f,
        -0.341032565f, -0.373933822f, -0.367908746f,  1.60964191f,    -0.2115352f,
        -0.187052295f, -0.364814937f, 0.489493757f,   -0.372837871f,  -0.0988270715f,
        -0.314089894f, 0.21840018f,   -0.211915568f,  -0.358000696f,  -0.0139587419f,
        0.244743988f,  0.0339960344f, 0.166484162f,   -0.250100315f,  -0.159440383f};
    in_spec hx = F32_IN("x", SHAPE(3, 4, 5), hs_x);
    one_node_init(&t, "HardSwish", 1, &hx);
    expect_f32("onnx test_hardswish", &t, hs_y, 60, 1e-7);
}

static void test_unary_gradients(void) {
    const kn_shape shapes[] = {DIMS(3, 4, 5), DIMS(7)};
    for (int s = 0; s < COUNT(shapes); s++) {
        for (int c = 0; c < COUNT(unary_cases); c++) {
            const unary_case *uc = &unary_cases[c];
            if (!strcmp(uc->op, "Floor") || !strcmp(uc->op, "Ceil"))
                continue;
            one_node t;
            unary_node(&t, uc, shapes[s], true);
            float *x = input_data(&t, 0);
            int64_t n = input_numel(&t, 0);
            uint64_t seed = 100 + (uint64_t)c;
            if (!strcmp(uc->op, "Sqrt") || !strcmp(uc->op, "Log"))
                fill_uniform(x, n, seed, 0.3f, 3.0f);
            else if (!strcmp(uc->op, "Abs") || !strcmp(uc->op, "Reciprocal"))
                fill_away_from_zero(x, n, seed, 0.3f, 2.0f);
            else
                fill_uniform(x, n, seed, -4.5f, 4.5f);
            /* the ends of the ramps: HardSigmoid (0.2, 0.5) at -2.5, 2.5; (0.5, 0.6) at -1.2, 0.8;
             * HardSwish at -3, 3 */
            const float kinks[] = {-2.5f, 2.5f, -1.2f, 0.8f, -3.0f, 3.0f};
            nudge_from_kinks(x, n, kinks, COUNT(kinks));
            char what[96];
            snprintf(what, sizeof what, "%s%s, %d-D input", uc->op,
                     uc->custom_attrs ? " (0.5, 0.6)" : "", shapes[s].ndim);
            check_gradients(what, &t, 0);
            if (s == 0)
                check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }
}

/* Neg and Abs of integers wrap at the lowest value as numpy does; Abs of u8 is the identity. */
static void test_unary_integers(void) {
    one_node t;
    const int64_t i64[] = {5, -7, 0, INT64_MIN, INT64_MAX};
    in_spec x64 = TYPED_IN("x", KN_I64, SHAPE(5), i64);
    one_node_init(&t, "Neg", 1, &x64);
    expect_ints("Neg i64", &t, KN_I64, (const int64_t[]){-5, 7, 0, INT64_MIN, -INT64_MAX}, 5);
    one_node_init(&t, "Abs", 1, &x64);
    expect_ints("Abs i64", &t, KN_I64, (const int64_t[]){5, 7, 0, INT64_MIN, INT64_MAX}, 5);
    const int32_t i32[] = {3, -4, INT32_MIN};
    in_spec x32 = TYPED_IN("x", KN_I32, SHAPE(3), i32);
    one_node_init(&t, "Neg", 1, &x32);
    expect_ints("Neg i32", &t, KN_I32, (const int64_t[]){-3, 4, INT32_MIN}, 3);
    const int8_t i8[] = {-128, -1, 127};
    in_spec x8 = TYPED_IN("x", KN_I8, SHAPE(3), i8);
    one_node_init(&t, "Abs", 1, &x8);
    expect_ints("Abs i8", &t, KN_I8, (const int64_t[]){-128, 1, 127}, 3);
    const uint8_t u8[] = {0, 200, 255};
    in_spec xu8 = TYPED_IN("x", KN_U8, SHAPE(3), u8);
    one_node_init(&t, "Abs", 1, &xu8);
    expect_ints("Abs u8", &t, KN_U8, (const int64_t[]){0, 200, 255}, 3);

    one_node_init(&t, "Neg", 1, &xu8);
    expect_error("Neg of u8", &t, KILN_ERR_UNSUPPORTED, "u8", false);
    one_node_init(&t, "Exp", 1, &x32);
    expect_error("Exp of i32", &t, KILN_ERR_UNSUPPORTED, "i32", false);
}

/* ---- Clip ---- */

/* Clip over f32 x with optional scalar bounds (NULL: omitted). */
static void clip_node(one_node *t, kn_shape shape, const float *x, const float *min,
                      const float *max, bool param) {
    in_spec ins[3] = {{"x", KN_F32, shape, x, param}, NO_INPUT, NO_INPUT};
    if (min)
        ins[1] = F32_IN("min", SCALAR, min);
    if (max)
        ins[2] = F32_IN("max", SCALAR, max);
    one_node_init(t, "Clip", max ? 3 : min ? 2 : 1, ins);
}

static void test_clip(void) {
    one_node t;
    /* ONNX node tests test_clip_example, test_clip_splitbounds, test_clip_default_inbounds */
    clip_node(&t, SHAPE(3), (const float[]){-2, 0, 2}, &(float){-1}, &(float){1}, false);
    expect_f32("onnx test_clip_example", &t, (const float[]){-1, 0, 1}, 3, 0);
    clip_node(&t, SHAPE(3), (const float[]){-1, 0, 6}, &(float){-5}, &(float){5}, false);
    expect_f32("onnx test_clip_splitbounds", &t, (const float[]){-1, 0, 5}, 3, 0);
    clip_node(&t, SHAPE(3), (const float[]){-1, 0, 1}, NULL, NULL, false);
    expect_f32("onnx test_clip_default_inbounds", &t, (const float[]){-1, 0, 1}, 3, 0);
    /* min only, max only (min given as omitted), min > max (every element becomes max), NaN */
    const float x5[] = {-3, -0.5f, 0, 2, NAN};
    clip_node(&t, SHAPE(5), x5, &(float){-1}, NULL, false);
    expect_f32("Clip min -1", &t, (const float[]){-1, -0.5f, 0, 2, NAN}, 5, 0);
    in_spec max_only[3] = {F32_IN("x", SHAPE(5), x5), NO_INPUT, F32_IN("max", SCALAR, &(float){0})};
    one_node_init(&t, "Clip", 3, max_only);
    expect_f32("Clip max 0 (min omitted)", &t, (const float[]){-3, -0.5f, 0, 0, NAN}, 5, 0);
    clip_node(&t, SHAPE(5), x5, &(float){2}, &(float){1}, false);
    expect_f32("Clip min 2 > max 1: every element is max", &t, (const float[]){1, 1, 1, 1, NAN}, 5,
               0);

    /* a large tensor (threaded) against a loop */
    enum { N = 50000 };
    float *x = malloc(sizeof(float) * N), *want = malloc(sizeof(float) * N);
    fill_uniform(x, N, 3, -4, 4);
    for (int i = 0; i < N; i++)
        want[i] = x[i] < -1.5f ? -1.5f : x[i] > 2.5f ? 2.5f : x[i];
    clip_node(&t, SHAPE(N), x, &(float){-1.5f}, &(float){2.5f}, false);
    expect_f32("Clip [-1.5, 2.5] of 50000 values", &t, want, N, 0);
    free(x);
    free(want);

    /* ONNX node test test_clip_default_int8_min: min 0 as input 1, no max */
    static const int8_t i8_x[60] = {1, 0,  0, 2,  1, 0,  0, 0, 0,  0, 0,  1,  0,  0, 0,
                                    0, 1,  0, 0,  0, -2, 0, 0, 0,  2, -1, 0,  0,  1, 1,
                                    0, 0,  0, -1, 0, 0,  1, 1, 0,  0, -1, -1, -1, 1, 0,
                                    0, -1, 0, -1, 0, 0,  0, 0, -1, 0, 0,  0,  0,  0, 0};
    static const int64_t i8_y[60] = {1, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0,
                                     0, 0, 0, 0, 2, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0,
                                     0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    in_spec i8_in[2] = {TYPED_IN("x", KN_I8, SHAPE(3, 4, 5), i8_x),
                        TYPED_IN("min", KN_I8, SCALAR, &(int8_t){0})};
    one_node_init(&t, "Clip", 2, i8_in);
    expect_ints("onnx test_clip_default_int8_min", &t, KN_I8, i8_y, 60);
    const int64_t i64_x[] = {INT64_MIN, -5, 0, 7, INT64_MAX};
    in_spec i64_in[3] = {TYPED_IN("x", KN_I64, SHAPE(5), i64_x), NO_INPUT,
                         TYPED_IN("max", KN_I64, SHAPE(1), &(int64_t){3})};
    one_node_init(&t, "Clip", 3, i64_in);
    expect_ints("Clip i64 max 3 (shape (1))", &t, KN_I64, (const int64_t[]){INT64_MIN, -5, 0, 3, 3},
                5);
    const uint8_t u8_x[] = {0, 9, 10, 200, 255};
    in_spec u8_in[3] = {TYPED_IN("x", KN_U8, SHAPE(5), u8_x),
                        TYPED_IN("min", KN_U8, SCALAR, &(uint8_t){10}),
                        TYPED_IN("max", KN_U8, SCALAR, &(uint8_t){250})};
    one_node_init(&t, "Clip", 3, u8_in);
    expect_ints("Clip u8 [10, 250]", &t, KN_U8, (const int64_t[]){10, 10, 10, 200, 250}, 5);
    const int32_t i32_x[] = {-100, 3, 100};
    in_spec i32_in[3] = {TYPED_IN("x", KN_I32, SHAPE(3), i32_x),
                         TYPED_IN("min", KN_I32, SCALAR, &(int32_t){5}),
                         TYPED_IN("max", KN_I32, SCALAR, &(int32_t){-5})};
    one_node_init(&t, "Clip", 3, i32_in);
    expect_ints("Clip i32 min 5 > max -5", &t, KN_I32, (const int64_t[]){-5, -5, -5}, 3);

    /* gradients: X only (the bounds are constants); values away from the bounds */
    const float bounds[][2] = {{-1.0f, 1.5f}, {-INFINITY, 0.5f}, {-0.5f, INFINITY}};
    for (int b = 0; b < COUNT(bounds); b++) {
        const float *lo = isinf(bounds[b][0]) ? NULL : &bounds[b][0];
        const float *hi = isinf(bounds[b][1]) ? NULL : &bounds[b][1];
        clip_node(&t, SHAPE(4, 6), NULL, lo, hi, true);
        float *xs = input_data(&t, 0);
        fill_uniform(xs, 24, 40 + (uint64_t)b, -3, 3);
        nudge_from_kinks(xs, 24, bounds[b], 2);
        char what[64];
        snprintf(what, sizeof what, "Clip [%g, %g]", bounds[b][0], bounds[b][1]);
        check_gradients(what, &t, 1);
        if (b == 0)
            check_backward_accumulates(what, &t);
        kn_graph_free(&t.g);
    }

    /* errors */
    in_spec bad_dtype[2] = {F32_IN("x", SHAPE(3), NULL), TYPED_IN("min", KN_I64, SCALAR, NULL)};
    one_node_init(&t, "Clip", 2, bad_dtype);
    expect_error("Clip f32 with an i64 min", &t, KILN_ERR_UNSUPPORTED, "i64", false);
    in_spec bad_shape[2] = {F32_IN("x", SHAPE(3), NULL), F32_IN("min", SHAPE(2), NULL)};
    one_node_init(&t, "Clip", 2, bad_shape);
    expect_error("Clip min of shape (2)", &t, KILN_ERR_SHAPE, "(2)", false);
}

/* ---- PRelu ---- */

static void prelu_reference(const float *x, const kn_shape *xs, const float *slope,
                            const kn_shape *ss, float *y) {
    for (int64_t i = 0; i < kn_shape_numel(xs); i++) {
        float s = slope[bcast_index(ss, xs, i)];
        y[i] = x[i] < 0 ? s * x[i] : x[i];
    }
}

static void test_prelu(void) {
    static const float x[60] = {
        1.76405239f,   0.400157213f,  0.97873801f,   2.24089313f,   1.867558f,     -0.977277875f,
        0.950088441f,  -0.151357204f, -0.103218853f, 0.410598516f,  0.144043565f,  1.45427346f,
        0.761037707f,  0.121675014f,  0.443863243f,  0.333674341f,  1.49407911f,   -0.205158263f,
        0.313067704f,  -0.854095757f, -2.55298972f,  0.653618574f,  0.864436209f,  -0.742165029f,
        2.26975465f,   -1.45436573f,  0.0457585156f, -0.187183857f, 1.53277922f,   1.4693588f,
        0.15494743f,   0.378162533f,  -0.887785733f, -1.98079646f,  -0.347912163f, 0.156348974f,
        1.23029065f,   1.20237982f,   -0.387326807f, -0.302302748f, -1.04855299f,  -1.42001796f,
        -1.70627022f,  1.95077538f,   -0.509652197f, -0.438074291f, -1.25279534f,  0.777490377f,
        -1.6138978f,   -0.212740287f, -0.895466566f, 0.386902511f,  -0.51080513f,  -1.18063223f,
        -0.028182229f, 0.428331882f,  0.0665172189f, 0.302471906f,  -0.634322107f, -0.362741172f};
    static const float slope[5] = {-0.672460437f, -0.359553158f, -0.813146293f, -1.7262826f,
                                   0.177426144f};
    static const float y[60] = {
        1.76405239f,  0.400157213f,  0.97873801f,  2.24089313f,  1.867558f,
        0.657180727f, 0.950088441f,  0.123075552f, 0.178184912f, 0.410598516f,
        0.144043565f, 1.45427346f,   0.761037707f, 0.121675014f, 0.443863243f,
        0.333674341f, 1.49407911f,   0.166823685f, 0.313067704f, -0.151538923f,
        1.7167846f,   0.653618574f,  0.864436209f, 1.28118658f,  2.26975465f,
        0.978003442f, 0.0457585156f, 0.152207866f, 1.53277922f,  1.4693588f,
        0.15494743f,  0.378162533f,  0.721899688f, 3.41941452f,  -0.0617287122f,
        0.156348974f, 1.23029065f,   1.20237982f,  0.668635547f, -0.0536364093f,
        0.705110431f, 0.510571957f,  1.38744736f,  1.95077538f,  -0.0904256254f,
        0.294587642f, 0.450446516f,  0.777490377f, 2.78604364f,  -0.0377456881f,
        0.602165818f, 0.386902511f,  0.415359288f, 2.03810477f,  -0.00500026438f,
        0.428331882f, 0.0665172189f, 0.302471906f, 1.09501922f,  -0.0643597692f};
    one_node t;
    in_spec onnx_in[2] = {F32_IN("x", SHAPE(3, 4, 5), x), F32_IN("slope", SHAPE(5), slope)};
    one_node_init(&t, "PRelu", 2, onnx_in);
    expect_f32("onnx test_prelu_broadcast", &t, y, 60, 1e-7);

    /* slope shapes that broadcast to X (2, 3, 4, 5): per channel as PyTorch exports it, per last
     * dim, one value, the full shape, and a middle pair */
    const kn_shape x_shape = SHAPE(2, 3, 4, 5);
    const kn_shape slopes[] = {DIMS(3, 1, 1),    DIMS(5),    DIMS(1),
                               DIMS(2, 3, 4, 5), DIMS(4, 1), SCALAR};
    for (int s = 0; s < COUNT(slopes); s++) {
        char sx[64], what[96];
        snprintf(what, sizeof what, "PRelu X (2, 3, 4, 5) slope %s",
                 kn_shape_str(&slopes[s], sx, sizeof sx));
        in_spec ins[2] = {PARAM_IN("x", x_shape), PARAM_IN("slope", slopes[s])};
        one_node_init(&t, "PRelu", 2, ins);
        fill_away_from_zero(input_data(&t, 0), input_numel(&t, 0), 60 + (uint64_t)s, 0.05f, 2.0f);
        fill_uniform(input_data(&t, 1), input_numel(&t, 1), 70 + (uint64_t)s, -0.5f, 1.5f);
        float want[120];
        prelu_reference(input_data(&t, 0), &x_shape, input_data(&t, 1), &slopes[s], want);
        kn_tensor out = forward_ok(what, &t);
        double diff = out.data ? max_abs_diff(kn_f32(&out), want, 120) : INFINITY;
        printf("%-58s max |y - loop| = %.3g\n", what, diff);
        CHECK(diff == 0);
        free(out.data);
        check_gradients(what, &t, 0);
        if (s == 0)
            check_backward_accumulates(what, &t);
        kn_graph_free(&t.g);
    }

    in_spec bad[2] = {F32_IN("x", SHAPE(3, 5), NULL), F32_IN("slope", SHAPE(4), NULL)};
    one_node_init(&t, "PRelu", 2, bad);
    expect_error("PRelu X (3, 5) slope (4)", &t, KILN_ERR_SHAPE, "(4)", false);
    in_spec wider[2] = {F32_IN("x", SHAPE(3, 5), NULL), F32_IN("slope", SHAPE(2, 3, 5), NULL)};
    one_node_init(&t, "PRelu", 2, wider);
    expect_error("PRelu X (3, 5) slope (2, 3, 5): not unidirectional", &t, KILN_ERR_SHAPE,
                 "(2, 3, 5)", false);
}

/* ---- integer Add, Sub, Mul, Div ---- */

static void binary_ints_node(one_node *t, const char *op, kn_dtype dtype, kn_shape a_shape,
                             const void *a, kn_shape b_shape, const void *b) {
    in_spec ins[2] = {TYPED_IN("a", dtype, a_shape, a), TYPED_IN("b", dtype, b_shape, b)};
    one_node_init(t, op, 2, ins);
}

static void test_integer_arithmetic(void) {
    one_node t;
    /* Division truncates toward zero, in every sign combination; INT64_MIN / -1 wraps */
    const int64_t a[] = {-7, 7, -7, 7, INT64_MIN, INT64_MAX, 6, 0};
    const int64_t b[] = {2, -2, -2, 2, -1, 1, 3, 5};
    binary_ints_node(&t, "Div", KN_I64, SHAPE(8), a, SHAPE(8), b);
    expect_ints("Div i64 (truncating)", &t, KN_I64,
                (const int64_t[]){-3, -3, 3, 3, INT64_MIN, INT64_MAX, 2, 0}, 8);
    binary_ints_node(&t, "Add", KN_I64, SHAPE(8), a, SHAPE(8), b);
    expect_ints("Add i64 (INT64_MAX + 1 wraps)", &t, KN_I64,
                (const int64_t[]){-5, 5, -9, 9, INT64_MAX, INT64_MIN, 9, 5}, 8);
    binary_ints_node(&t, "Sub", KN_I64, SHAPE(8), a, SHAPE(8), b);
    expect_ints("Sub i64", &t, KN_I64,
                (const int64_t[]){-9, 9, -5, 5, INT64_MIN + 1, INT64_MAX - 1, 3, -5}, 8);
    binary_ints_node(&t, "Mul", KN_I64, SHAPE(8), a, SHAPE(8), b);
    expect_ints("Mul i64", &t, KN_I64,
                (const int64_t[]){-14, -14, 14, 14, INT64_MIN, INT64_MAX, 18, 0}, 8);

    /* i32 with broadcasting against loops computed in int64 */
    const kn_shape as = SHAPE(4, 1, 3), bs = SHAPE(5, 1);
    int32_t a32[12], b32[5];
    fill_ints(a32, KN_I32, 12, 1, -1000, 1000);
    fill_ints(b32, KN_I32, 5, 2, -9, 9);
    for (int i = 0; i < 5; i++)
        b32[i] = b32[i] ? b32[i] : 4;
    const char *ops[] = {"Add", "Sub", "Mul", "Div"};
    kn_shape ys = bcast_shape(&as, &bs);
    for (int o = 0; o < 4; o++) {
        int64_t want[60];
        for (int64_t i = 0; i < kn_shape_numel(&ys); i++) {
            int64_t u = a32[bcast_index(&as, &ys, i)], v = b32[bcast_index(&bs, &ys, i)];
            want[i] = o == 0 ? u + v : o == 1 ? u - v : o == 2 ? u * v : u / v;
        }
        char what[64];
        snprintf(what, sizeof what, "%s i32 (4, 1, 3) with (5, 1)", ops[o]);
        binary_ints_node(&t, ops[o], KN_I32, as, a32, bs, b32);
        expect_ints(what, &t, KN_I32, want, kn_shape_numel(&ys));
    }
    const int32_t wrap_a[] = {INT32_MAX, INT32_MIN, 65536}, wrap_b[] = {1, -1, 65536};
    binary_ints_node(&t, "Add", KN_I32, SHAPE(3), wrap_a, SHAPE(3), wrap_b);
    expect_ints("Add i32 wraps", &t, KN_I32, (const int64_t[]){INT32_MIN, INT32_MAX, 131072}, 3);
    binary_ints_node(&t, "Mul", KN_I32, SHAPE(3), wrap_a, SHAPE(3), wrap_b);
    expect_ints("Mul i32 wraps", &t, KN_I32, (const int64_t[]){INT32_MAX, INT32_MIN, 0}, 3);
    binary_ints_node(&t, "Div", KN_I32, SHAPE(3), wrap_a, SHAPE(3), wrap_b);
    expect_ints("Div i32 INT32_MIN / -1 wraps", &t, KN_I32,
                (const int64_t[]){INT32_MAX, INT32_MIN, 1}, 3);
    /* u8 as in ONNX's test_add_uint8 and friends: arithmetic modulo 256 */
    const uint8_t u8_a[] = {200, 5, 16, 200}, u8_b[] = {100, 10, 17, 7};
    const char *u8_ops[] = {"Add", "Sub", "Mul", "Div"};
    const int64_t u8_want[4][4] = {
        {44, 15, 33, 207}, {100, 251, 255, 193}, {32, 50, 16, 120}, {2, 0, 0, 28}};
    for (int o = 0; o < 4; o++) {
        char what[32];
        snprintf(what, sizeof what, "%s u8", u8_ops[o]);
        binary_ints_node(&t, u8_ops[o], KN_U8, SHAPE(4), u8_a, SHAPE(4), u8_b);
        expect_ints(what, &t, KN_U8, u8_want[o], 4);
    }
    const int8_t i8_a[] = {-128, 100, -7}, i8_b[] = {-1, 100, 2};
    binary_ints_node(&t, "Div", KN_I8, SHAPE(3), i8_a, SHAPE(3), i8_b);
    expect_ints("Div i8 (-128 / -1 wraps)", &t, KN_I8, (const int64_t[]){-128, 1, -3}, 3);
    binary_ints_node(&t, "Add", KN_I8, SHAPE(3), i8_a, SHAPE(3), i8_b);
    expect_ints("Add i8 wraps", &t, KN_I8, (const int64_t[]){127, -56, -5}, 3);

    /* a zero divisor fails at run time; float division by zero is IEEE's business */
    const int32_t zero_b[] = {3, 0};
    binary_ints_node(&t, "Div", KN_I32, SHAPE(2, 2), a32, SHAPE(2), zero_b);
    expect_error("Div i32 by a tensor holding 0", &t, KILN_ERR_NUMERIC, "division by zero", true);
    in_spec f32_zero[2] = {F32_IN("a", SHAPE(2), ((const float[]){1, -1})),
                           F32_IN("b", SCALAR, &(float){0})};
    one_node_init(&t, "Div", 2, f32_zero);
    expect_f32("Div f32 by 0", &t, (const float[]){INFINITY, -INFINITY}, 2, 0);

    binary_ints_node(&t, "Add", KN_I64, SHAPE(2, 3), a, SHAPE(4), b);
    expect_error("Add i64 (2, 3) + (4)", &t, KILN_ERR_SHAPE, "(2, 3) and (4)", false);
    in_spec mixed[2] = {TYPED_IN("a", KN_I32, SHAPE(3), NULL),
                        TYPED_IN("b", KN_I64, SHAPE(3), NULL)};
    one_node_init(&t, "Add", 2, mixed);
    expect_error("Add i32 + i64", &t, KILN_ERR_UNSUPPORTED, "differ in dtype", false);
    in_spec bools[2] = {TYPED_IN("a", KN_BOOL, SHAPE(3), NULL),
                        TYPED_IN("b", KN_BOOL, SHAPE(3), NULL)};
    one_node_init(&t, "Mul", 2, bools);
    expect_error("Mul bool * bool", &t, KILN_ERR_UNSUPPORTED, "bool", false);
}

/* ---- Pow ---- */

static void test_pow(void) {
    one_node t;
    /* ONNX node tests test_pow_bcast_array, test_pow_bcast_scalar,
     * test_pow_types_float32_int64 and test_pow_types_float32_int32 */
    in_spec bcast[2] = {F32_IN("x", SHAPE(2, 3), ((const float[]){1, 2, 3, 4, 5, 6})),
                        F32_IN("y", SHAPE(3), ((const float[]){1, 2, 3}))};
    one_node_init(&t, "Pow", 2, bcast);
    expect_f32("onnx test_pow_bcast_array", &t, (const float[]){1, 4, 27, 4, 25, 216}, 6, 0);
    in_spec scalar[2] = {F32_IN("x", SHAPE(3), ((const float[]){1, 2, 3})),
                         F32_IN("y", SCALAR, &(float){2})};
    one_node_init(&t, "Pow", 2, scalar);
    expect_f32("onnx test_pow_bcast_scalar", &t, (const float[]){1, 4, 9}, 3, 0);
    in_spec i64_exp[2] = {F32_IN("x", SHAPE(3), ((const float[]){1, 2, 3})),
                          TYPED_IN("y", KN_I64, SHAPE(3), ((const int64_t[]){4, 5, 6}))};
    one_node_init(&t, "Pow", 2, i64_exp);
    expect_f32("onnx test_pow_types_float32_int64", &t, (const float[]){1, 32, 729}, 3, 0);
    in_spec i32_exp[2] = {F32_IN("x", SHAPE(3), ((const float[]){1, 2, 3})),
                          TYPED_IN("y", KN_I32, SHAPE(3), ((const int32_t[]){4, 5, 6}))};
    one_node_init(&t, "Pow", 2, i32_exp);
    expect_f32("onnx test_pow_types_float32_int32", &t, (const float[]){1, 32, 729}, 3, 0);
    /* negative bases: integer exponents keep the sign, a fractional one gives NaN */
    in_spec negative[2] = {F32_IN("x", SHAPE(4), ((const float[]){-2, -2, -8, 0})),
                           TYPED_IN("y", KN_I64, SHAPE(4), ((const int64_t[]){3, -2, 2, 0}))};
    one_node_init(&t, "Pow", 2, negative);
    expect_f32("Pow f32 ^ i64 with negative bases", &t, (const float[]){-8, 0.25f, 64, 1}, 4, 0);
    in_spec fractional[2] = {F32_IN("x", SHAPE(2), ((const float[]){-8, 8})),
                             F32_IN("y", SCALAR, &(float){1.0f / 3})};
    one_node_init(&t, "Pow", 2, fractional);
    expect_f32("Pow (-8, 8) ^ (1/3)", &t, (const float[]){NAN, 2}, 2, 1e-6);

    /* broadcast against powf in a loop */
    const kn_shape xs = SHAPE(2, 3, 4), es = SHAPE(3, 1);
    in_spec rnd[2] = {PARAM_IN("x", xs), PARAM_IN("e", es)};
    one_node_init(&t, "Pow", 2, rnd);
    fill_uniform(input_data(&t, 0), 24, 5, 0.5f, 2.0f);
    fill_uniform(input_data(&t, 1), 3, 6, -2.0f, 2.5f);
    float want[24];
    for (int i = 0; i < 24; i++)
        want[i] = powf(((float *)input_data(&t, 0))[i],
                       ((float *)input_data(&t, 1))[bcast_index(&es, &xs, i)]);
    kn_tensor y = forward_ok("Pow", &t);
    double diff = y.data ? max_abs_diff(kn_f32(&y), want, 24) : INFINITY;
    printf("%-58s max |y - powf| = %.3g\n", "Pow (2, 3, 4) ^ (3, 1)", diff);
    CHECK(diff == 0);
    free(y.data);
    kn_graph_free(&t.g);

    /* gradients of base and exponent, broadcast both ways */
    const kn_shape grad_shapes[][2] = {{DIMS(2, 3, 4), DIMS(4)},
                                       {DIMS(3, 1), DIMS(1, 4)},
                                       {DIMS(5), SCALAR},
                                       {SCALAR, DIMS(2, 3)}};
    for (int c = 0; c < COUNT(grad_shapes); c++) {
        in_spec ins[2] = {PARAM_IN("x", grad_shapes[c][0]), PARAM_IN("e", grad_shapes[c][1])};
        one_node_init(&t, "Pow", 2, ins);
        fill_uniform(input_data(&t, 0), input_numel(&t, 0), 80 + (uint64_t)c, 0.5f, 2.0f);
        fill_uniform(input_data(&t, 1), input_numel(&t, 1), 90 + (uint64_t)c, -2.0f, 3.0f);
        char sa[48], sb[48], what[128];
        snprintf(what, sizeof what, "Pow %s ^ %s", kn_shape_str(&grad_shapes[c][0], sa, sizeof sa),
                 kn_shape_str(&grad_shapes[c][1], sb, sizeof sb));
        check_gradients(what, &t, 0);
        if (c == 0)
            check_backward_accumulates(what, &t);
        kn_graph_free(&t.g);
    }
    /* an integer exponent: the base's gradient only, negative bases included */
    in_spec int_exp[2] = {PARAM_IN("x", SHAPE(2, 3)),
                          TYPED_IN("e", KN_I64, SHAPE(3), ((const int64_t[]){-2, 1, 3}))};
    one_node_init(&t, "Pow", 2, int_exp);
    fill_away_from_zero(input_data(&t, 0), 6, 12, 0.5f, 2.0f);
    check_gradients("Pow (2, 3) ^ i64 (3)", &t, 1);
    kn_graph_free(&t.g);

    /* at base 0: PyTorch's conventions, 0 rather than NaN or inf */
    in_spec zero[2] = {PARAM_IN("x", SHAPE(3)), PARAM_IN("e", SHAPE(3))};
    one_node_init(&t, "Pow", 2, zero);
    memcpy(input_data(&t, 1), (const float[]){2, 0, 0.5f}, sizeof(float) * 3);
    kn_tensor y0 = forward_ok("Pow at 0", &t);
    float dy[3] = {1, 1, 1}, dx[3] = {0}, de[3] = {0};
    kn_tensor x_t = {SHAPE(3), KN_F32, input_data(&t, 0)},
              e_t = {SHAPE(3), KN_F32, input_data(&t, 1)};
    kn_tensor dy_t = {SHAPE(3), KN_F32, dy}, dx_t = {SHAPE(3), KN_F32, dx},
              de_t = {SHAPE(3), KN_F32, de};
    kn_tensor *in_p[2] = {&x_t, &e_t}, *out_p[1] = {&y0}, *din_p[2] = {&dx_t, &de_t};
    const kn_tensor *dout_p[1] = {&dy_t};
    kn_op_ctx ctx = {0};
    kn_op_call call = {
        .node = &t.g.nodes[0], .in = in_p, .out = out_p, .dout = dout_p, .din = din_p, .ctx = &ctx};
    CHECK_OK(t.g.nodes[0].op->backward(&call));
    printf("Pow at x = 0, e = (2, 0, 0.5): y (%g, %g, %g) dx (%g, %g, %g) de (%g, %g, %g)\n",
           kn_f32(&y0)[0], kn_f32(&y0)[1], kn_f32(&y0)[2], dx[0], dx[1], dx[2], de[0], de[1],
           de[2]);
    CHECK(kn_f32(&y0)[0] == 0 && kn_f32(&y0)[1] == 1 && kn_f32(&y0)[2] == 0);
    CHECK(dx[0] == 0 && dx[1] == 0 && isinf(dx[2]) && de[0] == 0 && de[1] == 0 && de[2] == 0);
    kn_op_ctx_release(&ctx);
    free(y0.data);
    kn_graph_free(&t.g);

    in_spec u8_base[2] = {TYPED_IN("x", KN_U8, SHAPE(3), NULL),
                          TYPED_IN("y", KN_I64, SHAPE(3), NULL)};
    one_node_init(&t, "Pow", 2, u8_base);
    expect_error("Pow u8 ^ i64", &t, KILN_ERR_UNSUPPORTED, "base", false);
    in_spec bool_exp[2] = {F32_IN("x", SHAPE(3), NULL), TYPED_IN("y", KN_BOOL, SHAPE(3), NULL)};
    one_node_init(&t, "Pow", 2, bool_exp);
    expect_error("Pow f32 ^ bool", &t, KILN_ERR_UNSUPPORTED, "bool", false);
}

/* ---- Equal, Less, Greater; And, Or, Not ---- */

static void test_comparisons(void) {
    const kn_dtype dtypes[] = {KN_F32, KN_I64, KN_I32, KN_U8, KN_I8, KN_BOOL};
    const char *ops[] = {"Equal", "Less", "Greater"};
    const kn_shape as = SHAPE(3, 4, 5), bs = SHAPE(4, 1);
    one_node t;
    for (int d = 0; d < COUNT(dtypes); d++) {
        int64_t a[60], b[4]; /* room for 8-byte elements */
        bool is_bool = dtypes[d] == KN_BOOL;
        fill_ints(a, is_bool ? KN_U8 : dtypes[d], 60, 20 + (uint64_t)d, 0, is_bool ? 1 : 4);
        fill_ints(b, is_bool ? KN_U8 : dtypes[d], 4, 30 + (uint64_t)d, 0, is_bool ? 1 : 4);
        for (int o = 0; o < 3; o++) {
            if (is_bool && o > 0)
                continue;
            int64_t want[60];
            for (int i = 0; i < 60; i++) {
                int64_t ia = bcast_index(&as, &as, i), ib = bcast_index(&bs, &as, i);
                double u =
                    dtypes[d] == KN_F32 ? ((float *)a)[ia] : (double)load_int(a, dtypes[d], ia);
                double v =
                    dtypes[d] == KN_F32 ? ((float *)b)[ib] : (double)load_int(b, dtypes[d], ib);
                want[i] = o == 0 ? u == v : o == 1 ? u < v : u > v;
            }
            char what[64];
            snprintf(what, sizeof what, "%s %s (3, 4, 5) with (4, 1)", ops[o],
                     kn_dtype_name(dtypes[d]));
            in_spec ins[2] = {TYPED_IN("a", dtypes[d], as, a), TYPED_IN("b", dtypes[d], bs, b)};
            one_node_init(&t, ops[o], 2, ins);
            expect_ints(what, &t, KN_BOOL, want, 60);
        }
    }
    /* negative integers order as signed, and NaN compares false */
    in_spec signed_in[2] = {TYPED_IN("a", KN_I8, SHAPE(2), ((const int8_t[]){-1, 5})),
                            TYPED_IN("b", KN_I8, SHAPE(2), ((const int8_t[]){1, -5}))};
    one_node_init(&t, "Less", 2, signed_in);
    expect_ints("Less i8 (-1, 5) < (1, -5)", &t, KN_BOOL, (const int64_t[]){1, 0}, 2);
    in_spec nan_in[2] = {F32_IN("a", SHAPE(3), ((const float[]){NAN, 1, NAN})),
                         F32_IN("b", SHAPE(3), ((const float[]){NAN, NAN, 1}))};
    const char *nan_ops[] = {"Equal", "Less", "Greater"};
    for (int o = 0; o < 3; o++) {
        one_node_init(&t, nan_ops[o], 2, nan_in);
        expect_ints(nan_ops[o], &t, KN_BOOL, (const int64_t[]){0, 0, 0}, 3);
    }

    in_spec bool_less[2] = {TYPED_IN("a", KN_BOOL, SHAPE(2), NULL),
                            TYPED_IN("b", KN_BOOL, SHAPE(2), NULL)};
    one_node_init(&t, "Less", 2, bool_less);
    expect_error("Less bool < bool", &t, KILN_ERR_UNSUPPORTED, "bool", false);
    in_spec mixed[2] = {F32_IN("a", SHAPE(2), NULL), TYPED_IN("b", KN_I32, SHAPE(2), NULL)};
    one_node_init(&t, "Equal", 2, mixed);
    expect_error("Equal f32 == i32", &t, KILN_ERR_UNSUPPORTED, "differ in dtype", false);
}

static void test_logic(void) {
    /* as ONNX's test_and_bcast4v3d / test_or_bcast3v1d: (3, 4) with (4) */
    uint8_t a[12], b[4];
    fill_ints(a, KN_U8, 12, 1, 0, 1);
    fill_ints(b, KN_U8, 4, 2, 0, 1);
    const kn_shape as = SHAPE(3, 4), bs = SHAPE(4);
    int64_t want_and[12], want_or[12], want_not[12];
    for (int i = 0; i < 12; i++) {
        want_and[i] = a[i] && b[i % 4];
        want_or[i] = a[i] || b[i % 4];
        want_not[i] = !a[i];
    }
    one_node t;
    in_spec ins[2] = {TYPED_IN("a", KN_BOOL, as, a), TYPED_IN("b", KN_BOOL, bs, b)};
    one_node_init(&t, "And", 2, ins);
    expect_ints("And bool (3, 4) with (4)", &t, KN_BOOL, want_and, 12);
    one_node_init(&t, "Or", 2, ins);
    expect_ints("Or bool (3, 4) with (4)", &t, KN_BOOL, want_or, 12);
    one_node_init(&t, "Not", 1, ins);
    expect_ints("Not bool (3, 4)", &t, KN_BOOL, want_not, 12);

    in_spec floats[2] = {F32_IN("a", SHAPE(2), NULL), F32_IN("b", SHAPE(2), NULL)};
    one_node_init(&t, "And", 2, floats);
    expect_error("And f32", &t, KILN_ERR_UNSUPPORTED, "bool", false);
    one_node_init(&t, "Not", 1, floats);
    expect_error("Not f32", &t, KILN_ERR_UNSUPPORTED, "bool", false);
}

/* ---- Where ---- */

static void test_where(void) {
    one_node t;
    /* ONNX node tests test_where_example and test_where_long_example */
    const uint8_t cond[] = {1, 0, 1, 1};
    in_spec f32_in[3] = {TYPED_IN("c", KN_BOOL, SHAPE(2, 2), cond),
                         F32_IN("x", SHAPE(2, 2), ((const float[]){1, 2, 3, 4})),
                         F32_IN("y", SHAPE(2, 2), ((const float[]){9, 8, 7, 6}))};
    one_node_init(&t, "Where", 3, f32_in);
    expect_f32("onnx test_where_example", &t, (const float[]){1, 8, 3, 4}, 4, 0);
    in_spec i64_in[3] = {TYPED_IN("c", KN_BOOL, SHAPE(2, 2), cond),
                         TYPED_IN("x", KN_I64, SHAPE(2, 2), ((const int64_t[]){1, 2, 3, 4})),
                         TYPED_IN("y", KN_I64, SHAPE(2, 2), ((const int64_t[]){9, 8, 7, 6}))};
    one_node_init(&t, "Where", 3, i64_in);
    expect_ints("onnx test_where_long_example", &t, KN_I64, (const int64_t[]){1, 8, 3, 4}, 4);

    /* all three broadcast: condition (2, 1, 4), X (3, 1), Y (4) -> (2, 3, 4), in several dtypes */
    const kn_shape cs = SHAPE(2, 1, 4), xs = SHAPE(3, 1), ys = SHAPE(4), out = SHAPE(2, 3, 4);
    uint8_t c[8];
    fill_ints(c, KN_U8, 8, 3, 0, 1);
    const kn_dtype dtypes[] = {KN_F32, KN_I64, KN_I32, KN_U8, KN_I8, KN_BOOL};
    for (int d = 0; d < COUNT(dtypes); d++) {
        int64_t x[3], y[4], want[24];
        kn_dtype fill_as = dtypes[d] == KN_BOOL ? KN_U8 : dtypes[d];
        fill_ints(x, fill_as, 3, 4 + (uint64_t)d, dtypes[d] == KN_BOOL ? 0 : -50,
                  dtypes[d] == KN_BOOL ? 1 : 50);
        fill_ints(y, fill_as, 4, 5 + (uint64_t)d, dtypes[d] == KN_BOOL ? 0 : -50,
                  dtypes[d] == KN_BOOL ? 1 : 50);
        for (int i = 0; i < 24; i++) {
            bool take_x = c[bcast_index(&cs, &out, i)];
            const void *src = take_x ? (const void *)x : (const void *)y;
            int64_t at = bcast_index(take_x ? &xs : &ys, &out, i);
            want[i] = dtypes[d] == KN_F32 ? (int64_t)((const float *)src)[at]
                                          : load_int(src, dtypes[d], at);
        }
        in_spec ins[3] = {TYPED_IN("c", KN_BOOL, cs, c), TYPED_IN("x", dtypes[d], xs, x),
                          TYPED_IN("y", dtypes[d], ys, y)};
        one_node_init(&t, "Where", 3, ins);
        char what[64];
        snprintf(what, sizeof what, "Where %s: c (2, 1, 4), x (3, 1), y (4)",
                 kn_dtype_name(dtypes[d]));
        if (dtypes[d] == KN_F32) {
            float want_f[24];
            for (int i = 0; i < 24; i++)
                want_f[i] = (float)want[i];
            expect_f32(what, &t, want_f, 24, 0);
        } else {
            expect_ints(what, &t, dtypes[d], want, 24);
        }
    }

    /* gradients of X and Y (the condition has none) */
    const kn_shape grad_shapes[][3] = {{DIMS(2, 3, 4), DIMS(2, 3, 4), DIMS(2, 3, 4)},
                                       {DIMS(3, 1), DIMS(1, 4), DIMS(1)},
                                       {DIMS(4), DIMS(2, 3, 4), DIMS(3, 1)},
                                       {SCALAR, DIMS(2, 5), DIMS(5)}};
    for (int g = 0; g < COUNT(grad_shapes); g++) {
        in_spec ins[3] = {TYPED_IN("c", KN_BOOL, grad_shapes[g][0], NULL),
                          PARAM_IN("x", grad_shapes[g][1]), PARAM_IN("y", grad_shapes[g][2])};
        one_node_init(&t, "Where", 3, ins);
        fill_ints(input_data(&t, 0), KN_U8, input_numel(&t, 0), 50 + (uint64_t)g, 0, 1);
        opcheck_fill_uniform(&t.g, 60 + (uint64_t)g, -2, 2);
        char s0[40], s1[40], s2[40], what[160];
        snprintf(what, sizeof what, "Where c %s, x %s, y %s",
                 kn_shape_str(&grad_shapes[g][0], s0, 40), kn_shape_str(&grad_shapes[g][1], s1, 40),
                 kn_shape_str(&grad_shapes[g][2], s2, 40));
        check_gradients(what, &t, 0);
        if (g == 1)
            check_backward_accumulates(what, &t);
        kn_graph_free(&t.g);
    }

    in_spec not_bool[3] = {F32_IN("c", SHAPE(2), NULL), F32_IN("x", SHAPE(2), NULL),
                           F32_IN("y", SHAPE(2), NULL)};
    one_node_init(&t, "Where", 3, not_bool);
    expect_error("Where with an f32 condition", &t, KILN_ERR_UNSUPPORTED, "condition", false);
    in_spec mixed[3] = {TYPED_IN("c", KN_BOOL, SHAPE(2), NULL), F32_IN("x", SHAPE(2), NULL),
                        TYPED_IN("y", KN_I64, SHAPE(2), NULL)};
    one_node_init(&t, "Where", 3, mixed);
    expect_error("Where f32 / i64", &t, KILN_ERR_UNSUPPORTED, "differ in dtype", false);
    in_spec unfit[3] = {TYPED_IN("c", KN_BOOL, SHAPE(3), NULL), F32_IN("x", SHAPE(2, 1), NULL),
                        F32_IN("y", SHAPE(4, 1), NULL)};
    one_node_init(&t, "Where", 3, unfit);
    expect_error("Where c (3), x (2, 1), y (4, 1)", &t, KILN_ERR_SHAPE, "do not broadcast", false);
}

/* ---- Max, Min, Sum, Mean ---- */

static void test_variadic_values(void) {
    one_node t;
    /* ONNX node tests test_max_example, test_min_example, test_sum_example, test_mean_example,
     * test_max_one_input */
    const float d0[] = {3, 2, 1}, d1[] = {1, 4, 4}, d2_max[] = {2, 5, 3}, d2_min[] = {2, 5, 0};
    const float s0[] = {3, 0, 2}, s1[] = {1, 3, 4}, s2[] = {2, 6, 6};
    in_spec max_in[3] = {F32_IN("d0", SHAPE(3), d0), F32_IN("d1", SHAPE(3), d1),
                         F32_IN("d2", SHAPE(3), d2_max)};
    one_node_init(&t, "Max", 3, max_in);
    expect_f32("onnx test_max_example", &t, (const float[]){3, 5, 4}, 3, 0);
    in_spec min_in[3] = {F32_IN("d0", SHAPE(3), d0), F32_IN("d1", SHAPE(3), d1),
                         F32_IN("d2", SHAPE(3), d2_min)};
    one_node_init(&t, "Min", 3, min_in);
    expect_f32("onnx test_min_example", &t, (const float[]){1, 2, 0}, 3, 0);
    in_spec sum_in[3] = {F32_IN("d0", SHAPE(3), s0), F32_IN("d1", SHAPE(3), s1),
                         F32_IN("d2", SHAPE(3), s2)};
    one_node_init(&t, "Sum", 3, sum_in);
    expect_f32("onnx test_sum_example", &t, (const float[]){6, 9, 12}, 3, 0);
    one_node_init(&t, "Mean", 3, sum_in);
    expect_f32("onnx test_mean_example", &t, (const float[]){2, 3, 4}, 3, 0);
    one_node_init(&t, "Max", 1, max_in);
    expect_f32("onnx test_max_one_input", &t, d0, 3, 0);

    /* NaN wins Max and Min wherever it sits */
    in_spec nan_in[2] = {F32_IN("a", SHAPE(3), ((const float[]){NAN, 1, 2})),
                         F32_IN("b", SHAPE(3), ((const float[]){1, NAN, 0}))};
    one_node_init(&t, "Max", 2, nan_in);
    expect_f32("Max with NaN", &t, (const float[]){NAN, NAN, 2}, 3, 0);
    one_node_init(&t, "Min", 2, nan_in);
    expect_f32("Min with NaN", &t, (const float[]){NAN, NAN, 0}, 3, 0);

    /* three inputs broadcast together, against loops, f32 and (Max, Min) integers */
    const kn_shape shapes[3] = {DIMS(2, 1, 4), DIMS(3, 1), DIMS(4)}, out = SHAPE(2, 3, 4);
    const char *ops[] = {"Max", "Min", "Sum", "Mean"};
    const kn_dtype dtypes[] = {KN_F32, KN_I64, KN_I32, KN_U8, KN_I8};
    for (int d = 0; d < COUNT(dtypes); d++) {
        int64_t data[3][8];
        for (int k = 0; k < 3; k++) {
            if (dtypes[d] == KN_F32)
                fill_uniform((float *)data[k], kn_shape_numel(&shapes[k]), 7 + (uint64_t)k, -3, 3);
            else
                fill_ints(data[k], dtypes[d], kn_shape_numel(&shapes[k]), 7 + (uint64_t)k,
                          dtypes[d] == KN_U8 ? 0 : -100, 100);
        }
        for (int o = 0; o < 4; o++) {
            if (dtypes[d] != KN_F32 && o >= 2)
                continue;
            double want[24];
            for (int i = 0; i < 24; i++) {
                double acc = 0;
                for (int k = 0; k < 3; k++) {
                    int64_t at = bcast_index(&shapes[k], &out, i);
                    double v = dtypes[d] == KN_F32 ? ((float *)data[k])[at]
                                                   : (double)load_int(data[k], dtypes[d], at);
                    acc = k == 0 ? v : o == 0 ? fmax(acc, v) : o == 1 ? fmin(acc, v) : acc + v;
                }
                want[i] = o == 3 ? acc / 3 : acc;
            }
            in_spec ins[3];
            for (int k = 0; k < 3; k++)
                ins[k] = TYPED_IN(k == 0 ? "a" : k == 1 ? "b" : "c", dtypes[d], shapes[k], data[k]);
            one_node_init(&t, ops[o], 3, ins);
            char what[80];
            snprintf(what, sizeof what, "%s %s of (2, 1, 4), (3, 1), (4)", ops[o],
                     kn_dtype_name(dtypes[d]));
            if (dtypes[d] == KN_F32) {
                float want_f[24];
                for (int i = 0; i < 24; i++)
                    want_f[i] = (float)want[i];
                expect_f32(what, &t, want_f, 24, 1e-6);
            } else {
                int64_t want_i[24];
                for (int i = 0; i < 24; i++)
                    want_i[i] = (int64_t)want[i];
                expect_ints(what, &t, dtypes[d], want_i, 24);
            }
        }
    }

    in_spec mixed[2] = {F32_IN("a", SHAPE(2), NULL), TYPED_IN("b", KN_I32, SHAPE(2), NULL)};
    one_node_init(&t, "Max", 2, mixed);
    expect_error("Max f32, i32", &t, KILN_ERR_UNSUPPORTED, "differ in dtype", false);
    in_spec ints[2] = {TYPED_IN("a", KN_I32, SHAPE(2), NULL),
                       TYPED_IN("b", KN_I32, SHAPE(2), NULL)};
    one_node_init(&t, "Sum", 2, ints);
    expect_error("Sum i32", &t, KILN_ERR_UNSUPPORTED, "i32", false);
    in_spec unfit[3] = {F32_IN("a", SHAPE(2, 3), NULL), F32_IN("b", SHAPE(3), NULL),
                        F32_IN("c", SHAPE(2), NULL)};
    one_node_init(&t, "Mean", 3, unfit);
    expect_error("Mean (2, 3), (3), (2)", &t, KILN_ERR_SHAPE, "do not broadcast", false);
}

/* Backward of a node of f32 PARAM inputs with dY all ones, into grads[k] for input k. */
static void backward_with_ones(one_node *t, float **grads) {
    kn_tensor y;
    CHECK_OK(run_forward(t, &y));
    kn_tensor in[4], din[4], *in_p[4], *din_p[4];
    for (int k = 0; k < t->n_in; k++) {
        kn_value *v = &t->g.values[t->in[k]];
        in[k] = (kn_tensor){v->shape, KN_F32, v->data};
        din[k] = (kn_tensor){v->shape, KN_F32, grads[k]};
        in_p[k] = &in[k];
        din_p[k] = &din[k];
    }
    float *ones = malloc(sizeof(float) * (size_t)(kn_numel(&y) + 1));
    for (int64_t i = 0; i < kn_numel(&y); i++)
        ones[i] = 1;
    kn_tensor dy = {y.shape, KN_F32, ones}, *out_p[1] = {&y};
    const kn_tensor *dout_p[1] = {&dy};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = &t->g.nodes[0], .in = in_p, .out = out_p, .dout = dout_p,
                       .din = din_p, .ctx = &ctx};
    CHECK_OK(t->g.nodes[0].op->backward(&call));
    kn_op_ctx_release(&ctx);
    free(ones);
    free(y.data);
}

static void test_variadic_gradients(void) {
    const kn_shape configs[][3] = {{DIMS(2, 1, 4), DIMS(3, 1), DIMS(4)},
                                   {DIMS(3, 4), DIMS(3, 4), {0}},
                                   {DIMS(2, 3), {0}, {0}},
                                   {SCALAR, DIMS(2, 3), DIMS(3)}};
    const int n_inputs[] = {3, 2, 1, 3};
    const char *ops[] = {"Max", "Min", "Sum", "Mean"};
    for (int c = 0; c < COUNT(configs); c++) {
        for (int o = 0; o < 4; o++) {
            in_spec ins[3];
            char what[160];
            int at = snprintf(what, sizeof what, "%s of", ops[o]);
            for (int k = 0; k < n_inputs[c]; k++) {
                char s[40];
                ins[k] = PARAM_IN(k == 0 ? "a" : k == 1 ? "b" : "c", configs[c][k]);
                at += snprintf(what + at, sizeof what - (size_t)at, " %s",
                               kn_shape_str(&configs[c][k], s, 40));
            }
            one_node t;
            one_node_init(&t, ops[o], n_inputs[c], ins);
            /* input k on a grid offset by k / 300: values of different inputs never come within a
             * finite-difference step of a tie */
            for (int k = 0; k < n_inputs[c]; k++)
                fill_distinct(input_data(&t, k), input_numel(&t, k), 10 * (uint64_t)c + (uint64_t)k,
                              (float)k / 300.0f);
            check_gradients(what, &t, 0);
            if (c == 0)
                check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }

    /* ties: the whole gradient goes to the first input holding the max (or min) */
    const float a[] = {1, 5, 2}, b[] = {1, 5, 7}, c[] = {0, 5, 7};
    const char *tie_ops[] = {"Max", "Min"};
    const float want[2][3][3] = {{{1, 1, 0}, {0, 0, 1}, {0, 0, 0}},
                                 {{0, 1, 1}, {0, 0, 0}, {1, 0, 0}}};
    for (int o = 0; o < 2; o++) {
        in_spec ins[3] = {{"a", KN_F32, DIMS(3), a, true},
                          {"b", KN_F32, DIMS(3), b, true},
                          {"c", KN_F32, DIMS(3), c, true}};
        one_node t;
        one_node_init(&t, tie_ops[o], 3, ins);
        float ga[3] = {0}, gb[3] = {0}, gc[3] = {0}, *grads[3] = {ga, gb, gc};
        backward_with_ones(&t, grads);
        double diff = 0;
        for (int k = 0; k < 3; k++)
            diff = fmax(diff, max_abs_diff(grads[k], want[o][k], 3));
        printf("%s of (1, 5, 2), (1, 5, 7), (0, 5, 7) with dY = 1: gradients (%g %g %g) (%g %g %g) "
               "(%g %g %g)\n",
               tie_ops[o], ga[0], ga[1], ga[2], gb[0], gb[1], gb[2], gc[0], gc[1], gc[2]);
        CHECK_MSG(diff == 0, "%s ties: max diff %.3g", tie_ops[o], diff);
        kn_graph_free(&t.g);
    }
}

/* ---- ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2 ---- */

typedef enum reduce_op { R_SUM, R_MAX, R_MIN, R_PROD, R_L2 } reduce_op;
static const char *const reduce_names[] = {"ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                                           "ReduceL2"};

/* A reduce node over x; axes as input 1 when axes_as_input (an empty list when n_axes is 0), else
 * as the attribute (absent when n_axes < 0). keepdims < 0 leaves the attribute at its default. */
static void reduce_node(one_node *t, reduce_op op, in_spec x, int n_axes, const int64_t *axes,
                        bool axes_as_input, int keepdims, bool noop) {
    in_spec ins[2] = {x, TYPED_IN("axes", KN_I64, SHAPE(n_axes > 0 ? n_axes : 0), axes)};
    one_node_init(t, reduce_names[op], axes_as_input ? 2 : 1, ins);
    if (!axes_as_input && n_axes >= 0)
        CHECK_OK(kn_node_set_ints(&t->g, t->node, "axes", n_axes, axes));
    if (keepdims >= 0)
        CHECK_OK(kn_node_set_int(&t->g, t->node, "keepdims", keepdims));
    if (noop)
        CHECK_OK(kn_node_set_int(&t->g, t->node, "noop_with_empty_axes", 1));
}

/* Naive reduction of x (shape xs) over the axes in mask, for every output element, in double. */
static void reduce_reference(reduce_op op, const void *x, kn_dtype dtype, const kn_shape *xs,
                             unsigned mask, double *y) {
    kn_shape kept = *xs; /* the output with keepdims */
    for (int k = 0; k < xs->ndim; k++)
        if ((mask >> k) & 1u)
            kept.d[k] = 1;
    int64_t n_y = kn_shape_numel(&kept);
    for (int64_t j = 0; j < n_y; j++)
        y[j] = op == R_MAX ? -INFINITY : op == R_MIN ? INFINITY : op == R_PROD ? 1 : 0;
    for (int64_t i = 0; i < kn_shape_numel(xs); i++) {
        int64_t j = 0, rest = i, stride = 1;
        for (int k = xs->ndim - 1; k >= 0; k--) {
            int64_t coord = rest % xs->d[k];
            rest /= xs->d[k];
            if (!((mask >> k) & 1u))
                j += coord * stride;
            stride *= kept.d[k];
        }
        double v = dtype == KN_F32 ? ((const float *)x)[i] : (double)load_int(x, dtype, i);
        switch (op) {
        case R_SUM: y[j] += v; break;
        case R_MAX: y[j] = fmax(y[j], v); break;
        case R_MIN: y[j] = fmin(y[j], v); break;
        case R_PROD: y[j] *= v; break;
        case R_L2: y[j] += v * v; break;
        }
    }
    if (op == R_L2)
        for (int64_t j = 0; j < n_y; j++)
            y[j] = sqrt(y[j]);
}

static void test_reduce_onnx_cases(void) {
    static const float data[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    static const float max_data[12] = {5, 1, 20, 2, 30, 1, 40, 2, 55, 1, 60, 2};
    const in_spec x = F32_IN("data", SHAPE(3, 2, 2), data),
                  xm = F32_IN("data", SHAPE(3, 2, 2), max_data);
    one_node t;
    reduce_node(&t, R_SUM, x, 1, (const int64_t[]){1}, true, 1, false);
    expect_f32("onnx test_reduce_sum_keepdims_example", &t, (const float[]){4, 6, 12, 14, 20, 22},
               6, 0);
    reduce_node(&t, R_SUM, x, 1, (const int64_t[]){1}, true, 0, false);
    expect_f32("onnx test_reduce_sum_do_not_keepdims_example", &t,
               (const float[]){4, 6, 12, 14, 20, 22}, 6, 0);
    reduce_node(&t, R_SUM, x, 1, (const int64_t[]){-2}, true, 1, false);
    expect_f32("onnx test_reduce_sum_negative_axes_keepdims_example", &t,
               (const float[]){4, 6, 12, 14, 20, 22}, 6, 0);
    reduce_node(&t, R_SUM, x, 0, NULL, true, 1, false);
    expect_f32("onnx test_reduce_sum_default_axes_keepdims_example", &t, (const float[]){78}, 1, 0);
    reduce_node(&t, R_SUM, x, 0, NULL, true, 1, true);
    expect_f32("onnx test_reduce_sum_empty_axes_input_noop_example", &t, data, 12, 0);
    reduce_node(&t, R_MAX, xm, 1, (const int64_t[]){-2}, false, 1, false);
    expect_f32("onnx test_reduce_max_negative_axes_keepdims_example", &t,
               (const float[]){20, 2, 40, 2, 60, 2}, 6, 0);
    reduce_node(&t, R_MAX, xm, 1, (const int64_t[]){1}, false, 0, false);
    expect_f32("onnx test_reduce_max_do_not_keepdims_example", &t,
               (const float[]){20, 2, 40, 2, 60, 2}, 6, 0);
    reduce_node(&t, R_MIN, xm, 1, (const int64_t[]){1}, false, 1, false);
    expect_f32("onnx test_reduce_min_keepdims_example", &t, (const float[]){5, 1, 30, 1, 55, 1}, 6,
               0);
    reduce_node(&t, R_PROD, x, 1, (const int64_t[]){1}, false, 1, false);
    expect_f32("onnx test_reduce_prod_keepdims_example", &t, (const float[]){3, 8, 35, 48, 99, 120},
               6, 0);
    reduce_node(&t, R_L2, x, 1, (const int64_t[]){2}, false, 1, false);
    expect_f32("onnx test_reduce_l2_keep_dims_example", &t,
               (const float[]){2.236068f, 5.0f, 7.81025f, 10.630146f, 13.453624f, 16.27882f}, 6,
               1e-6);

    /* output shapes with and without keepdims */
    reduce_node(&t, R_MAX, xm, 2, (const int64_t[]){0, 2}, false, 0, false);
    CHECK_OK(kn_graph_infer_shapes(&t.g));
    CHECK(kn_shape_equal(&t.g.values[t.out].shape, &SHAPE(2)));
    kn_graph_free(&t.g);
    reduce_node(&t, R_SUM, x, 2, (const int64_t[]){0, 2}, true, -1, false);
    CHECK_OK(kn_graph_infer_shapes(&t.g));
    CHECK(kn_shape_equal(&t.g.values[t.out].shape, &SHAPE(1, 2, 1)));
    kn_graph_free(&t.g);
}

/* Every op over a 4-D tensor for several axis sets, against the naive loop. */
static void test_reduce_values(void) {
    const kn_shape xs = SHAPE(3, 4, 5, 2);
    float x[120];
    fill_uniform(x, 120, 9, 0.6f, 1.6f); /* keeps products of 120 values in range */
    const struct {
        int n;
        int64_t axes[4];
    } axis_sets[] = {{1, {0}}, {2, {1, 3}}, {1, {-1}}, {3, {0, 2, 3}}, {2, {1, 2}}, {0, {0}}};
    for (int op = R_SUM; op <= R_L2; op++) {
        for (int s = 0; s < COUNT(axis_sets); s++) {
            for (int keepdims = 0; keepdims <= 1; keepdims++) {
                unsigned mask = 0;
                for (int i = 0; i < axis_sets[s].n; i++)
                    mask |= 1u << kn_axis_normalize(axis_sets[s].axes[i], 4);
                if (axis_sets[s].n == 0)
                    mask = 15;
                double want[120];
                reduce_reference((reduce_op)op, x, KN_F32, &xs, mask, want);
                float want_f[120];
                int64_t n_y = 1;
                for (int k = 0; k < 4; k++)
                    n_y *= (mask >> k) & 1u ? 1 : xs.d[k];
                double scale = 1; /* float rounding grows with the magnitude of the result */
                for (int64_t j = 0; j < n_y; j++) {
                    want_f[j] = (float)want[j];
                    scale = fmax(scale, fabs(want[j]));
                }
                one_node t;
                /* ReduceSum takes its axes as an input, the others as the attribute */
                reduce_node(&t, (reduce_op)op, F32_IN("x", xs, x), axis_sets[s].n,
                            axis_sets[s].axes, op == R_SUM, keepdims, false);
                char what[96];
                snprintf(what, sizeof what, "%s (3, 4, 5, 2) axes mask %x keepdims %d",
                         reduce_names[op], mask, keepdims);
                expect_f32(what, &t, want_f, n_y, (op == R_PROD ? 2e-5 : 2e-6) * scale);
            }
        }
    }

    /* integer ReduceMax / ReduceMin */
    const kn_dtype dtypes[] = {KN_I64, KN_I32, KN_U8, KN_I8};
    for (int d = 0; d < COUNT(dtypes); d++) {
        int64_t xi[120];
        fill_ints(xi, dtypes[d], 120, 11 + (uint64_t)d, dtypes[d] == KN_U8 ? 0 : -120, 120);
        for (int op = R_MAX; op <= R_MIN; op++) {
            double want[120];
            int64_t want_i[20];
            reduce_reference((reduce_op)op, xi, dtypes[d], &xs, 0x6, want); /* axes 1, 2 */
            for (int j = 0; j < 6; j++)
                want_i[j] = (int64_t)want[j];
            one_node t;
            reduce_node(&t, (reduce_op)op, TYPED_IN("x", dtypes[d], xs, xi), 2,
                        (const int64_t[]){1, 2}, false, 0, false);
            char what[64];
            snprintf(what, sizeof what, "%s %s axes (1, 2)", reduce_names[op],
                     kn_dtype_name(dtypes[d]));
            expect_ints(what, &t, dtypes[d], want_i, 6);
        }
    }

    /* empty reductions give the identity; NaN wins max and min */
    one_node t;
    reduce_node(&t, R_SUM, F32_IN("x", SHAPE(2, 0), NULL), 1, (const int64_t[]){1}, true, 0, false);
    expect_f32("ReduceSum over an empty axis", &t, (const float[]){0, 0}, 2, 0);
    reduce_node(&t, R_MAX, F32_IN("x", SHAPE(2, 0), NULL), 1, (const int64_t[]){1}, false, 0,
                false);
    expect_f32("ReduceMax over an empty axis", &t, (const float[]){-INFINITY, -INFINITY}, 2, 0);
    reduce_node(&t, R_MIN, TYPED_IN("x", KN_I8, SHAPE(0, 2), NULL), 1, (const int64_t[]){0}, false,
                0, false);
    expect_ints("ReduceMin i8 over an empty axis", &t, KN_I8, (const int64_t[]){127, 127}, 2);
    reduce_node(&t, R_MAX, F32_IN("x", SHAPE(4), ((const float[]){1, NAN, 3, 2})), 0, NULL, false,
                0, false);
    expect_f32("ReduceMax with NaN", &t, (const float[]){NAN}, 1, 0);

    /* large (threaded) reductions against the loop, and the same bits on a second run */
    enum { ROWS = 200, COLS = 700 };
    float *big = malloc(sizeof(float) * ROWS * COLS);
    double *want = malloc(sizeof(double) * ROWS * COLS);
    float *want_f = malloc(sizeof(float) * ROWS * COLS);
    fill_uniform(big, ROWS * COLS, 13, -1, 1);
    const kn_shape bs = SHAPE(ROWS, COLS);
    for (int op = R_SUM; op <= R_MIN; op++) {
        for (int axis = 0; axis < 2; axis++) {
            reduce_reference((reduce_op)op, big, KN_F32, &bs, 1u << axis, want);
            int64_t n_y = axis ? ROWS : COLS;
            for (int64_t j = 0; j < n_y; j++)
                want_f[j] = (float)want[j];
            one_node t1, t2;
            reduce_node(&t1, (reduce_op)op, F32_IN("x", bs, big), 1, (const int64_t[]){axis},
                        op == R_SUM, 0, false);
            reduce_node(&t2, (reduce_op)op, F32_IN("x", bs, big), 1, (const int64_t[]){axis},
                        op == R_SUM, 0, false);
            kn_tensor y1 = forward_ok("large reduce", &t1), y2 = forward_ok("large reduce", &t2);
            CHECK(y1.data && y2.data && memcmp(y1.data, y2.data, sizeof(float) * (size_t)n_y) == 0);
            free(y1.data);
            free(y2.data);
            kn_graph_free(&t2.g);
            char what[64];
            snprintf(what, sizeof what, "%s (%d, %d) axis %d", reduce_names[op], ROWS, COLS, axis);
            expect_f32(what, &t1, want_f, n_y, op == R_SUM ? 1e-4 : 0);
        }
    }
    free(big);
    free(want);
    free(want_f);
}

static void test_reduce_gradients(void) {
    const struct {
        kn_shape shape;
        int n;
        int64_t axes[3];
        int keepdims;
    } cases[] = {{DIMS(3, 4, 5), 1, {1}, 0},
                 {DIMS(3, 4, 5), 2, {0, 2}, 1},
                 {DIMS(3, 4, 5), 0, {0}, 1},
                 {DIMS(6, 7), 1, {-1}, 1},
                 {DIMS(2, 1, 3), 1, {1}, 0}};
    for (int op = R_SUM; op <= R_MIN; op++) {
        for (int c = 0; c < COUNT(cases); c++) {
            one_node t;
            reduce_node(&t, (reduce_op)op, PARAM_IN("x", cases[c].shape), cases[c].n, cases[c].axes,
                        op == R_SUM, cases[c].keepdims, false);
            fill_distinct(input_data(&t, 0), input_numel(&t, 0), 21 + (uint64_t)c, 0);
            char s[48], what[128];
            snprintf(what, sizeof what, "%s %s, %d axes, keepdims %d", reduce_names[op],
                     kn_shape_str(&cases[c].shape, s, sizeof s), cases[c].n, cases[c].keepdims);
            check_gradients(what, &t, 1);
            if (c == 0)
                check_backward_accumulates(what, &t);
            kn_graph_free(&t.g);
        }
    }

    /* ties: the gradient goes to the first maximal element in memory order */
    one_node t;
    const float tied[] = {1, 3, 3, 2, 0, 0};
    in_spec x = {"x", KN_F32, DIMS(2, 3), tied, true};
    reduce_node(&t, R_MAX, x, 1, (const int64_t[]){1}, false, 0, false);
    float g[6] = {0}, *grads[1] = {g};
    backward_with_ones(&t, grads);
    printf("ReduceMax over rows (1, 3, 3), (2, 0, 0) with dY = 1: dX = (%g %g %g), (%g %g %g)\n",
           g[0], g[1], g[2], g[3], g[4], g[5]);
    CHECK(g[0] == 0 && g[1] == 1 && g[2] == 0 && g[3] == 1 && g[4] == 0 && g[5] == 0);
    kn_graph_free(&t.g);
    reduce_node(&t, R_MIN, x, 1, (const int64_t[]){1}, false, 0, false);
    memset(g, 0, sizeof g);
    backward_with_ones(&t, grads);
    CHECK(g[0] == 1 && g[1] == 0 && g[2] == 0 && g[3] == 0 && g[4] == 1 && g[5] == 0);
    kn_graph_free(&t.g);
}

/* ReduceSum's declared workspace covers its partial sums: a context sized from it up front is not
 * grown (re-allocated) by the first run, so a session's first run allocates nothing. */
static void test_reduce_workspace(void) {
    static float x[4 * 300 * 70];
    for (int i = 0; i < COUNT(x); i++)
        x[i] = (float)(i % 13) - 6.0f;
    const int64_t axes_sets[][2] = {{1, 2}, {0, 2}};
    for (int s = 0; s < COUNT(axes_sets); s++) {
        one_node t;
        reduce_node(&t, R_SUM, F32_IN("x", SHAPE(4, 300, 70), x), 2, axes_sets[s], true, 0, false);
        CHECK_OK(kn_graph_infer_shapes(&t.g));
        const kn_node *n = &t.g.nodes[t.node];
        size_t declared = n->op->workspace ? n->op->workspace(&t.g, n) : 0;
        kn_op_ctx ctx = {0};
        void *sized = kn_op_scratch(&ctx, declared);
        size_t sized_bytes = ctx.scratch_bytes;
        kn_tensor in[2] = {{t.g.values[t.in[0]].shape, KN_F32, x},
                           {t.g.values[t.in[1]].shape, KN_I64, t.g.values[t.in[1]].data}};
        kn_tensor *in_p[2] = {&in[0], &in[1]};
        kn_value *yv = &t.g.values[t.out];
        kn_tensor y = {yv->shape, KN_F32, calloc((size_t)kn_shape_numel(&yv->shape), sizeof(float))};
        kn_tensor *out_p[1] = {&y};
        kn_op_call call = {.node = n, .in = in_p, .out = out_p, .ctx = &ctx};
        CHECK_OK(n->op->forward(&call));
        bool kept = ctx.scratch == sized && ctx.scratch_bytes == sized_bytes;
        printf("  ReduceSum (4, 300, 70) axes (%lld, %lld): workspace %zu bytes; the first run allocates "
               "nothing more: %s\n", (long long)axes_sets[s][0], (long long)axes_sets[s][1], declared,
               kept ? "yes" : "NO");
        CHECK(declared > 0 && kept);
        free(y.data);
        kn_op_ctx_release(&ctx);
        kn_graph_free(&t.g);
    }
}

static void test_reduce_errors(void) {
    one_node t;
    reduce_node(&t, R_SUM, F32_IN("x", SHAPE(2, 3), NULL), 1, (const int64_t[]){2}, true, 1, false);
    expect_error("ReduceSum axes (2) of (2, 3)", &t, KILN_ERR_INVALID_ARG, "out of range", false);
    reduce_node(&t, R_MAX, F32_IN("x", SHAPE(2, 3), NULL), 2, (const int64_t[]){1, -1}, false, 1,
                false);
    expect_error("ReduceMax axes (1, -1)", &t, KILN_ERR_INVALID_ARG, "repeated", false);
    reduce_node(&t, R_PROD, TYPED_IN("x", KN_I32, SHAPE(2, 3), NULL), 1, (const int64_t[]){1},
                false, 1, false);
    expect_error("ReduceProd of i32", &t, KILN_ERR_UNSUPPORTED, "i32", false);

    /* axes computed at run time: shape inference cannot know the output shape */
    kn_graph_init(&t.g);
    kn_shape xs = SHAPE(2, 3), as = SHAPE(1);
    t.n_in = 2;
    t.in[0] = test_add_value(&t.g, "x", KN_VALUE_INPUT, KN_F32, &xs);
    t.in[1] = test_add_value(&t.g, "axes", KN_VALUE_INPUT, KN_I64, &as);
    t.out = test_add_value(&t.g, "y", KN_VALUE_ACT, KN_F32, &SCALAR);
    t.node = test_add_node(&t.g, "ReduceSum", "node", 2, t.in, 1, &t.out);
    expect_error("ReduceSum with run-time axes", &t, KILN_ERR_UNSUPPORTED, "constant", false);
}

/* ---- ConvTranspose ---- */

typedef struct convt_case {
    const char *what;
    int64_t N, C, M, group, H, W, kH, kW;
    int64_t strides[2], dilations[2], pads[4], output_padding[2];
    int64_t output_shape[2]; /* 0: attribute absent */
    const char *auto_pad;    /* NULL: attribute absent */
    bool bias;
} convt_case;

/* Output size and the first output position kept, along one axis, from the ONNX spec's formulas. */
static void convt_reference_axis(const convt_case *c, int axis, int64_t in, int64_t kernel,
                                 int64_t *out, int64_t *begin) {
    int64_t s = c->strides[axis] ? c->strides[axis] : 1,
            d = c->dilations[axis] ? c->dilations[axis] : 1;
    int64_t full = s * (in - 1) + c->output_padding[axis] + (kernel - 1) * d + 1;
    bool same = c->auto_pad && strncmp(c->auto_pad, "SAME", 4) == 0;
    bool upper = c->auto_pad && strcmp(c->auto_pad, "SAME_UPPER") == 0;
    if (c->output_shape[axis] || same) {
        *out = c->output_shape[axis] ? c->output_shape[axis] : in * s;
        int64_t total = full - *out;
        *begin = total < 0 ? 0 : upper ? total / 2 : total - total / 2;
    } else {
        bool valid = c->auto_pad && strcmp(c->auto_pad, "VALID") == 0;
        *begin = valid ? 0 : c->pads[axis];
        *out = full - (valid ? 0 : c->pads[axis] + c->pads[axis + 2]);
    }
}

/* The direct scatter: every input pixel adds x * w onto the output pixels its kernel taps reach. */
static void convt_reference(const convt_case *c, const float *x, const float *w, const float *b,
                            float *y, int64_t OH, int64_t OW, int64_t top, int64_t left) {
    int64_t Cg = c->C / c->group, Mg = c->M / c->group;
    int64_t sh = c->strides[0] ? c->strides[0] : 1, sw = c->strides[1] ? c->strides[1] : 1;
    int64_t dh = c->dilations[0] ? c->dilations[0] : 1, dw = c->dilations[1] ? c->dilations[1] : 1;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t p = 0; p < OH * OW; p++)
                y[(n * c->M + m) * OH * OW + p] = b ? b[m] : 0;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t ch = 0; ch < c->C; ch++)
            for (int64_t ih = 0; ih < c->H; ih++)
                for (int64_t iw = 0; iw < c->W; iw++)
                    for (int64_t mg = 0; mg < Mg; mg++)
                        for (int64_t i = 0; i < c->kH; i++)
                            for (int64_t j = 0; j < c->kW; j++) {
                                int64_t oh = ih * sh - top + i * dh, ow = iw * sw - left + j * dw;
                                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW)
                                    continue;
                                int64_t m = (ch / Cg) * Mg + mg;
                                y[((n * c->M + m) * OH + oh) * OW + ow] +=
                                    x[((n * c->C + ch) * c->H + ih) * c->W + iw] *
                                    w[((ch * Mg + mg) * c->kH + i) * c->kW + j];
                            }
}

static void convt_node(one_node *t, const convt_case *c, const float *x, const float *w,
                       bool param) {
    in_spec ins[3] = {{"x", KN_F32, DIMS(c->N, c->C, c->H, c->W), x, param},
                      {"w", KN_F32, DIMS(c->C, c->M / c->group, c->kH, c->kW), w, param},
                      {"b", KN_F32, DIMS(c->M), NULL, param}};
    one_node_init(t, "ConvTranspose", c->bias ? 3 : 2, ins);
    int node = t->node;
    if (c->group != 1)
        CHECK_OK(kn_node_set_int(&t->g, node, "group", c->group));
    if (c->strides[0])
        CHECK_OK(kn_node_set_ints(&t->g, node, "strides", 2, c->strides));
    if (c->dilations[0])
        CHECK_OK(kn_node_set_ints(&t->g, node, "dilations", 2, c->dilations));
    if (c->pads[0] || c->pads[1] || c->pads[2] || c->pads[3])
        CHECK_OK(kn_node_set_ints(&t->g, node, "pads", 4, c->pads));
    if (c->output_padding[0] || c->output_padding[1])
        CHECK_OK(kn_node_set_ints(&t->g, node, "output_padding", 2, c->output_padding));
    if (c->output_shape[0])
        CHECK_OK(kn_node_set_ints(&t->g, node, "output_shape", 2, c->output_shape));
    if (c->auto_pad)
        CHECK_OK(kn_node_set_string(&t->g, node, "auto_pad", c->auto_pad));
}

static const convt_case convt_cases[] = {
    /* what: N, C, M, group, H, W, kH, kW, strides, dilations, pads, output_padding, output_shape,
     * auto_pad, bias */
    {"3x3, stride 1, bias",
     2, 3, 4, 1, 4, 5, 3, 3, {0}, {0}, {0}, {0}, {0}, NULL, true},
    {"stride 2, pads 1, output_padding 1",
     2, 3, 2, 1, 4, 3, 3, 3, {2, 2}, {0}, {1, 1, 1, 1}, {1, 1}, {0}, NULL, true},
    {"dilation (2, 1), stride (1, 2), pads (0, 1, 2, 0)",
     1, 2, 3, 1, 5, 4, 3, 2, {1, 2}, {2, 1}, {0, 1, 2, 0}, {0}, {0}, NULL, false},
    {"groups 2, stride 2, output_padding (1, 0)",
     2, 4, 6, 2, 3, 4, 3, 3, {2, 2}, {0}, {0}, {1, 0}, {0}, NULL, true},
    {"depthwise (group = C = M), 2x2 stride 2",
     1, 3, 3, 3, 4, 4, 2, 2, {2, 2}, {0}, {0}, {0}, {0}, NULL, true},
    {"pointwise 1x1",
     2, 5, 3, 1, 3, 4, 1, 1, {0}, {0}, {0}, {0}, {0}, NULL, true},
    {"SAME_UPPER stride 2",
     1, 2, 2, 1, 3, 3, 3, 3, {2, 2}, {0}, {0}, {0}, {0}, "SAME_UPPER", true},
    {"SAME_LOWER stride 2",
     1, 2, 2, 1, 3, 3, 3, 3, {2, 2}, {0}, {0}, {0}, {0}, "SAME_LOWER", false},
    {"output_shape (8, 9) inside the full (9, 9)",
     1, 2, 2, 1, 4, 4, 3, 3, {2, 2}, {0}, {0}, {0}, {8, 9}, NULL, false},
    {"output_shape (11, 10) past the full (9, 9)",
     1, 2, 2, 1, 4, 4, 3, 3, {2, 2}, {0}, {0}, {0}, {11, 10}, NULL, true},
    {"VALID, stride (3, 1), dilation 2",
     1, 2, 2, 1, 3, 4, 2, 3, {3, 1}, {2, 2}, {0}, {0}, {0}, "VALID", false},
    {"large (threaded): 16 -> 16 channels, 16x16, stride 2",
     1, 16, 16, 1, 16, 16, 3, 3, {2, 2}, {0}, {1, 1, 1, 1}, {1, 1}, {0}, NULL, true},
};

static void test_convtranspose_values(void) {
    for (int k = 0; k < COUNT(convt_cases); k++) {
        const convt_case *c = &convt_cases[k];
        one_node t;
        convt_node(&t, c, NULL, NULL, true);
        opcheck_fill_uniform(&t.g, 30 + (uint64_t)k, -1, 1);
        int64_t OH, OW, top, left;
        convt_reference_axis(c, 0, c->H, c->kH, &OH, &top);
        convt_reference_axis(c, 1, c->W, c->kW, &OW, &left);
        int64_t n_y = c->N * c->M * OH * OW;
        float *want = malloc(sizeof(float) * (size_t)n_y);
        convt_reference(c, input_data(&t, 0), input_data(&t, 1), c->bias ? input_data(&t, 2) : NULL,
                        want, OH, OW, top, left);
        CHECK_OK(kn_graph_infer_shapes(&t.g));
        kn_shape want_shape = SHAPE(c->N, c->M, OH, OW);
        char s1[64], s2[64];
        CHECK_MSG(kn_shape_equal(&t.g.values[t.out].shape, &want_shape),
                  "%s: output %s, expected %s", c->what,
                  kn_shape_str(&t.g.values[t.out].shape, s1, 64),
                  kn_shape_str(&want_shape, s2, 64));
        char what[128];
        snprintf(what, sizeof what, "ConvTranspose %s", c->what);
        kn_tensor first = forward_ok(what, &t), second = forward_ok(what, &t);
        CHECK_MSG(first.data && second.data &&
                      memcmp(first.data, second.data, sizeof(float) * (size_t)n_y) == 0,
                  "%s: two runs differ", what);
        free(first.data);
        free(second.data);
        expect_f32(what, &t, want, n_y, 1e-5);
        free(want);
    }

    /* ONNX node tests (backend/test/case/node/convtranspose.py): X = 0..8 (1, 1, 3, 3), W all ones
     * (1, 2, 3, 3); both output channels are the same, so the tables hold one */
    static const float x9[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    float ones[18];
    for (int i = 0; i < 18; i++)
        ones[i] = 1;
    static const float plain[25] = {0, 1,  3,  3,  2,  /* (5, 5) */
                                    3, 8,  15, 12, 7,
                                    9, 21, 36, 27, 15,
                                    9, 20, 33, 24, 13,
                                    6, 13, 21, 15, 8};
    static const float strided[80] = {0, 0, 1,  1, 3,  2, 2, 0, /* (10, 8) */
                                      0, 0, 1,  1, 3,  2, 2, 0,
                                      0, 0, 1,  1, 3,  2, 2, 0,
                                      3, 3, 7,  4, 9,  5, 5, 0,
                                      3, 3, 7,  4, 9,  5, 5, 0,
                                      3, 3, 7,  4, 9,  5, 5, 0,
                                      6, 6, 13, 7, 15, 8, 8, 0,
                                      6, 6, 13, 7, 15, 8, 8, 0,
                                      6, 6, 13, 7, 15, 8, 8, 0,
                                      0, 0, 0,  0, 0,  0, 0, 0};
    static const float padded[21] = {1,  1, 3, /* (7, 3) */
                                     1,  1, 3,
                                     7,  4, 9,
                                     7,  4, 9,
                                     7,  4, 9,
                                     13, 7, 15,
                                     13, 7, 15};
    static const float same[36] = {0, 0, 1,  1,  3,  2, /* (6, 6) */
                                   0, 0, 1,  1,  3,  2,
                                   3, 3, 8,  5,  12, 7,
                                   3, 3, 7,  4,  9,  5,
                                   9, 9, 20, 11, 24, 13,
                                   6, 6, 13, 7,  15, 8};
    const struct {
        const char *name;
        convt_case c;
        const float *plane;
        int64_t plane_size;
    } onnx_cases[] = {
        {"onnx test_convtranspose",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {0}, {0}, {0}, {0}, {0}, NULL, false}, plain, 25},
        {"onnx test_convtranspose_output_shape",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {3, 2}, {0}, {0}, {0}, {10, 8}, NULL, false}, strided, 80},
        {"onnx test_convtranspose_pad",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {3, 2}, {0}, {0}, {1, 1}, {0}, NULL, false}, strided, 80},
        {"onnx test_convtranspose_kernel_shape",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {3, 2}, {0}, {0}, {1, 1}, {10, 8}, NULL, false}, strided, 80},
        {"onnx test_convtranspose_pads",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {3, 2}, {0}, {1, 2, 1, 2}, {0}, {0}, NULL, false}, padded,
         21},
        {"onnx test_convtranspose_autopad_same",
         {"", 1, 1, 2, 1, 3, 3, 3, 3, {2, 2}, {0}, {0}, {0}, {0}, "SAME_UPPER", false}, same, 36},
    };
    for (int k = 0; k < COUNT(onnx_cases); k++) {
        one_node t;
        convt_node(&t, &onnx_cases[k].c, x9, ones, false);
        if (strcmp(onnx_cases[k].name, "onnx test_convtranspose_kernel_shape") == 0)
            CHECK_OK(kn_node_set_ints(&t.g, t.node, "kernel_shape", 2, (const int64_t[]){3, 3}));
        float want[160];
        int64_t n = onnx_cases[k].plane_size;
        memcpy(want, onnx_cases[k].plane, sizeof(float) * (size_t)n);
        memcpy(want + n, onnx_cases[k].plane, sizeof(float) * (size_t)n);
        expect_f32(onnx_cases[k].name, &t, want, 2 * n, 0);
    }
    /* test_convtranspose_dilations */
    one_node t;
    in_spec dil[2] = {F32_IN("x", SHAPE(1, 1, 3, 3), ((const float[]){3, 8, 1, 9, 5, 7, 3, 2, 6})),
                      F32_IN("w", SHAPE(1, 1, 2, 2), ((const float[]){7, 2, 1, 9}))};
    one_node_init(&t, "ConvTranspose", 2, dil);
    CHECK_OK(kn_node_set_ints(&t.g, t.node, "dilations", 2, (const int64_t[]){2, 2}));
    expect_f32("onnx test_convtranspose_dilations", &t,
               (const float[]){21, 56, 13, 16, 2,  63, 35, 67, 10, 14, 24, 22, 76,
                               76, 21, 9,  5,  88, 45, 63, 3,  2,  33, 18, 54},
               25, 0);
}

static void test_convtranspose_gradients(void) {
    for (int k = 0; k < COUNT(convt_cases); k++) {
        const convt_case *c = &convt_cases[k];
        if (c->C * c->H * c->W > 300)
            continue; /* the large case is for the threaded forward only */
        one_node t;
        convt_node(&t, c, NULL, NULL, true);
        opcheck_fill_uniform(&t.g, 50 + (uint64_t)k, -1, 1);
        char what[128];
        snprintf(what, sizeof what, "ConvTranspose %s", c->what);
        check_gradients(what, &t, 0);
        if (k == 3)
            check_backward_accumulates(what, &t);
        kn_graph_free(&t.g);
    }
}

static void test_convtranspose_errors(void) {
    one_node t;
    in_spec rank3[2] = {F32_IN("x", SHAPE(1, 2, 5), NULL), F32_IN("w", SHAPE(2, 3, 3, 3), NULL)};
    one_node_init(&t, "ConvTranspose", 2, rank3);
    expect_error("ConvTranspose 1-D X, 2-D W", &t, KILN_ERR_SHAPE, "(2, 3, 3, 3)", false);
    in_spec rank5[2] = {F32_IN("x", SHAPE(1, 2, 3, 3, 3), NULL),
                        F32_IN("w", SHAPE(2, 1, 2, 2), NULL)};
    one_node_init(&t, "ConvTranspose", 2, rank5);
    expect_error("ConvTranspose 3-D X, 2-D W", &t, KILN_ERR_SHAPE, "(2, 1, 2, 2)", false);
    in_spec channels[2] = {F32_IN("x", SHAPE(1, 2, 3, 3), NULL),
                           F32_IN("w", SHAPE(3, 1, 2, 2), NULL)};
    one_node_init(&t, "ConvTranspose", 2, channels);
    expect_error("ConvTranspose X 2 channels, W (3, 1, 2, 2)", &t, KILN_ERR_SHAPE, "(3, 1, 2, 2)",
                 false);
    in_spec grouped[2] = {F32_IN("x", SHAPE(1, 3, 3, 3), NULL),
                          F32_IN("w", SHAPE(3, 1, 2, 2), NULL)};
    one_node_init(&t, "ConvTranspose", 2, grouped);
    CHECK_OK(kn_node_set_int(&t.g, t.node, "group", 2));
    expect_error("ConvTranspose 3 channels in 2 groups", &t, KILN_ERR_SHAPE, "group", false);
    in_spec bias[3] = {F32_IN("x", SHAPE(1, 2, 3, 3), NULL), F32_IN("w", SHAPE(2, 4, 2, 2), NULL),
                       F32_IN("b", SHAPE(3), NULL)};
    one_node_init(&t, "ConvTranspose", 3, bias);
    expect_error("ConvTranspose bias (3) for 4 channels", &t, KILN_ERR_SHAPE, "(3)", false);
    in_spec ok[2] = {F32_IN("x", SHAPE(1, 2, 3, 3), NULL), F32_IN("w", SHAPE(2, 4, 2, 2), NULL)};
    one_node_init(&t, "ConvTranspose", 2, ok);
    CHECK_OK(kn_node_set_string(&t.g, t.node, "auto_pad", "SAME_UPPER"));
    CHECK_OK(kn_node_set_ints(&t.g, t.node, "pads", 4, (const int64_t[]){1, 1, 1, 1}));
    expect_error("ConvTranspose pads with auto_pad", &t, KILN_ERR_INVALID_ARG, "auto_pad", false);
    one_node_init(&t, "ConvTranspose", 2, ok);
    CHECK_OK(kn_node_set_ints(&t.g, t.node, "pads", 4, (const int64_t[]){2, 0, 2, 0}));
    expect_error("ConvTranspose pads larger than the output", &t, KILN_ERR_SHAPE, "height", false);
    one_node_init(&t, "ConvTranspose", 2, ok);
    CHECK_OK(kn_node_set_ints(&t.g, t.node, "strides", 3, (const int64_t[]){1, 1, 1}));
    expect_error("ConvTranspose 3 strides", &t, KILN_ERR_INVALID_ARG, "strides", false);
    one_node_init(&t, "ConvTranspose", 2, ok);
    CHECK_OK(kn_node_set_ints(&t.g, t.node, "kernel_shape", 2, (const int64_t[]){3, 3}));
    expect_error("ConvTranspose kernel_shape (3, 3) for a 2x2 W", &t, KILN_ERR_SHAPE,
                 "kernel_shape", false);
}

/* ---- FLOP counts ---- */

static int64_t node_flops(one_node *t) {
    CHECK_OK(kn_graph_infer_shapes(&t->g));
    int64_t flops = t->g.nodes[t->node].op->flops(&t->g, &t->g.nodes[t->node]);
    kn_graph_free(&t->g);
    return flops;
}

static void test_flops(void) {
    one_node t;
    convt_node(&t, &convt_cases[0], NULL, NULL, true); /* N 2, C 3, M 4, 4x5 -> 6x7, 3x3 */
    CHECK(node_flops(&t) == 2 * 2 * 3 * 20 * 4 * 9 + 2 * 4 * 42);
    convt_node(&t, &convt_cases[3], NULL, NULL, true); /* groups 2: C 4, M/group 3, 3x4 */
    CHECK(node_flops(&t) == 2 * 2 * 4 * 12 * 3 * 9 + 2 * 6 * (8 * 9));
    in_spec three[3] = {F32_IN("a", SHAPE(2, 3), NULL), F32_IN("b", SHAPE(3), NULL),
                        F32_IN("c", SHAPE(1), NULL)};
    one_node_init(&t, "Max", 3, three);
    CHECK(node_flops(&t) == 12);
    one_node_init(&t, "Mean", 3, three);
    CHECK(node_flops(&t) == 18);
    one_node_init(&t, "Where", 3,
                  (in_spec[]){TYPED_IN("c", KN_BOOL, SHAPE(4, 1, 1), NULL), three[0], three[1]});
    CHECK(node_flops(&t) == 24);
    reduce_node(&t, R_MAX, F32_IN("x", SHAPE(4, 5), NULL), 1, (const int64_t[]){1}, false, 0,
                false);
    CHECK(node_flops(&t) == 20);
    one_node_init(&t, "Softplus", 1, three);
    CHECK(node_flops(&t) == 30);
}

int main(void) {
    kn_threads_set(2);
    test_registry();
    test_unary_values();
    test_unary_onnx_cases();
    test_unary_gradients();
    test_unary_integers();
    test_clip();
    test_prelu();
    test_integer_arithmetic();
    test_pow();
    test_comparisons();
    test_logic();
    test_where();
    test_variadic_values();
    test_variadic_gradients();
    test_reduce_onnx_cases();
    test_reduce_values();
    test_reduce_gradients();
    test_reduce_errors();
    test_reduce_workspace();
    test_convtranspose_values();
    test_convtranspose_gradients();
    test_convtranspose_errors();
    test_flops();
    return check_finish();
}
