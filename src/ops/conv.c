/* Conv (ONNX), 2-D NCHW: Y (N, M, OH, OW) = X (N, C, H, W) * W (M, C/group, kH, kW) + B (M).
 *
 * Each image is unfolded by im2col (ops/im2col.h) into a (C*kH*kW, OH*OW) column matrix, so that
 * each group's output is one matrix product W_g (M/group, C/group*kH*kW) @ col_g (C/group*kH*kW,
 * OH*OW). A 1x1 convolution with stride 1 and no padding needs no unfolding: the image itself is the
 * column matrix.
 */
#include "kernels/gemm.h"
#include "ops/im2col.h"
#include "ops/op.h"
#include "ops/window.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_CONV_PARALLEL_MIN (1 << 14)

typedef struct conv_geom {
    int64_t N, C, M;             /* batch, input channels, output channels */
    int64_t group, Cg, Mg;       /* groups; input and output channels per group */
    kn_window_axis h, w;
    int64_t taps;                /* kH * kW */
    int64_t in_plane, out_plane; /* H * W, OH * OW */
} conv_geom;

static kiln_status conv_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *w,
                                const kn_shape *b, conv_geom *g) {
    char sx[96], sw[96], sb[96];
    if (x->ndim != 4) {
        if (x->ndim >= 3)
            return kn_fail(KILN_ERR_UNSUPPORTED,
                           "only 2-D convolution (X of rank 4, NCHW) is supported; X is %s",
                           kn_shape_str(x, sx, sizeof sx));
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, H, W)", kn_shape_str(x, sx, sizeof sx));
    }
    if (w->ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "W %s must be (M, C/group, kH, kW)",
                       kn_shape_str(w, sw, sizeof sw));
    for (int i = 0; i < 4; i++)
        if (x->d[i] < 1 || w->d[i] < 1)
            return kn_fail(KILN_ERR_SHAPE, "X %s and W %s must have positive dimensions",
                           kn_shape_str(x, sx, sizeof sx), kn_shape_str(w, sw, sizeof sw));
    g->N = x->d[0];
    g->C = x->d[1];
    g->M = w->d[0];
    g->group = kn_node_int(node, "group", 1);
    if (g->group < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "group is %lld", (long long)g->group);
    if (g->C % g->group)
        return kn_fail(KILN_ERR_SHAPE, "X %s has %lld channels, not a multiple of group %lld",
                       kn_shape_str(x, sx, sizeof sx), (long long)g->C, (long long)g->group);
    if (g->M % g->group)
        return kn_fail(KILN_ERR_SHAPE, "W %s has %lld output channels, not a multiple of group %lld",
                       kn_shape_str(w, sw, sizeof sw), (long long)g->M, (long long)g->group);
    g->Cg = g->C / g->group;
    g->Mg = g->M / g->group;
    if (w->d[1] != g->Cg)
        return kn_fail(KILN_ERR_SHAPE,
                       "W %s has %lld input channels per group but X %s has %lld channels in %lld "
                       "group(s)",
                       kn_shape_str(w, sw, sizeof sw), (long long)w->d[1],
                       kn_shape_str(x, sx, sizeof sx), (long long)g->C, (long long)g->group);
    int64_t kernel_shape[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel_shape, 2);
    if (n_kernel >= 0 && (n_kernel != 2 || kernel_shape[0] != w->d[2] || kernel_shape[1] != w->d[3]))
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W %s",
                       kn_shape_str(w, sw, sizeof sw));
    if (b && (b->ndim != 1 || b->d[0] != g->M))
        return kn_fail(KILN_ERR_SHAPE, "B %s must be (%lld), one bias per output channel",
                       kn_shape_str(b, sb, sizeof sb), (long long)g->M);
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve(node, &x->d[2], &w->d[2], false, axes));
    g->h = axes[0];
    g->w = axes[1];
    g->taps = g->h.kernel * g->w.kernel;
    g->in_plane = g->h.in * g->w.in;
    g->out_plane = g->h.out * g->w.out;
    return KILN_OK;
}

static const kn_shape *shape_or_null(const kn_tensor *t) { return t ? &t->shape : NULL; }

static kiln_status conv_geom_of_call(const kn_op_call *call, conv_geom *g) {
    const kn_tensor *b = call->node->n_in > 2 ? call->in[2] : NULL;
    return conv_geom_of(call->node, &call->in[0]->shape, &call->in[1]->shape, shape_or_null(b), g);
}

