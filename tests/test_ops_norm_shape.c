/* BatchNormalization, LayerNormalization, Dropout, Flatten, Reshape, Transpose and Concat:
 * backward against finite differences, forward against direct formulas, the accumulate contract of
 * backward, thread-count independence, and clear errors on bad shapes and attributes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/threads.h"
#include "ops/op.h"
#include "support/opcheck.h"

/* kiln is a static library and the op table refers to ops weakly, so a program gets an op only when
 * something names it: these strong references pull this test's ops in. */
extern const kn_op kn_op_batchnormalization, kn_op_layernormalization, kn_op_dropout, kn_op_flatten,
    kn_op_reshape, kn_op_transpose, kn_op_concat;

#define SHAPE(...)                                                                   \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),          \
                (int64_t[]){__VA_ARGS__})

/* ---- graph building ---- */

static int add_value(kn_graph *g, const char *name, kn_value_kind kind, kn_shape shape) {
    int id = test_add_value(g, name, kind, KN_F32, &shape);
    CHECK_MSG(id >= 0, "%s", kiln_last_error());
    return id;
}

static int add_output(kn_graph *g, const char *name) {
    return add_value(g, name, KN_VALUE_ACT, kn_shape_of(0, NULL));
}

/* A constant i64 Reshape target. */
static int add_target_shape(kn_graph *g, int n, const int64_t *dims) {
    kn_shape s = SHAPE(n);
    int id = test_add_value(g, "target", KN_VALUE_CONST, KN_I64, &s);
    memcpy(g->values[id].data, dims, sizeof(int64_t) * (size_t)n);
    return id;
}

static int add_node(kn_graph *g, const char *op, int n_in, const int *in, int out) {
    int node = test_add_node(g, op, "node", n_in, in, 1, &out);
    CHECK_MSG(node == 0, "%s", kiln_last_error());
    return node;
}

static float *data_of(kn_graph *g, int id) { return g->values[id].data; }
static int64_t numel_of(const kn_graph *g, int id) { return kn_shape_numel(&g->values[id].shape); }

static void fill_uniform(float *p, int64_t n, float lo, float hi, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * kn_rng_uniform(&rng);
}

static void fill_value(kn_graph *g, int id, float lo, float hi, uint64_t seed) {
    fill_uniform(data_of(g, id), numel_of(g, id), lo, hi, seed);
}

/* ---- running an op ---- */

/* Runs node 0 of g forward into y, then, when dy is given, backward adding into din[i] (NULL: no
 * gradient wanted for input i). */
static kiln_status run_node(kn_graph *g, bool training, float *y, const float *dy, float *const *din) {
    KN_TRY(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[0];
    kn_tensor in[8], dx[8];
    kn_tensor *in_p[8] = {0}, *din_p[8] = {0};
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0)
            continue;
        const kn_value *v = &g->values[n->in[i]];
        in[i] = (kn_tensor){v->shape, v->dtype, v->data};
        in_p[i] = &in[i];
        if (din && din[i]) {
            dx[i] = (kn_tensor){v->shape, KN_F32, din[i]};
            din_p[i] = &dx[i];
        }
    }
    const kn_value *yv = kn_node_output(g, n, 0);
    kn_tensor out = {yv->shape, KN_F32, y};
    kn_tensor dout = {yv->shape, KN_F32, (void *)dy};
    kn_tensor *out_p[1] = {&out};
    const kn_tensor *dout_p[1] = {dy ? &dout : NULL};
    kn_op_ctx ctx = {.training = training, .seed = 1234, .step = 7, .node_index = 0};
    kn_op_call call = {.node = n, .in = in_p, .out = out_p, .dout = dout_p, .din = din_p, .ctx = &ctx};
    kiln_status st = n->op->forward(&call);
    if (st == KILN_OK && dy)
        st = n->op->backward(&call);
    kn_op_ctx_release(&ctx);
    return st;
}

static void check_gradients(kn_graph *g, const char *what, bool training, unsigned grad_mask) {
    printf("%s\n", what);
    opcheck_options options = {.training = training, .grad_mask = grad_mask};
    double worst = opcheck_gradients(g, 0, &options);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst |analytic - numeric| / tolerance = %g", what, worst);
}

/* Backward ADDS into din: running it on gradients prefilled with 0.5 gives 0.5 + the gradient from
 * zero, exactly. Checks every PARAM input. */
