/* The ONNX op paths beyond the training set: Pow with integer bases, Max / Min on f16,
 * LayerNormalization's Mean and InvStdDev outputs, BatchNormalization with training_mode = 1 and its
 * running_mean / running_var outputs, Dropout's mask output and training_mode input, Resize's cubic
 * mode and tf_crop_and_resize coordinates, and Resize's workspace (the first run allocates nothing);
 * and that the inference optimizer keeps the Dropout and BatchNormalization nodes that compute in
 * training mode.
 *
 * Each forward is compared with a naive reference written here (double precision, plain loops, the
 * ONNX formulas); each backward with finite differences (opcheck), through every output. */
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
#include "runtime/optimize.h"
#include "support/opcheck.h"

#define SHAPE(...)                                                                   \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),          \
                (int64_t[]){__VA_ARGS__})
#define COUNT(array) ((int)(sizeof(array) / sizeof((array)[0])))

/* ---- one node graphs ---- */

/* A value holding data: PARAM f32 values get gradients; CONST values are copied from `data`. */
static int add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_dtype dtype, kn_shape shape,
                     const void *data) {
    int id = test_add_value(g, name, kind, dtype, &shape);
    CHECK_MSG(id >= 0, "%s", kiln_last_error());
    if (data)
        memcpy(g->values[id].data, data, kn_dtype_size(dtype) * (size_t)kn_shape_numel(&shape));
    return id;
}

static int add_param(kn_graph *g, const char *name, kn_shape shape) {
    return add_value(g, name, KN_VALUE_PARAM, KN_F32, shape, NULL);
}

static int add_output(kn_graph *g, const char *name) {
    return add_value(g, name, KN_VALUE_ACT, KN_F32, kn_shape_of(0, NULL), NULL);
}

static void add_node(kn_graph *g, const char *op, int n_in, const int *in, int n_out, const int *out) {
    int node = test_add_node(g, op, "node", n_in, in, n_out, out);
    CHECK_MSG(node == 0, "%s: %s", op, kiln_last_error());
}

static float *param_data(kn_graph *g, const char *name) {
    return g->values[kn_graph_find_value(g, name)].data;
}

/* Runs node 0 forward with `ctx` into malloc'd outputs (free with free_outputs); NULL on failure. */
static kn_tensor *run_forward(kn_graph *g, kn_op_ctx *ctx) {
    if (kn_graph_infer_shapes(g) != KILN_OK) {
        fprintf(stderr, "shape inference: %s\n", kiln_last_error());
        return NULL;
    }
    const kn_node *n = &g->nodes[0];
    kn_tensor in[8], *in_p[8] = {0}, *out_p[8] = {0};
    kn_tensor *out = calloc((size_t)n->n_out, sizeof *out);
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0)
            continue;
        const kn_value *v = &g->values[n->in[i]];
        in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        in_p[i] = &in[i];
    }
    for (int k = 0; k < n->n_out; k++) {
        const kn_value *v = kn_node_output(g, n, k);
        size_t bytes = 0;
        CHECK(kn_shape_bytes(&v->shape, v->dtype, &bytes));
        out[k] = (kn_tensor){v->shape, v->dtype, calloc(1, bytes + 8)};
        out_p[k] = &out[k];
    }
    kn_op_call call = {.node = n, .in = in_p, .out = out_p, .ctx = ctx};
    if (n->op->forward(&call) != KILN_OK) {
        fprintf(stderr, "forward: %s\n", kiln_last_error());
        for (int k = 0; k < n->n_out; k++)
            free(out[k].data);
        free(out);
        return NULL;
    }
    return out;
}

static kn_tensor *run_eval(kn_graph *g) {
    kn_op_ctx ctx = {0};
    kn_tensor *out = run_forward(g, &ctx);
    kn_op_ctx_release(&ctx);
    return out;
}

static void free_outputs(kn_tensor *out, int n) {
    for (int k = 0; out && k < n; k++)
        free(out[k].data);
    free(out);
}

/* max |got - want|, printed; fails above tol. */
static void expect_close(const char *what, const float *got, const double *want, int64_t n, double tol) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= worst))
            worst = d;
    }
    printf("  %-58s max |kiln - reference| = %.3g\n", what, worst);
    CHECK_MSG(worst <= tol, "%s: max difference %.3g > %.3g", what, worst, tol);
}

static void check_gradients(kn_graph *g, const char *what, opcheck_options o) {
    printf("%s\n", what);
    double worst = opcheck_gradients(g, 0, &o);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: gradient check ratio %.3g", what, worst);
}

/* ---- Pow with integer bases ---- */

/* The integer power the naive way: repeated multiplication in wrapping uint64 for integral
 * exponents >= 0, else the real power truncated and saturated to the dtype's range. */
static int64_t pow_reference(int64_t base, double e, int64_t lowest, int64_t highest) {
    if (e >= 0 && e == floor(e)) {
        uint64_t r = 1;
        for (int64_t k = 0; k < (int64_t)e; k++)
            r *= (uint64_t)base;
        return (int64_t)r;
    }
    double r = trunc(pow((double)base, e));
    return isnan(r) ? 0 : r <= (double)lowest ? lowest : r >= (double)highest ? highest : (int64_t)r;
}

