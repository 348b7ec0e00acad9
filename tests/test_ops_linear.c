/* Linear and spatial ops: Gemm, MatMul, Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.
 *
 * 1. every backward against central finite differences (opcheck), in several configurations;
 * 2. Conv, Gemm and MatMul forward against direct loops written here (no im2col, no kn_sgemm), with
 *    the float rounding bound (K + 2) * FLT_EPSILON * sum |a_k b_k| of each output as tolerance;
 * 3. backward adds into the gradient buffers instead of overwriting them, and is repeatable;
 * 4. bad shapes and attributes give an error with a message, not a crash;
 * 5. Conv in training, where 3x3 stride-1 layers of 16+ channels run by Winograd's transforms:
 *    forward, dX, dW and dB against direct double loops, within the float rounding bound of the
 *    largest output's magnitude; finite differences; repeated backwards add.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "ops/op.h"
#include "support/opcheck.h"

#define SHAPE(...) \
    kn_shape_of((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

static const kn_shape scalar_shape = {0};

/* The entries under test, named as in src/ops/registry.c. Naming them here also makes the linker
 * take their objects out of libkiln.a, which the registry's weak references alone do not do. */
extern const kn_op kn_op_gemm, kn_op_matmul, kn_op_conv, kn_op_maxpool, kn_op_averagepool,
    kn_op_globalaveragepool, kn_op_globalmaxpool;

static void test_registry(void) {
    const struct {
        const char *name;
        const kn_op *op;
    } entries[] = {{"Gemm", &kn_op_gemm},
                   {"MatMul", &kn_op_matmul},
                   {"Conv", &kn_op_conv},
                   {"MaxPool", &kn_op_maxpool},
                   {"AveragePool", &kn_op_averagepool},
                   {"GlobalAveragePool", &kn_op_globalaveragepool},
                   {"GlobalMaxPool", &kn_op_globalmaxpool}};
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        const kn_op *op = entries[i].op;
        CHECK_MSG(kn_op_find(entries[i].name) == op, "%s is not in the op table", entries[i].name);
        CHECK(op->infer && op->forward && op->backward && op->flops);
    }
}

static bool has_shape(const kn_shape *shape, kn_shape expect) { return kn_shape_equal(shape, &expect); }

static int add_param(kn_graph *g, const char *name, kn_shape shape) {
    return test_add_value(g, name, KN_VALUE_PARAM, KN_F32, &shape);
}

/* Adds the node `op` reading `in` and writing one new value "y"; returns the node index. */
static int add_node(kn_graph *g, const char *op, int n_in, const int *in) {
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &scalar_shape);
    return test_add_node(g, op, op, n_in, in, 1, &y);
}

static float *value_data(kn_graph *g, const char *name) {
    return g->values[kn_graph_find_value(g, name)].data;
}

static const kn_shape *output_shape(const kn_graph *g, int node) {
    return &g->values[g->nodes[node].out[0]].shape;
}

/* Overwrites value `name` with a seeded shuffle of -1, -1 + 0.01, -1 + 0.02, ...: no two entries are
 * closer than 0.01, ten times the finite-difference step, so no max window has a near tie. */
static void fill_spaced(kn_graph *g, const char *name, uint64_t seed) {
    kn_value *v = &g->values[kn_graph_find_value(g, name)];
    float *x = v->data;
    int64_t n = kn_shape_numel(&v->shape);
    for (int64_t i = 0; i < n; i++)
        x[i] = -1.0f + 0.01f * (float)i;
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(&rng, (uint64_t)i + 1);
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

/* |diff| as a fraction of the rounding bound of a float sum of `terms` products whose magnitudes
 * add up to `magnitude`: (terms + 2) * FLT_EPSILON * magnitude, whatever the summation order. */
static double rounding_ratio(double diff, int64_t terms, double magnitude) {
    return diff / ((double)(terms + 2) * FLT_EPSILON * magnitude + FLT_MIN);
}

static void check_gradients(const char *label, kn_graph *g, int node, unsigned grad_mask) {
    printf("%s\n", label);
    opcheck_options options = {.grad_mask = grad_mask};
    double worst = opcheck_gradients(g, node, &options);
    CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst error ratio %.3g", label, worst);
}

/* ---- Gemm ---- */

typedef struct gemm_case {
    const char *label;
    int64_t a[2], b[2];
    int c_rank; /* -1: no C */
    int64_t c[2];
    int trans_a, trans_b;
    float alpha, beta;
} gemm_case;

static const gemm_case gemm_cases[] = {
    {"Gemm A (3,4) B (4,5) C (5)", {3, 4}, {4, 5}, 1, {5}, 0, 0, 1.0f, 1.0f},
    {"Gemm transA, C (1,5), alpha 0.5 beta 2", {4, 3}, {4, 5}, 2, {1, 5}, 1, 0, 0.5f, 2.0f},
    {"Gemm transB, C (3,1)", {3, 4}, {5, 4}, 2, {3, 1}, 0, 1, 1.0f, 1.0f},
    {"Gemm transA transB, C (3,5), alpha -1.5 beta 0.25", {4, 3}, {5, 4}, 2, {3, 5}, 1, 1, -1.5f, 0.25f},
    {"Gemm scalar C, beta -0.5", {3, 4}, {4, 5}, 0, {0}, 0, 0, 1.0f, -0.5f},
    {"Gemm no C, transB", {6, 7}, {2, 7}, -1, {0}, 0, 1, 1.0f, 1.0f},
};

static int build_gemm(kn_graph *g, const gemm_case *c) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "A", SHAPE(c->a[0], c->a[1])), add_param(g, "B", SHAPE(c->b[0], c->b[1])),
                 -1};
    if (c->c_rank >= 0)
        in[2] = add_param(g, "C", kn_shape_of(c->c_rank, c->c));
    int node = add_node(g, "Gemm", c->c_rank >= 0 ? 3 : 2, in);
    kn_node_set_int(g, node, "transA", c->trans_a);
    kn_node_set_int(g, node, "transB", c->trans_b);
    kn_node_set_float(g, node, "alpha", c->alpha);
    kn_node_set_float(g, node, "beta", c->beta);
    return node;
}

static void test_gemm(void) {
    double worst_ratio = 0, worst_diff = 0;
    for (size_t k = 0; k < sizeof gemm_cases / sizeof gemm_cases[0]; k++) {
        const gemm_case *c = &gemm_cases[k];
        kn_graph g;
        int node = build_gemm(&g, c);
        opcheck_fill_uniform(&g, 100 + k, -1.0f, 1.0f);
        check_gradients(c->label, &g, node, 0);

        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        if (!out) {
            kn_graph_free(&g);
            continue;
        }
        int64_t M = c->trans_a ? c->a[1] : c->a[0], K = c->trans_a ? c->a[0] : c->a[1];
        int64_t N = c->trans_b ? c->b[0] : c->b[1];
        CHECK(has_shape(&out[0].shape, SHAPE(M, N)));
        const float *A = value_data(&g, "A"), *B = value_data(&g, "B");
        const float *C = c->c_rank >= 0 ? value_data(&g, "C") : NULL;
        int64_t c_rows = c->c_rank == 2 ? c->c[0] : 1, c_cols = c->c_rank >= 1 ? c->c[c->c_rank - 1] : 1;
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                double sum = 0, magnitude = 0;
                for (int64_t p = 0; p < K; p++) {
                    double a = c->trans_a ? A[p * M + i] : A[i * K + p];
                    double b = c->trans_b ? B[j * K + p] : B[p * N + j];
                    sum += a * b;
                    magnitude += fabs(a * b);
                }
                double expect = c->alpha * sum;
                magnitude = fabs(c->alpha) * magnitude;
                if (C) {
                    double cv = C[(c_rows == 1 ? 0 : i) * c_cols + (c_cols == 1 ? 0 : j)];
                    expect += c->beta * cv;
                    magnitude += fabs(c->beta * cv);
                }
                double diff = fabs(kn_f32(&out[0])[i * N + j] - expect);
                worst_diff = fmax(worst_diff, diff);
                worst_ratio = fmax(worst_ratio, rounding_ratio(diff, K, magnitude));
            }
        }
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }
    printf("Gemm forward vs direct loop: max |diff| = %.3g (%.3g of the rounding bound)\n", worst_diff,
           worst_ratio);
    CHECK(worst_ratio <= 1);
}