static void check_backward_accumulates(kn_graph *g, bool training, const char *what) {
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[0];
    int y = n->out[0];
    int64_t ny = numel_of(g, y);
    float *out = malloc(sizeof(float) * (size_t)ny), *dy = malloc(sizeof(float) * (size_t)ny);
    fill_uniform(dy, ny, -1, 1, 5);
    float *from_zero[8] = {0}, *from_half[8] = {0};
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i] < 0 || g->values[n->in[i]].kind != KN_VALUE_PARAM)
            continue;
        size_t count = (size_t)numel_of(g, n->in[i]);
        from_zero[i] = calloc(count, sizeof(float));
        from_half[i] = malloc(count * sizeof(float));
        for (size_t e = 0; e < count; e++)
            from_half[i][e] = 0.5f;
    }
    CHECK_OK(run_node(g, training, out, dy, from_zero));
    CHECK_OK(run_node(g, training, out, dy, from_half));
    int mismatches = 0;
    for (int i = 0; i < n->n_in; i++) {
        for (int64_t e = 0; from_zero[i] && e < numel_of(g, n->in[i]); e++)
            mismatches += from_half[i][e] != 0.5f + from_zero[i][e];
        free(from_zero[i]);
        free(from_half[i]);
    }
    CHECK_MSG(mismatches == 0, "%s: backward overwrote instead of adding (%d elements)", what,
              mismatches);
    free(out);
    free(dy);
}

/* Checks that inferring node 0 fails with `status` and a message containing `needle`. */
static void check_infer_fails(kn_graph *g, kiln_status status, const char *needle) {
    kiln_status st = kn_graph_infer_shapes(g);
    CHECK_MSG(st == status, "expected status %s, got %s (%s)", kiln_status_name(status),
              kiln_status_name(st), kiln_last_error());
    CHECK_MSG(strstr(kiln_last_error(), needle) != NULL, "message '%s' lacks '%s'", kiln_last_error(),
              needle);
    printf("  error as expected: %s\n", kiln_last_error());
}

/* ---- BatchNormalization ---- */

typedef struct bn_graph {
    kn_graph g;
    int x, scale, bias, mean, var, y;
} bn_graph;

static void bn_build(bn_graph *b, kn_shape x_shape) {
    kn_graph_init(&b->g);
    kn_shape c = SHAPE(x_shape.d[1]);
    b->x = add_value(&b->g, "X", KN_VALUE_PARAM, x_shape);
    b->scale = add_value(&b->g, "scale", KN_VALUE_PARAM, c);
    b->bias = add_value(&b->g, "B", KN_VALUE_PARAM, c);
    b->mean = add_value(&b->g, "input_mean", KN_VALUE_STATE, c);
    b->var = add_value(&b->g, "input_var", KN_VALUE_STATE, c);
    b->y = add_output(&b->g, "Y");
    add_node(&b->g, "BatchNormalization", 5, (int[]){b->x, b->scale, b->bias, b->mean, b->var}, b->y);
    opcheck_fill_uniform(&b->g, 11, -1, 1);
    fill_value(&b->g, b->mean, -0.5f, 0.5f, 12);
    fill_value(&b->g, b->var, 0.5f, 1.5f, 13);
}

static void test_batchnorm_gradients(void) {
    bn_graph b;
    bn_build(&b, SHAPE(6, 5));
    check_gradients(&b.g, "BatchNormalization (6, 5) training", true, 0);
    check_backward_accumulates(&b.g, true, "BatchNormalization training");
    kn_graph_free(&b.g);

    bn_build(&b, SHAPE(3, 4, 5, 6));
    check_gradients(&b.g, "BatchNormalization (3, 4, 5, 6) training", true, 0);
    check_gradients(&b.g, "BatchNormalization (3, 4, 5, 6) eval, all 5 inputs", false, 0x1f);
    check_backward_accumulates(&b.g, false, "BatchNormalization eval");
    kn_graph_free(&b.g);
}