static void test_pow_integer_base(void) {
    static const int64_t bases[] = {0, 1, -1, 2, -3, 7, 100, -100000, 3};
    static const double exponents[] = {0, 1, 2, 3, 5, 31, 40, -1, 0.5, -2, 2.5, 63};
    const kn_dtype base_dtypes[] = {KN_I32, KN_I64};
    const kn_dtype exp_dtypes[] = {KN_I32, KN_I64, KN_F32};
    int nb = COUNT(bases), ne = COUNT(exponents);
    for (int bd = 0; bd < 2; bd++) {
        for (int ed = 0; ed < 3; ed++) {
            kn_dtype xt = base_dtypes[bd], et = exp_dtypes[ed];
            int64_t base_data[16], exp_ints[16];
            int32_t base32[16], exp32[16];
            float exp_f[16];
            int64_t n_e = 0;
            for (int i = 0; i < nb; i++) {
                base_data[i] = bases[i];
                base32[i] = (int32_t)bases[i];
            }
            for (int j = 0; j < ne; j++) {
                if (et != KN_F32 && exponents[j] != floor(exponents[j]))
                    continue; /* integer exponents only */
                exp_ints[n_e] = (int64_t)exponents[j];
                exp32[n_e] = (int32_t)exponents[j];
                exp_f[n_e] = (float)exponents[j];
                n_e++;
            }
            /* x (nb, 1) ^ e (n_e): every pair, by broadcasting */
            kn_graph g;
            kn_graph_init(&g);
            int x = add_value(&g, "x", KN_VALUE_CONST, xt, SHAPE(nb, 1),
                              xt == KN_I64 ? (const void *)base_data : (const void *)base32);
            const void *e_data = et == KN_I64 ? (const void *)exp_ints
                                 : et == KN_I32 ? (const void *)exp32 : (const void *)exp_f;
            int e = add_value(&g, "e", KN_VALUE_CONST, et, SHAPE(n_e), e_data);
            int y = add_output(&g, "y");
            add_node(&g, "Pow", 2, (int[]){x, e}, 1, &y);
            kn_tensor *out = run_eval(&g);
            CHECK(out != NULL);
            if (!out) {
                kn_graph_free(&g);
                continue;
            }
            CHECK(out[0].dtype == xt);
            int64_t lowest = xt == KN_I64 ? INT64_MIN : INT32_MIN;
            int64_t highest = xt == KN_I64 ? INT64_MAX : INT32_MAX;
            int mismatches = 0;
            for (int i = 0; i < nb; i++) {
                for (int j = 0; j < n_e; j++) {
                    double ev = et == KN_F32 ? exp_f[j] : (double)exp_ints[j];
                    int64_t base = xt == KN_I64 ? base_data[i] : base32[i];
                    int64_t want = pow_reference(base, ev, lowest, highest);
                    int64_t got = xt == KN_I64 ? ((int64_t *)out[0].data)[i * n_e + j]
                                               : ((int32_t *)out[0].data)[i * n_e + j];
                    if (xt == KN_I32)
                        want = (int32_t)want;
                    if (got != want) {
                        mismatches++;
                        fprintf(stderr, "  %s ^ %s: %lld ^ %g = %lld, expected %lld\n",
                                kn_dtype_name(xt), kn_dtype_name(et), (long long)base, ev,
                                (long long)got, (long long)want);
                    }
                }
            }
            printf("  Pow %s ^ %s: %d x %lld pairs, %d mismatches\n", kn_dtype_name(xt),
                   kn_dtype_name(et), nb, (long long)n_e, mismatches);
            CHECK(mismatches == 0);
            free_outputs(out, 1);
            kn_graph_free(&g);
        }
    }

    /* ONNX's test_pow_types_int32_float32: [1, 2, 3] ^ [4, 5, 6] = [1, 32, 729] */
    kn_graph g;
    kn_graph_init(&g);
    int x = add_value(&g, "x", KN_VALUE_CONST, KN_I32, SHAPE(3), (int32_t[]){1, 2, 3});
    int e = add_value(&g, "e", KN_VALUE_CONST, KN_F32, SHAPE(3), (float[]){4, 5, 6});
    int y = add_output(&g, "y");
    add_node(&g, "Pow", 2, (int[]){x, e}, 1, &y);
    kn_tensor *out = run_eval(&g);
    CHECK(out && memcmp(out[0].data, (int32_t[]){1, 32, 729}, 3 * sizeof(int32_t)) == 0);
    free_outputs(out, 1);
    kn_graph_free(&g);
}

/* ---- Max and Min on f16 ---- */

/* IEEE half to double, written from the definition. */
static double half_value(uint16_t h) {
    int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    double v = exponent == 0    ? ldexp(mantissa, -24)
               : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                : ldexp(1024 + mantissa, exponent - 25);
    return sign ? -v : v;
}