/* ---- MatMul ---- */

typedef struct matmul_case {
    const char *label;
    kn_shape a, b, y;
} matmul_case;

/* Direct matmul with numpy broadcasting spelled out: both operands promoted to 6-D (a 1-D A as a
 * row, a 1-D B as a column), batch coordinates taken modulo each operand's dims. Returns the worst
 * |diff| / rounding bound. */
static double matmul_compare_direct(const matmul_case *c, kn_graph *g, const kn_tensor *y,
                                    double *worst_diff) {
    int64_t ad[6] = {1, 1, 1, 1, 1, 1}, bd[6] = {1, 1, 1, 1, 1, 1};
    for (int i = 0; i < c->a.ndim; i++)
        ad[(c->a.ndim == 1 ? 5 : 6 - c->a.ndim) + i] = c->a.d[i];
    for (int i = 0; i < c->b.ndim; i++)
        bd[(c->b.ndim == 1 ? 4 : 6 - c->b.ndim) + i] = c->b.d[i];
    int64_t M = ad[4], K = ad[5], N = bd[5], yd[4], n_batch = 1;
    for (int i = 0; i < 4; i++) {
        yd[i] = ad[i] == 1 ? bd[i] : ad[i];
        n_batch *= yd[i];
    }
    CHECK_MSG(kn_numel(y) == n_batch * M * N, "%s: output size", c->label);
    const float *A = value_data(g, "A"), *B = value_data(g, "B"), *Y = kn_f32(y);
    double worst_ratio = 0;
    for (int64_t batch = 0; batch < n_batch; batch++) {
        int64_t a_base = 0, b_base = 0, rest = batch, a_stride = M * K, b_stride = K * N;
        for (int i = 3; i >= 0; i--) {
            int64_t coord = rest % yd[i];
            rest /= yd[i];
            a_base += (coord % ad[i]) * a_stride;
            b_base += (coord % bd[i]) * b_stride;
            a_stride *= ad[i];
            b_stride *= bd[i];
        }
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                double sum = 0, magnitude = 0;
                for (int64_t p = 0; p < K; p++) {
                    double t = (double)A[a_base + i * K + p] * B[b_base + p * N + j];
                    sum += t;
                    magnitude += fabs(t);
                }
                double diff = fabs(Y[(batch * M + i) * N + j] - sum);
                *worst_diff = fmax(*worst_diff, diff);
                worst_ratio = fmax(worst_ratio, rounding_ratio(diff, K, magnitude));
            }
        }
    }
    return worst_ratio;
}

static void test_matmul(void) {
    const matmul_case cases[] = {
        {"MatMul (3,4) @ (4,5)", SHAPE(3, 4), SHAPE(4, 5), SHAPE(3, 5)},
        {"MatMul (2,1,3,4) @ (3,4,2) broadcast batch", SHAPE(2, 1, 3, 4), SHAPE(3, 4, 2),
         SHAPE(2, 3, 3, 2)},
        {"MatMul (2,3,4) @ (4) 1-D B", SHAPE(2, 3, 4), SHAPE(4), SHAPE(2, 3)},
        {"MatMul (4) @ (2,4,3) 1-D A", SHAPE(4), SHAPE(2, 4, 3), SHAPE(2, 3)},
        {"MatMul (4) @ (4) dot", SHAPE(4), SHAPE(4), scalar_shape},
        {"MatMul (2,3,4) @ (4,5) dense on a sequence", SHAPE(2, 3, 4), SHAPE(4, 5), SHAPE(2, 3, 5)},
        {"MatMul (2,2,3,4) @ (2,2,4,3) attention", SHAPE(2, 2, 3, 4), SHAPE(2, 2, 4, 3),
         SHAPE(2, 2, 3, 3)},
        {"MatMul (3,4) @ (2,4,5) shared A", SHAPE(3, 4), SHAPE(2, 4, 5), SHAPE(2, 3, 5)},
        {"MatMul (1,2,1,1,3,2) @ (2,1,2,1,2,3) 6-D", SHAPE(1, 2, 1, 1, 3, 2), SHAPE(2, 1, 2, 1, 2, 3),
         SHAPE(2, 2, 2, 1, 3, 3)},
        {"MatMul (0,3,4) @ (4,5) empty batch", SHAPE(0, 3, 4), SHAPE(4, 5), SHAPE(0, 3, 5)},
        {"MatMul (2,0) @ (0,3): K = 0, zeros", SHAPE(2, 0), SHAPE(0, 3), SHAPE(2, 3)},
    };
    double worst_ratio = 0, worst_diff = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const matmul_case *c = &cases[k];
        kn_graph g;
        kn_graph_init(&g);
        int in[2] = {add_param(&g, "A", c->a), add_param(&g, "B", c->b)};
        int node = add_node(&g, "MatMul", 2, in);
        opcheck_fill_uniform(&g, 200 + k, -1.0f, 1.0f);
        check_gradients(c->label, &g, node, 0);
        CHECK_MSG(kn_shape_equal(output_shape(&g, node), &c->y), "%s: output shape", c->label);

        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        if (!out) {
            kn_graph_free(&g);
            continue;
        }
        worst_ratio = fmax(worst_ratio, matmul_compare_direct(c, &g, &out[0], &worst_diff));
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }
    printf("MatMul forward vs direct loop: max |diff| = %.3g (%.3g of the rounding bound)\n", worst_diff,
           worst_ratio);
    CHECK(worst_ratio <= 1);
}

/* ---- Conv ---- */

typedef struct conv_case {
    const char *label;
    int64_t x[4], w[4];
    bool bias;
    int64_t strides[2], pads[4], dilations[2], group;
    const char *auto_pad; /* NULL: explicit pads */
} conv_case;