static void test_batchnorm_forward(void) {
    enum { N = 8, C = 3, H = 5, W = 7, HW = H * W };
    const double eps = 1e-5, count = N * HW;
    bn_graph b;
    bn_build(&b, SHAPE(N, C, H, W));
    float *x = data_of(&b.g, b.x), *scale = data_of(&b.g, b.scale), *bias = data_of(&b.g, b.bias);
    float *running_mean = data_of(&b.g, b.mean), *running_var = data_of(&b.g, b.var);
    for (int n = 0; n < N; n++) /* channel c centred at c - 1 with spread 1 + c */
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++)
                x[(n * C + c) * HW + i] = (float)(c - 1) + (float)(1 + c) * x[(n * C + c) * HW + i];
    for (int c = 0; c < C; c++) {
        scale[c] = 1;
        bias[c] = 0;
    }
    double batch_mean[C], batch_var[C], old_mean[C], old_var[C];
    for (int c = 0; c < C; c++) {
        double sum = 0, squares = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                sum += x[(n * C + c) * HW + i];
        batch_mean[c] = sum / count;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                squares += pow(x[(n * C + c) * HW + i] - batch_mean[c], 2);
        batch_var[c] = squares / count;
        old_mean[c] = running_mean[c];
        old_var[c] = running_var[c];
    }

    kn_tensor *out = opcheck_forward(&b.g, 0, true);
    CHECK(out != NULL);
    if (!out)
        return;
    const float *y = out[0].data;
    double max_mean = 0, max_var_diff = 0, max_running_diff = 0;
    for (int c = 0; c < C; c++) {
        double sum = 0, squares = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                sum += y[(n * C + c) * HW + i];
        double mean = sum / count;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                squares += pow(y[(n * C + c) * HW + i] - mean, 2);
        double expected_var = batch_var[c] / (batch_var[c] + eps); /* ~1, less the eps share */
        max_mean = fmax(max_mean, fabs(mean));
        max_var_diff = fmax(max_var_diff, fabs(squares / count - expected_var));
        double expected_running_mean = 0.9 * old_mean[c] + 0.1 * batch_mean[c];
        double expected_running_var = 0.9 * old_var[c] + 0.1 * batch_var[c] * count / (count - 1);
        max_running_diff = fmax(max_running_diff, fabs(running_mean[c] - expected_running_mean));
        max_running_diff = fmax(max_running_diff, fabs(running_var[c] - expected_running_var));
    }
    printf("BatchNormalization training forward: max |channel mean| = %.3g, max |channel var - "
           "expected| = %.3g, max running stat diff = %.3g\n", max_mean, max_var_diff,
           max_running_diff);
    CHECK(max_mean < 1e-6);
    CHECK(max_var_diff < 1e-5);
    CHECK(max_running_diff < 1e-6);
    opcheck_free_outputs(out, 1);

    /* Eval: the running statistics just updated, and no further update. */
    float mean_before[C], var_before[C];
    memcpy(mean_before, running_mean, sizeof mean_before);
    memcpy(var_before, running_var, sizeof var_before);
    fill_value(&b.g, b.scale, 0.5f, 2.0f, 21);
    fill_value(&b.g, b.bias, -1.0f, 1.0f, 22);
    out = opcheck_forward(&b.g, 0, false);
    CHECK(out != NULL);
    if (!out)
        return;
    y = out[0].data;
    double max_eval_diff = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                int64_t e = (n * C + c) * HW + i;
                double expected = (x[e] - (double)running_mean[c]) / sqrt(running_var[c] + eps) *
                                      scale[c] + bias[c];
                max_eval_diff = fmax(max_eval_diff, fabs(y[e] - expected));
            }
    printf("BatchNormalization eval forward: max |y - formula| = %.3g\n", max_eval_diff);
    CHECK(max_eval_diff < 1e-5);
    CHECK(memcmp(mean_before, running_mean, sizeof mean_before) == 0);
    CHECK(memcmp(var_before, running_var, sizeof var_before) == 0);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&b.g);
}

static void test_batchnorm_errors(void) {
    kn_graph g;
    kn_graph_init(&g);
    int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 4, 3, 3));
    int scale = add_value(&g, "scale", KN_VALUE_PARAM, SHAPE(5));
    int rest = add_value(&g, "B", KN_VALUE_PARAM, SHAPE(4));
    int y = add_output(&g, "Y");
    add_node(&g, "BatchNormalization", 5, (int[]){x, scale, rest, rest, rest}, y);
    check_infer_fails(&g, KILN_ERR_SHAPE, "scale has shape (5)");
    kn_graph_free(&g);

    /* A single value per channel has no batch variance to train with. */
    bn_graph b;
    bn_build(&b, SHAPE(1, 3));
    float out[3];
    CHECK(run_node(&b.g, true, out, NULL, NULL) == KILN_ERR_SHAPE);
    CHECK(strstr(kiln_last_error(), "more than 1 value per channel") != NULL);
    kn_graph_free(&b.g);
}

/* ---- LayerNormalization ---- */

typedef struct ln_graph {
    kn_graph g;
    int x, scale, bias, y;
} ln_graph;

static void ln_build(ln_graph *l, kn_shape x_shape, int axis, bool with_bias) {
    kn_graph_init(&l->g);
    int a = axis < 0 ? axis + x_shape.ndim : axis;
    kn_shape normalized = kn_shape_of(x_shape.ndim - a, x_shape.d + a);
    l->x = add_value(&l->g, "X", KN_VALUE_PARAM, x_shape);
    l->scale = add_value(&l->g, "Scale", KN_VALUE_PARAM, normalized);
    l->bias = with_bias ? add_value(&l->g, "B", KN_VALUE_PARAM, normalized) : -1;
    l->y = add_output(&l->g, "Y");
    int node = add_node(&l->g, "LayerNormalization", with_bias ? 3 : 2,
                        (int[]){l->x, l->scale, l->bias}, l->y);
    CHECK_OK(kn_node_set_int(&l->g, node, "axis", axis));
    opcheck_fill_uniform(&l->g, 31, -1, 1);
}