static void test_max_min_f16(void) {
    /* a (2, 6), b (6), c (2, 1): every broadcast, with NaN, infinities, subnormals and signed zeros */
    enum { ROWS = 2, COLS = 6 };
    uint16_t a[ROWS * COLS], b[COLS], c[ROWS];
    kn_rng rng = kn_rng_seeded(11);
    for (int i = 0; i < ROWS * COLS; i++)
        a[i] = (uint16_t)(kn_rng_next(&rng) & 0xfbff); /* no exponent 31 from the generator */
    for (int i = 0; i < COLS; i++)
        b[i] = (uint16_t)(kn_rng_next(&rng) & 0xfbff);
    a[0] = 0x7e00;  /* NaN */
    b[1] = 0x7c00;  /* +inf */
    b[2] = 0xfc00;  /* -inf */
    a[3] = 0x8000;  /* -0 */
    b[3] = 0x0000;  /* +0 */
    b[4] = 0x0001;  /* smallest subnormal */
    a[4] = 0x8001;
    c[0] = 0x3c00;  /* 1 */
    c[1] = 0xbc00;  /* -1 */
    const char *ops[] = {"Max", "Min"};
    for (int o = 0; o < 2; o++) {
        kn_graph g;
        kn_graph_init(&g);
        int ia = add_value(&g, "a", KN_VALUE_CONST, KN_F16, SHAPE(ROWS, COLS), a);
        int ib = add_value(&g, "b", KN_VALUE_CONST, KN_F16, SHAPE(COLS), b);
        int ic = add_value(&g, "c", KN_VALUE_CONST, KN_F16, SHAPE(ROWS, 1), c);
        int y = add_output(&g, "y");
        add_node(&g, ops[o], 3, (int[]){ia, ib, ic}, 1, &y);
        kn_tensor *out = run_eval(&g);
        CHECK(out && out[0].dtype == KN_F16);
        int mismatches = 0;
        for (int r = 0; out && r < ROWS; r++) {
            for (int k = 0; k < COLS; k++) {
                double values[3] = {half_value(a[r * COLS + k]), half_value(b[k]), half_value(c[r])};
                double want = values[0];
                for (int i = 1; i < 3; i++) {
                    if (isnan(want) || isnan(values[i]))
                        want = NAN;
                    else
                        want = o == 0 ? fmax(want, values[i]) : fmin(want, values[i]);
                }
                double got = half_value(((uint16_t *)out[0].data)[r * COLS + k]);
                bool same = (isnan(got) && isnan(want)) || got == want;
                mismatches += !same;
                if (!same)
                    fprintf(stderr, "  %s f16 element (%d, %d): %g, expected %g\n", ops[o], r, k, got,
                            want);
            }
        }
        printf("  %s f16 (2, 6) x (6) x (2, 1): %d mismatches\n", ops[o], mismatches);
        CHECK(mismatches == 0);
        free_outputs(out, 1);
        kn_graph_free(&g);
    }
}

/* ---- LayerNormalization's Mean and InvStdDev ---- */

static void layernorm_build(kn_graph *g, kn_shape x_shape, int axis, int n_out) {
    kn_graph_init(g);
    int rank = x_shape.ndim, a = axis < 0 ? axis + rank : axis;
    kn_shape p = kn_shape_of(rank - a, x_shape.d + a);
    int in[3] = {add_param(g, "X", x_shape), add_param(g, "Scale", p), add_param(g, "B", p)};
    int out[3] = {add_output(g, "Y"), add_output(g, "Mean"), add_output(g, "InvStdDev")};
    add_node(g, "LayerNormalization", 3, in, n_out, out);
    CHECK_OK(kn_node_set_int(g, 0, "axis", axis));
    CHECK_OK(kn_node_set_float(g, 0, "epsilon", 1e-3f));
    opcheck_fill_uniform(g, 5, -2.0f, 2.0f);
}

static void test_layernorm_statistics(void) {
    static const struct {
        kn_shape shape;
        int axis;
    } cases[] = {{{3, {2, 3, 5}}, -1}, {{3, {2, 3, 5}}, 1}, {{3, {2, 3, 5}}, 0}, {{4, {2, 2, 3, 4}}, 2}};
    for (int c = 0; c < COUNT(cases); c++) {
        kn_graph g;
        layernorm_build(&g, cases[c].shape, cases[c].axis, 3);
        kn_tensor *out = run_eval(&g);
        CHECK(out != NULL);
        if (!out) {
            kn_graph_free(&g);
            continue;
        }
        int rank = cases[c].shape.ndim, axis = cases[c].axis < 0 ? cases[c].axis + rank : cases[c].axis;
        int64_t rows = kn_shape_span(&cases[c].shape, 0, axis);
        int64_t D = kn_shape_span(&cases[c].shape, axis, rank);
        kn_shape stats = cases[c].shape;
        for (int k = axis; k < rank; k++)
            stats.d[k] = 1;
        CHECK(kn_shape_equal(&out[1].shape, &stats) && kn_shape_equal(&out[2].shape, &stats));
        const float *x = param_data(&g, "X"), *scale = param_data(&g, "Scale"), *b = param_data(&g, "B");
        double *y = malloc(sizeof(double) * (size_t)(rows * D));
        double *mean = malloc(sizeof(double) * (size_t)rows), *inv = malloc(sizeof(double) * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, q = 0;
            for (int64_t j = 0; j < D; j++)
                s += x[r * D + j];
            mean[r] = s / (double)D;
            for (int64_t j = 0; j < D; j++)
                q += (x[r * D + j] - mean[r]) * (x[r * D + j] - mean[r]);
            inv[r] = 1 / sqrt(q / (double)D + 1e-3);
            for (int64_t j = 0; j < D; j++)
                y[r * D + j] = (x[r * D + j] - mean[r]) * inv[r] * scale[j] + b[j];
        }
        char what[96];
        snprintf(what, sizeof what, "LayerNormalization rank %d axis %d: Y", rank, cases[c].axis);
        expect_close(what, kn_f32(&out[0]), y, rows * D, 1e-5);
        snprintf(what, sizeof what, "LayerNormalization rank %d axis %d: Mean", rank, cases[c].axis);
        expect_close(what, kn_f32(&out[1]), mean, rows, 1e-6);
        snprintf(what, sizeof what, "LayerNormalization rank %d axis %d: InvStdDev", rank, cases[c].axis);
        expect_close(what, kn_f32(&out[2]), inv, rows, 1e-5);
        free(y);
        free(mean);
        free(inv);
        free_outputs(out, 3);

        snprintf(what, sizeof what, "LayerNormalization rank %d axis %d, gradients through Y, Mean and "
                 "InvStdDev:", rank, cases[c].axis);
        check_gradients(&g, what, (opcheck_options){0});
        kn_graph_free(&g);
    }

    /* Mean alone (InvStdDev not requested) */
    kn_graph g;
    layernorm_build(&g, SHAPE(4, 6), -1, 2);
    check_gradients(&g, "LayerNormalization (4, 6), outputs Y and Mean:", (opcheck_options){0});
    kn_graph_free(&g);

    layernorm_build(&g, SHAPE(4, 6), -1, 3);
    CHECK_OK(kn_node_set_int(&g, 0, "stash_type", 11));
    CHECK(kn_graph_infer_shapes(&g) == KILN_ERR_UNSUPPORTED);
    printf("  stash_type 11 -> %s\n", kiln_last_error());
    CHECK(strstr(kiln_last_error(), "stash_type 11") != NULL);
    kn_graph_free(&g);
}

