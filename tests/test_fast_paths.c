/* Inference fast paths held against the reference computations they replace.
 *
 * 1. Conv's direct depthwise path (src/ops/conv.c) against the im2col path. The cases are convolutions
 * whose groups read one input channel; with fewer than 8 output channels per group Conv computes them
 * with its direct loops (one output channel per group: channel-last blocks of 16 channels, strips of
 * rows, channel tails; more: for 3x3 the planes read in place, an unrolled row loop, the edge outputs
 * summed apart, other kernels padded planes and a loop per tap). The
 * reference is the general path written out here from its parts: each group's input channel unfolded by
 * kn_im2col, multiplied by the group's filters with kn_sgemm_ref, bias added, the fused activation
 * applied. The two sum in different orders, so each output may differ by twice the float rounding bound
 * (taps + 2) * FLT_EPSILON * sum |terms|, and no more.
 *
 * Also: the direct path gives the same bits with 1 and 2 threads, and groups with 8 output channels
 * (the matrix product's side of the threshold, its bias and activation applied in one pass after the
 * product) agree with the reference too.
 *
 * And Conv's images shared among threads (a batch at least as large as the thread count) give the same
 * bits as one thread doing them all.
 *
 * 2. kn_im2col (src/ops/im2col.c: one copy per column row when the rows line up, else a copy per
 * output row) against the column matrix written one entry at a time from its definition, exactly.
 *
 * 3. MaxPool's forward (src/ops/pool.c: passes over output rows, and a one-pass 2x2 stride-2 loop)
 * against the maximum of each window searched one window at a time, on data with NaNs sprinkled in:
 * a window holding a NaN gives NaN, every other output is its window's largest real pixel, exactly.
 *
 * 4. Each build of the depthwise row (kernels/depthwise.h) this CPU runs against the generic one, at
 * strides 1, 2 and 3 and lengths around the vector widths: within (9 + 2) * FLT_EPSILON * sum |terms|
 * (the wider builds may fuse multiply-adds).
 *
 * 4b. Each build of the activation rows (kernels/act_rows.h) this CPU runs against the generic one: the
 * same bits, NaN and -0 included.
 *
 * 4d. The 2x2 max-pooling planes (kernels/pool2x2.h) in the build this CPU runs against the generic
 * ones, forward and backward (added and stored): the same bits, on planes with ties, NaNs and -0
 * gradients, rows of every window count to 35 (tiling the row or not), 2 and 3 rows of windows.
 *
 * 4c. GemmPacked (a Gemm whose constant B the optimizer packed once) against that Gemm: the same bits;
 *     MatMulPacked against MatMul likewise.
 *
 * 6. The sparse-weight kernels (kernels/sparse.h), both layouts, each build this CPU runs, against the
 * dense product computed in double: within (K + 2) * FLT_EPSILON * sum |terms|, on shapes ending in
 * every tail of their groups, slabs and blocks, and an all-zero weight.
 *
 * 5. Each build of kernels/vmath this CPU runs against the generic one, on 200000 floats spread over
 * [-30, 30] and lengths that end in every tail: within 6 ULP of each other (each is within 3 of libm
 * where kernels/vmath.h says so), and where the header allows more (gelu's tail, gelu_tanh below 0,
 * silu where sigmoid is denormal), within the sum of the two bounds. ctest also runs test_models_torch
 * and test_runtime_vit with KILN_ISA=generic, so the ops' generic paths meet the PyTorch references.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/act_rows.h"
#include "kernels/depthwise.h"
#include "kernels/gemm.h"
#include "kernels/pool2x2.h"
#include "kernels/sparse.h"
#include "kernels/vmath.h"
#include "kernels/winograd.h"
#include "ops/conv_prepack.h"
#include "ops/conv_winograd.h"
#include "ops/im2col.h"
#include "ops/op.h"
#include "ops/window.h"
#include "runtime/optimize.h"
#include "support/opcheck.h"

// Naming the entries makes the linker keep their objects (see test_ops_linear.c).
extern const kn_op kn_op_conv, kn_op_maxpool;

typedef struct dw_case {
    const char *label;
    int64_t x[4];       /* N, C, H, W */
    int64_t multiplier; /* output channels per group */
    int64_t kernel[2];
    int64_t strides[2], pads[4], dilations[2];
    bool bias;
    const char *activation; /* fused by the optimizer: NULL, "Relu" or "Clip" (to [0, 6]) */
} dw_case;

static const dw_case cases[] = {
    {"3x3 stride 1 pad 1, odd sizes, Clip", {2, 5, 13, 11}, 1, {3, 3},
     {1, 1}, {1, 1, 1, 1}, {1, 1}, true, "Clip"},
    {"3x3 stride 2 pad 1, even sizes", {1, 6, 16, 16}, 1, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, true, NULL},
    {"3x3 stride 2 pad 1, odd sizes, Relu", {2, 3, 9, 7}, 1, {3, 3},
     {2, 2}, {1, 1, 1, 1}, {1, 1}, false, "Relu"},
    {"3x3 stride 2, pads (0,1,1,0)", {1, 4, 8, 10}, 1, {3, 3}, {2, 2}, {0, 1, 1, 0}, {1, 1}, true, NULL},
    {"3x3 stride 3, no padding", {1, 3, 11, 10}, 1, {3, 3}, {3, 3}, {0, 0, 0, 0}, {1, 1}, true, NULL},
    {"3x3 dilation 2 pad 2", {1, 3, 9, 9}, 1, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, true, NULL},
    {"5x5 stride 1 pad 2", {2, 4, 10, 9}, 1, {5, 5}, {1, 1}, {2, 2, 2, 2}, {1, 1}, true, "Relu"},
    {"5x5 stride 2 pad 2", {1, 4, 11, 12}, 1, {5, 5}, {2, 2}, {2, 2, 2, 2}, {1, 1}, false, NULL},
    {"2x3 kernel, stride (1, 2), pads (1,0,0,2)", {1, 2, 7, 9}, 1, {2, 3},
     {1, 2}, {1, 0, 0, 2}, {1, 1}, true, NULL},
    {"1x1 kernel", {1, 3, 5, 6}, 1, {1, 1}, {1, 1}, {0, 0, 0, 0}, {1, 1}, true, NULL},
    {"multiplier 2, stride 2", {2, 3, 8, 8}, 2, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, true, "Clip"},
    {"multiplier 4 on one input channel", {2, 1, 12, 12}, 4, {3, 3},
     {1, 1}, {1, 1, 1, 1}, {1, 1}, true, NULL},
    {"1x1 image, pad 1: one real tap", {1, 4, 1, 1}, 1, {3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, true, NULL},
    {"2x2 image, pad 3: windows in padding only", {1, 2, 2, 2}, 1, {3, 3},
     {1, 1}, {3, 3, 3, 3}, {1, 1}, true, NULL},
    {"mobilenet-sized 32 x 56x56, stride 1", {1, 32, 56, 56}, 1, {3, 3},
     {1, 1}, {1, 1, 1, 1}, {1, 1}, true, "Clip"},
    {"mobilenet-sized 24 x 56x56, stride 2", {2, 24, 56, 56}, 1, {3, 3},
     {2, 2}, {1, 1, 1, 1}, {1, 1}, true, "Clip"},
    {"37 x 7x7 (a 5-channel block tail), Relu", {1, 37, 7, 7}, 1, {3, 3},
     {1, 1}, {1, 1, 1, 1}, {1, 1}, true, "Relu"},
    {"18 x 70x66, stride 2, pads (0,1,1,0): 5 strips", {1, 18, 70, 66}, 1, {3, 3},
     {2, 2}, {0, 1, 1, 0}, {1, 1}, true, "Clip"},
    {"5x5, 20 x 15x15, stride 2, batch 3", {3, 20, 15, 15}, 1, {5, 5},
     {2, 2}, {2, 2, 2, 2}, {1, 1}, false, NULL},
    {"multiplier 8: the matrix product's side, Clip", {1, 2, 9, 9}, 8, {3, 3},
     {1, 1}, {1, 1, 1, 1}, {1, 1}, true, "Clip"},
    {"multiplier 8, stride 2, no bias, Relu", {2, 3, 8, 7}, 8, {3, 3},
     {2, 2}, {1, 1, 1, 1}, {1, 1}, false, "Relu"},
};

static int add_param(kn_graph *g, const char *name, kn_shape shape) {
    return test_add_value(g, name, KN_VALUE_PARAM, KN_F32, &shape);
}

static int build(kn_graph *g, const dw_case *c) {
    kn_graph_init(g);
    int64_t C = c->x[1], M = C * c->multiplier;
    int in[3] = {add_param(g, "X", kn_shape_of(4, c->x)),
                 add_param(g, "W", kn_shape_of(4, (int64_t[]){M, 1, c->kernel[0], c->kernel[1]})), -1};
    if (c->bias)
        in[2] = add_param(g, "B", kn_shape_of(1, (int64_t[]){M}));
    kn_shape scalar = {0};
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &scalar);
    int node = test_add_node(g, "Conv", "Conv", c->bias ? 3 : 2, in, 1, &y);
    kn_node_set_ints(g, node, "strides", 2, c->strides);
    kn_node_set_ints(g, node, "pads", 4, c->pads);
    kn_node_set_ints(g, node, "dilations", 2, c->dilations);
    kn_node_set_int(g, node, "group", C);
    if (c->activation) {
        kn_node_set_string(g, node, "kn_activation", c->activation);
        if (strcmp(c->activation, "Clip") == 0) {
            kn_node_set_float(g, node, "kn_min", 0.0f);
            kn_node_set_float(g, node, "kn_max", 6.0f);
        }
    }
    return node;
}

static float activate(const char *activation, float v) {
    if (!activation)
        return v;
    v = v < 0.0f ? 0.0f : v;
    return strcmp(activation, "Clip") == 0 && v > 6.0f ? 6.0f : v;
}

static double rounding_bound(int64_t terms, double magnitude) {
    return (double)(terms + 2) * FLT_EPSILON * magnitude + FLT_MIN;
}

