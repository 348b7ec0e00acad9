/* ConvTranspose (ONNX), 2-D NCHW:
 *     Y (N, M, OH, OW) = X (N, C, H, W) transpose-convolved with W (C, M/group, kH, kW), + B (M).
 * 1-D runs here as 2-D of height 1; 3-D and 4-D run in conv_nd.c.
 *
 * Input pixel (ih, iw) adds X * W[tap (i, j)] onto output pixel
 * (ih * stride - pad_begin + i * dilation, likewise along the width): ConvTranspose is the adjoint
 * of the convolution that reads Y through those windows and produces an H x W image. So the forward
 * is that convolution's backward-data pass: per group, the column matrix
 *     col_g (M/group*kH*kW, H*W) = W_g^T (M/group*kH*kW, C/group) @ X_g (C/group, H*W)
 * is folded onto Y by col2im. The backward is its forward pass: dY unfolded by im2col gives
 * dX_g += W_g @ col_g and dW_g += X_g @ col_g^T. These are the products ops/conv_gemm.h shares with
 * Conv, with A = X and B = Y; the output size rules are in ops/window.h
 * (kn_window_resolve_transposed_nd).
 */
#include "ops/conv_gemm.h"
#include "ops/conv_nd.h"
#include "ops/op.h"
#include "ops/window.h"

typedef struct convt_geom {
    int64_t N, C, M;           /* batch, input channels, output channels */
    int64_t Mg;                /* output channels per group */
    /* The products, with the convolution ConvTranspose is the adjoint of: its input is Y (in = OH),
     * its output X (out = H). */
    kn_conv_gemm products;
    int64_t taps;              /* kH * kW */
    int64_t x_plane, y_plane;  /* H * W, OH * OW */
} convt_geom;

static kiln_status convt_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *w,
                                 const kn_shape *b, convt_geom *g) {
    char sx[96], sw[96], sb[96];
    int64_t group;
    KN_TRY(kn_conv_check_operands(node, x, w, "C, M/group", &group));
    int rank = x->ndim - 2;
    g->N = x->d[0];
    g->C = x->d[1];
    if (w->d[0] != g->C)
        return kn_fail(KILN_ERR_SHAPE, "W %s must have one row per input channel of X %s",
                       kn_shape_str(w, sw, sizeof sw), kn_shape_str(x, sx, sizeof sx));
    g->Mg = w->d[1];
    g->M = g->Mg * group;
    int64_t kernel_shape[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel_shape, 2);
    bool kernel_matches = n_kernel == rank && kernel_shape[0] == w->d[2] &&
                          (rank == 1 || kernel_shape[1] == w->d[3]);
    if (n_kernel >= 0 && !kernel_matches)
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W %s",
                       kn_shape_str(w, sw, sizeof sw));
    if (b && (b->ndim != 1 || b->d[0] != g->M))
        return kn_fail(KILN_ERR_SHAPE, "B %s must be (%lld), one bias per output channel",
                       kn_shape_str(b, sb, sizeof sb), (long long)g->M);
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve_transposed_as_2d(node, rank, &x->d[2], &w->d[2], axes));
    g->products = (kn_conv_gemm){.group = group, .a_channels = g->C, .b_channels = g->M,
                                 .h = axes[0], .w = axes[1]};
    g->taps = axes[0].kernel * axes[1].kernel;
    g->x_plane = axes[0].out * axes[1].out;
    g->y_plane = kn_count_mul(axes[0].in, axes[1].in); /* Y is not size-checked yet */
    return KILN_OK;
}

static const kn_tensor *bias_of(const kn_op_call *call) {
    return call->node->n_in > 2 ? call->in[2] : NULL;
}

static kiln_status convt_geom_of_call(const kn_op_call *call, convt_geom *g) {
    const kn_tensor *b = bias_of(call);
    return convt_geom_of(call->node, &call->in[0]->shape, &call->in[1]->shape, b ? &b->shape : NULL,
                         g);
}

static kiln_status convt_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x, *w, *b;
    KN_TRY(kn_conv_infer_inputs(g, node, &x, &w, &b));
    if (kn_conv_is_nd(x->shape.ndim))
        return kn_convt_nd_infer(g, node);
    convt_geom geom;
    KN_TRY(convt_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &geom));
    const kn_conv_gemm *p = &geom.products;
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape.ndim == 3 ? kn_shape_of(3, (int64_t[]){geom.N, geom.M, p->w.in})
                                   : kn_shape_of(4, (int64_t[]){geom.N, geom.M, p->h.in, p->w.in});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* Forward's scratch: the column matrix for one image, then the products' packing workspace, 64-byte
 * aligned. */
typedef struct convt_scratch {
    size_t col_bytes, gemm_bytes, total;
} convt_scratch;