/* ---- BatchNormalization with training_mode = 1 ---- */

static void batchnorm_build(kn_graph *g, kn_shape x_shape, int n_out, float momentum) {
    kn_graph_init(g);
    kn_shape c = SHAPE(x_shape.d[1]);
    int in[5] = {add_param(g, "X", x_shape), add_param(g, "scale", c), add_param(g, "B", c),
                 add_param(g, "input_mean", c), add_param(g, "input_var", c)};
    int out[3] = {add_output(g, "Y"), add_output(g, "running_mean"), add_output(g, "running_var")};
    add_node(g, "BatchNormalization", 5, in, n_out, out);
    CHECK_OK(kn_node_set_int(g, 0, "training_mode", 1));
    CHECK_OK(kn_node_set_float(g, 0, "momentum", momentum));
    opcheck_fill_uniform(g, 8, -1.0f, 2.0f);
    float *var = param_data(g, "input_var");
    for (int64_t k = 0; k < c.d[0]; k++)
        var[k] = 0.5f + var[k]; /* a variance is positive */
}

/* Batch mean and biased variance of each channel of X (N, C, inner). */
static void batchnorm_moments(const float *x, kn_shape s, double *mean, double *var) {
    int64_t N = s.d[0], C = s.d[1], inner = kn_shape_span(&s, 2, s.ndim);
    for (int64_t c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < inner; i++)
                sum += x[(n * C + c) * inner + i];
        mean[c] = sum / (double)(N * inner);
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < inner; i++) {
                double d = x[(n * C + c) * inner + i] - mean[c];
                sq += d * d;
            }
        var[c] = sq / (double)(N * inner);
    }
}

static void test_batchnorm_training_mode(void) {
    kn_shape shapes[] = {SHAPE(4, 3, 5, 6), SHAPE(6, 4)};
    for (int s = 0; s < COUNT(shapes); s++) {
        kn_graph g;
        float momentum = 0.8f;
        batchnorm_build(&g, shapes[s], 3, momentum);
        int64_t C = shapes[s].d[1], n = kn_shape_numel(&shapes[s]), inner = n / (shapes[s].d[0] * C);
        float saved_mean[8], saved_var[8];
        memcpy(saved_mean, param_data(&g, "input_mean"), sizeof(float) * (size_t)C);
        memcpy(saved_var, param_data(&g, "input_var"), sizeof(float) * (size_t)C);
        kn_tensor *out = run_eval(&g);
        CHECK(out != NULL);
        if (!out) {
            kn_graph_free(&g);
            continue;
        }
        const float *x = param_data(&g, "X"), *scale = param_data(&g, "scale"), *b = param_data(&g, "B");
        double mean[8], var[8], running_mean[8], running_var[8];
        batchnorm_moments(x, shapes[s], mean, var);
        double *y = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            int64_t c = (i / inner) % C;
            y[i] = (x[i] - mean[c]) / sqrt(var[c] + 1e-5) * scale[c] + b[c];
        }
        for (int64_t c = 0; c < C; c++) {
            running_mean[c] = saved_mean[c] * (double)momentum + mean[c] * (1 - (double)momentum);
            running_var[c] = saved_var[c] * (double)momentum + var[c] * (1 - (double)momentum);
        }
        char what[96];
        snprintf(what, sizeof what, "BatchNormalization training_mode rank %d: Y", shapes[s].ndim);
        expect_close(what, kn_f32(&out[0]), y, n, 1e-5);
        snprintf(what, sizeof what, "BatchNormalization training_mode rank %d: running_mean",
                 shapes[s].ndim);
        expect_close(what, kn_f32(&out[1]), running_mean, C, 1e-6);
        snprintf(what, sizeof what, "BatchNormalization training_mode rank %d: running_var (biased)",
                 shapes[s].ndim);
        expect_close(what, kn_f32(&out[2]), running_var, C, 1e-6);
        bool inputs_kept = memcmp(saved_mean, param_data(&g, "input_mean"), sizeof(float) * (size_t)C) == 0 &&
                           memcmp(saved_var, param_data(&g, "input_var"), sizeof(float) * (size_t)C) == 0;
        printf("  input_mean and input_var left as they were (the run does not train): %s\n",
               inputs_kept ? "yes" : "NO");
        CHECK(inputs_kept);
        free(y);
        free_outputs(out, 3);

        /* kiln training the same node: the state inputs move in place (unbiased variance, as
         * PyTorch), and the outputs still follow ONNX (biased). */
        kn_op_ctx ctx = {.training = true};
        out = run_forward(&g, &ctx);
        kn_op_ctx_release(&ctx);
        double count = (double)(n / C), in_place[8];
        for (int64_t c = 0; c < C; c++)
            in_place[c] = saved_var[c] * (double)momentum + var[c] * count / (count - 1) * (1 - (double)momentum);
        snprintf(what, sizeof what, "BatchNormalization rank %d trained: running_var output (biased)",
                 shapes[s].ndim);
        expect_close(what, out ? kn_f32(&out[2]) : param_data(&g, "input_var"), running_var, C, 1e-6);
        snprintf(what, sizeof what, "BatchNormalization rank %d trained: input_var in place (unbiased)",
                 shapes[s].ndim);
        expect_close(what, param_data(&g, "input_var"), in_place, C, 1e-6);
        free_outputs(out, 3);
        memcpy(param_data(&g, "input_mean"), saved_mean, sizeof(float) * (size_t)C);
        memcpy(param_data(&g, "input_var"), saved_var, sizeof(float) * (size_t)C);

        snprintf(what, sizeof what, "BatchNormalization training_mode rank %d, gradients through Y, "
                 "running_mean and running_var:", shapes[s].ndim);
        check_gradients(&g, what, (opcheck_options){0});
        kn_graph_free(&g);
    }

    kn_graph g;
    batchnorm_build(&g, SHAPE(5, 3, 2, 2), 2, 0.9f);
    check_gradients(&g, "BatchNormalization training_mode (5, 3, 2, 2), outputs Y and running_mean:",
                    (opcheck_options){0});
    kn_graph_free(&g);

    batchnorm_build(&g, SHAPE(5, 3), 3, 0.9f);
    CHECK_OK(kn_node_set_int(&g, 0, "training_mode", 0));
    CHECK(kn_graph_infer_shapes(&g) == KILN_ERR_INVALID_ARG);
    printf("  3 outputs without training_mode -> %s\n", kiln_last_error());
    CHECK(strstr(kiln_last_error(), "only Y") != NULL);
    kn_graph_free(&g);
}