/* The im2col path on the case's data: y (N, M, OH, OW) and, per output, sum |terms| in magnitude. */
static void reference(const dw_case *c, const kn_graph *g, const kn_shape *y_shape, float *y,
                      double *magnitude) {
    const float *x = g->values[kn_graph_find_value(g, "X")].data;
    const float *w = g->values[kn_graph_find_value(g, "W")].data;
    const float *b = c->bias ? g->values[kn_graph_find_value(g, "B")].data : NULL;
    int64_t N = c->x[0], C = c->x[1], Mg = c->multiplier, taps = c->kernel[0] * c->kernel[1];
    kn_window_axis h = {c->x[2], c->kernel[0], c->strides[0], c->dilations[0],
                        c->pads[0], c->pads[2], y_shape->d[2]};
    kn_window_axis wa = {c->x[3], c->kernel[1], c->strides[1], c->dilations[1],
                         c->pads[1], c->pads[3], y_shape->d[3]};
    int64_t in_plane = h.in * wa.in, out_plane = h.out * wa.out;
    float *col = malloc(sizeof(float) * (size_t)(taps * out_plane)); // (kH*kW, OH*OW)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t grp = 0; grp < C; grp++) {
            const float *xc = x + (n * C + grp) * in_plane;
            float *yg = y + (n * C + grp) * Mg * out_plane; // (Mg, OH*OW)
            kn_im2col(1, &h, &wa, xc, col);
            for (int64_t m = 0; m < Mg; m++)
                for (int64_t p = 0; p < out_plane; p++)
                    yg[m * out_plane + p] = b ? b[grp * Mg + m] : 0.0f;
            kn_sgemm_ref(false, false, Mg, out_plane, taps, 1.0f, w + grp * Mg * taps, taps, col, out_plane,
                         1.0f, yg, out_plane);
            for (int64_t m = 0; m < Mg; m++) {
                for (int64_t p = 0; p < out_plane; p++) {
                    double sum = b ? fabs(b[grp * Mg + m]) : 0.0;
                    for (int64_t t = 0; t < taps; t++)
                        sum += fabs((double)w[(grp * Mg + m) * taps + t] * col[t * out_plane + p]);
                    magnitude[(n * C + grp) * Mg * out_plane + m * out_plane + p] = sum;
                    yg[m * out_plane + p] = activate(c->activation, yg[m * out_plane + p]);
                }
            }
        }
    }
    free(col);
}

/* The output of the graph's one node for its data at `threads` threads; malloc'ed, NULL on failure. */
static kn_tensor *run_node(kn_graph *g, int node, int threads) {
    kn_threads_set(threads);
    kn_tensor *out = opcheck_forward(g, node, false);
    CHECK_MSG(out != NULL, "%s", kiln_last_error());
    return out;
}

/* The direct path against im2col on case c filled from `seed`; the worst difference and its ratio to twice
 * the rounding bound raise *worst_diff and *worst_ratio. */
static void check_against_im2col(const dw_case *c, uint64_t seed, double *worst_diff, double *worst_ratio) {
    kn_graph g;
    int node = build(&g, c);
    opcheck_fill_uniform(&g, seed, -1.0f, 1.0f);
    kn_tensor *one = run_node(&g, node, 1), *two = run_node(&g, node, 2);
    if (one && two) {
        int64_t count = kn_numel(one), taps = c->kernel[0] * c->kernel[1];
        float *ref = malloc(sizeof(float) * (size_t)count);
        double *magnitude = malloc(sizeof(double) * (size_t)count);
        reference(c, &g, &one->shape, ref, magnitude);
        double case_ratio = 0, case_diff = 0;
        for (int64_t i = 0; i < count; i++) {
            double diff = fabs((double)kn_f32(one)[i] - ref[i]);
            case_diff = fmax(case_diff, diff);
            case_ratio = fmax(case_ratio, diff / (2 * rounding_bound(taps, magnitude[i])));
        }
        bool same = memcmp(one->data, two->data, sizeof(float) * (size_t)count) == 0;
        printf("%-46s C %-3lld max |direct - im2col| = %.3g (%.3g of the bound); 1 vs 2 threads: %s\n", c->label,
               (long long)c->x[1], case_diff, case_ratio, same ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(case_ratio <= 1, "%s, C %lld: %.3g of the rounding bound", c->label, (long long)c->x[1],
                  case_ratio);
        CHECK_MSG(same, "%s, C %lld: 1 and 2 threads differ", c->label, (long long)c->x[1]);
        *worst_ratio = fmax(*worst_ratio, case_ratio);
        *worst_diff = fmax(*worst_diff, case_diff);
        free(ref);
        free(magnitude);
    }
    opcheck_free_outputs(one, 1);
    opcheck_free_outputs(two, 1);
    kn_graph_free(&g);
}

/* Every case as given and, when it has one output channel per group but fewer channels than a
 * channel-last block (so it runs the row kernels), again with a block more channels (so the same
 * geometry runs channel-last). */
static void test_against_im2col(void) {
    double worst_ratio = 0, worst_diff = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        check_against_im2col(&cases[k], 900 + k, &worst_diff, &worst_ratio);
        if (cases[k].multiplier == 1 && cases[k].x[1] < KN_DEPTHWISE_LANES) {
            dw_case wide = cases[k];
            wide.x[1] += KN_DEPTHWISE_LANES;
            check_against_im2col(&wide, 900 + k, &worst_diff, &worst_ratio);
        }
    }
    printf("direct depthwise vs im2col: max |diff| = %.3g (%.3g of twice the rounding bound)\n", worst_diff,
           worst_ratio);
}

/* The direct path's scratch, as the runtime sizes it from `workspace`, is what forward takes: a session
 * allocates it before running, and nothing while running. One input channel per output channel, with at
 * least a block of 16 channels, runs channel-last and takes, per thread, a strip of padded input rows
 * (about 1024 pixels' worth of output rows), the strip's outputs, the taps and the bias, 16 lanes each;
 * otherwise a 3x3 kernel reads its planes in place and takes one zero row, other kernels a padded plane
 * per thread. */
static void test_workspace(void) {
    static const struct {
        int c;
        size_t floats;
        const char *what;
    } expect[] = {{14, 2 * 16 * (19 * 58 + 17 * 56 + 9 + 1), "two strips: 19 rows of 58 in, 17 of 56 out"},
                  {18, 2 * 16 * (19 * 19 + 8 * 8 + 25 + 1), "two strips: the whole 19x19 padded plane"},
                  {6, 2 * 14 * 13, "4 channels: two padded 14x13 planes"},
                  {10, 8, "one zero row of 8"}};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
        kn_graph g;
        int node = build(&g, &cases[expect[k].c]);
        CHECK_OK(kn_graph_infer_shapes(&g));
        kn_threads_set(2);
        size_t bytes = kn_op_conv.workspace(&g, &g.nodes[node]);
        CHECK_MSG(bytes == expect[k].floats * sizeof(float), "%s: workspace %zu bytes: %s expected", cases[expect[k].c].label,
                  bytes, expect[k].what);
        kn_graph_free(&g);
    }
}

/* A batch of 5 and a batch of 1 through a 3x3 convolution with 2 threads (images shared among the
 * threads; one image with the threads inside its products) and with 1: the same bits. */
static void test_conv_threads(void) {
    for (int64_t batch = 1; batch <= 5; batch += 4) {
        kn_graph g;
        kn_graph_init(&g);
        int in[3] = {add_param(&g, "X", kn_shape_of(4, (int64_t[]){batch, 8, 10, 10})),
                     add_param(&g, "W", kn_shape_of(4, (int64_t[]){16, 8, 3, 3})),
                     add_param(&g, "B", kn_shape_of(1, (int64_t[]){16}))};
        kn_shape scalar = {0};
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
        int node = test_add_node(&g, "Conv", "Conv", 3, in, 1, &y);
        kn_node_set_ints(&g, node, "pads", 4, (int64_t[]){1, 1, 1, 1});
        kn_node_set_string(&g, node, "kn_activation", "Relu");
        opcheck_fill_uniform(&g, 950 + batch, -1.0f, 1.0f);
        kn_tensor *one = run_node(&g, node, 1), *two = run_node(&g, node, 2);
        bool same = one && two && memcmp(one->data, two->data, sizeof(float) * (size_t)kn_numel(one)) == 0;
        printf("Conv 8 -> 16 channels, batch %lld, 1 vs 2 threads: %s\n", (long long)batch,
               same ? "bit-identical" : "DIFFERENT");
        CHECK(same);
        opcheck_free_outputs(one, 1);
        opcheck_free_outputs(two, 1);
        kn_graph_free(&g);
    }
}

/* Conv's forward (y) and backward (dx, dw, db added to zeros) on batch images of x through `node`, in
 * buffers the caller frees. */
typedef struct conv_run_result {
    float *y, *dx, *dw, *db;
} conv_run_result;

static conv_run_result conv_run_direct(const kn_node *node, int64_t batch, const float *x, const float *w,
                                       const float *b, const float *dy) {
    int64_t x_dims[4] = {batch, 4, 7, 7}, y_dims[4] = {batch, 6, 7, 7}, w_dims[4] = {6, 2, 3, 3}, b_dims[1] = {6};
    kn_tensor tx = {kn_shape_of(4, x_dims), KN_F32, (void *)x}, tw = {kn_shape_of(4, w_dims), KN_F32, (void *)w};
    kn_tensor tb = {kn_shape_of(1, b_dims), KN_F32, (void *)b};
    conv_run_result r = {calloc((size_t)(batch * 6 * 49), sizeof(float)), calloc((size_t)(batch * 4 * 49), sizeof(float)),
                         calloc(6 * 2 * 9, sizeof(float)), calloc(6, sizeof(float))};
    kn_tensor ty = {kn_shape_of(4, y_dims), KN_F32, r.y}, tdy = {kn_shape_of(4, y_dims), KN_F32, (void *)dy};
    kn_tensor tdx = {tx.shape, KN_F32, r.dx}, tdw = {tw.shape, KN_F32, r.dw}, tdb = {tb.shape, KN_F32, r.db};
    kn_tensor *in[3] = {&tx, &tw, &tb}, *out[1] = {&ty}, *din[3] = {&tdx, &tdw, &tdb};
    const kn_tensor *dout[1] = {&tdy};
    kn_op_ctx ctx = {0};
    kn_op_call call = {.node = node, .in = in, .out = out, .dout = dout, .din = din, .ctx = &ctx};
    CHECK_OK(kn_op_conv.forward(&call));
    CHECK_OK(kn_op_conv.backward(&call));
    kn_op_ctx_release(&ctx);
    return r;
}

/* A batch's Conv packs W once for all its images' forward products and W^T once for their dX products,
 * where one image packs them in its products: each image of a batch of 3 (two groups, 3x3, pad 1)
 * against that image alone, y and dx the same bits, on 1 and 2 threads. */