static void test_layernorm_gradients(void) {
    static const struct { int axis; bool bias; const char *what; } cases[] = {
        {-1, true, "LayerNormalization (4, 6, 8) axis -1 with B"},
        {-1, false, "LayerNormalization (4, 6, 8) axis -1 without B"},
        {-2, true, "LayerNormalization (4, 6, 8) axis -2 with B"},
        {1, false, "LayerNormalization (4, 6, 8) axis 1 without B"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ln_graph l;
        ln_build(&l, SHAPE(4, 6, 8), cases[i].axis, cases[i].bias);
        check_gradients(&l.g, cases[i].what, true, 0);
        check_backward_accumulates(&l.g, true, cases[i].what);
        kn_graph_free(&l.g);
    }
}

static void test_layernorm_forward(void) {
    enum { ROWS = 5, D = 6 * 7 };
    ln_graph l;
    ln_build(&l, SHAPE(ROWS, 6, 7), -2, true);
    const float *x = data_of(&l.g, l.x), *scale = data_of(&l.g, l.scale), *bias = data_of(&l.g, l.bias);
    kn_tensor *out = opcheck_forward(&l.g, 0, false);
    CHECK(out != NULL);
    if (!out)
        return;
    const float *y = out[0].data;
    double max_diff = 0;
    for (int r = 0; r < ROWS; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < D; j++)
            mean += x[r * D + j] / (double)D;
        for (int j = 0; j < D; j++)
            var += pow(x[r * D + j] - mean, 2) / D;
        for (int j = 0; j < D; j++) {
            double expected = (x[r * D + j] - mean) / sqrt(var + 1e-5) * scale[j] + bias[j];
            max_diff = fmax(max_diff, fabs(y[r * D + j] - expected));
        }
    }
    printf("LayerNormalization forward: max |y - formula| = %.3g\n", max_diff);
    CHECK(max_diff < 1e-5);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&l.g);
}

static void test_layernorm_errors(void) {
    kn_graph g;
    kn_graph_init(&g);
    int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 3, 4));
    int scale = add_value(&g, "Scale", KN_VALUE_PARAM, SHAPE(3));
    int y = add_output(&g, "Y");
    add_node(&g, "LayerNormalization", 2, (int[]){x, scale}, y);
    check_infer_fails(&g, KILN_ERR_SHAPE, "Scale has shape (3)");
    kn_graph_free(&g);

    kn_graph_init(&g);
    x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 3, 4));
    scale = add_value(&g, "Scale", KN_VALUE_PARAM, SHAPE(4));
    int outs[4] = {add_output(&g, "Y"), add_output(&g, "Mean"), add_output(&g, "InvStdDev"),
                   add_output(&g, "extra")};
    int node = test_add_node(&g, "LayerNormalization", "node", 2, (int[]){x, scale}, 4, outs);
    CHECK(node == 0);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "LayerNormalization has 3 (Y, Mean, InvStdDev)");
    kn_graph_free(&g);
}

/* ---- Dropout ---- */

static int dropout_build(kn_graph *g, kn_shape shape, float ratio, bool ratio_as_input) {
    kn_graph_init(g);
    int x = add_value(g, "X", KN_VALUE_PARAM, shape);
    int y = add_output(g, "Y");
    if (ratio_as_input) {
        int r = add_value(g, "ratio", KN_VALUE_CONST, kn_shape_of(0, NULL));
        data_of(g, r)[0] = ratio;
        add_node(g, "Dropout", 2, (int[]){x, r}, y);
    } else {
        int node = add_node(g, "Dropout", 1, &x, y);
        CHECK_OK(kn_node_set_float(g, node, "ratio", ratio));
    }
    opcheck_fill_uniform(g, 41, 0.5f, 1.5f); /* no zeros: a zero output means dropped */
    return x;
}