/* ---- Dropout's mask output and training_mode input ---- */

static void dropout_build(kn_graph *g, kn_shape shape, float ratio, int training_mode, int n_out) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "X", shape), add_value(g, "ratio", KN_VALUE_CONST, KN_F32, SHAPE(1), &ratio),
                 -1};
    if (training_mode >= 0)
        in[2] = add_value(g, "training_mode", KN_VALUE_CONST, KN_BOOL, kn_shape_of(0, NULL),
                          (uint8_t[]){(uint8_t)training_mode});
    int out[2] = {add_output(g, "Y"), add_value(g, "mask", KN_VALUE_ACT, KN_BOOL, kn_shape_of(0, NULL), NULL)};
    add_node(g, "Dropout", training_mode >= 0 ? 3 : 2, in, n_out, out);
    opcheck_fill_uniform(g, 3, -1.0f, 1.0f);
}

/* Runs the Dropout of g; checks Y against X through the mask and returns the kept fraction. */
static double dropout_check(kn_graph *g, const char *what, float ratio, bool drops) {
    kn_tensor *out = run_eval(g);
    CHECK(out != NULL);
    if (!out)
        return -1;
    const float *x = param_data(g, "X");
    const float *y = kn_f32(&out[0]);
    const uint8_t *mask = out[1].data;
    int64_t n = kn_numel(&out[0]), kept = 0, bad = 0;
    CHECK(out[1].dtype == KN_BOOL && kn_shape_equal(&out[1].shape, &out[0].shape));
    for (int64_t i = 0; i < n; i++) {
        kept += mask[i] == 1;
        float want = mask[i] ? (drops ? x[i] / (1 - ratio) : x[i]) : 0.0f;
        bad += mask[i] > 1 || fabsf(y[i] - want) > 1e-6f * fabsf(want) || (!drops && !mask[i]);
    }
    double fraction = (double)kept / (double)n;
    printf("  %-58s kept %.4f, %lld elements off the mask\n", what, fraction, (long long)bad);
    CHECK(bad == 0);
    free_outputs(out, 2);
    return fraction;
}

static void test_dropout_mask(void) {
    kn_graph g;
    dropout_build(&g, SHAPE(100, 100), 0.3f, -1, 2);
    double kept = dropout_check(&g, "Dropout eval, ratio 0.3, no training_mode:", 0.3f, false);
    CHECK(kept == 1.0);
    kn_graph_free(&g);

    dropout_build(&g, SHAPE(100, 100), 0.3f, 0, 2);
    kept = dropout_check(&g, "Dropout training_mode false:", 0.3f, false);
    CHECK(kept == 1.0);
    kn_graph_free(&g);

    dropout_build(&g, SHAPE(100, 100), 0.0f, 1, 2);
    kept = dropout_check(&g, "Dropout training_mode true, ratio 0:", 0.0f, true);
    CHECK(kept == 1.0);
    kn_graph_free(&g);

    dropout_build(&g, SHAPE(100, 100), 0.3f, 1, 2);
    kept = dropout_check(&g, "Dropout training_mode true, ratio 0.3:", 0.3f, true);
    CHECK_MSG(fabs(kept - 0.7) < 0.02, "kept fraction %.4f, expected 0.7 +- 0.02", kept);
    check_gradients(&g, "Dropout training_mode true, ratio 0.3 (100, 100):",
                    (opcheck_options){.grad_mask = 1u});
    kn_graph_free(&g);

    /* the input alone decides when kiln does not train; kiln training drops either way */
    dropout_build(&g, SHAPE(64), 0.5f, 0, 1);
    kn_op_ctx ctx = {.training = true, .seed = 5};
    kn_tensor *out = run_forward(&g, &ctx);
    kn_op_ctx_release(&ctx);
    int zeros = 0;
    for (int i = 0; out && i < 64; i++)
        zeros += kn_f32(&out[0])[i] == 0.0f;
    printf("  Dropout training_mode false while kiln trains: %d of 64 dropped\n", zeros);
    CHECK(zeros > 0);
    free_outputs(out, 1);
    kn_graph_free(&g);

    kn_graph_init(&g);
    int in[3] = {add_param(&g, "X", SHAPE(4)), -1,
                 add_value(&g, "training_mode", KN_VALUE_CONST, KN_F32, SHAPE(1), (float[]){1})};
    int y = add_output(&g, "Y");
    add_node(&g, "Dropout", 3, in, 1, &y);
    CHECK(kn_graph_infer_shapes(&g) == KILN_ERR_INVALID_ARG);
    printf("  f32 training_mode -> %s\n", kiln_last_error());
    CHECK(strstr(kiln_last_error(), "must be one bool") != NULL);
    kn_graph_free(&g);
}