static void test_conv_packs_once(void) {
    kn_graph g;
    kn_graph_init(&g);
    int in[3] = {add_param(&g, "X", kn_shape_of(4, (int64_t[]){3, 4, 7, 7})),
                 add_param(&g, "W", kn_shape_of(4, (int64_t[]){6, 2, 3, 3})),
                 add_param(&g, "B", kn_shape_of(1, (int64_t[]){6}))};
    kn_shape scalar = {0};
    int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
    int node = test_add_node(&g, "Conv", "Conv", 3, in, 1, &y);
    kn_node_set_ints(&g, node, "pads", 4, (int64_t[]){1, 1, 1, 1});
    kn_node_set_int(&g, node, "group", 2);
    opcheck_fill_uniform(&g, 977, -1.0f, 1.0f);
    const float *x = g.values[in[0]].data, *w = g.values[in[1]].data, *b = g.values[in[2]].data;
    float dy[3 * 6 * 49];
    kn_rng rng = kn_rng_seeded(978);
    for (int i = 0; i < 3 * 6 * 49; i++)
        dy[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    bool same = true;
    for (int threads = 1; threads <= 2; threads++) {
        kn_threads_set(threads);
        conv_run_result batch = conv_run_direct(&g.nodes[node], 3, x, w, b, dy);
        for (int64_t n = 0; n < 3; n++) {
            conv_run_result one = conv_run_direct(&g.nodes[node], 1, x + n * 4 * 49, w, b, dy + n * 6 * 49);
            same &= memcmp(one.y, batch.y + n * 6 * 49, sizeof(float) * 6 * 49) == 0;
            same &= memcmp(one.dx, batch.dx + n * 4 * 49, sizeof(float) * 4 * 49) == 0;
            free(one.y), free(one.dx), free(one.dw), free(one.db);
        }
        free(batch.y), free(batch.dx), free(batch.dw), free(batch.db);
    }
    kn_threads_set(0);
    printf("Conv, each image of a batch (weights packed once) vs alone, forward and dX: %s\n",
           same ? "bit-identical" : "DIFFERENT");
    CHECK(same);
    kn_graph_free(&g);
}

/* ---- im2col ---- */

typedef struct im2col_case {
    const char *label;
    int64_t channels, in[2], kernel[2], strides[2], pads[4], dilations[2];
} im2col_case;

static const im2col_case im2col_cases[] = {
    {"3x3 stride 1 pad 1 (rows line up)", 3, {14, 14}, {3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}},
    {"3x3 stride 1, pads (0,2,2,0) (rows line up)", 2, {6, 7}, {3, 3}, {1, 1}, {0, 2, 2, 0}, {1, 1}},
    {"5x5 stride 1 pad 2 (rows line up)", 2, {9, 8}, {5, 5}, {1, 1}, {2, 2, 2, 2}, {1, 1}},
    {"3x3 dilation 2 pad 2 (rows line up)", 2, {7, 9}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}},
    {"3x3 stride 1 no padding", 2, {6, 7}, {3, 3}, {1, 1}, {0, 0, 0, 0}, {1, 1}},
    {"3x3 stride 2 pad 1", 3, {9, 8}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}},
    {"7x7 stride 2 pad 3", 3, {16, 15}, {7, 7}, {2, 2}, {3, 3, 3, 3}, {1, 1}},
    {"1x1 stride 2", 4, {7, 6}, {1, 1}, {2, 2}, {0, 0, 0, 0}, {1, 1}},
    {"kernel wider than the image, pad 3", 1, {2, 3}, {5, 5}, {1, 1}, {3, 3, 3, 3}, {1, 1}},
};

static void test_im2col(void) {
    int64_t worst = 0;
    for (size_t k = 0; k < sizeof im2col_cases / sizeof im2col_cases[0]; k++) {
        const im2col_case *c = &im2col_cases[k];
        kn_window_axis axis[2];
        for (int a = 0; a < 2; a++) {
            int64_t extent = (c->kernel[a] - 1) * c->dilations[a] + 1;
            int64_t out = (c->in[a] + c->pads[a] + c->pads[a + 2] - extent) / c->strides[a] + 1;
            axis[a] = (kn_window_axis){c->in[a], c->kernel[a], c->strides[a], c->dilations[a], c->pads[a],
                                       c->pads[a + 2], out};
        }
        int64_t in_plane = c->in[0] * c->in[1], taps = c->kernel[0] * c->kernel[1];
        int64_t out_plane = axis[0].out * axis[1].out, count = c->channels * taps * out_plane;
        float *x = malloc(sizeof(float) * (size_t)(c->channels * in_plane));
        float *col = malloc(sizeof(float) * (size_t)count);
        for (int64_t i = 0; i < c->channels * in_plane; i++)
            x[i] = (float)(i + 1); // every pixel distinct and nonzero, so a misplaced or missing one shows
        for (int64_t i = 0; i < count; i++)
            col[i] = NAN; // and so does an entry left unwritten
        kn_im2col(c->channels, &axis[0], &axis[1], x, col);
        int64_t wrong = 0;
        for (int64_t index = 0; index < count; index++) {
            int64_t p = index % out_plane, tap = index / out_plane % taps, ch = index / (out_plane * taps);
            int64_t ih = kn_window_start(&axis[0], p / axis[1].out) + tap / c->kernel[1] * c->dilations[0];
            int64_t iw = kn_window_start(&axis[1], p % axis[1].out) + tap % c->kernel[1] * c->dilations[1];
            bool inside = ih >= 0 && ih < c->in[0] && iw >= 0 && iw < c->in[1];
            float expect = inside ? x[ch * in_plane + ih * c->in[1] + iw] : 0.0f;
            wrong += !(col[index] == expect);
        }
        printf("im2col %-44s %lld of %lld entries wrong\n", c->label, (long long)wrong, (long long)count);
        CHECK_MSG(wrong == 0, "im2col %s", c->label);
        worst = wrong > worst ? wrong : worst;
        free(x);
        free(col);
    }
    printf("im2col vs its definition: %lld wrong entries at most per case\n", (long long)worst);
}

/* ---- MaxPool ---- */

typedef struct pool_case {
    const char *label;
    int64_t x[4];
    int64_t kernel[2], strides[2], pads[4], dilations[2];
    int ceil_mode;
} pool_case;

static const pool_case pool_cases[] = {
    {"2x2 stride 2 (the one-pass loop)", {2, 3, 28, 28}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 0},
    {"2x2 stride 2 on odd sizes", {1, 2, 7, 9}, {2, 2}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 0},
    {"3x3 stride 2 pad 1 (resnet)", {2, 4, 112, 112}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 0},
    {"3x3 stride 1 pad 1", {1, 3, 9, 8}, {3, 3}, {1, 1}, {1, 1, 1, 1}, {1, 1}, 0},
    {"2x3 stride (1, 3), pads (1,0,0,2)", {1, 2, 8, 11}, {2, 3}, {1, 3}, {1, 0, 0, 2}, {1, 1}, 0},
    {"3x3 dilation 2 pad 2", {1, 2, 9, 10}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 0},
    {"3x3 stride 2 ceil_mode", {1, 2, 10, 11}, {3, 3}, {2, 2}, {0, 0, 0, 0}, {1, 1}, 1},
    {"2x2 stride 2 pad 1 ceil_mode", {1, 2, 5, 6}, {2, 2}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 1},
};

static int build_pool(kn_graph *g, const pool_case *c) {
    kn_graph_init(g);
    int x = add_param(g, "X", kn_shape_of(4, c->x));
    kn_shape scalar = {0};
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &scalar);
    int node = test_add_node(g, "MaxPool", "MaxPool", 1, &x, 1, &y);
    kn_node_set_ints(g, node, "kernel_shape", 2, c->kernel);
    kn_node_set_ints(g, node, "strides", 2, c->strides);
    kn_node_set_ints(g, node, "pads", 4, c->pads);
    kn_node_set_ints(g, node, "dilations", 2, c->dilations);
    kn_node_set_int(g, node, "ceil_mode", c->ceil_mode);
    return node;
}

/* The largest real pixel of window (oh, ow) of plane x, NaN when the window holds one. */
static float window_max(const kn_window_axis *h, const kn_window_axis *w, const float *x, int64_t oh,
                        int64_t ow) {
    float best = -INFINITY;
    for (int64_t i = 0; i < h->kernel; i++) {
        for (int64_t j = 0; j < w->kernel; j++) {
            int64_t ih = kn_window_start(h, oh) + i * h->dilation;
            int64_t iw = kn_window_start(w, ow) + j * w->dilation;
            if (ih < 0 || ih >= h->in || iw < 0 || iw >= w->in)
                continue;
            float v = x[ih * w->in + iw];
            if (isnan(v))
                return v;
            best = v > best ? v : best;
        }
    }
    return best;
}

static void test_maxpool(void) {
    int64_t worst = 0, nan_outputs = 0;
    for (size_t k = 0; k < sizeof pool_cases / sizeof pool_cases[0]; k++) {
        const pool_case *c = &pool_cases[k];
        kn_graph g;
        int node = build_pool(&g, c);
        opcheck_fill_uniform(&g, 700 + k, -1.0f, 1.0f);
        kn_value *xv = &g.values[kn_graph_find_value(&g, "X")];
        float *x = xv->data;
        for (int64_t i = 0; i < kn_shape_numel(&xv->shape); i += 97) // a NaN every 97 pixels
            x[i] = NAN;
        kn_tensor *out = run_node(&g, node, 2);
        if (!out) {
            kn_graph_free(&g);
            continue;
        }
        kn_window_axis axes[2];
        CHECK_OK(kn_window_resolve(&g.nodes[node], &c->x[2], c->kernel, c->ceil_mode, axes));
        int64_t planes = c->x[0] * c->x[1], out_plane = axes[0].out * axes[1].out, wrong = 0;
        for (int64_t p = 0; p < planes; p++) {
            for (int64_t o = 0; o < out_plane; o++) {
                float expect = window_max(&axes[0], &axes[1], x + p * c->x[2] * c->x[3], o / axes[1].out,
                                          o % axes[1].out);
                float got = kn_f32(&out[0])[p * out_plane + o];
                nan_outputs += isnan(expect);
                wrong += isnan(expect) ? !isnan(got) : got != expect;
            }
        }
        printf("MaxPool %-36s %lld of %lld outputs differ from the window search\n", c->label,
               (long long)wrong, (long long)(planes * out_plane));
        CHECK_MSG(wrong == 0, "MaxPool %s: %lld outputs wrong", c->label, (long long)wrong);
        worst = wrong > worst ? wrong : worst;
        opcheck_free_outputs(out, 1);
        kn_graph_free(&g);
    }
    printf("MaxPool forward vs window search: %lld wrong outputs at most per case (%lld NaN windows seen)\n",
           (long long)worst, (long long)nan_outputs);
    CHECK(nan_outputs > 0);
}