static void test_dropout(void) {
    kn_graph g;
    dropout_build(&g, SHAPE(5, 40), 0.3f, false);
    check_gradients(&g, "Dropout (5, 40) ratio 0.3 training", true, 0);
    check_gradients(&g, "Dropout (5, 40) eval", false, 0);
    check_backward_accumulates(&g, true, "Dropout training");
    check_backward_accumulates(&g, false, "Dropout eval");
    kn_graph_free(&g);

    enum { N = 200 * 200 };
    const float ratio = 0.3f;
    int x_id = dropout_build(&g, SHAPE(200, 200), ratio, false);
    const float *x = data_of(&g, x_id);
    float *y = malloc(sizeof(float) * N), *y2 = malloc(sizeof(float) * N);
    kn_threads_set(1);
    CHECK_OK(run_node(&g, true, y, NULL, NULL));
    int64_t kept = 0;
    double max_scale_diff = 0;
    for (int64_t i = 0; i < N; i++) {
        if (y[i] == 0)
            continue;
        kept++;
        max_scale_diff = fmax(max_scale_diff, fabs(y[i] - x[i] / (1.0 - ratio)) / fabs(x[i]));
    }
    double kept_share = (double)kept / N;
    printf("Dropout ratio %.1f: kept %.4f of %d elements, max relative |survivor - x / (1 - ratio)| "
           "= %.3g\n", ratio, kept_share, N, max_scale_diff);
    CHECK(fabs(kept_share - (1 - ratio)) < 0.02); /* 6 standard deviations */
    CHECK(max_scale_diff < 1e-6);

    kn_threads_set(2);
    CHECK_OK(run_node(&g, true, y2, NULL, NULL));
    CHECK_MSG(memcmp(y, y2, sizeof(float) * N) == 0, "Dropout mask depends on the thread count");

    /* Another step draws another mask. */
    kn_tensor *other = opcheck_forward(&g, 0, true); /* step 0, run_node uses step 7 */
    CHECK(other != NULL);
    int64_t differ = 0;
    for (int64_t i = 0; other && i < N; i++)
        differ += (y[i] == 0) != (((float *)other[0].data)[i] == 0);
    printf("Dropout: masks of steps 0 and 7 differ in %.3f of the elements\n", (double)differ / N);
    CHECK(differ > N / 5);
    opcheck_free_outputs(other, 1);

    CHECK_OK(run_node(&g, false, y2, NULL, NULL));
    CHECK_MSG(memcmp(x, y2, sizeof(float) * N) == 0, "Dropout eval is not the identity");
    kn_graph_free(&g);

    /* Opset 12: the same ratio as a constant input gives the same mask. */
    dropout_build(&g, SHAPE(200, 200), ratio, true);
    CHECK_OK(run_node(&g, true, y2, NULL, NULL));
    CHECK_MSG(memcmp(y, y2, sizeof(float) * N) == 0, "ratio input and attribute disagree");
    check_gradients(&g, "Dropout (200, 200) ratio input 0.3 training", true, 0);
    kn_graph_free(&g);
    free(y);
    free(y2);

    dropout_build(&g, SHAPE(4), 1.0f, false);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "ratio 1 must be in [0, 1)");
    kn_graph_free(&g);

    kn_graph_init(&g);
    int x1 = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(4));
    int out[3] = {add_output(&g, "Y"), add_output(&g, "mask"), add_output(&g, "extra")};
    CHECK(test_add_node(&g, "Dropout", "node", 1, &x1, 3, out) == 0);
    check_infer_fails(&g, KILN_ERR_INVALID_ARG, "Dropout has 2 (output, mask)");
    kn_graph_free(&g);
}

/* ---- Flatten and Reshape ---- */

static void test_flatten(void) {
    static const struct { int64_t axis, rows, cols; } cases[] = {{1, 2, 60}, {2, 6, 20}, {0, 1, 120},
                                                                 {-1, 24, 5}, {4, 120, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 3, 4, 5));
        int y = add_output(&g, "Y");
        int node = add_node(&g, "Flatten", 1, &x, y);
        CHECK_OK(kn_node_set_int(&g, node, "axis", cases[i].axis));
        opcheck_fill_uniform(&g, 51, -1, 1);
        CHECK_OK(kn_graph_infer_shapes(&g));
        kn_shape expected = SHAPE(cases[i].rows, cases[i].cols);
        CHECK(kn_shape_equal(&g.values[y].shape, &expected));
        char what[64];
        snprintf(what, sizeof what, "Flatten (2, 3, 4, 5) axis %lld", (long long)cases[i].axis);
        check_gradients(&g, what, true, 0);
        kn_graph_free(&g);
    }
}

static void test_reshape(void) {
    static const struct {
        int n;
        int64_t target[4];
        kn_shape expected;
    } cases[] = {
        {2, {0, -1}, {2, {2, 30}}},
        {3, {0, -1, 3}, {3, {2, 10, 3}}},
        {4, {-1, 0, 1, 5}, {4, {2, 6, 1, 5}}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 6, 5));
        int target = add_target_shape(&g, cases[i].n, cases[i].target);
        int y = add_output(&g, "Y");
        add_node(&g, "Reshape", 2, (int[]){x, target}, y);
        opcheck_fill_uniform(&g, 61, -1, 1);
        CHECK_OK(kn_graph_infer_shapes(&g));
        char got[64], want[64];
        kn_shape_str(&g.values[y].shape, got, sizeof got);
        kn_shape_str(&cases[i].expected, want, sizeof want);
        CHECK_MSG(kn_shape_equal(&g.values[y].shape, &cases[i].expected), "Reshape gave %s, want %s",
                  got, want);
        char what[96];
        snprintf(what, sizeof what, "Reshape (2, 6, 5) -> %s", want);
        check_gradients(&g, what, true, 0);
        check_backward_accumulates(&g, true, what);
        kn_graph_free(&g);
    }
}