static kiln_status conv_infer(kn_graph *g, const kn_node *node) {
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "Conv has one output, got %d", node->n_out);
    const kn_value *x = kn_node_input(g, node, 0), *w = kn_node_input(g, node, 1);
    const kn_value *b = kn_node_input(g, node, 2);
    if (!x || !w)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and W are required");
    if (x->dtype != KN_F32 || w->dtype != KN_F32 || (b && b->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 inputs are supported");
    conv_geom geom;
    KN_TRY(conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &geom));
    kn_value *y = &g->values[node->out[0]];
    y->shape = kn_shape_of(4, (int64_t[]){geom.N, geom.M, geom.h.out, geom.w.out});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* A 1x1 kernel at stride 1 without padding reads each pixel once, in place: X is its own im2col. */
static bool conv_is_pointwise(const conv_geom *g) {
    return g->taps == 1 && g->h.stride == 1 && g->w.stride == 1 && g->h.pad_begin == 0 &&
           g->h.pad_end == 0 && g->w.pad_begin == 0 && g->w.pad_end == 0;
}

/* One buffer of `count` column matrices for one image. */
static float *conv_col_scratch(kn_op_ctx *ctx, const conv_geom *g, size_t count) {
    size_t bytes;
    if (!kn_size_mul((size_t)(g->C * g->taps), (size_t)g->out_plane, &bytes) ||
        !kn_size_mul(bytes, sizeof(float) * count, &bytes))
        return NULL;
    return kn_op_scratch(ctx, bytes);
}

static kiln_status conv_forward(const kn_op_call *call) {
    conv_geom g;
    KN_TRY(conv_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (M, C/group, kH, kW)
    const float *bias = call->node->n_in > 2 && call->in[2] ? kn_f32(call->in[2]) : NULL; // (M)
    float *y = kn_f32(call->out[0]);      // (N, M, OH, OW)
    bool pointwise = conv_is_pointwise(&g);
    float *col = pointwise ? NULL : conv_col_scratch(call->ctx, &g, 1);
    if (!pointwise && !col)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the im2col buffer of %lld x %lld floats",
                       (long long)(g.C * g.taps), (long long)g.out_plane);
    int64_t depth = g.Cg * g.taps; // reduction length of each group's product
    for (int64_t n = 0; n < g.N; n++) {
        const float *xn = x + n * g.C * g.in_plane;
        float *yn = y + n * g.M * g.out_plane;
        if (!pointwise)
            kn_im2col(g.C, &g.h, &g.w, xn, col);
        const float *cols = pointwise ? xn : col;
        if (bias)
            for (int64_t m = 0; m < g.M; m++)
                for (int64_t p = 0; p < g.out_plane; p++)
                    yn[m * g.out_plane + p] = bias[m];
        for (int64_t grp = 0; grp < g.group; grp++)
            kn_sgemm(false, false, g.Mg, g.out_plane, depth, 1.0f, w + grp * g.Mg * depth, depth,
                     cols + grp * depth * g.out_plane, g.out_plane, bias ? 1.0f : 0.0f,
                     yn + grp * g.Mg * g.out_plane, g.out_plane);
    }
    return KILN_OK;
}

/* dB[m] += sum of dY over the batch and the output plane of channel m. */
static void conv_bias_backward(const conv_geom *g, const float *dy, float *db) {
#pragma omp parallel for schedule(static) if (g->N * g->M * g->out_plane >= KN_CONV_PARALLEL_MIN)
    for (int64_t m = 0; m < g->M; m++) {
        double sum = 0.0;
        for (int64_t n = 0; n < g->N; n++) {
            const float *plane = dy + (n * g->M + m) * g->out_plane;
            for (int64_t p = 0; p < g->out_plane; p++)
                sum += plane[p];
        }
        db[m] += (float)sum;
    }
}

/* Per image n and group: dW_g += dY_g @ col_g^T, and dcol_g = W_g^T @ dY_g folded back by col2im
 * into dX (for a pointwise conv dX_g += W_g^T @ dY_g directly). */
static kiln_status conv_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    conv_geom g;
    KN_TRY(conv_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (M, C/group, kH, kW)
    const float *dy = kn_f32(dout);       // (N, M, OH, OW)
    float *dx = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *dw = call->din[1] ? kn_f32(call->din[1]) : NULL;
    float *db = call->node->n_in > 2 && call->in[2] && call->din[2] ? kn_f32(call->din[2]) : NULL;
    if (db)
        conv_bias_backward(&g, dy, db);
    if (!dx && !dw)
        return KILN_OK;

    bool pointwise = conv_is_pointwise(&g);
    float *col = NULL, *dcol = NULL; // (C*kH*kW, OH*OW) each
    if (!pointwise) {
        size_t count = (dw ? 1 : 0) + (dx ? 1 : 0);
        float *buffers = conv_col_scratch(call->ctx, &g, count);
        if (!buffers)
            return kn_fail(KILN_ERR_NOMEM, "no memory for %zu im2col buffers of %lld x %lld floats",
                           count, (long long)(g.C * g.taps), (long long)g.out_plane);
        col = dw ? buffers : NULL;
        dcol = dx ? buffers + (dw ? g.C * g.taps * g.out_plane : 0) : NULL;
    }
    int64_t depth = g.Cg * g.taps;
    for (int64_t n = 0; n < g.N; n++) {
        const float *xn = x + n * g.C * g.in_plane;
        const float *dyn = dy + n * g.M * g.out_plane;
        if (dw) {
            if (!pointwise)
                kn_im2col(g.C, &g.h, &g.w, xn, col);
            const float *cols = pointwise ? xn : col;
            for (int64_t grp = 0; grp < g.group; grp++)
                kn_sgemm(false, true, g.Mg, depth, g.out_plane, 1.0f, dyn + grp * g.Mg * g.out_plane,
                         g.out_plane, cols + grp * depth * g.out_plane, g.out_plane, 1.0f,
                         dw + grp * g.Mg * depth, depth);
        }
        if (dx) {
            float *dxn = dx + n * g.C * g.in_plane;
            // Pointwise: the column matrix is dX itself, so the product adds into it directly.
            float *target = pointwise ? dxn : dcol;
            for (int64_t grp = 0; grp < g.group; grp++)
                kn_sgemm(true, false, depth, g.out_plane, g.Mg, 1.0f, w + grp * g.Mg * depth, depth,
                         dyn + grp * g.Mg * g.out_plane, g.out_plane, pointwise ? 1.0f : 0.0f,
                         target + grp * depth * g.out_plane, g.out_plane);
            if (!pointwise)
                kn_col2im(g.C, &g.h, &g.w, dcol, dxn);
        }
    }
    return KILN_OK;
}

static int64_t conv_flops(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    conv_geom g;
    if (conv_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    int64_t outputs = g.N * g.M * g.out_plane;
    return 2 * outputs * g.Cg * g.taps + (b ? outputs : 0);
}

const kn_op kn_op_conv = {
    .name = "Conv",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = conv_infer,
    .forward = conv_forward,
    .backward = conv_backward,
    .flops = conv_flops,
};