static void test_depthwise_row_builds(void) {
    kn_rng rng = kn_rng_seeded(77);
    float rows[3][3 * 70 + 3], k[9];
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 3 * 70 + 3; i++)
            rows[r][i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < 9; i++)
        k[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    kn_depthwise3x3_row_fn build = kn_depthwise3x3_row();
    double worst = 0;
    for (int64_t stride = 1; stride <= 3; stride++)
        for (int64_t count = 1; count <= 70; count++) {
            float want[70], got[70];
            kn_depthwise3x3_row_generic(rows[0], rows[1], rows[2], k, 0.25f, stride, count, want);
            build(rows[0], rows[1], rows[2], k, 0.25f, stride, count, got);
            for (int64_t t = 0; t < count; t++) {
                double magnitude = 0.25;
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 3; j++)
                        magnitude += fabs((double)k[3 * i + j] * rows[i][t * stride + j]);
                double ratio = fabs((double)got[t] - want[t]) / ((9 + 2) * FLT_EPSILON * magnitude);
                worst = ratio > worst ? ratio : worst;
            }
        }
    printf("depthwise row, the build this CPU runs vs generic: worst |diff| = %.3g of the rounding bound\n", worst);
    CHECK(worst <= 1.0);
}

/* Each kind of kernels/act_rows.h, with a bias per row and without, in the build this CPU runs against the
 * generic one on values around every kink (0, Clip's bounds, HardSwish's -3 and 3), a NaN and row
 * lengths that end in every vector tail: the same bits. */
static void test_act_rows_builds(void) {
    enum { rows = 3, cols = 37, ld = 40 };
    kn_rng rng = kn_rng_seeded(79);
    float x[rows * ld], bias[rows] = {0.5f, -4.0f, 3.0f};
    for (int i = 0; i < rows * ld; i++)
        x[i] = 16.0f * kn_rng_uniform(&rng) - 8.0f;
    x[5] = NAN;
    x[6] = -0.0f;
    kn_act_rows_fn build = kn_act_rows_best();
    bool same = true;
    for (int kind = KN_ACT_ROWS_IDENTITY; kind <= KN_ACT_ROWS_HARDSWISH; kind++)
        for (int with_bias = 0; with_bias < 2; with_bias++)
            for (int64_t count = 1; count <= cols; count++) {
                kn_act_rows act = {(kn_act_rows_kind)kind, -1.5f, 6.0f};
                float want[rows * ld], got[rows * ld];
                memcpy(want, x, sizeof x);
                memcpy(got, x, sizeof x);
                kn_act_rows_generic(&act, with_bias ? bias : NULL, want, rows, count, ld);
                build(&act, with_bias ? bias : NULL, got, rows, count, ld);
                same &= memcmp(want, got, sizeof want) == 0;
            }
    printf("activation rows, the build this CPU runs vs generic: %s\n", same ? "bit-identical" : "DIFFERENT");
    CHECK(same);
}

static void test_depthwise5x5_row_builds(void) {
    kn_rng rng = kn_rng_seeded(78);
    float rows[5][3 * 70 + 5], k[25];
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < 3 * 70 + 5; i++)
            rows[r][i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < 25; i++)
        k[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    const float *r[5] = {rows[0], rows[1], rows[2], rows[3], rows[4]};
    kn_depthwise5x5_row_fn build = kn_depthwise5x5_row();
    double worst = 0;
    for (int64_t stride = 1; stride <= 3; stride++)
        for (int64_t count = 1; count <= 70; count++) {
            float want[70], got[70];
            kn_depthwise5x5_row_generic(r, k, 0.25f, stride, count, want);
            build(r, k, 0.25f, stride, count, got);
            for (int64_t t = 0; t < count; t++) {
                double magnitude = 0.25;
                for (int i = 0; i < 5; i++)
                    for (int j = 0; j < 5; j++)
                        magnitude += fabs((double)k[5 * i + j] * rows[i][t * stride + j]);
                double ratio = fabs((double)got[t] - want[t]) / ((25 + 2) * FLT_EPSILON * magnitude);
                worst = ratio > worst ? ratio : worst;
            }
        }
    printf("depthwise 5x5 row, the build this CPU runs vs generic: worst |diff| = %.3g of the rounding bound\n",
           worst);
    CHECK(worst <= 1.0);
}

/* Error of b against a in units of the float spacing at a (2^-149 below FLT_MIN). */
static double ulps_apart(float a, float b) {
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b) ? 0.0 : INFINITY;
    if (a == b)
        return 0.0;
    double m = fabs((double)a);
    double spacing = m < FLT_MIN ? ldexp(1.0, -149) : ldexp(1.0, ilogb(m) - 23);
    return fabs((double)b - (double)a) / spacing;
}

static void test_vmath_builds(void) {
    enum { N = 200000 };
    float *x = malloc(N * sizeof(float)), *want = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    CHECK(x && want && got);
    if (!x || !want || !got)
        goto done;
    kn_rng rng = kn_rng_seeded(21);
    for (int i = 0; i < N; i++)
        x[i] = (kn_rng_uniform(&rng) - 0.5f) * 60.0f;
    const kn_vmath *generic = kn_vmath_for(KN_VMATH_GENERIC);
    const kn_vmath *builds[] = {kn_vmath_for(KN_VMATH_AVX2), kn_vmath_for(KN_VMATH_AVX512)};
    static const size_t offsets[] = {offsetof(kn_vmath, exp), offsetof(kn_vmath, sigmoid),
        offsetof(kn_vmath, tanh), offsetof(kn_vmath, erf), offsetof(kn_vmath, gelu),
        offsetof(kn_vmath, gelu_tanh), offsetof(kn_vmath, silu)};
    for (size_t b = 0; b < 2; b++) {
        if (!builds[b])
            continue;
        for (size_t f = 0; f < sizeof offsets / sizeof offsets[0]; f++) {
            kn_vmath_fn ref_fn, fast_fn;
            memcpy(&ref_fn, (const char *)generic + offsets[f], sizeof ref_fn);
            memcpy(&fast_fn, (const char *)builds[b] + offsets[f], sizeof fast_fn);
            ref_fn(want, x, N);
            for (int64_t start = 0, len = 1; start < N; start += len, len = len % 37 + 1)
                fast_fn(got + start, x + start, start + len <= N ? len : N - start);
            int beyond = 0;
            for (int i = 0; i < N; i++) {
                double allowed = 6.0;
                if (offsets[f] == offsetof(kn_vmath, gelu) && x[i] < -1.3f)
                    allowed = 20.0;
                if (offsets[f] == offsetof(kn_vmath, gelu_tanh) && x[i] < 0.0f) {
                    double two_u = 1.5957691216 * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
                    allowed = 6.0 + 6.0 * fabs(two_u);
                }
                if (offsets[f] == offsetof(kn_vmath, silu) && x[i] < -87.3f)
                    allowed = 8.0 + 2.0 * fabs(x[i]);
                if (ulps_apart(want[i], got[i]) > allowed && beyond++ < 3)
                    fprintf(stderr, "vmath %s function %zu at %.9g: %.9g vs generic %.9g\n", builds[b]->name,
                            f, x[i], got[i], want[i]);
            }
            CHECK_MSG(beyond == 0, "vmath %s function %zu: %d results beyond the bound", builds[b]->name, f,
                      beyond);
        }
    }
done:
    free(x);
    free(want);
    free(got);
}

/* A weight (N, K) with about `density` nonzeros, as compressed sparse rows and as lanes. */
typedef struct sparse_case {
    int64_t N, K, nnz, steps;
    float *dense, *values, *lane_val;
    int32_t *col;
    int64_t *start, *offsets;
    uint8_t *lane_col;
} sparse_case;

static void sparse_case_make(sparse_case *c, int64_t N, int64_t K, double density, kn_rng *rng) {
    *c = (sparse_case){.N = N, .K = K};
    c->dense = calloc((size_t)(N * K), sizeof(float));
    c->values = malloc(sizeof(float) * (size_t)(N * K));
    c->col = malloc(sizeof(int32_t) * (size_t)(N * K));
    c->start = malloc(sizeof(int64_t) * (size_t)(N + 1));
    c->offsets = malloc(sizeof(int64_t) * (size_t)(((N + 15) / 16) * ((K + 31) / 32) + 1));
    for (int64_t j = 0; j < N; j++) {
        c->start[j] = c->nnz;
        for (int64_t k = 0; k < K; k++)
            if (kn_rng_uniform(rng) < density) {
                float w = 2.0f * kn_rng_uniform(rng) - 1.0f;
                c->dense[j * K + k] = c->values[c->nnz] = w;
                c->col[c->nnz++] = (int32_t)k;
            }
    }
    c->start[N] = c->nnz;
    c->steps = kn_sparse_lanes_offsets(c->col, c->start, N, K, c->offsets);
    c->lane_col = calloc((size_t)(c->steps * KN_SPARSE_LANES) + 1, 1);
    c->lane_val = calloc((size_t)(c->steps * KN_SPARSE_LANES) + 1, sizeof(float));
    kn_sparse_lanes_fill(c->values, c->col, c->start, N, K, c->offsets, c->lane_col, c->lane_val);
}

static void sparse_case_free(sparse_case *c) {
    free(c->dense);
    free(c->values);
    free(c->col);
    free(c->start);
    free(c->offsets);
    free(c->lane_col);
    free(c->lane_val);
}

/* Both sparse layouts, in every build this CPU runs, against the dense product in double: within the
 * float rounding bound of a sum of K terms. Shapes end in every tail: groups of 16 rows, slabs of 32
 * columns, blocks of 16 input rows. */