static void test_reshape_errors(void) {
    static const struct {
        int n;
        int64_t target[3];
        const char *needle;
    } cases[] = {
        {2, {7, -1}, "cannot reshape (2, 6, 5) (60 elements) to (7, -1)"},
        {2, {5, 5}, "cannot reshape (2, 6, 5) (60 elements) to (5, 5)"},
        {3, {-1, 6, -1}, "more than one -1"},
        {2, {-3, 20}, "only -1, 0 and positive"},
        {3, {1, 1, 0}, "60 elements"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 6, 5));
        int target = add_target_shape(&g, cases[i].n, cases[i].target);
        int y = add_output(&g, "Y");
        add_node(&g, "Reshape", 2, (int[]){x, target}, y);
        check_infer_fails(&g, KILN_ERR_SHAPE, cases[i].needle);
        kn_graph_free(&g);
    }
    kn_graph g;
    kn_graph_init(&g);
    int x = add_value(&g, "X", KN_VALUE_PARAM, SHAPE(2, 6, 5));
    kn_shape s = SHAPE(2);
    int target = test_add_value(&g, "computed_shape", KN_VALUE_INPUT, KN_I64, &s);
    int y = add_output(&g, "Y");
    add_node(&g, "Reshape", 2, (int[]){x, target}, y);
    check_infer_fails(&g, KILN_ERR_UNSUPPORTED, "'computed_shape' must be a constant");
    kn_graph_free(&g);
}

/* ---- Transpose ---- */

/* y[out index] = x[in index] with in index[perm[k]] = out index[k], one element at a time. */
static void transpose_naive(const float *x, const kn_shape *in, const int64_t *perm, float *y) {
    int rank = in->ndim;
    int64_t in_stride[KN_MAX_DIMS], out_dims[KN_MAX_DIMS], index[KN_MAX_DIMS];
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        in_stride[d] = stride;
        stride *= in->d[d];
    }
    for (int k = 0; k < rank; k++)
        out_dims[k] = in->d[perm[k]];
    for (int64_t e = 0; e < kn_shape_numel(in); e++) {
        int64_t rest = e, source = 0;
        for (int k = rank - 1; k >= 0; k--) {
            index[k] = rest % out_dims[k];
            rest /= out_dims[k];
        }
        for (int k = 0; k < rank; k++)
            source += index[k] * in_stride[perm[k]];
        y[e] = x[source];
    }
}

static int transpose_build(kn_graph *g, kn_shape shape, int n_perm, const int64_t *perm) {
    kn_graph_init(g);
    int x = add_value(g, "X", KN_VALUE_PARAM, shape);
    int y = add_output(g, "Y");
    int node = add_node(g, "Transpose", 1, &x, y);
    if (perm)
        CHECK_OK(kn_node_set_ints(g, node, "perm", n_perm, perm));
    opcheck_fill_uniform(g, 71, -1, 1);
    return x;
}

static void test_transpose_forward(void) {
    static const struct {
        kn_shape shape;
        int64_t perm[KN_MAX_DIMS];
        const char *what;
    } cases[] = {
        {{2, {37, 53}}, {1, 0}, "2-D, partial tiles"},
        {{2, {300, 200}}, {1, 0}, "2-D, threaded"},
        {{3, {5, 7, 9}}, {2, 0, 1}, "3-D"},
        {{3, {5, 7, 9}}, {1, 2, 0}, "3-D"},
        {{4, {2, 9, 4, 8}}, {0, 2, 1, 3}, "attention head split"},
        {{4, {2, 4, 9, 8}}, {0, 1, 3, 2}, "attention K^T"},
        {{4, {1, 5, 1, 7}}, {2, 3, 0, 1}, "size-1 dims"},
        {{4, {3, 1, 1, 4}}, {0, 2, 1, 3}, "moves only size-1 dims"},
        {{6, {2, 3, 4, 4, 5, 4}}, {0, 2, 4, 1, 3, 5}, "6-D patchify"},
        {{6, {16, 3, 8, 4, 8, 4}}, {0, 2, 4, 1, 3, 5}, "6-D patchify, threaded"},
        {{6, {2, 7, 3, 3, 7, 3}}, {0, 3, 1, 4, 2, 5}, "6-D unpatchify"},
        {{6, {2, 3, 4, 5, 6, 7}}, {5, 4, 3, 2, 1, 0}, "6-D reversed"},
    };
    kn_threads_set(2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        int x = transpose_build(&g, cases[i].shape, cases[i].shape.ndim, cases[i].perm);
        int64_t n = numel_of(&g, x);
        float *y = malloc(sizeof(float) * (size_t)n), *expected = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(run_node(&g, false, y, NULL, NULL));
        transpose_naive(data_of(&g, x), &cases[i].shape, cases[i].perm, expected);
        double max_diff = 0;
        for (int64_t e = 0; e < n; e++)
            max_diff = fmax(max_diff, fabs(y[e] - expected[e]));
        char buf[64];
        printf("Transpose %s %s: max |y - naive| = %g\n", cases[i].what,
               kn_shape_str(&cases[i].shape, buf, sizeof buf), max_diff);
        CHECK(max_diff == 0);
        free(y);
        free(expected);
        kn_graph_free(&g);
    }

    /* No perm: the dims reversed. */
    kn_graph g;
    int x = transpose_build(&g, SHAPE(3, 4, 5), 0, NULL);
    float y[60], expected[60];
    CHECK_OK(run_node(&g, false, y, NULL, NULL));
    transpose_naive(data_of(&g, x), &g.values[x].shape, (int64_t[]){2, 1, 0}, expected);
    CHECK(memcmp(y, expected, sizeof y) == 0);
    kn_graph_free(&g);
}