static const conv_case conv_cases[] = {
    {"Conv 3x3 pad 1 bias", {2, 3, 6, 6}, {4, 3, 3, 3}, true, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, NULL},
    {"Conv stride 2, pads (1,0,0,1), no bias", {2, 2, 7, 6}, {3, 2, 3, 3}, false, {2, 2}, {1, 0, 0, 1},
     {1, 1}, 1, NULL},
    {"Conv dilation 2 pad 2", {1, 2, 7, 7}, {3, 2, 3, 3}, true, {1, 1}, {2, 2, 2, 2}, {2, 2}, 1, NULL},
    {"Conv 2 groups", {1, 4, 5, 5}, {6, 2, 3, 3}, true, {1, 1}, {1, 1, 1, 1}, {1, 1}, 2, NULL},
    {"Conv depthwise (group = C)", {2, 3, 5, 5}, {3, 1, 3, 3}, true, {1, 1}, {1, 1, 1, 1}, {1, 1}, 3,
     NULL},
    {"Conv depthwise multiplier 2, stride 2", {1, 2, 6, 6}, {4, 1, 3, 3}, false, {2, 2}, {1, 1, 1, 1},
     {1, 1}, 2, NULL},
    {"Conv SAME_UPPER stride 2", {1, 2, 6, 5}, {3, 2, 3, 3}, true, {2, 2}, {0}, {1, 1}, 1, "SAME_UPPER"},
    {"Conv SAME_LOWER 2x2 kernel", {1, 2, 5, 5}, {2, 2, 2, 2}, true, {1, 1}, {0}, {1, 1}, 1,
     "SAME_LOWER"},
    {"Conv VALID 2x3 kernel stride (1,2)", {1, 2, 5, 7}, {2, 2, 2, 3}, false, {1, 2}, {0}, {1, 1}, 1,
     "VALID"},
    {"Conv 1x1 pointwise bias", {2, 4, 3, 3}, {5, 4, 1, 1}, true, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, NULL},
    {"Conv 1x1 pointwise 2 groups", {1, 4, 3, 4}, {6, 2, 1, 1}, false, {1, 1}, {0, 0, 0, 0}, {1, 1}, 2,
     NULL},
    {"Conv 1x1 stride 2", {1, 3, 5, 5}, {2, 3, 1, 1}, true, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, NULL},
    {"Conv window in padding only, stride 3 dilation 2", {1, 1, 4, 4}, {2, 1, 2, 2}, true, {3, 3},
     {3, 3, 3, 3}, {2, 2}, 1, NULL},
};

static int build_conv(kn_graph *g, const conv_case *c) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "X", kn_shape_of(4, c->x)), add_param(g, "W", kn_shape_of(4, c->w)), -1};
    if (c->bias)
        in[2] = add_param(g, "B", SHAPE(c->w[0]));
    int node = add_node(g, "Conv", c->bias ? 3 : 2, in);
    kn_node_set_ints(g, node, "strides", 2, c->strides);
    kn_node_set_ints(g, node, "dilations", 2, c->dilations);
    kn_node_set_int(g, node, "group", c->group);
    if (c->auto_pad)
        kn_node_set_string(g, node, "auto_pad", c->auto_pad);
    else
        kn_node_set_ints(g, node, "pads", 4, c->pads);
    return node;
}

/* Begin padding and output size of one axis, from the ONNX spec's formulas. */
static void conv_axis(const conv_case *c, int axis, int64_t *pad_begin, int64_t *out) {
    int64_t in = c->x[2 + axis], s = c->strides[axis];
    int64_t extent = (c->w[2 + axis] - 1) * c->dilations[axis] + 1;
    if (c->auto_pad && strncmp(c->auto_pad, "SAME", 4) == 0) {
        *out = (in + s - 1) / s;
        int64_t total = (*out - 1) * s + extent - in;
        total = total > 0 ? total : 0;
        *pad_begin = strcmp(c->auto_pad, "SAME_UPPER") == 0 ? total / 2 : (total + 1) / 2;
    } else {
        int64_t before = c->auto_pad ? 0 : c->pads[axis], after = c->auto_pad ? 0 : c->pads[axis + 2];
        *pad_begin = before;
        *out = (in + before + after - extent) / s + 1;
    }
}

/* Direct convolution, one output at a time; returns the worst |diff| / rounding bound. */
static double conv_compare_direct(const conv_case *c, kn_graph *g, const kn_tensor *y,
                                  double *worst_diff) {
    const float *X = value_data(g, "X"), *W = value_data(g, "W");
    const float *B = c->bias ? value_data(g, "B") : NULL;
    int64_t N = c->x[0], C = c->x[1], H = c->x[2], Wd = c->x[3], M = c->w[0], Cg = c->w[1];
    int64_t kh = c->w[2], kw = c->w[3], Mg = M / c->group, ph, pw, OH, OW;
    conv_axis(c, 0, &ph, &OH);
    conv_axis(c, 1, &pw, &OW);
    CHECK_MSG(has_shape(&y->shape, SHAPE(N, M, OH, OW)), "%s: output shape", c->label);
    if (!has_shape(&y->shape, SHAPE(N, M, OH, OW)))
        return INFINITY;
    double worst_ratio = 0;
    for (int64_t index = 0; index < N * M * OH * OW; index++) {
        int64_t ow = index % OW, oh = index / OW % OH, m = index / (OW * OH) % M;
        int64_t n = index / (OW * OH * M);
        double sum = B ? B[m] : 0, magnitude = B ? fabs(B[m]) : 0;
        for (int64_t cg = 0; cg < Cg; cg++) {
            int64_t channel = (m / Mg) * Cg + cg;
            for (int64_t i = 0; i < kh; i++) {
                for (int64_t j = 0; j < kw; j++) {
                    int64_t ih = oh * c->strides[0] - ph + i * c->dilations[0];
                    int64_t iw = ow * c->strides[1] - pw + j * c->dilations[1];
                    if (ih < 0 || ih >= H || iw < 0 || iw >= Wd)
                        continue;
                    double t = (double)X[((n * C + channel) * H + ih) * Wd + iw] *
                               W[((m * Cg + cg) * kh + i) * kw + j];
                    sum += t;
                    magnitude += fabs(t);
                }
            }
        }
        double diff = fabs(kn_f32(y)[index] - sum);
        *worst_diff = fmax(*worst_diff, diff);
        worst_ratio = fmax(worst_ratio, rounding_ratio(diff, Cg * kh * kw, magnitude));
    }
    return worst_ratio;
}

static void test_conv(void) {
    double worst_ratio = 0, worst_diff = 0;
    for (size_t k = 0; k < sizeof conv_cases / sizeof conv_cases[0]; k++) {
        const conv_case *c = &conv_cases[k];
        kn_graph g;
        int node = build_conv(&g, c);
        opcheck_fill_uniform(&g, 300 + k, -1.0f, 1.0f);
        check_gradients(c->label, &g, node, 0);
        kn_tensor *out = opcheck_forward(&g, node, false);
        CHECK_MSG(out != NULL, "%s: %s", c->label, kiln_last_error());
        if (out)
            worst_ratio = fmax(worst_ratio, conv_compare_direct(c, &g, &out[0], &worst_diff));
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }
    printf("Conv forward vs direct loop: max |diff| = %.3g (%.3g of the rounding bound)\n", worst_diff,
           worst_ratio);
    CHECK(worst_ratio <= 1);

    // dX alone and dW alone: the other gradient buffer is NULL and must be left alone.
    kn_graph g;
    int node = build_conv(&g, &conv_cases[1]);
    opcheck_fill_uniform(&g, 399, -1.0f, 1.0f);
    check_gradients("Conv stride 2, dX only", &g, node, 1u << 0);
    check_gradients("Conv stride 2, dW only", &g, node, 1u << 1);
    kn_graph_free(&g);
}