static void test_sparse_kernels(void) {
    static const struct { int64_t N, K, M; double density; } cases[] = {
        {1, 1, 1, 1.0}, {37, 100, 3, 0.1}, {16, 32, 16, 0.3}, {33, 65, 17, 0.05}, {256, 784, 1, 0.1}, {5, 7, 2, 0.0},
    };
    const kn_sparse_kernels *builds[] = {&kn_sparse_generic, kn_sparse_best()};
    kn_rng rng = kn_rng_seeded(5);
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sparse_case c;
        sparse_case_make(&c, cases[i].N, cases[i].K, cases[i].density, &rng);
        int64_t M = cases[i].M, N = c.N, K = c.K;
        float *a = malloc(sizeof(float) * (size_t)(M * K)), *bias = malloc(sizeof(float) * (size_t)N);
        float *at = calloc((size_t)(K * KN_SPARSE_ROW_BLOCK), sizeof(float)), *y = malloc(sizeof(float) * (size_t)(M * N));
        for (int64_t t = 0; t < M * K; t++)
            a[t] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        for (int64_t j = 0; j < N; j++)
            bias[j] = kn_rng_uniform(&rng);
        for (size_t b = 0; b < 2; b++) {
            for (int layout = 0; layout < 2; layout++) { /* lanes: one row of A at a time; rows: blocks */
                for (int64_t r0 = 0; r0 < M; r0 += layout ? KN_SPARSE_ROW_BLOCK : 1) {
                    int64_t rows = layout ? (M - r0 < KN_SPARSE_ROW_BLOCK ? M - r0 : KN_SPARSE_ROW_BLOCK) : 1;
                    if (layout) {
                        for (int64_t k = 0; k < K; k++)
                            for (int64_t r = 0; r < KN_SPARSE_ROW_BLOCK; r++)
                                at[k * KN_SPARSE_ROW_BLOCK + r] = r < rows ? a[(r0 + r) * K + k] : 0.0f;
                        builds[b]->rows(at, rows, c.values, c.col, c.start, bias, y + r0 * N, N);
                    } else {
                        builds[b]->lanes(a + r0 * K, K, c.offsets, c.lane_col, c.lane_val, bias, y + r0 * N, N);
                    }
                }
                for (int64_t r = 0; r < M; r++)
                    for (int64_t j = 0; j < N; j++) {
                        double want = bias[j], magnitude = fabs(bias[j]);
                        for (int64_t k = 0; k < K; k++) {
                            want += (double)c.dense[j * K + k] * a[r * K + k];
                            magnitude += fabs((double)c.dense[j * K + k] * a[r * K + k]);
                        }
                        double ratio = fabs(y[r * N + j] - want) / rounding_bound(K, magnitude);
                        worst = ratio > worst ? ratio : worst;
                    }
            }
        }
        printf("sparse %lld x %lld (%lld nonzeros, %lld lane steps), %lld rows of A: checked\n", (long long)N,
               (long long)K, (long long)c.nnz, (long long)c.steps, (long long)M);
        free(a);
        free(bias);
        free(at);
        free(y);
        sparse_case_free(&c);
    }
    printf("sparse kernels (generic, %s) vs the dense product in double: worst |diff| = %.3g of the bound\n",
           kn_sparse_best()->name, worst);
    CHECK(worst <= 1.0);
}

/* ---- Winograd ---- */

typedef struct wino_case {
    const char *label;
    int64_t x[4]; /* N, C, H, W */
    int64_t M;
    int64_t pads[4];
    bool bias;
    const char *activation; /* NULL, "Relu" or "Clip" (to [0, 6]) */
} wino_case;

static const wino_case wino_cases[] = {
    {"16 -> 16, 8x8 pad 1 (whole tiles), Relu", {1, 16, 8, 8}, 16, {1, 1, 1, 1}, true, "Relu"},
    {"17 -> 19 (channel tails), 13x11 pad 1, Clip", {2, 17, 13, 11}, 19, {1, 1, 1, 1}, true, "Clip"},
    {"16 -> 24, pads (0,2,2,0), no bias", {1, 16, 10, 9}, 24, {0, 2, 2, 0}, false, NULL},
    {"20 -> 16, no padding, 9x10", {3, 20, 9, 10}, 16, {0, 0, 0, 0}, true, NULL},
    {"16 -> 16, 2x2 image pad 3 (mostly padding)", {1, 16, 2, 2}, 16, {3, 3, 3, 3}, true, NULL},
    {"16 -> 32, 1x1 image pad 1 (one real tap)", {2, 16, 1, 1}, 32, {1, 1, 1, 1}, true, "Relu"},
    {"64 -> 64, 56x56 pad 1 (resnet18 layer1: blocks)", {1, 64, 56, 56}, 64, {1, 1, 1, 1}, true, "Relu"},
    {"128 -> 96, 14x14 pad 1, batch 3", {3, 128, 14, 14}, 96, {1, 1, 1, 1}, true, NULL},
    {"128 -> 64, 12x12, batch 7 (blocks of 6 images, 1)", {7, 128, 12, 12}, 64, {1, 1, 1, 1}, true, "Relu"},
};

/* X (N, C, H, W), W (M, C, 3, 3), B: a stride-1 Conv that the optimizer turns into ConvWinograd. */
static int build_wino(kn_graph *g, const wino_case *c) {
    kn_graph_init(g);
    int in[3] = {add_param(g, "X", kn_shape_of(4, c->x)),
                 add_param(g, "W", kn_shape_of(4, (int64_t[]){c->M, c->x[1], 3, 3})), -1};
    if (c->bias)
        in[2] = add_param(g, "B", kn_shape_of(1, (int64_t[]){c->M}));
    kn_shape scalar = {0};
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &scalar);
    int node = test_add_node(g, "Conv", "Conv", c->bias ? 3 : 2, in, 1, &y);
    kn_node_set_ints(g, node, "pads", 4, c->pads);
    if (c->activation) {
        kn_node_set_string(g, node, "kn_activation", c->activation);
        if (strcmp(c->activation, "Clip") == 0) {
            kn_node_set_float(g, node, "kn_min", 0.0f);
            kn_node_set_float(g, node, "kn_max", 6.0f);
        }
    }
    return node;
}

/* The magnitude each output of the case (N, M, OH, OW) is held to: the largest sum |terms| (|bias| +
 * sum |w x| over the taps inside) among the outputs of its 4x4 tile. An output's rounding errors come
 * from the whole 6x6 patch its tile transforms, not only from its own window: a corner output whose
 * window is nearly all padding shares its tile with outputs reading the whole patch. */
static double *wino_magnitudes(const wino_case *c, const kn_graph *g, const kn_shape *y_shape) {
    const float *x = g->values[kn_graph_find_value(g, "X")].data;
    const float *w = g->values[kn_graph_find_value(g, "W")].data;
    const float *b = c->bias ? g->values[kn_graph_find_value(g, "B")].data : NULL;
    int64_t N = c->x[0], C = c->x[1], H = c->x[2], W = c->x[3], OH = y_shape->d[2], OW = y_shape->d[3];
    double *mag = malloc(sizeof(double) * (size_t)(N * c->M * OH * OW));
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < c->M; m++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double sum = b ? fabs(b[m]) : 0.0;
                    for (int64_t ch = 0; ch < C; ch++)
                        for (int64_t t = 0; t < 9; t++) {
                            int64_t ih = oh - c->pads[0] + t / 3, iw = ow - c->pads[1] + t % 3;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                sum += fabs((double)w[(m * C + ch) * 9 + t] * x[((n * C + ch) * H + ih) * W + iw]);
                        }
                    mag[((n * c->M + m) * OH + oh) * OW + ow] = sum;
                }
    double *tile_mag = malloc(sizeof(double) * (size_t)(N * c->M * OH * OW));
    for (int64_t i = 0; i < N * c->M * OH * OW; i++) {
        int64_t ow = i % OW, oh = i / OW % OH, first = i - oh * OW - ow; // the plane's first output
        double most = 0;
        for (int64_t r = oh / 4 * 4; r < oh / 4 * 4 + 4 && r < OH; r++)
            for (int64_t q = ow / 4 * 4; q < ow / 4 * 4 + 4 && q < OW; q++)
                most = fmax(most, mag[first + r * OW + q]);
        tile_mag[i] = most;
    }
    free(mag);
    return tile_mag;
}

/* ConvWinograd and the im2col path both round, so they may be twice the rounding bound apart, as the
 * depthwise comparison above allows; measured, they stay within a twentieth of it. */
#define WINOGRAD_ROUNDINGS 2

/* ConvWinograd, as the optimizer makes it from a Conv, against the Conv it replaces (the im2col path):
 * within WINOGRAD_ROUNDINGS times the rounding bound of a (9 C)-term sum of its tile's magnitude, on 1 and 2 threads with
 * the same bits, on shapes with channel tails, odd sizes, every padding, images smaller than a tile,
 * blocks of tile rows and blocks of several images. */
static void test_winograd(void) {
    double worst_ratio = 0;
    for (size_t k = 0; k < sizeof wino_cases / sizeof wino_cases[0]; k++) {
        const wino_case *c = &wino_cases[k];
        kn_graph g, opt;
        int node = build_wino(&g, c);
        opcheck_fill_uniform(&g, 1700 + k, -1.0f, 1.0f);
        kn_opt_stats stats;
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_WINOGRAD, &opt, &stats));
        CHECK_MSG(stats.convs_winograd == 1 && strcmp(opt.nodes[0].op->name, "ConvWinograd") == 0,
                  "%s: not rewritten", c->label);
        kn_tensor *ref = run_node(&g, node, 1), *one = run_node(&opt, 0, 1), *two = run_node(&opt, 0, 2);
        if (ref && one && two) {
            int64_t count = kn_numel(one);
            CHECK(kn_numel(ref) == count);
            double *mag = wino_magnitudes(c, &g, &one->shape), ratio = 0, diff = 0;
            for (int64_t i = 0; i < count; i++) {
                double d = fabs((double)kn_f32(one)[i] - kn_f32(ref)[i]);
                diff = fmax(diff, d);
                ratio = fmax(ratio, d / (WINOGRAD_ROUNDINGS * rounding_bound(9 * c->x[1], mag[i])));
            }
            bool same = memcmp(one->data, two->data, sizeof(float) * (size_t)count) == 0;
            printf("winograd %-46s max |diff| = %.3g (%.3g of the bound); 1 vs 2 threads: %s\n", c->label, diff,
                   ratio, same ? "bit-identical" : "DIFFERENT");
            CHECK_MSG(ratio <= 1, "%s: %.3g of the bound", c->label, ratio);
            CHECK_MSG(same, "%s: 1 and 2 threads differ", c->label);
            worst_ratio = fmax(worst_ratio, ratio);
            free(mag);
        }
        opcheck_free_outputs(ref, 1);
        opcheck_free_outputs(one, 1);
        opcheck_free_outputs(two, 1);
        kn_graph_free(&opt);
        kn_graph_free(&g);
    }
    printf("winograd vs im2col: %.3g of the bound at most\n", worst_ratio);
}

/* The optimizer leaves Conv where Winograd does not apply: stride 2, dilation 2, two groups, a 5x5 or
 * a 1x1 kernel, too few channels. */