/* ---- Resize: cubic and tf_crop_and_resize ---- */

typedef struct resize_case {
    const char *what;
    const char *mode, *coord;
    float cubic_a;
    int exclude_outside;
    kn_shape x, out;
    float roi[8]; /* tf_crop_and_resize: starts, then ends, of the 4 dims */
    float extrapolation;
} resize_case;

static void resize_build(kn_graph *g, const resize_case *c) {
    kn_graph_init(g);
    bool crop = strcmp(c->coord, "tf_crop_and_resize") == 0;
    int in[4] = {add_param(g, "X", c->x), -1, -1,
                 add_value(g, "sizes", KN_VALUE_CONST, KN_I64, SHAPE(4), c->out.d)};
    if (crop)
        in[1] = add_value(g, "roi", KN_VALUE_CONST, KN_F32, SHAPE(8), c->roi);
    int y = add_output(g, "Y");
    add_node(g, "Resize", 4, in, 1, &y);
    CHECK_OK(kn_node_set_string(g, 0, "mode", c->mode));
    CHECK_OK(kn_node_set_string(g, 0, "coordinate_transformation_mode", c->coord));
    CHECK_OK(kn_node_set_float(g, 0, "cubic_coeff_a", c->cubic_a));
    CHECK_OK(kn_node_set_int(g, 0, "exclude_outside", c->exclude_outside));
    CHECK_OK(kn_node_set_float(g, 0, "extrapolation_value", c->extrapolation));
    opcheck_fill_uniform(g, 21, -1.0f, 1.0f);
}

/* The source coordinate of output o along a dim, by ONNX's formulas; *outside for a crop beyond
 * the input. */
static double reference_source(const resize_case *c, int dim, int64_t o, bool *outside) {
    double in = (double)c->x.d[dim], out = (double)c->out.d[dim], scale = out / in;
    *outside = false;
    if (strcmp(c->coord, "half_pixel") == 0)
        return (o + 0.5) / scale - 0.5;
    if (strcmp(c->coord, "align_corners") == 0)
        return out == 1 ? 0 : o * (in - 1) / (out - 1);
    if (strcmp(c->coord, "asymmetric") == 0)
        return o / scale;
    double start = c->roi[dim], end = c->roi[4 + dim]; /* tf_crop_and_resize */
    double x = out == 1 ? (end - start) * (in - 1) / 2 : o * (end - start) * (in - 1) / (out - 1);
    x += start * (in - 1);
    *outside = x < 0 || x > in - 1;
    return x;
}

/* The weight of input sample k for a sample at x: the cubic kernel of the distance, or the linear
 * hat; 0 beyond the kernel. */
static double reference_weight(const resize_case *c, double x, int64_t k) {
    double d = fabs(x - (double)k), a = c->cubic_a;
    if (strcmp(c->mode, "linear") == 0)
        return d < 1 ? 1 - d : 0;
    if (d <= 1)
        return (a + 2) * d * d * d - (a + 3) * d * d + 1;
    return d < 2 ? a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a : 0;
}

/* One dim of interpolation: sum over the samples k near x of weight * v[clamp(k)]; with
 * exclude_outside only samples inside the input count, their weights renormalised. Linear
 * interpolation clamps x into the input first. */
static double reference_interpolate(const resize_case *c, const double *v, int64_t n, double x) {
    if (strcmp(c->mode, "linear") == 0)
        x = x < 0 ? 0 : x > (double)(n - 1) ? (double)(n - 1) : x;
    double sum = 0, weights = 0;
    for (int64_t k = (int64_t)floor(x) - 2; k <= (int64_t)floor(x) + 3; k++) {
        double w = reference_weight(c, x, k);
        if (c->exclude_outside && (k < 0 || k >= n))
            continue;
        int64_t at = k < 0 ? 0 : k >= n ? n - 1 : k;
        sum += w * v[at];
        weights += w;
    }
    return c->exclude_outside ? sum / weights : sum;
}

static void resize_reference(const resize_case *c, const float *x, double *y) {
    int64_t planes = c->x.d[0] * c->x.d[1], in_h = c->x.d[2], in_w = c->x.d[3];
    int64_t out_h = c->out.d[2], out_w = c->out.d[3];
    double *column = malloc(sizeof(double) * (size_t)in_h), *row = malloc(sizeof(double) * (size_t)in_w);
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t oy = 0; oy < out_h; oy++) {
            bool out_y, out_x;
            double sy = reference_source(c, 2, oy, &out_y);
            for (int64_t ox = 0; ox < out_w; ox++) {
                double sx = reference_source(c, 3, ox, &out_x);
                for (int64_t iy = 0; iy < in_h; iy++) {
                    for (int64_t ix = 0; ix < in_w; ix++)
                        row[ix] = x[(p * in_h + iy) * in_w + ix];
                    column[iy] = reference_interpolate(c, row, in_w, sx);
                }
                double v = reference_interpolate(c, column, in_h, sy);
                y[(p * out_h + oy) * out_w + ox] = out_y || out_x ? c->extrapolation : v;
            }
        }
    }
    free(column);
    free(row);
}