static void test_transpose_gradients(void) {
    static const struct {
        kn_shape shape;
        int64_t perm[KN_MAX_DIMS];
        const char *what;
    } cases[] = {
        {{3, {3, 4, 5}}, {2, 0, 1}, "Transpose (3, 4, 5) perm (2, 0, 1)"},
        {{4, {2, 3, 4, 5}}, {0, 2, 1, 3}, "Transpose (2, 3, 4, 5) perm (0, 2, 1, 3)"},
        {{4, {2, 3, 4, 5}}, {0, 1, 3, 2}, "Transpose (2, 3, 4, 5) perm (0, 1, 3, 2)"},
        {{6, {2, 2, 2, 3, 2, 3}}, {0, 2, 4, 1, 3, 5},
         "Transpose (2, 2, 2, 3, 2, 3) perm (0, 2, 4, 1, 3, 5)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        transpose_build(&g, cases[i].shape, cases[i].shape.ndim, cases[i].perm);
        check_gradients(&g, cases[i].what, true, 0);
        check_backward_accumulates(&g, true, cases[i].what);
        kn_graph_free(&g);
    }
}

static void test_transpose_errors(void) {
    static const struct {
        int n;
        int64_t perm[3];
        const char *needle;
    } cases[] = {
        {3, {0, 0, 1}, "perm (0, 0, 1) is not a permutation of 0..2"},
        {3, {0, 3, 1}, "perm (0, 3, 1) is not a permutation"},
        {2, {1, 0}, "perm has 2 entries; the input has rank 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_graph g;
        transpose_build(&g, SHAPE(2, 3, 4), cases[i].n, cases[i].perm);
        check_infer_fails(&g, KILN_ERR_INVALID_ARG, cases[i].needle);
        kn_graph_free(&g);
    }
}

/* ---- Concat ---- */

static void concat_build(kn_graph *g, const kn_shape *shapes, int n, int64_t axis, int *ids) {
    kn_graph_init(g);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "X%d", i);
        ids[i] = add_value(g, name, KN_VALUE_PARAM, shapes[i]);
    }
    int y = add_output(g, "Y");
    int node = add_node(g, "Concat", n, ids, y);
    CHECK_OK(kn_node_set_int(g, node, "axis", axis));
    opcheck_fill_uniform(g, 81, -1, 1);
}

static void test_concat(void) {
    static const struct {
        kn_shape shapes[3];
        int64_t axis;
        kn_shape expected;
        const char *what;
    } cases[] = {
        {{{3, {2, 3, 4}}, {3, {2, 1, 4}}, {3, {2, 5, 4}}}, 1, {3, {2, 9, 4}},
         "Concat (2, 3|1|5, 4) axis 1"},
        {{{3, {2, 3, 4}}, {3, {2, 3, 1}}, {3, {2, 3, 6}}}, -1, {3, {2, 3, 11}},
         "Concat (2, 3, 4|1|6) axis -1"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_graph g;
        int ids[3];
        concat_build(&g, cases[c].shapes, 3, cases[c].axis, ids);
        CHECK_OK(kn_graph_infer_shapes(&g));
        int y_id = g.nodes[0].out[0];
        CHECK(kn_shape_equal(&g.values[y_id].shape, &cases[c].expected));

        /* Every output element against the input it comes from, found by its index on the axis. */
        const kn_shape *ys = &cases[c].expected;
        int axis = kn_axis_normalize(cases[c].axis, ys->ndim);
        int64_t n = kn_shape_numel(ys), inner = kn_shape_span(ys, axis + 1, ys->ndim);
        float *y = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(run_node(&g, false, y, NULL, NULL));
        int mismatches = 0;
        for (int64_t e = 0; e < n; e++) {
            int64_t outer = e / (ys->d[axis] * inner), along = e / inner % ys->d[axis], in = e % inner;
            int i = 0;
            while (along >= cases[c].shapes[i].d[axis])
                along -= cases[c].shapes[i++].d[axis];
            const float *x = data_of(&g, ids[i]);
            mismatches += y[e] != x[(outer * cases[c].shapes[i].d[axis] + along) * inner + in];
        }
        printf("%s: %d mismatching elements of %lld\n", cases[c].what, mismatches, (long long)n);
        CHECK(mismatches == 0);
        free(y);
        check_gradients(&g, cases[c].what, true, 0);
        check_backward_accumulates(&g, true, cases[c].what);
        kn_graph_free(&g);
    }

    kn_graph g;
    int ids[2];
    concat_build(&g, (kn_shape[]){{2, {2, 3}}, {3, {2, 3, 4}}}, 2, 1, ids);
    check_infer_fails(&g, KILN_ERR_SHAPE, "input 1 has shape (2, 3, 4), input 0 (2, 3)");
    kn_graph_free(&g);
    concat_build(&g, (kn_shape[]){{2, {2, 3}}, {2, {4, 3}}}, 2, 1, ids);
    check_infer_fails(&g, KILN_ERR_SHAPE, "except on axis 1");
    kn_graph_free(&g);
}

/* ---- thread-count independence of the reductions ---- */

/* Forward and all input gradients of node 0 with `threads` threads, concatenated into one buffer. */
static float *run_with_threads(kn_graph *g, bool training, int threads, int64_t *total) {
    kn_threads_set(threads);
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[0];
    int64_t ny = numel_of(g, n->out[0]);
    *total = ny;
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= 0 && g->values[n->in[i]].kind == KN_VALUE_PARAM)
            *total += numel_of(g, n->in[i]);
    float *all = calloc((size_t)*total, sizeof(float));
    float *dy = malloc(sizeof(float) * (size_t)ny);
    fill_uniform(dy, ny, -1, 1, 91);
    float *din[8] = {0}, *next = all + ny;
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= 0 && g->values[n->in[i]].kind == KN_VALUE_PARAM) {
            din[i] = next;
            next += numel_of(g, n->in[i]);
        }
    CHECK_OK(run_node(g, training, all, dy, din));
    free(dy);
    return all;
}