static void test_winograd_refused(void) {
    static const struct {
        const char *label, *attr;
        int64_t value[2];
        int64_t C, M, k;
    } cases[] = {
        {"stride 2", "strides", {2, 2}, 16, 16, 3},   {"dilation 2", "dilations", {2, 2}, 16, 16, 3},
        {"two groups", "group", {2, 0}, 32, 32, 3},   {"5x5 kernel", NULL, {0, 0}, 16, 16, 5},
        {"1x1 kernel", NULL, {0, 0}, 16, 16, 1},      {"8 input channels", NULL, {0, 0}, 8, 16, 3},
        {"8 output channels", NULL, {0, 0}, 16, 8, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kn_graph g, opt;
        kn_graph_init(&g);
        int64_t C_in = strcmp(cases[k].label, "two groups") == 0 ? cases[k].C / 2 : cases[k].C;
        int in[2] = {add_param(&g, "X", kn_shape_of(4, (int64_t[]){1, cases[k].C, 12, 12})),
                     add_param(&g, "W", kn_shape_of(4, (int64_t[]){cases[k].M, C_in, cases[k].k, cases[k].k}))};
        kn_shape scalar = {0};
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
        int node = test_add_node(&g, "Conv", "Conv", 2, in, 1, &y);
        if (cases[k].attr && strcmp(cases[k].attr, "group") == 0)
            kn_node_set_int(&g, node, "group", cases[k].value[0]);
        else if (cases[k].attr)
            kn_node_set_ints(&g, node, cases[k].attr, 2, cases[k].value);
        opcheck_fill_uniform(&g, 1800 + k, -1.0f, 1.0f);
        kn_opt_stats stats;
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_WINOGRAD, &opt, &stats));
        CHECK_MSG(stats.convs_winograd == 0 && strcmp(opt.nodes[0].op->name, "Conv") == 0, "%s: rewritten",
                  cases[k].label);
        kn_graph_free(&opt);
        kn_graph_free(&g);
    }
    printf("winograd: Conv kept for stride 2, dilation 2, groups, 5x5, 1x1, fewer than 16 channels\n");
}

/* A layer whose transformed weights are large (36 x 176 x 176 floats, 4.5 MB) on a small image (9 tiles)
 * becomes ConvPacked carrying U (kn_conv_winograd_by_batch): a batch of 1 runs the direct products, the
 * Conv's bits; a batch of 4 (36 tiles) runs Winograd, ConvWinograd's bits, within its bound of the Conv. */
static void test_winograd_by_batch(void) {
    for (int64_t batch = 1; batch <= 4; batch += 3) {
        wino_case c = {"176 -> 176 on 10x9", {batch, 176, 10, 9}, 176, {1, 1, 1, 1}, true, "Relu"};
        kn_graph g, opt, wino;
        int node = build_wino(&g, &c);
        opcheck_fill_uniform(&g, 1800, -1.0f, 1.0f);
        kn_opt_stats stats, wino_stats;
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_WINOGRAD | KN_OPT_PREPACK, &opt, &stats));
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_WINOGRAD, &wino, &wino_stats));
        CHECK_MSG(stats.convs_winograd == 0 && stats.convs_packed == 1 && opt.nodes[0].n_in == 5 &&
                      opt.nodes[0].in[4] >= 0 && wino_stats.convs_winograd == 1,
                  "batch %lld: not a ConvPacked with U", (long long)batch);
        kn_tensor *ref = run_node(&g, node, 1), *one = run_node(&opt, 0, 1), *two = run_node(&opt, 0, 2);
        kn_tensor *by_wino = run_node(&wino, 0, 1);
        if (ref && one && two && by_wino) {
            int64_t count = kn_numel(ref);
            double *mag = wino_magnitudes(&c, &g, &ref->shape), ratio = 0;
            for (int64_t i = 0; i < count; i++)
                ratio = fmax(ratio, fabs((double)kn_f32(one)[i] - kn_f32(ref)[i]) /
                                        (WINOGRAD_ROUNDINGS * rounding_bound(9 * c.x[1], mag[i])));
            const kn_tensor *same_as = batch == 1 ? ref : by_wino;
            bool same = memcmp(one->data, same_as->data, sizeof(float) * (size_t)count) == 0;
            bool threads_same = memcmp(one->data, two->data, sizeof(float) * (size_t)count) == 0;
            printf("winograd by batch, batch %lld: %s %s (%.3g of the bound from Conv); 1 vs 2 threads: %s\n",
                   (long long)batch, same ? "bit-identical to" : "DIFFERENT from",
                   batch == 1 ? "Conv" : "ConvWinograd", ratio, threads_same ? "bit-identical" : "DIFFERENT");
            CHECK_MSG(same && ratio <= 1 && threads_same, "winograd by batch, batch %lld", (long long)batch);
            free(mag);
        }
        opcheck_free_outputs(ref, 1);
        opcheck_free_outputs(one, 1);
        opcheck_free_outputs(two, 1);
        opcheck_free_outputs(by_wino, 1);
        kn_graph_free(&opt);
        kn_graph_free(&wino);
        kn_graph_free(&g);
    }
}

/* Each build of the tile transforms this CPU runs against the generic one, on random patches in
 * [-1, 1]: within 16 float roundings of the largest sum |terms| a transformed value can have (the
 * builds may fuse multiply-adds). Rows of B^T sum to at most 10 in absolute value, so a value of
 * B^T d B sums terms of at most 10 * 10 in all; rows of A^T to 19, so A^T M A's to 19 * 19; rows of A
 * to 15, so the output gradient A dY A^T's to 15 * 15. */
static void test_winograd_builds(void) {
    const kn_winograd_kernels *builds[] = {kn_winograd_kernels_generic(), kn_winograd_kernels_best()};
    enum { L = KN_WINOGRAD_LANES };
    float d[36 * L], v[2][36 * L], y[2][16 * L], dm[2][36 * L];
    kn_rng rng = kn_rng_seeded(1900);
    for (int i = 0; i < 36 * L; i++)
        d[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    for (int b = 0; b < 2; b++) {
        builds[b]->input(d, 6 * L, L, v[b], L);
        builds[b]->output(d, L, y[b], 4 * L, L);
        builds[b]->output_grad(d, 4 * L, L, dm[b], L);
    }
    double worst = 0;
    for (int i = 0; i < 36 * L; i++)
        worst = fmax(worst, fabs((double)v[0][i] - v[1][i]) / (16 * FLT_EPSILON * 10.0 * 10.0));
    for (int i = 0; i < 16 * L; i++)
        worst = fmax(worst, fabs((double)y[0][i] - y[1][i]) / (16 * FLT_EPSILON * 19.0 * 19.0));
    for (int i = 0; i < 36 * L; i++)
        worst = fmax(worst, fabs((double)dm[0][i] - dm[1][i]) / (16 * FLT_EPSILON * 15.0 * 15.0));
    printf("winograd transforms, %s build vs generic: %.3g of the bound\n", builds[1]->name, worst);
    CHECK_MSG(worst <= 1, "%s build: %.3g of the bound", builds[1]->name, worst);

    // The channel-last copies, exact: 37 channels (a tail of 5 past two blocks of 16) by 23 pixels.
    enum { CH = 37, PX = 23, ROW = 48, PLANE = 29 };
    float planes[CH * PLANE], last[2][PX * ROW], back[2][CH * PLANE];
    for (int i = 0; i < CH * PLANE; i++)
        planes[i] = (float)i;
    bool exact = true;
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < PX * ROW; i++)
            last[b][i] = NAN; // lanes 37..47 must be zeroed
        for (int i = 0; i < CH * PLANE; i++)
            back[b][i] = -1.0f;
        builds[b]->to_last(planes, PLANE, CH, PX, last[b], ROW);
        builds[b]->from_last(last[b], ROW, CH, PX, back[b], PLANE);
        for (int j = 0; j < PX; j++)
            for (int c = 0; c < ROW; c++)
                exact = exact && last[b][j * ROW + c] == (c < CH ? planes[c * PLANE + j] : 0.0f);
        for (int c = 0; c < CH; c++)
            for (int j = 0; j < PLANE; j++)
                exact = exact && back[b][c * PLANE + j] == (j < PX ? planes[c * PLANE + j] : -1.0f);
    }
    printf("winograd channel-last copies, generic and %s builds: %s\n", builds[1]->name, exact ? "exact" : "WRONG");
    CHECK_MSG(exact, "channel-last copies");
}

/* ---- weights packed once ---- */

/* A test epilogue that depends on where each element is and on its value, so that an element missed,
 * finished twice or finished at the wrong place shows: c = 3 c + row / 1000 + column / 100000. */
static float epilogue_value(float c, int64_t row, int64_t col) {
    return 3.0f * c + (float)row / 1000.0f + (float)col / 100000.0f;
}

static void epilogue_test_apply(const void *ctx, int64_t i, int64_t j, int m, int n, float *c, int64_t ldc) {
    (void)ctx;
    for (int r = 0; r < m; r++)
        for (int x = 0; x < n; x++)
            c[r * ldc + x] = epilogue_value(c[r * ldc + x], i + r, j + x);
}

/* kn_sgemm_ws_packed reading A packed by kn_sgemm_pack_a against kn_sgemm_ws packing it each call: the
 * same bits, on 1 and 2 threads, with rows past every multiple of the micro-kernel's, several depth
 * blocks (K past the blocking's 256), beta 0 and 1, one product large and shallow enough to be written
 * a row of tiles at a time; and with an epilogue, the same as applying it to C afterwards. */