static void test_resize_cubic_and_crop(void) {
    static const resize_case cases[] = {
        {"cubic half_pixel up (1, 2, 4, 5) -> (1, 2, 8, 9)", "cubic", "half_pixel", -0.75f, 0,
         {4, {1, 2, 4, 5}}, {4, {1, 2, 8, 9}}, {0}, 0},
        {"cubic half_pixel down (2, 1, 7, 6) -> (2, 1, 3, 4)", "cubic", "half_pixel", -0.75f, 0,
         {4, {2, 1, 7, 6}}, {4, {2, 1, 3, 4}}, {0}, 0},
        {"cubic A=-0.5 exclude_outside up (1, 1, 4, 4) -> (1, 1, 7, 9)", "cubic", "half_pixel", -0.5f, 1,
         {4, {1, 1, 4, 4}}, {4, {1, 1, 7, 9}}, {0}, 0},
        {"cubic A=-0.5 exclude_outside down (1, 1, 8, 6) -> (1, 1, 3, 5)", "cubic", "half_pixel", -0.5f,
         1, {4, {1, 1, 8, 6}}, {4, {1, 1, 3, 5}}, {0}, 0},
        {"cubic align_corners (1, 1, 4, 4) -> (1, 1, 6, 3)", "cubic", "align_corners", -0.75f, 0,
         {4, {1, 1, 4, 4}}, {4, {1, 1, 6, 3}}, {0}, 0},
        {"cubic asymmetric (1, 3, 3, 4) -> (1, 3, 6, 8)", "cubic", "asymmetric", -0.75f, 0,
         {4, {1, 3, 3, 4}}, {4, {1, 3, 6, 8}}, {0}, 0},
        {"linear tf_crop_and_resize (1, 1, 4, 4) -> (1, 1, 3, 3)", "linear", "tf_crop_and_resize",
         -0.75f, 0, {4, {1, 1, 4, 4}}, {4, {1, 1, 3, 3}}, {0, 0, 0.4f, 0.6f, 1, 1, 0.6f, 0.8f}, 0},
        {"linear tf_crop_and_resize beyond the input, extrapolation 10", "linear",
         "tf_crop_and_resize", -0.75f, 0, {4, {1, 2, 5, 4}}, {4, {1, 2, 4, 6}},
         {0, 0, -0.3f, 0.2f, 1, 1, 1.4f, 1.2f}, 10},
        {"cubic tf_crop_and_resize beyond the input, extrapolation -2", "cubic", "tf_crop_and_resize",
         -0.75f, 0, {4, {1, 1, 6, 6}}, {4, {1, 1, 5, 1}}, {0, 0, 0.1f, 0.5f, 1, 1, 1.3f, 0.9f}, -2},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        const resize_case *c = &cases[i];
        kn_graph g;
        resize_build(&g, c);
        kn_tensor *out = run_eval(&g);
        CHECK_MSG(out != NULL, "%s", c->what);
        if (out) {
            int64_t n = kn_numel(&out[0]);
            CHECK(kn_shape_equal(&out[0].shape, &c->out));
            double *want = malloc(sizeof(double) * (size_t)n);
            resize_reference(c, param_data(&g, "X"), want);
            expect_close(c->what, kn_f32(&out[0]), want, n, 2e-6);
            free(want);
            free_outputs(out, 1);
        }
        char what[128];
        snprintf(what, sizeof what, "Resize %s, gradient:", c->what);
        check_gradients(&g, what, (opcheck_options){.grad_mask = 1u});
        kn_graph_free(&g);
    }

    /* 1 and 2 threads agree bit for bit on a plane count that splits */
    resize_case big = {"", "cubic", "half_pixel", -0.75f, 0, {4, {2, 16, 24, 24}}, {4, {2, 16, 40, 36}},
                       {0}, 0};
    kn_graph g;
    resize_build(&g, &big);
    kn_tensor *y[2];
    for (int t = 0; t < 2; t++) {
        kn_threads_set(t + 1);
        y[t] = run_eval(&g);
    }
    kn_threads_set(0);
    bool same = y[0] && y[1] &&
                memcmp(y[0][0].data, y[1][0].data, sizeof(float) * (size_t)kn_numel(&y[0][0])) == 0;
    printf("  Resize cubic (2, 16, 24, 24) -> (40, 36): 1 and 2 threads bit-identical: %s\n",
           same ? "yes" : "NO");
    CHECK(same);
    free_outputs(y[0], 1);
    free_outputs(y[1], 1);
    kn_graph_free(&g);

    /* a roi that crops a leading dim is refused */
    resize_case crop_n = {"", "linear", "tf_crop_and_resize", -0.75f, 0, {4, {2, 1, 4, 4}},
                          {4, {2, 1, 3, 3}}, {0.5f, 0, 0, 0, 1, 1, 1, 1}, 0};
    resize_build(&g, &crop_n);
    CHECK(kn_graph_infer_shapes(&g) == KILN_ERR_UNSUPPORTED);
    printf("  roi cropping dim 0 -> %s\n", kiln_last_error());
    CHECK(strstr(kiln_last_error(), "roi crops dim 0") != NULL);
    kn_graph_free(&g);
}

/* The workspace Resize reports covers its scratch: a context sized from it up front is not grown
 * (re-allocated) by the first run. */