/* ---- Pools ---- */

typedef struct pool_case {
    const char *op, *label;
    int64_t x[4];
    int64_t kernel[2], strides[2], pads[4], dilations[2];
    int ceil_mode, count_include_pad;
} pool_case;

static const pool_case pool_cases[] = {
    {"MaxPool", "MaxPool 2x2 stride 2", {2, 2, 4, 6}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 0, 0},
    {"MaxPool", "MaxPool 3x3 stride 2 pad 1", {1, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 0, 0},
    {"MaxPool", "MaxPool 2x3 stride (1,2), pads (1,0,0,1)", {1, 2, 5, 6}, {2, 3}, {1, 2}, {1, 0, 0, 1},
     {1, 1}, 0, 0},
    {"MaxPool", "MaxPool 2x2 dilation 2", {1, 2, 6, 6}, {2, 2}, {1, 1}, {0, 0, 0, 0}, {2, 2}, 0, 0},
    {"MaxPool", "MaxPool 3x3 stride 2 ceil_mode", {1, 2, 6, 6}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {1, 1},
     1, 0},
    {"MaxPool", "MaxPool 2x2 stride 2 pad 1 ceil_mode", {1, 1, 5, 6}, {2, 2}, {2, 2}, {1, 1, 1, 1},
     {1, 1}, 1, 0},
    {"AveragePool", "AveragePool 2x2 stride 2", {2, 2, 4, 6}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1},
     0, 0},
    {"AveragePool", "AveragePool 3x3 stride 2 pad 1", {1, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1, 1, 1},
     {1, 1}, 0, 0},
    {"AveragePool", "AveragePool 3x3 stride 2 pad 1 count_include_pad", {1, 2, 7, 6}, {3, 3}, {2, 2},
     {1, 1, 1, 1}, {1, 1}, 0, 1},
    {"AveragePool", "AveragePool 2x2 stride 1", {1, 2, 4, 5}, {2, 2}, {1, 1}, {0, 0, 0, 0}, {1, 1},
     0, 0},
    {"AveragePool", "AveragePool 2x2 stride 2 ceil_mode count_include_pad", {1, 1, 5, 5}, {2, 2},
     {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, 1},
    {"AveragePool", "AveragePool 3x3 stride 2 pad 1 ceil_mode", {1, 2, 6, 6}, {3, 3}, {2, 2},
     {1, 1, 1, 1}, {1, 1}, 1, 0},
};

static int build_pool(kn_graph *g, const pool_case *c) {
    kn_graph_init(g);
    int x = add_param(g, "X", kn_shape_of(4, c->x));
    int node = add_node(g, c->op, 1, &x);
    kn_node_set_ints(g, node, "kernel_shape", 2, c->kernel);
    kn_node_set_ints(g, node, "strides", 2, c->strides);
    kn_node_set_ints(g, node, "pads", 4, c->pads);
    kn_node_set_int(g, node, "ceil_mode", c->ceil_mode);
    if (strcmp(c->op, "MaxPool") == 0)
        kn_node_set_ints(g, node, "dilations", 2, c->dilations);
    else
        kn_node_set_int(g, node, "count_include_pad", c->count_include_pad);
    return node;
}

static void test_pool_gradients(void) {
    for (size_t k = 0; k < sizeof pool_cases / sizeof pool_cases[0]; k++) {
        kn_graph g;
        int node = build_pool(&g, &pool_cases[k]);
        fill_spaced(&g, "X", 400 + k);
        check_gradients(pool_cases[k].label, &g, node, 0);
        kn_graph_free(&g);
    }
    const struct {
        const char *op, *label;
        kn_shape x;
    } global_cases[] = {
        {"GlobalAveragePool", "GlobalAveragePool (2,3,4,5)", SHAPE(2, 3, 4, 5)},
        {"GlobalAveragePool", "GlobalAveragePool (2,3,7)", SHAPE(2, 3, 7)},
        {"GlobalMaxPool", "GlobalMaxPool (2,3,4,5)", SHAPE(2, 3, 4, 5)},
        {"GlobalMaxPool", "GlobalMaxPool (1,2,2,3,3)", SHAPE(1, 2, 2, 3, 3)},
    };
    for (size_t k = 0; k < sizeof global_cases / sizeof global_cases[0]; k++) {
        kn_graph g;
        kn_graph_init(&g);
        int x = add_param(&g, "X", global_cases[k].x);
        int node = add_node(&g, global_cases[k].op, 1, &x);
        fill_spaced(&g, "X", 450 + k);
        check_gradients(global_cases[k].label, &g, node, 0);
        kn_shape expect = global_cases[k].x;
        for (int i = 2; i < expect.ndim; i++)
            expect.d[i] = 1;
        CHECK(kn_shape_equal(output_shape(&g, node), &expect));
        kn_graph_free(&g);
    }
}

/* Runs one pool on the 4x4 (or 5x5) ramp x[i][j] = i * width + j and compares with values worked out
 * by hand. */
static void check_pool_values(const char *label, const pool_case *c, const float *expect, int n_expect) {
    kn_graph g;
    int node = build_pool(&g, c);
    float *x = value_data(&g, "X");
    for (int64_t i = 0; i < c->x[2] * c->x[3]; i++)
        x[i] = (float)i;
    kn_tensor *out = opcheck_forward(&g, node, false);
    CHECK_MSG(out && kn_numel(&out[0]) == n_expect, "%s", label);
    double diff = 0, ulps = 0;
    for (int i = 0; out && i < n_expect && kn_numel(&out[0]) == n_expect; i++) {
        double d = fabs(kn_f32(&out[0])[i] - expect[i]);
        diff = fmax(diff, d);
        ulps = fmax(ulps, d / (FLT_EPSILON * fabs(expect[i])));
    }
    printf("%s: max |diff| from hand-computed values = %.3g (%.2g ulp)\n", label, diff, ulps);
    CHECK(ulps <= 2);
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
}

static void test_pool_values(void) {
    pool_case max2 = {"MaxPool", "", {1, 1, 4, 4}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 0, 0};
    check_pool_values("MaxPool 2x2 on a ramp", &max2, (float[]){5, 7, 13, 15}, 4);
    pool_case avg3 = {"AveragePool", "", {1, 1, 4, 4}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 0, 0};
    check_pool_values("AveragePool 3x3 pad 1 on a ramp", &avg3, (float[]){2.5f, 4.0f, 8.5f, 10.0f}, 4);
    avg3.count_include_pad = 1;
    check_pool_values("AveragePool 3x3 pad 1 count_include_pad on a ramp", &avg3,
                      (float[]){10.0f / 9, 24.0f / 9, 51.0f / 9, 10.0f}, 4);
    // The last window of a ceil_mode pool reaches past the padded input: only its inside counts.
    pool_case avg_ceil = {"AveragePool", "", {1, 1, 5, 5}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1, 1};
    check_pool_values("AveragePool 2x2 ceil_mode count_include_pad on a ramp", &avg_ceil,
                      (float[]){3, 5, 6.5f, 13, 15, 16.5f, 20.5f, 22.5f, 24}, 9);
}

/* The 2x2 stride-2 fast path keeps the general rule: ties go to the first maximum, the first NaN wins. */
static void test_maxpool_ties_and_nan(void) {
    pool_case c = {"MaxPool", "", {1, 1, 2, 4}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 0, 0};
    kn_graph g;
    int node = build_pool(&g, &c);
    float *x = value_data(&g, "X");
    const float data[8] = {1, 1, 3, NAN, 1, 0, NAN, 2};
    memcpy(x, data, sizeof data);
    kn_tensor *out = opcheck_forward(&g, node, false);
    CHECK(out && kn_f32(&out[0])[0] == 1.0f && isnan(kn_f32(&out[0])[1]));
    if (out) {
        float dy_data[2] = {10, 20}, dx_data[8] = {0};
        kn_tensor in = {kn_shape_of(4, c.x), KN_F32, x}, dy = {out[0].shape, KN_F32, dy_data},
                  dx = {kn_shape_of(4, c.x), KN_F32, dx_data};
        kn_tensor *in_p = &in, *dx_p = &dx, *out_p = &out[0];
        const kn_tensor *dy_p = &dy;
        kn_op_ctx ctx = {0};
        kn_op_call call = {.node = &g.nodes[node], .in = &in_p, .out = &out_p, .dout = &dy_p, .din = &dx_p, .ctx = &ctx};
        CHECK_OK(g.nodes[node].op->backward(&call));
        kn_op_ctx_release(&ctx);
        const float expect[8] = {10, 0, 0, 20, 0, 0, 0, 0};
        CHECK(memcmp(dx_data, expect, sizeof expect) == 0);
    }
    opcheck_free_outputs(out, 1);
    kn_graph_free(&g);
}

/* ---- Backward adds into din ---- */

/* Sets every PARAM value to multiples of 0.5 in [-1, 1]: then all products and sums below are exact
 * in float, whatever order they are added in. */
static void fill_dyadic(kn_graph *g, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    for (int v = 0; v < g->n_values; v++) {
        if (g->values[v].kind != KN_VALUE_PARAM)
            continue;
        float *x = g->values[v].data;
        for (int64_t i = 0; i < kn_shape_numel(&g->values[v].shape); i++)
            x[i] = 0.5f * ((float)kn_rng_below(&rng, 5) - 2.0f);
    }
}

/* A call of a graph's node over its inputs' data, with zeroed input gradients and a malloc'd output;
 * dout reads dy, or a malloc'd buffer for the caller to fill when dy is NULL. Used in place: the call
 * points into the struct. */
typedef struct node_call {
    kn_tensor in[3], din[3], out, dout;
    kn_tensor *in_p[3], *din_p[3], *out_p;
    const kn_tensor *dout_p;
    kn_op_call call;
} node_call;

static void node_call_make(node_call *c, kn_graph *g, int node, const float *dy, kn_op_ctx *ctx) {
    const kn_node *n = &g->nodes[node];
    memset(c, 0, sizeof *c);
    for (int i = 0; i < n->n_in; i++) {
        kn_value *v = &g->values[n->in[i]];
        c->in[i] = (kn_tensor){v->shape, KN_F32, v->data};
        c->din[i] = (kn_tensor){v->shape, KN_F32, calloc((size_t)kn_numel(&c->in[i]), sizeof(float))};
        c->in_p[i] = &c->in[i];
        c->din_p[i] = &c->din[i];
    }
    kn_value *y = &g->values[n->out[0]];
    size_t y_bytes = sizeof(float) * (size_t)kn_shape_numel(&y->shape);
    c->out = (kn_tensor){y->shape, KN_F32, malloc(y_bytes)};
    c->dout = (kn_tensor){y->shape, KN_F32, dy ? (void *)dy : malloc(y_bytes)};
    c->out_p = &c->out;
    c->dout_p = &c->dout;
    c->call = (kn_op_call){.node = n, .in = c->in_p, .out = &c->out_p, .dout = &c->dout_p, .din = c->din_p, .ctx = ctx};
}

/* Runs forward and backward of a graph's only node, then backward again into the buffers holding
 * the first result: with exact (dyadic) numbers the second result must be exactly twice the first. */
static void check_accumulates(const char *label, kn_graph *g, int node) {
    CHECK_OK(kn_graph_infer_shapes(g));
    const kn_node *n = &g->nodes[node];
    kn_op_ctx ctx = {0};
    node_call c;
    node_call_make(&c, g, node, NULL, &ctx);
    kn_tensor *din = c.din;
    kn_rng rng = kn_rng_seeded(7);
    for (int64_t i = 0; i < kn_numel(&c.dout); i++)
        kn_f32(&c.dout)[i] = 0.5f * ((float)kn_rng_below(&rng, 5) - 2.0f);
    CHECK_OK(n->op->forward(&c.call));
    CHECK_OK(n->op->backward(&c.call));
    float *first[3];
    for (int i = 0; i < n->n_in; i++) {
        size_t bytes = sizeof(float) * (size_t)kn_numel(&din[i]);
        first[i] = malloc(bytes);
        memcpy(first[i], din[i].data, bytes);
    }
    CHECK_OK(n->op->backward(&c.call));
    double worst = 0, largest = 0;
    for (int i = 0; i < n->n_in; i++) {
        for (int64_t e = 0; e < kn_numel(&din[i]); e++) {
            worst = fmax(worst, fabs(kn_f32(&din[i])[e] - 2.0 * first[i][e]));
            largest = fmax(largest, fabs(first[i][e]));
        }
        free(first[i]);
        free(din[i].data);
    }
    printf("%s: backward twice - 2 x backward once: max |diff| = %.3g (largest gradient %.3g)\n",
           label, worst, largest);
    CHECK(worst == 0 && largest > 0);
    free(c.out.data);
    free(c.dout.data);
    kn_op_ctx_release(&ctx);
}

static void test_accumulation(void) {
    kn_graph g;
    int node = build_gemm(&g, &gemm_cases[3]);
    fill_dyadic(&g, 500);
    check_accumulates("Gemm", &g, node);
    kn_graph_free(&g);

    kn_graph_init(&g);
    int in[2] = {add_param(&g, "A", SHAPE(3, 4)), add_param(&g, "B", SHAPE(2, 4, 5))};
    node = add_node(&g, "MatMul", 2, in);
    fill_dyadic(&g, 501);
    check_accumulates("MatMul", &g, node);
    kn_graph_free(&g);

    node = build_conv(&g, &conv_cases[1]);
    fill_dyadic(&g, 502);
    check_accumulates("Conv", &g, node);
    kn_graph_free(&g);

    node = build_pool(&g, &pool_cases[1]);
    fill_dyadic(&g, 503);
    check_accumulates("MaxPool", &g, node);
    kn_graph_free(&g);
}

/* ---- Conv in training: Winograd ---- */

/* Layers that train by Winograd (ops/conv_winograd.h): 16+ channels, M = 24 padded to 32 lanes,
 * asymmetric pads, outputs that are not a multiple of the 4x4 tiles, and an image of more tiles than
 * one block takes (two blocks, the second shorter). */
static const conv_case winograd_cases[] = {
    {"Conv training Winograd, 16 -> 24, pad 1, bias", {2, 16, 13, 11}, {24, 16, 3, 3}, true, {1, 1},
     {1, 1, 1, 1}, {1, 1}, 1, NULL},
    {"Conv training Winograd, 16 -> 16, pads (0,2,2,0)", {3, 16, 6, 9}, {16, 16, 3, 3}, false, {1, 1},
     {0, 2, 2, 0}, {1, 1}, 1, NULL},
    {"Conv training Winograd, 16 -> 32 on 66x61, two blocks", {1, 16, 66, 61}, {32, 16, 3, 3}, true, {1, 1},
     {1, 1, 1, 1}, {1, 1}, 1, NULL},
};

/* The gradients of a training step's Conv: forward's y, then backward's dX, dW, dB (NULL without
 * bias), all malloc'd. */
typedef struct conv_train_result {
    float *y, *dx, *dw, *db;
} conv_train_result;

/* Runs node forward and then backward `backwards` times on the same gradient buffers (zeroed first),
 * in training, with output gradient dy. */
static conv_train_result conv_train_run(kn_graph *g, int node, const float *dy, int backwards) {
    const kn_node *n = &g->nodes[node];
    kn_op_ctx ctx = {.training = true};
    node_call c;
    node_call_make(&c, g, node, dy, &ctx);
    CHECK_OK(n->op->forward(&c.call));
    for (int b = 0; b < backwards; b++)
        CHECK_OK(n->op->backward(&c.call));
    kn_op_ctx_release(&ctx);
    return (conv_train_result){c.out.data, c.din[0].data, c.din[1].data, c.din[2].data};
}

static void conv_train_free(conv_train_result *r) {
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
}

/* Direct double sums of one training step of a stride-1, dilation-1 Conv of one group: y, dX, dW, dB
 * and, per tensor, the largest sum of |terms| of any of its elements (mag[0..3]). */
typedef struct conv_train_ref {
    double *y, *dx, *dw, *db;
    double mag[4];
} conv_train_ref;

static conv_train_ref conv_train_reference(const conv_case *c, kn_graph *g, const float *dy) {
    const float *X = value_data(g, "X"), *W = value_data(g, "W");
    const float *B = c->bias ? value_data(g, "B") : NULL;
    int64_t N = c->x[0], C = c->x[1], H = c->x[2], Wd = c->x[3], M = c->w[0], ph, pw, OH, OW;
    conv_axis(c, 0, &ph, &OH);
    conv_axis(c, 1, &pw, &OW);
    conv_train_ref r = {calloc((size_t)(N * M * OH * OW), sizeof(double)), calloc((size_t)(N * C * H * Wd), sizeof(double)),
                        calloc((size_t)(M * C * 9), sizeof(double)), calloc((size_t)M, sizeof(double)), {0}};
    double *mag_dx = calloc((size_t)(N * C * H * Wd), sizeof(double)), *mag_dw = calloc((size_t)(M * C * 9), sizeof(double));
    double *mag_db = calloc((size_t)M, sizeof(double));
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    int64_t yi = ((n * M + m) * OH + oh) * OW + ow;
                    double sum = B ? B[m] : 0, magnitude = B ? fabs(B[m]) : 0, d = dy[yi];
                    r.db[m] += d;
                    mag_db[m] += fabs(d);
                    for (int64_t ch = 0; ch < C; ch++)
                        for (int64_t i = 0; i < 3; i++)
                            for (int64_t j = 0; j < 3; j++) {
                                int64_t ih = oh - ph + i, iw = ow - pw + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd)
                                    continue;
                                int64_t xi = ((n * C + ch) * H + ih) * Wd + iw, wi = ((m * C + ch) * 3 + i) * 3 + j;
                                double t = (double)X[xi] * W[wi];
                                sum += t;
                                magnitude += fabs(t);
                                r.dx[xi] += d * W[wi];
                                mag_dx[xi] += fabs(d * W[wi]);
                                r.dw[wi] += d * X[xi];
                                mag_dw[wi] += fabs(d * X[xi]);
                            }
                    r.y[yi] = sum;
                    r.mag[0] = fmax(r.mag[0], magnitude);
                }
    for (int64_t i = 0; i < N * C * H * Wd; i++)
        r.mag[1] = fmax(r.mag[1], mag_dx[i]);
    for (int64_t i = 0; i < M * C * 9; i++)
        r.mag[2] = fmax(r.mag[2], mag_dw[i]);
    for (int64_t i = 0; i < M; i++)
        r.mag[3] = fmax(r.mag[3], mag_db[i]);
    free(mag_dx);
    free(mag_dw);
    free(mag_db);
    return r;
}