static void test_packed_gemm(void) {
    static const int64_t shapes[][3] = {{1, 7, 5}, {13, 33, 27}, {16, 100, 64}, {29, 49, 600}, {64, 3136, 147},
                                        {97, 250, 300}, {150, 900, 24}};
    kn_rng rng = kn_rng_seeded(2000);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int64_t M = shapes[k][0], N = shapes[k][1], K = shapes[k][2];
        float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
        float *packed = malloc(sizeof(float) * kn_sgemm_packed_a_floats(M, K));
        float *want = malloc(sizeof(float) * (size_t)(M * N)), *got = malloc(sizeof(float) * (size_t)(M * N));
        for (int64_t i = 0; i < M * K; i++)
            A[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        for (int64_t i = 0; i < K * N; i++)
            B[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
        kn_sgemm_pack_a(false, M, K, A, K, packed);
        bool same = true;
        for (int threads = 1; threads <= 2; threads++) {
            kn_threads_set(threads);
            for (int b = 0; b <= 1; b++) {
                for (int64_t i = 0; i < M * N; i++)
                    want[i] = got[i] = (float)i / (float)(M * N);
                kn_sgemm_ws(NULL, 0, false, false, M, N, K, 0.5f, A, K, B, N, (float)b, want, N);
                kn_sgemm_ws_packed(NULL, 0, packed, M, N, K, 0.5f, B, N, (float)b, got, N, NULL);
                same = same && memcmp(want, got, sizeof(float) * (size_t)(M * N)) == 0;
                for (int64_t i = 0; i < M * N; i++) {
                    want[i] = epilogue_value(want[i], i / N, i % N);
                    got[i] = (float)i / (float)(M * N);
                }
                kn_sgemm_epilogue epilogue = {epilogue_test_apply, NULL};
                kn_sgemm_ws_packed(NULL, 0, packed, M, N, K, 0.5f, B, N, (float)b, got, N, &epilogue);
                same = same && memcmp(want, got, sizeof(float) * (size_t)(M * N)) == 0;
            }
        }
        printf("packed A, (%lld x %lld) @ (%lld x %lld), and with an epilogue: %s\n", (long long)M, (long long)K,
               (long long)K, (long long)N, same ? "bit-identical" : "DIFFERENT");
        CHECK_MSG(same, "packed A, M %lld N %lld K %lld", (long long)M, (long long)N, (long long)K);
        free(A);
        free(B);
        free(packed);
        free(want);
        free(got);
    }
}

typedef struct packed_case {
    const char *label;
    int64_t x[4], M, kernel[2], strides[2], pads[4], dilations[2], group;
    bool bias;
} packed_case;

static const packed_case packed_cases[] = {
    {"3x3 stride 2 pad 1, odd sizes", {2, 37, 13, 11}, 19, {3, 3}, {2, 2}, {1, 1, 1, 1}, {1, 1}, 1, true},
    {"7x7 stride 2 pad 3 (a first layer)", {1, 3, 32, 30}, 32, {7, 7}, {2, 2}, {3, 3, 3, 3}, {1, 1}, 1, true},
    {"1x1 (the column matrix is X)", {3, 120, 9, 9}, 40, {1, 1}, {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, false},
    {"1x1 stride 2, 5x5 out (small image: transposed)", {1, 72, 10, 10}, 64, {1, 1}, {2, 2}, {0, 0, 0, 0}, {1, 1},
     1, true},
    {"1x1, 160 -> 96 on 7x7, batch 3 (small image: transposed)", {3, 160, 7, 7}, 96, {1, 1}, {1, 1},
     {0, 0, 0, 0}, {1, 1}, 1, true},
    {"3x3 dilation 2, two groups of 32 -> 16", {2, 64, 12, 12}, 32, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, 2, true},
    {"3x3 stride 1, 8 channels (too few for Winograd)", {2, 8, 9, 9}, 64, {3, 3}, {1, 1}, {1, 1, 1, 1},
     {1, 1}, 1, true},
    {"1x1, 96 -> 576 on 14x14 (one-thread column chunks)", {1, 96, 14, 14}, 576, {1, 1}, {1, 1}, {0, 0, 0, 0},
     {1, 1}, 1, true},
    {"3x3 stride 2, 128 -> 64 on 13x13 (transposed products)", {2, 128, 13, 13}, 64, {3, 3}, {2, 2},
     {1, 1, 1, 1}, {1, 1}, 1, true},
    {"3x3 stride 2, 2 groups of 128 -> 32, no bias (transposed)", {1, 256, 9, 8}, 64, {3, 3}, {2, 2},
     {0, 1, 1, 0}, {1, 1}, 2, false},
    {"1x1, 1024 -> 96 on 50x50 (transposed, column chunks)", {1, 1024, 50, 50}, 96, {1, 1}, {1, 1},
     {0, 0, 0, 0}, {1, 1}, 1, true},
    {"1x1 on 1x1 images, 240 -> 64, batch 2 (transposed packing; dot products)", {2, 240, 1, 1}, 64, {1, 1},
     {1, 1}, {0, 0, 0, 0}, {1, 1}, 1, true},
    {"3x3 stride 2 pad 1 on 2x2 images, 40 -> 120 (one position; dot products)", {1, 40, 2, 2}, 120, {3, 3},
     {2, 2}, {1, 1, 1, 1}, {1, 1}, 1, false},
    {"3x3 stride 2 pad 1, 64 -> 32 on 61x47 (unfolded in chunks of rows)", {1, 64, 61, 47}, 32, {3, 3}, {2, 2},
     {1, 1, 1, 1}, {1, 1}, 1, true},
    {"5x5 pad 2, 2 groups of 48 -> 20 on 40x33 (chunks of rows)", {2, 96, 40, 33}, 40, {5, 5}, {1, 1},
     {2, 2, 2, 2}, {1, 1}, 2, true},
};

/* Each output (N, M, OH, OW) of a packed_case by direct loops in double, value[i] = bias + sum w x over
 * the taps inside; returns sum |terms| of each, |bias| + sum |w x|, and fills value. */
static double *packed_magnitudes(const packed_case *c, const kn_graph *g, const kn_shape *y_shape, double *value) {
    const float *x = g->values[kn_graph_find_value(g, "X")].data;
    const float *w = g->values[kn_graph_find_value(g, "W")].data;
    const float *b = c->bias ? g->values[kn_graph_find_value(g, "B")].data : NULL;
    int64_t N = c->x[0], C = c->x[1], H = c->x[2], W = c->x[3], OH = y_shape->d[2], OW = y_shape->d[3];
    int64_t Cg = C / c->group, Mg = c->M / c->group, kh = c->kernel[0], kw = c->kernel[1];
    double *mag = malloc(sizeof(double) * (size_t)(N * c->M * OH * OW));
    for (int64_t i = 0; i < N * c->M * OH * OW; i++) {
        int64_t ow = i % OW, oh = i / OW % OH, m = i / (OW * OH) % c->M, n = i / (OW * OH * c->M);
        double sum = b ? fabs(b[m]) : 0.0, v = b ? b[m] : 0.0;
        for (int64_t ch = 0; ch < Cg; ch++)
            for (int64_t t = 0; t < kh * kw; t++) {
                int64_t ih = oh * c->strides[0] - c->pads[0] + t / kw * c->dilations[0];
                int64_t iw = ow * c->strides[1] - c->pads[1] + t % kw * c->dilations[1];
                if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                    double term = (double)w[(m * Cg + ch) * kh * kw + t] *
                                  x[((n * C + m / Mg * Cg + ch) * H + ih) * W + iw];
                    sum += fabs(term);
                    v += term;
                }
            }
        mag[i] = sum;
        value[i] = v;
    }
    return mag;
}

/* ConvPacked, as the optimizer makes it from a Conv, against that Conv, batches on 1 and 2 threads. The
 * products read the weights packed once instead of packing them: the same bits. In the transposed
 * orientation (multiples of 32 channels from deep reductions or onto images of at most 64 positions,
 * kn_conv_prepack_transposes, recorded in the node) they sum
 * the same terms in the same order, except that the micro-kernel splits the sums of a tile of fewer
 * than 4 rows (positions, there) in two: within twice the rounding bound, and the same bits on 1 and 2
 * threads. */
static void test_conv_packed(void) {
    for (size_t k = 0; k < sizeof packed_cases / sizeof packed_cases[0]; k++) {
        const packed_case *c = &packed_cases[k];
        kn_graph g, opt;
        kn_graph_init(&g);
        int in[3] = {add_param(&g, "X", kn_shape_of(4, c->x)),
                     add_param(&g, "W", kn_shape_of(4, (int64_t[]){c->M, c->x[1] / c->group, c->kernel[0],
                                                                   c->kernel[1]})), -1};
        if (c->bias)
            in[2] = add_param(&g, "B", kn_shape_of(1, (int64_t[]){c->M}));
        kn_shape scalar = {0};
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
        int node = test_add_node(&g, "Conv", "Conv", c->bias ? 3 : 2, in, 1, &y);
        kn_node_set_ints(&g, node, "strides", 2, c->strides);
        kn_node_set_ints(&g, node, "pads", 4, c->pads);
        kn_node_set_ints(&g, node, "dilations", 2, c->dilations);
        kn_node_set_int(&g, node, "group", c->group);
        kn_node_set_string(&g, node, "kn_activation", "Relu");
        opcheck_fill_uniform(&g, 2100 + k, -1.0f, 1.0f);
        kn_opt_stats stats;
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_WINOGRAD | KN_OPT_PREPACK, &opt, &stats));
        CHECK_MSG(stats.convs_packed == 1 && stats.convs_winograd == 0 &&
                      strcmp(opt.nodes[0].op->name, "ConvPacked") == 0,
                  "%s: not rewritten", c->label);
        bool transposed = kn_node_int(&opt.nodes[0], KN_CONV_PACK_TRANSPOSED, 0) != 0;
        CHECK_MSG(transposed == (strstr(c->label, "transposed") != NULL), "%s: packed %s", c->label,
                  transposed ? "transposed" : "plainly");
        kn_tensor *ref = run_node(&g, node, 1), *one = run_node(&opt, 0, 1), *two = run_node(&opt, 0, 2);
        if (ref && one && two) {
            int64_t count = kn_numel(ref), terms = c->x[1] / c->group * c->kernel[0] * c->kernel[1];
            CHECK(kn_numel(one) == count);
            double *direct = malloc(sizeof(double) * (size_t)count);
            double *mag = packed_magnitudes(c, &g, &ref->shape, direct), ratio = 0, direct_ratio = 0;
            for (int64_t i = 0; i < count; i++) {
                ratio = fmax(ratio, fabs((double)kn_f32(one)[i] - kn_f32(ref)[i]) /
                                        (2 * rounding_bound(terms, mag[i])));
                // Relu of the direct loops' value: Conv's own paths (column chunks, packing, epilogue)
                // held against loops that share none of them
                direct_ratio = fmax(direct_ratio, fabs((double)kn_f32(ref)[i] - fmax(direct[i], 0.0)) /
                                                      rounding_bound(terms, mag[i]));
            }
            bool same = memcmp(ref->data, one->data, sizeof(float) * (size_t)count) == 0;
            bool threads_same = memcmp(one->data, two->data, sizeof(float) * (size_t)count) == 0;
            printf("ConvPacked %-58s vs Conv: %s (%.3g of the bound); 1 vs 2 threads: %s; Conv vs direct loops: "
                   "%.3g of the bound\n",
                   c->label, same ? "bit-identical" : "differs", ratio, threads_same ? "bit-identical" : "DIFFERENT",
                   direct_ratio);
            CHECK_MSG(transposed ? ratio <= 1 : same, "%s: ConvPacked differs from Conv", c->label);
            CHECK_MSG(threads_same, "%s: 1 and 2 threads differ", c->label);
            CHECK_MSG(direct_ratio <= 1, "%s: Conv differs from the direct loops", c->label);
            free(mag);
            free(direct);
        }
        opcheck_free_outputs(ref, 1);
        opcheck_free_outputs(one, 1);
        opcheck_free_outputs(two, 1);
        kn_graph_free(&opt);
        kn_graph_free(&g);
    }
    // Depthwise (conv.c's direct loops), 1-D and small weights (72 values: packing them at every run
    // costs nothing): they stay Conv.
    for (int k = 0; k < 3; k++) {
        bool depthwise = k == 0, one_d = k == 1;
        kn_graph g, opt;
        kn_graph_init(&g);
        int64_t xd[4] = {1, depthwise ? 8 : one_d ? 64 : 1, 10, 10};
        int64_t wd[4] = {depthwise ? 8 : 64, depthwise ? 1 : one_d ? 64 : 1, 3, 3};
        int in[2] = {add_param(&g, "X", kn_shape_of(one_d ? 3 : 4, xd)),
                     add_param(&g, "W", kn_shape_of(one_d ? 3 : 4, wd))};
        if (k == 2)
            in[1] = add_param(&g, "W8", kn_shape_of(4, (int64_t[]){8, 1, 3, 3}));
        kn_shape scalar = {0};
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
        int node = test_add_node(&g, "Conv", "Conv", 2, in, 1, &y);
        if (depthwise)
            kn_node_set_int(&g, node, "group", 8);
        opcheck_fill_uniform(&g, 2200 + k, -1.0f, 1.0f);
        kn_opt_stats stats;
        CHECK_OK(kn_graph_optimize(&g, KN_OPT_PREPACK, &opt, &stats));
        CHECK_MSG(stats.convs_packed == 0, "%s Conv packed", depthwise ? "depthwise" : one_d ? "1-D" : "small");
        kn_graph_free(&opt);
        kn_graph_free(&g);
    }
    printf("ConvPacked: Conv kept for depthwise, 1-D and 72-weight layers\n");
}