static void test_resize_workspace(void) {
    static const resize_case cases[] = {
        {"nearest", "nearest", "half_pixel", -0.75f, 0, {4, {1, 3, 5, 7}}, {4, {1, 3, 11, 13}}, {0}, 0},
        {"linear", "linear", "align_corners", -0.75f, 0, {4, {2, 2, 9, 4}}, {4, {2, 2, 3, 17}}, {0}, 0},
        {"cubic", "cubic", "half_pixel", -0.75f, 0, {4, {1, 1, 6, 6}}, {4, {1, 1, 30, 2}}, {0}, 0},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        kn_graph g;
        resize_build(&g, &cases[i]);
        CHECK_OK(kn_graph_infer_shapes(&g));
        const kn_node *n = &g.nodes[0];
        CHECK(n->op->workspace != NULL);
        size_t bytes = n->op->workspace ? n->op->workspace(&g, n) : 0;
        kn_op_ctx ctx = {0};
        void *sized = kn_op_scratch(&ctx, bytes);
        size_t sized_bytes = ctx.scratch_bytes;
        kn_tensor *out = run_forward(&g, &ctx);
        bool kept = out && ctx.scratch == sized && ctx.scratch_bytes == sized_bytes;
        printf("  Resize %-8s workspace %zu bytes: the first run allocates nothing more: %s\n",
               cases[i].what, bytes, kept ? "yes" : "NO");
        CHECK(bytes > 0 && kept);
        free_outputs(out, 1);
        kn_op_ctx_release(&ctx);
        kn_graph_free(&g);
    }
}

/* ---- the optimizer keeps nodes that compute in training mode ---- */

/* X -> Dropout(X, 0.5, training_mode) -> Relu -> Y: the Dropout is removed only when training_mode
 * is absent or false. */
static int optimized_dropouts_removed(int training_mode) {
    kn_graph g, opt;
    kn_graph_init(&g);
    int in[3] = {add_value(&g, "X", KN_VALUE_INPUT, KN_F32, SHAPE(2, 3), NULL),
                 add_value(&g, "ratio", KN_VALUE_CONST, KN_F32, SHAPE(1), (float[]){0.5f}), -1};
    if (training_mode >= 0)
        in[2] = add_value(&g, "training_mode", KN_VALUE_CONST, KN_BOOL, kn_shape_of(0, NULL),
                          (uint8_t[]){(uint8_t)training_mode});
    int dropped = add_output(&g, "dropped"), y = add_output(&g, "Y");
    add_node(&g, "Dropout", training_mode >= 0 ? 3 : 2, in, 1, &dropped);
    CHECK(test_add_node(&g, "Relu", "relu", 1, &dropped, 1, &y) == 1);
    g.inputs[g.n_inputs++] = in[0];
    g.outputs[g.n_outputs++] = y;
    kn_opt_stats stats = {0};
    CHECK_OK(kn_graph_optimize(&g, KN_OPT_IDENTITY, &opt, &stats));
    kn_graph_free(&opt);
    kn_graph_free(&g);
    return stats.identities_removed;
}

/* X -> Conv -> BatchNormalization(training_mode) -> Y: folded only when training_mode is 0. */
static int optimized_batchnorms_folded(int training_mode) {
    kn_graph g, opt;
    kn_graph_init(&g);
    int x = add_value(&g, "X", KN_VALUE_INPUT, KN_F32, SHAPE(1, 2, 5, 5), NULL);
    int w = add_param(&g, "W", SHAPE(3, 2, 3, 3));
    int conv_out = add_output(&g, "conv");
    int conv = test_add_node(&g, "Conv", "conv", 2, (int[]){x, w}, 1, &conv_out);
    CHECK(conv == 0);
    int bn_in[5] = {conv_out, add_param(&g, "scale", SHAPE(3)), add_param(&g, "B", SHAPE(3)),
                    add_param(&g, "mean", SHAPE(3)), add_param(&g, "var", SHAPE(3))};
    int y = add_output(&g, "Y");
    int bn = test_add_node(&g, "BatchNormalization", "bn", 5, bn_in, 1, &y);
    CHECK(bn == 1);
    CHECK_OK(kn_node_set_int(&g, bn, "training_mode", training_mode));
    opcheck_fill_uniform(&g, 4, 0.5f, 1.5f);
    g.inputs[g.n_inputs++] = x;
    g.outputs[g.n_outputs++] = y;
    kn_opt_stats stats = {0};
    CHECK_OK(kn_graph_optimize(&g, KN_OPT_BATCHNORM, &opt, &stats));
    kn_graph_free(&opt);
    kn_graph_free(&g);
    return stats.batchnorms_folded;
}

static void test_optimizer_keeps_training_nodes(void) {
    int removed[3] = {optimized_dropouts_removed(-1), optimized_dropouts_removed(0),
                      optimized_dropouts_removed(1)};
    printf("  Dropout removed: no training_mode %d, constant false %d, constant true %d\n", removed[0],
           removed[1], removed[2]);
    CHECK(removed[0] == 1 && removed[1] == 1 && removed[2] == 0);
    int folded[2] = {optimized_batchnorms_folded(0), optimized_batchnorms_folded(1)};
    printf("  BatchNormalization after Conv folded: training_mode 0 %d, training_mode 1 %d\n",
           folded[0], folded[1]);
    CHECK(folded[0] == 1 && folded[1] == 0);
}

int main(void) {
    printf("Pow with integer bases\n");
    test_pow_integer_base();
    printf("Max and Min on f16\n");
    test_max_min_f16();
    printf("LayerNormalization Mean and InvStdDev\n");
    test_layernorm_statistics();
    printf("BatchNormalization training_mode\n");
    test_batchnorm_training_mode();
    printf("Dropout mask and training_mode\n");
    test_dropout_mask();
    printf("Resize cubic and tf_crop_and_resize\n");
    test_resize_cubic_and_crop();
    printf("Resize workspace\n");
    test_resize_workspace();
    printf("The inference optimizer and training-mode nodes\n");
    test_optimizer_keeps_training_nodes();
    return check_finish();
}