/* The worst |got - want| over count elements, as a fraction of the rounding bound of `terms` terms of
 * magnitude `magnitude` (the tensor's largest); with `twice`, got holds two backwards' sums. */
static double worst_ratio_of(const float *got, const double *want, int64_t count, int64_t terms, double magnitude,
                             bool twice) {
    double worst = 0;
    for (int64_t i = 0; i < count; i++)
        worst = fmax(worst, rounding_ratio(fabs(got[i] - (twice ? 2.0 : 1.0) * want[i]), terms,
                                           (twice ? 2.0 : 1.0) * magnitude));
    return worst;
}

/* Winograd's rounding follows the magnitudes of a whole tile, not of one output's terms (the
 * transforms scale by up to 5 and 8 and mix a 6x6 patch), so each element is held to the float
 * bound of its tensor's largest magnitude: a wrong transform or a missed tile is off by the order of
 * the values themselves, a thousand times that bound here. Each tensor is compared after one
 * backward and after two, which must add up to exactly twice the first (the sums are repeatable). */
static void test_conv_train_winograd(void) {
    for (size_t k = 0; k < sizeof winograd_cases / sizeof winograd_cases[0]; k++) {
        const conv_case *c = &winograd_cases[k];
        kn_graph g;
        int node = build_conv(&g, c);
        opcheck_fill_uniform(&g, 700 + k, -1.0f, 1.0f);
        CHECK_OK(kn_graph_infer_shapes(&g));
        int64_t N = c->x[0], C = c->x[1], M = c->w[0], ph, pw, OH, OW;
        conv_axis(c, 0, &ph, &OH);
        conv_axis(c, 1, &pw, &OW);
        int64_t outputs = N * M * OH * OW, inputs = N * C * c->x[2] * c->x[3];
        float *dy = malloc(sizeof(float) * (size_t)outputs);
        kn_rng rng = kn_rng_seeded(710 + k);
        for (int64_t i = 0; i < outputs; i++)
            dy[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        conv_train_ref want = conv_train_reference(c, &g, dy);
        for (int backwards = 1; backwards <= 2; backwards++) {
            conv_train_result got = conv_train_run(&g, node, dy, backwards);
            bool twice = backwards == 2;
            double ratios[4] = {worst_ratio_of(got.y, want.y, outputs, C * 9, want.mag[0], false),
                                worst_ratio_of(got.dx, want.dx, inputs, M * 9, want.mag[1], twice),
                                worst_ratio_of(got.dw, want.dw, M * C * 9, N * OH * OW, want.mag[2], twice),
                                got.db ? worst_ratio_of(got.db, want.db, M, N * OH * OW, want.mag[3], twice) : 0};
            printf("%s, %d backward(s): y %.3g, dX %.3g, dW %.3g, dB %.3g of the rounding bound\n", c->label,
                   backwards, ratios[0], ratios[1], ratios[2], ratios[3]);
            for (int i = 0; i < 4; i++)
                CHECK_MSG(ratios[i] <= 1, "%s: tensor %d off by %.3g of the bound", c->label, i, ratios[i]);
            conv_train_free(&got);
        }
        free(want.y);
        free(want.dx);
        free(want.dw);
        free(want.db);
        free(dy);
        if (k < 2) { // the 66x61 image's finite differences would take long; its sums are checked above
            // Conv is linear in each input, so central differences have no truncation error at any
            // step; a step of 0.1 rather than 1e-3 divides the rounding of the outputs around the
            // nudged element (Winograd's larger, above) by 0.2 instead of 0.002.
            printf("%s\n", c->label);
            opcheck_options options = {.training = true, .eps = 0.1};
            double worst = opcheck_gradients(&g, node, &options);
            CHECK_MSG(worst >= 0 && worst <= 1, "%s: worst finite-difference ratio %.3g", c->label, worst);
        }
        kn_graph_free(&g);
    }
}

/* ---- Repeatability on a training-sized layer ---- */

/* Conv forward and backward on (8, 16, 14, 14) twice: the results are bit-identical (no atomics, no
 * reduction whose order depends on scheduling). */
static void test_repeatable(void) {
    conv_case c = {"", {8, 16, 14, 14}, {32, 16, 3, 3}, true, {1, 1}, {1, 1, 1, 1}, {1, 1}, 1, NULL};
    kn_graph g;
    int node = build_conv(&g, &c);
    opcheck_fill_uniform(&g, 600, -1.0f, 1.0f);
    CHECK_OK(kn_graph_infer_shapes(&g));
    const kn_node *n = &g.nodes[node];
    float *results[2][4];
    for (int run = 0; run < 2; run++) {
        kn_tensor in[3], din[3], out, dout;
        kn_tensor *in_p[3], *din_p[3], *out_p = &out;
        const kn_tensor *dout_p = &dout;
        for (int i = 0; i < 3; i++) {
            kn_value *v = &g.values[n->in[i]];
            in[i] = (kn_tensor){v->shape, KN_F32, v->data};
            din[i] = (kn_tensor){v->shape, KN_F32, calloc((size_t)kn_numel(&in[i]), sizeof(float))};
            in_p[i] = &in[i];
            din_p[i] = &din[i];
            results[run][i] = din[i].data;
        }
        kn_value *y = &g.values[n->out[0]];
        out = (kn_tensor){y->shape, KN_F32, malloc(sizeof(float) * (size_t)kn_shape_numel(&y->shape))};
        dout = (kn_tensor){y->shape, KN_F32, malloc(sizeof(float) * (size_t)kn_shape_numel(&y->shape))};
        kn_rng rng = kn_rng_seeded(8);
        for (int64_t i = 0; i < kn_numel(&dout); i++)
            kn_f32(&dout)[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        kn_op_ctx ctx = {0};
        kn_op_call call = {
            .node = n, .in = in_p, .out = &out_p, .dout = &dout_p, .din = din_p, .ctx = &ctx};
        CHECK_OK(n->op->forward(&call));
        CHECK_OK(n->op->backward(&call));
        results[run][3] = out.data;
        free(dout.data);
        kn_op_ctx_release(&ctx);
    }
    bool same = true;
    for (int i = 0; i < 3; i++)
        same &= memcmp(results[0][i], results[1][i],
                       sizeof(float) * (size_t)kn_shape_numel(&g.values[n->in[i]].shape)) == 0;
    same &= memcmp(results[0][3], results[1][3],
                   sizeof(float) * (size_t)kn_shape_numel(output_shape(&g, node))) == 0;
    printf("Conv (8,16,14,14) forward + backward run twice: %s\n", same ? "bit-identical" : "DIFFERENT");
    CHECK(same);
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 4; i++)
            free(results[run][i]);
    kn_graph_free(&g);
}

/* ---- Shapes and FLOPs ---- */

static void test_shapes_and_flops(void) {
    kn_graph g;
    int node = build_conv(&g, &conv_cases[6]); // SAME_UPPER stride 2 on 6x5
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(has_shape(output_shape(&g, node), SHAPE(1, 3, 3, 3)));
    int64_t conv_flops = 2 * (1 * 3 * 3 * 3) * (2 * 3 * 3) + 1 * 3 * 3 * 3;
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == conv_flops);
    kn_graph_free(&g);

    node = build_pool(&g, &pool_cases[4]); // 3x3 stride 2 on 6x6: 2x2, or 3x3 with ceil_mode
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(has_shape(output_shape(&g, node), SHAPE(1, 2, 3, 3)));
    kn_node_set_int(&g, node, "ceil_mode", 0);
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(has_shape(output_shape(&g, node), SHAPE(1, 2, 2, 2)));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 1 * 2 * 2 * 2 * 9);
    kn_graph_free(&g);

    node = build_gemm(&g, &gemm_cases[0]);
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * 3 * 5 * 4 + 3 * 5);
    kn_graph_free(&g);

    kn_graph_init(&g);
    int in[2] = {add_param(&g, "A", SHAPE(2, 2, 3, 4)), add_param(&g, "B", SHAPE(4, 5))};
    node = add_node(&g, "MatMul", 2, in);
    CHECK_OK(kn_graph_infer_shapes(&g));
    CHECK(has_shape(output_shape(&g, node), SHAPE(2, 2, 3, 5)));
    CHECK(g.nodes[node].op->flops(&g, &g.nodes[node]) == 2 * 4 * 3 * 5 * 4);
    kn_graph_free(&g);
}