/* Whether node 0 of opt (a packed form) gives the bits node `node` of g gives, `outputs` floats, on 1 and
 * on 2 threads. */
static bool packed_gives_same_bits(kn_graph *g, int node, kn_graph *opt, int64_t outputs) {
    kn_tensor *ref = run_node(g, node, 1), *one = run_node(opt, 0, 1), *two = run_node(opt, 0, 2);
    bool same = ref && one && two && kn_numel(one) == outputs &&
                memcmp(ref->data, one->data, sizeof(float) * (size_t)outputs) == 0 &&
                memcmp(ref->data, two->data, sizeof(float) * (size_t)outputs) == 0;
    opcheck_free_outputs(ref, 1);
    opcheck_free_outputs(one, 1);
    opcheck_free_outputs(two, 1);
    return same;
}

/* GemmPacked, as the optimizer makes it from a Gemm with a constant B, against that Gemm: batches of
 * A rows on both sides of the dot products' threshold, every transA / transB, with a bias row and a
 * fused Relu or neither, 1 and 2 threads: the same bits (products that pack op(B) read it packed once;
 * the others read B as Gemm does). */
static void test_gemm_packed(void) {
    static const int64_t rows[] = {1, 5, 13, 32};
    int checked = 0;
    for (int t = 0; t < 4; t++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            bool trans_a = t & 1, trans_b = t & 2, bias = r % 2 == 0;
            int64_t M = rows[r], K = 100, N = 70;
            kn_graph g, opt;
            kn_graph_init(&g);
            int in[3] = {add_param(&g, "A", trans_a ? kn_shape_of(2, (int64_t[]){K, M}) : kn_shape_of(2, (int64_t[]){M, K})),
                         add_param(&g, "B", trans_b ? kn_shape_of(2, (int64_t[]){N, K}) : kn_shape_of(2, (int64_t[]){K, N})),
                         bias ? add_param(&g, "C", kn_shape_of(1, (int64_t[]){N})) : -1};
            kn_shape scalar = {0};
            int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
            int node = test_add_node(&g, "Gemm", "Gemm", bias ? 3 : 2, in, 1, &y);
            kn_node_set_int(&g, node, "transA", trans_a);
            kn_node_set_int(&g, node, "transB", trans_b);
            if (bias)
                kn_node_set_string(&g, node, "kn_activation", "Relu");
            opcheck_fill_uniform(&g, 2300 + (uint64_t)(t * 10 + r), -1.0f, 1.0f);
            kn_opt_stats stats;
            CHECK_OK(kn_graph_optimize(&g, KN_OPT_PREPACK, &opt, &stats));
            CHECK_MSG(stats.gemms_packed == 1 && strcmp(opt.nodes[0].op->name, "GemmPacked") == 0,
                      "Gemm M %lld transA %d transB %d: not rewritten", (long long)M, trans_a, trans_b);
            bool same = packed_gives_same_bits(&g, node, &opt, M * N);
            CHECK_MSG(same, "GemmPacked M %lld transA %d transB %d differs from Gemm", (long long)M, trans_a, trans_b);
            checked += same;
            kn_graph_free(&opt);
            kn_graph_free(&g);
        }
    printf("GemmPacked vs Gemm: %d of 16 cases bit-identical on 1 and 2 threads\n", checked);
}

/* MatMulPacked, as the optimizer makes it from a MatMul with a constant 2-D B, against that MatMul: A of
 * rank 2 and 3 whose rows fall on both sides of the dot products' threshold, with a bias row and a fused
 * Relu or neither, 1 and 2 threads: the same bits. */
static void test_matmul_packed(void) {
    static const int64_t rows[] = {1, 5, 13, 32};
    int checked = 0;
    for (int batch = 1; batch <= 3; batch += 2)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            bool bias = r % 2 == 0;
            int64_t M = rows[r], K = 100, N = 70;
            kn_graph g, opt;
            kn_graph_init(&g);
            kn_shape a_shape = batch > 1 ? kn_shape_of(3, (int64_t[]){batch, M, K}) : kn_shape_of(2, (int64_t[]){M, K});
            int in[3] = {add_param(&g, "A", a_shape), add_param(&g, "B", kn_shape_of(2, (int64_t[]){K, N})),
                         bias ? add_param(&g, "bias", kn_shape_of(1, (int64_t[]){N})) : -1};
            kn_shape scalar = {0};
            int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &scalar);
            int node = test_add_node(&g, "MatMul", "MatMul", bias ? 3 : 2, in, 1, &y);
            if (bias)
                kn_node_set_string(&g, node, "kn_activation", "Relu");
            opcheck_fill_uniform(&g, 2400 + (uint64_t)(batch * 10 + r), -1.0f, 1.0f);
            kn_opt_stats stats;
            CHECK_OK(kn_graph_optimize(&g, KN_OPT_PREPACK, &opt, &stats));
            CHECK_MSG(stats.gemms_packed == 1 && opt.nodes[0].op == &kn_op_matmulpacked,
                      "MatMul batch %d M %lld: not rewritten", batch, (long long)M);
            bool same = packed_gives_same_bits(&g, node, &opt, batch * M * N);
            CHECK_MSG(same, "MatMulPacked batch %d M %lld differs from MatMul", batch, (long long)M);
            checked += same;
            kn_graph_free(&opt);
            kn_graph_free(&g);
        }
    printf("MatMulPacked vs MatMul: %d of 8 cases bit-identical on 1 and 2 threads\n", checked);
}

/* A 2x2 plane of rows `in_w` long for out_w windows: values drawn from a few levels (so windows hold
 * ties), a NaN now and then; gradients with -0 among them. */
static void pool2x2_fill(kn_rng *rng, float *x, float *dy, float *dx, int64_t in_floats, int64_t out_floats) {
    for (int64_t i = 0; i < in_floats; i++) {
        x[i] = (float)(int)(4.0f * kn_rng_uniform(rng)) - 2.0f;
        x[i] = kn_rng_uniform(rng) < 0.03f ? NAN : x[i];
        dx[i] = kn_rng_uniform(rng) - 0.5f;
    }
    for (int64_t i = 0; i < out_floats; i++)
        dy[i] = kn_rng_uniform(rng) < 0.2f ? -0.0f : kn_rng_uniform(rng) - 0.5f;
}

static void test_pool2x2_builds(void) {
    enum { out_h = 3, max_w = 35 };
    const kn_pool2x2_kernels *build = kn_pool2x2_best();
    kn_rng rng = kn_rng_seeded(81);
    bool same = true;
    for (int64_t k = 0; k < 2 * max_w; k++) {
        // every width tiled by its windows (rows of up to 8 go two at a time), then with a pixel past the last
        int64_t out_w = k % max_w + 1;
        kn_pool2x2 g = {out_h - k % 2, out_w, 2 * out_w + k / max_w};
        float x[2 * out_h * (2 * max_w + 1)], dy[out_h * max_w], dx[2 * out_h * (2 * max_w + 1)];
        pool2x2_fill(&rng, x, dy, dx, 2 * out_h * g.in_w, out_h * out_w);
        float y_want[out_h * max_w], y_got[out_h * max_w];
        kn_maxpool2x2_forward_generic(&g, x, y_want);
        build->forward(&g, x, y_got);
        same &= memcmp(y_want, y_got, sizeof(float) * (size_t)(g.out_h * out_w)) == 0;
        for (int store = 0; store < 2; store++) {
            float want[sizeof dx / sizeof dx[0]], got[sizeof dx / sizeof dx[0]];
            memcpy(want, dx, sizeof dx);
            memcpy(got, dx, sizeof dx);
            kn_maxpool2x2_backward_generic(&g, x, dy, want, store);
            build->backward(&g, x, dy, got, store);
            same &= memcmp(want, got, sizeof want) == 0;
        }
    }
    printf("2x2 max pooling, the build this CPU runs vs generic: %s\n", same ? "bit-identical" : "DIFFERENT");
    CHECK(same);
}

int main(void) {
    test_packed_gemm();
    test_conv_packed();
    test_winograd();
    test_winograd_refused();
    test_winograd_by_batch();
    test_winograd_builds();
    test_against_im2col();
    test_workspace();
    test_conv_threads();
    test_conv_packs_once();
    test_im2col();
    test_maxpool();
    test_depthwise_row_builds();
    test_depthwise5x5_row_builds();
    test_act_rows_builds();
    test_pool2x2_builds();
    test_gemm_packed();
    test_matmul_packed();
    test_vmath_builds();
    test_sparse_kernels();
    return check_finish();
}