/* Runs node 0 with 1 and then 2 threads, each from the same state values (BatchNorm's running
 * statistics), and compares outputs, gradients and updated state bit for bit. */
static void check_thread_independent(kn_graph *g, bool training, const char *what) {
    const kn_node *n = &g->nodes[0];
    float *state_start[8] = {0}, *state_one[8] = {0};
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= 0 && g->values[n->in[i]].kind == KN_VALUE_STATE) {
            size_t bytes = sizeof(float) * (size_t)numel_of(g, n->in[i]);
            state_start[i] = malloc(bytes);
            state_one[i] = malloc(bytes);
            memcpy(state_start[i], data_of(g, n->in[i]), bytes);
        }
    int64_t n1, n2;
    float *one = run_with_threads(g, training, 1, &n1);
    for (int i = 0; i < n->n_in; i++)
        if (state_start[i]) {
            size_t bytes = sizeof(float) * (size_t)numel_of(g, n->in[i]);
            memcpy(state_one[i], data_of(g, n->in[i]), bytes);
            memcpy(data_of(g, n->in[i]), state_start[i], bytes);
        }
    float *two = run_with_threads(g, training, 2, &n2);
    bool same = n1 == n2 && memcmp(one, two, sizeof(float) * (size_t)n1) == 0;
    for (int i = 0; i < n->n_in; i++) {
        if (state_start[i])
            same = same && memcmp(state_one[i], data_of(g, n->in[i]),
                                  sizeof(float) * (size_t)numel_of(g, n->in[i])) == 0;
        free(state_start[i]);
        free(state_one[i]);
    }
    CHECK_MSG(same, "%s: 1 and 2 threads give different results", what);
    printf("%s: 1 and 2 threads give bit-identical results: %s\n", what, same ? "yes" : "NO");
    free(one);
    free(two);
}

static void test_thread_independence(void) {
    bn_graph b;
    bn_build(&b, SHAPE(8, 16, 32, 32));
    check_thread_independent(&b.g, true, "BatchNormalization (8, 16, 32, 32) training");
    check_thread_independent(&b.g, false, "BatchNormalization (8, 16, 32, 32) eval");
    kn_graph_free(&b.g);

    ln_graph l;
    ln_build(&l, SHAPE(200, 200), -1, true);
    check_thread_independent(&l.g, true, "LayerNormalization (200, 200)");
    kn_graph_free(&l.g);

    kn_graph g;
    transpose_build(&g, SHAPE(16, 3, 8, 4, 8, 4), 6, (int64_t[]){0, 2, 4, 1, 3, 5});
    check_thread_independent(&g, true, "Transpose patchify (16, 3, 8, 4, 8, 4)");
    kn_graph_free(&g);
}

static void test_registered(void) {
    static const struct { const char *name; const kn_op *op; } ops[] = {
        {"BatchNormalization", &kn_op_batchnormalization},
        {"LayerNormalization", &kn_op_layernormalization},
        {"Dropout", &kn_op_dropout}, {"Flatten", &kn_op_flatten}, {"Reshape", &kn_op_reshape},
        {"Transpose", &kn_op_transpose}, {"Concat", &kn_op_concat},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        CHECK_MSG(kn_op_find(ops[i].name) == ops[i].op, "op %s is not in the table", ops[i].name);
}

int main(void) {
    test_registered();
    test_batchnorm_gradients();
    test_batchnorm_forward();
    test_batchnorm_errors();
    test_layernorm_gradients();
    test_layernorm_forward();
    test_layernorm_errors();
    test_dropout();
    test_flatten();
    test_reshape();
    test_reshape_errors();
    test_transpose_forward();
    test_transpose_gradients();
    test_transpose_errors();
    test_concat();
    test_thread_independence();
    return check_finish();
}