/* ---- Bad input ---- */

static void expect_error(const char *label, kn_graph *g, kiln_status expected) {
    kiln_status st = kn_graph_infer_shapes(g);
    printf("%-44s -> %s: %s\n", label, kiln_status_name(st), kiln_last_error());
    CHECK_MSG(st == expected, "%s: got %s, expected %s", label, kiln_status_name(st),
              kiln_status_name(expected));
    CHECK(strlen(kiln_last_error()) > 0);
    kn_graph_free(g);
}

static void conv_error(const char *label, kn_shape x, kn_shape w, int64_t group, kiln_status expected) {
    kn_graph g;
    kn_graph_init(&g);
    // X as a graph input: it holds no data, so even a negative shape reaches shape inference.
    int in[2] = {test_add_value(&g, "X", KN_VALUE_INPUT, KN_F32, &x), add_param(&g, "W", w)};
    int node = add_node(&g, "Conv", 2, in);
    kn_node_set_int(&g, node, "group", group);
    expect_error(label, &g, expected);
}

/* A 3x3 conv on (1,2,5,5) with one attribute set to something wrong. */
static void conv_attr_error(const char *label, const char *name, int n, const int64_t *v,
                            kiln_status expected) {
    kn_graph g;
    kn_graph_init(&g);
    int in[2] = {add_param(&g, "X", SHAPE(1, 2, 5, 5)), add_param(&g, "W", SHAPE(2, 2, 3, 3))};
    int node = add_node(&g, "Conv", 2, in);
    kn_node_set_ints(&g, node, name, n, v);
    expect_error(label, &g, expected);
}