static bool convt_forward_scratch(const convt_geom *g, convt_scratch *s) {
    if (!kn_conv_gemm_col_bytes(&g->products, &s->col_bytes) ||
        !kn_size_add(s->col_bytes, 63, &s->col_bytes))
        return false;
    s->col_bytes &= ~(size_t)63;
    s->gemm_bytes = kn_conv_gemm_fold_workspace(&g->products);
    return s->gemm_bytes != SIZE_MAX && kn_size_add(s->col_bytes, s->gemm_bytes, &s->total);
}

static kiln_status convt_forward(const kn_op_call *call) {
    if (kn_conv_is_nd(call->in[0]->shape.ndim))
        return kn_convt_nd_forward(call);
    convt_geom g;
    KN_TRY(convt_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (C, M/group, kH, kW)
    const float *bias = bias_of(call) ? kn_f32(bias_of(call)) : NULL; // (M)
    float *y = kn_f32(call->out[0]);      // (N, M, OH, OW)
    convt_scratch s;
    if (!convt_forward_scratch(&g, &s))
        return kn_fail(KILN_ERR_NOMEM, "the column buffer of %lld x %lld floats overflows",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    unsigned char *scratch = s.total ? kn_op_scratch(call->ctx, s.total) : NULL;
    if (s.total && !scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the column buffer of %lld x %lld floats",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    kn_conv_gemm products = g.products;
    products.gemm_ws = s.gemm_bytes ? scratch + s.col_bytes : NULL;
    products.gemm_ws_bytes = s.gemm_bytes;
    float *col = (float *)scratch; // (M*kH*kW, H*W), unused when pointwise
    for (int64_t n = 0; n < g.N; n++) {
        float *yn = y + n * g.M * g.y_plane;
        for (int64_t m = 0; m < g.M; m++)
            for (int64_t p = 0; p < g.y_plane; p++)
                yn[m * g.y_plane + p] = bias ? bias[m] : 0.0f;
        kn_conv_gemm_fold(&products, w, x + n * g.C * g.x_plane, col, yn);
    }
    return KILN_OK;
}

/* Per image n: col = im2col(dY_n) (M*kH*kW, H*W), then per group dX_g += W_g @ col_g and
 * dW_g += X_g @ col_g^T. */
static kiln_status convt_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    if (kn_conv_is_nd(call->in[0]->shape.ndim))
        return kn_convt_nd_backward(call);
    convt_geom g;
    KN_TRY(convt_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (C, M/group, kH, kW)
    const float *dy = kn_f32(dout);       // (N, M, OH, OW)
    float *dx = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *dw = call->din[1] ? kn_f32(call->din[1]) : NULL;
    float *db = bias_of(call) && call->din[2] ? kn_f32(call->din[2]) : NULL;
    if (db)
        kn_conv_bias_grad(g.N, g.M, g.y_plane, dy, db);
    if (!dx && !dw)
        return KILN_OK;
    size_t col_bytes;
    if (!kn_conv_gemm_col_bytes(&g.products, &col_bytes))
        return kn_fail(KILN_ERR_NOMEM, "the column buffer of %lld x %lld floats overflows",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    float *col = col_bytes ? kn_op_scratch(call->ctx, col_bytes) : NULL;
    if (col_bytes && !col)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the column buffer of %lld x %lld floats",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    for (int64_t n = 0; n < g.N; n++) {
        const float *cols = kn_conv_gemm_unfold(&g.products, dy + n * g.M * g.y_plane, col);
        if (dx)
            kn_conv_gemm_apply(&g.products, w, cols, 1.0f, dx + n * g.C * g.x_plane);
        if (dw)
            kn_conv_gemm_weight_grad(&g.products, x + n * g.C * g.x_plane, cols, 1.0f, dw);
    }
    return KILN_OK;
}

/* Two per multiply-add of the product, one per bias add. */
static int64_t convt_flops(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    if (kn_conv_is_nd(x->shape.ndim))
        return kn_convt_nd_flops(graph, node);
    convt_geom g = {0};
    if (convt_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    int64_t products = kn_count_mul(g.N * g.C * g.x_plane, g.Mg * g.taps);
    return kn_count_add(kn_count_mul(2, products), b ? g.N * g.M * g.y_plane : 0);
}

/* What forward takes from the scratch (conv_nd.c takes none). */
static size_t convt_workspace(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    convt_geom g;
    convt_scratch s;
    if (kn_conv_is_nd(x->shape.ndim) ||
        convt_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK ||
        !convt_forward_scratch(&g, &s))
        return 0;
    return s.total;
}

const kn_op kn_op_convtranspose = {
    .name = "ConvTranspose",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = convt_infer,
    .forward = convt_forward,
    .backward = convt_backward,
    .flops = convt_flops,
    .workspace = convt_workspace,
};