static void test_errors(void) {
    conv_error("Conv channel mismatch", SHAPE(1, 3, 5, 5), SHAPE(2, 2, 3, 3), 1, KILN_ERR_SHAPE);
    conv_error("Conv group 2 does not divide C 3", SHAPE(1, 3, 5, 5), SHAPE(2, 1, 3, 3), 2,
               KILN_ERR_SHAPE);
    conv_error("Conv group 2 does not divide M 3", SHAPE(1, 4, 5, 5), SHAPE(3, 2, 3, 3), 2,
               KILN_ERR_SHAPE);
    conv_error("Conv group 0", SHAPE(1, 2, 5, 5), SHAPE(2, 2, 3, 3), 0, KILN_ERR_INVALID_ARG);
    conv_error("Conv kernel bigger than input", SHAPE(1, 1, 3, 3), SHAPE(1, 1, 5, 5), 1, KILN_ERR_SHAPE);
    conv_error("Conv X of rank 2", SHAPE(5, 5), SHAPE(1, 1, 3, 3), 1, KILN_ERR_SHAPE);
    conv_error("Conv 1-D X with a 2-D W", SHAPE(1, 2, 9), SHAPE(2, 2, 3, 3), 1, KILN_ERR_SHAPE);
    conv_error("Conv 3-D X with a 2-D W", SHAPE(1, 2, 4, 4, 4), SHAPE(2, 2, 3, 3), 1, KILN_ERR_SHAPE);
    conv_error("Conv W of rank 3", SHAPE(1, 2, 5, 5), SHAPE(2, 2, 3), 1, KILN_ERR_SHAPE);
    conv_error("Conv negative dimension", SHAPE(1, 2, -5, 5), SHAPE(2, 2, 3, 3), 1, KILN_ERR_SHAPE);
    conv_attr_error("Conv strides of length 3", "strides", 3, (int64_t[]){1, 1, 1},
                    KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv stride 0", "strides", 2, (int64_t[]){0, 1}, KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv negative pad", "pads", 4, (int64_t[]){0, -1, 0, 0}, KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv pads of length 2", "pads", 2, (int64_t[]){1, 1}, KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv dilation 0", "dilations", 2, (int64_t[]){1, 0}, KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv huge dilation", "dilations", 2, (int64_t[]){1, INT64_MAX / 2},
                    KILN_ERR_INVALID_ARG);
    conv_attr_error("Conv kernel_shape differs from W", "kernel_shape", 2, (int64_t[]){3, 2},
                    KILN_ERR_SHAPE);
    conv_attr_error("Conv dilated kernel bigger than input", "dilations", 2, (int64_t[]){3, 1},
                    KILN_ERR_SHAPE);

    kn_graph g;
    kn_graph_init(&g);
    int in[3] = {add_param(&g, "X", SHAPE(1, 2, 5, 5)), add_param(&g, "W", SHAPE(2, 2, 3, 3)),
                 add_param(&g, "B", SHAPE(3))};
    add_node(&g, "Conv", 3, in);
    expect_error("Conv bias of the wrong length", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 2, 5, 5));
    in[1] = add_param(&g, "W", SHAPE(2, 2, 3, 3));
    int node = add_node(&g, "Conv", 2, in);
    kn_node_set_string(&g, node, "auto_pad", "SAME");
    expect_error("Conv auto_pad SAME", &g, KILN_ERR_INVALID_ARG);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 2, 5, 5));
    in[1] = add_param(&g, "W", SHAPE(2, 2, 3, 3));
    node = add_node(&g, "Conv", 2, in);
    kn_node_set_string(&g, node, "auto_pad", "SAME_UPPER");
    kn_node_set_ints(&g, node, "pads", 4, (int64_t[]){1, 1, 1, 1});
    expect_error("Conv pads together with auto_pad", &g, KILN_ERR_INVALID_ARG);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", SHAPE(3, 4));
    in[1] = add_param(&g, "B", SHAPE(5, 6));
    add_node(&g, "Gemm", 2, in);
    expect_error("Gemm inner dimensions 4 vs 5", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", SHAPE(3, 4));
    in[1] = add_param(&g, "B", SHAPE(4, 5));
    in[2] = add_param(&g, "C", SHAPE(2, 5));
    add_node(&g, "Gemm", 3, in);
    expect_error("Gemm C (2,5) for Y (3,5)", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", SHAPE(2, 3, 4));
    in[1] = add_param(&g, "B", SHAPE(4, 5));
    add_node(&g, "Gemm", 2, in);
    expect_error("Gemm A of rank 3", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", SHAPE(2, 3, 4));
    in[1] = add_param(&g, "B", SHAPE(3, 4, 5));
    add_node(&g, "MatMul", 2, in);
    expect_error("MatMul batch 2 vs 3", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", SHAPE(3, 4));
    in[1] = add_param(&g, "B", SHAPE(3));
    add_node(&g, "MatMul", 2, in);
    expect_error("MatMul (3,4) @ (3)", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "A", scalar_shape);
    in[1] = add_param(&g, "B", SHAPE(3));
    add_node(&g, "MatMul", 2, in);
    expect_error("MatMul of a scalar", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 1, 4, 4));
    int outs[2] = {test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar_shape),
                   test_add_value(&g, "indices", KN_VALUE_ACT, KN_I64, &scalar_shape)};
    node = test_add_node(&g, "MaxPool", "pool", 1, in, 2, outs);
    kn_node_set_ints(&g, node, "kernel_shape", 2, (int64_t[]){2, 2});
    kn_node_set_int(&g, node, "storage_order", 2);
    expect_error("MaxPool Indices with storage_order 2", &g, KILN_ERR_INVALID_ARG);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 1, 4, 4));
    add_node(&g, "MaxPool", 1, in);
    expect_error("MaxPool without kernel_shape", &g, KILN_ERR_INVALID_ARG);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 1, 4, 4));
    node = add_node(&g, "AveragePool", 1, in);
    kn_node_set_ints(&g, node, "kernel_shape", 2, (int64_t[]){5, 2});
    expect_error("AveragePool kernel bigger than input", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 1, 4, 4));
    node = add_node(&g, "AveragePool", 1, in);
    kn_node_set_ints(&g, node, "kernel_shape", 2, (int64_t[]){2, 2});
    kn_node_set_ints(&g, node, "pads", 4, (int64_t[]){2, 0, 2, 0});
    expect_error("AveragePool window over padding only", &g, KILN_ERR_SHAPE);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(1, 1, 4, 4, 4));
    node = add_node(&g, "MaxPool", 1, in);
    kn_node_set_ints(&g, node, "kernel_shape", 2, (int64_t[]){2, 2});
    expect_error("MaxPool 3-D with a 2-D kernel_shape", &g, KILN_ERR_INVALID_ARG);

    kn_graph_init(&g);
    in[0] = add_param(&g, "X", SHAPE(4, 4));
    add_node(&g, "GlobalAveragePool", 1, in);
    expect_error("GlobalAveragePool of rank 2", &g, KILN_ERR_SHAPE);
}

int main(void) {
    test_registry();
    test_gemm();
    test_matmul();
    test_conv();
    test_pool_gradients();
    test_pool_values();
    test_maxpool_ties_and_nan();
    test_accumulation();
    test_repeatable();
    test_conv_train_winograd();
    test_shapes_and_flops();
    test_errors();
    return check_finish();
}
