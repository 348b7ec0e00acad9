/* ConvTranspose (ONNX), 2-D NCHW:
 *     Y (N, M, OH, OW) = X (N, C, H, W) transpose-convolved with W (C, M/group, kH, kW), + B (M).
 *
 * Input pixel (ih, iw) adds X * W[tap (i, j)] onto output pixel
 * (ih * stride - pad_begin + i * dilation, likewise along the width): ConvTranspose is the adjoint
 * of the convolution that reads Y through those windows and produces an H x W image. So the forward
 * is that convolution's backward-data pass: per group, the column matrix
 *     col_g (M/group*kH*kW, H*W) = W_g^T (M/group*kH*kW, C/group) @ X_g (C/group, H*W)
 * is folded onto Y by col2im (ops/im2col.h). The backward is its forward pass: dY unfolded by
 * im2col gives dX_g += W_g @ col_g and dW_g += X_g @ col_g^T.
 *
 * Output size per spatial axis: the full extent stride (in - 1) + output_padding + (kernel - 1)
 * dilation + 1, less pads[begin] + pads[end]. With auto_pad SAME_UPPER / SAME_LOWER the output is
 * in * stride, and with output_shape it is as given; the difference from the full extent is then
 * cut from the two sides as the ONNX spec says: the odd element at the end for SAME_UPPER, at the
 * beginning otherwise. An output_shape larger than the full extent (ONNX's own test
 * convtranspose_output_shape) leaves zeros (plus bias) at the end, as onnxruntime does.
 */
#include <string.h>

#include "kernels/gemm.h"
#include "ops/im2col.h"
#include "ops/op.h"
#include "ops/window.h"

/* Below this many elements a loop runs on one thread: waking the team costs more than it saves. */
#define KN_CONVT_PARALLEL_MIN (1 << 14)
/* Bounds attribute values so that window arithmetic on int64 cannot overflow. */
#define KN_CONVT_ATTR_MAX (INT64_C(1) << 30)

typedef struct convt_geom {
    int64_t N, C, M;           /* batch, input channels, output channels */
    int64_t group, Cg, Mg;     /* groups; input and output channels per group */
    /* The convolution ConvTranspose is the adjoint of: its input is Y (in = OH), its output X
     * (out = H). */
    kn_window_axis h, w;
    int64_t taps;              /* kH * kW */
    int64_t x_plane, y_plane;  /* H * W, OH * OW */
} convt_geom;

typedef enum convt_pad {
    CONVT_PAD_NOTSET, CONVT_PAD_VALID, CONVT_PAD_SAME_UPPER, CONVT_PAD_SAME_LOWER
} convt_pad;

/* Reads INTS attribute `name` into v when present: `count` values, or `alt_count` of which the
 * last `count` are kept, each in [lowest, KN_CONVT_ATTR_MAX]. */
static kiln_status read_ints(const kn_node *node, const char *name, int count, int alt_count,
                             int64_t lowest, int64_t *v) {
    const kn_attr *a = kn_node_attr(node, name);
    if (!a)
        return KILN_OK;
    if (a->type != KN_ATTR_INTS)
        return kn_fail(KILN_ERR_INVALID_ARG, "attribute %s must be a list of ints", name);
    if (a->n_ints != count && a->n_ints != alt_count)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has %d values, expected %d for a 2-D convolution",
                       name, a->n_ints, count);
    int skip = a->n_ints - count;
    for (int i = 0; i < count; i++) {
        int64_t value = a->ints[skip + i];
        if (value < lowest || value > KN_CONVT_ATTR_MAX)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s[%d] = %lld is outside [%lld, %lld]", name,
                           skip + i, (long long)value, (long long)lowest,
                           (long long)KN_CONVT_ATTR_MAX);
        v[i] = value;
    }
    return KILN_OK;
}

static kiln_status convt_pad_of(const kn_node *node, convt_pad *pad) {
    const char *auto_pad = kn_node_string(node, "auto_pad", "NOTSET");
    if (strcmp(auto_pad, "NOTSET") == 0)
        *pad = CONVT_PAD_NOTSET;
    else if (strcmp(auto_pad, "VALID") == 0)
        *pad = CONVT_PAD_VALID;
    else if (strcmp(auto_pad, "SAME_UPPER") == 0)
        *pad = CONVT_PAD_SAME_UPPER;
    else if (strcmp(auto_pad, "SAME_LOWER") == 0)
        *pad = CONVT_PAD_SAME_LOWER;
    else
        return kn_fail(KILN_ERR_INVALID_ARG,
                       "auto_pad '%s' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER",
                       auto_pad);
    return KILN_OK;
}

/* One spatial axis. `output` is output_shape's entry, or -1 when the attribute is absent. */
static kiln_status convt_axis_resolve(kn_window_axis *a, int64_t in, int64_t kernel, int64_t stride,
                                      int64_t dilation, const int64_t pads[2],
                                      int64_t output_padding, int64_t output, convt_pad pad,
                                      const char *axis_name) {
    *a = (kn_window_axis){.out = in, .kernel = kernel, .stride = stride, .dilation = dilation};
    int64_t full = stride * (in - 1) + output_padding + kn_window_extent(a);
    if (output < 0 && (pad == CONVT_PAD_SAME_UPPER || pad == CONVT_PAD_SAME_LOWER))
        output = in * stride;
    if (output >= 0) {
        int64_t total = full - output;
        if (total < 0)
            a->pad_begin = 0;
        else
            a->pad_begin = pad == CONVT_PAD_SAME_UPPER ? total / 2 : total - total / 2;
        a->in = output;
    } else {
        bool explicit_pads = pad == CONVT_PAD_NOTSET;
        a->pad_begin = explicit_pads ? pads[0] : 0;
        a->in = full - a->pad_begin - (explicit_pads ? pads[1] : 0);
    }
    a->pad_end = full - a->in - a->pad_begin; /* negative when zeros are added at the end */
    if (a->in < 1)
        return kn_fail(KILN_ERR_SHAPE,
                       "output %s is %lld: full extent %lld (input %lld, stride %lld, kernel %lld, "
                       "dilation %lld, output_padding %lld) less pads %lld + %lld",
                       axis_name, (long long)a->in, (long long)full, (long long)in,
                       (long long)stride, (long long)kernel, (long long)dilation,
                       (long long)output_padding, (long long)pads[0], (long long)pads[1]);
    return KILN_OK;
}

static kiln_status convt_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *w,
                                 const kn_shape *b, convt_geom *g) {
    char sx[96], sw[96], sb[96];
    if (x->ndim != 4) {
        if (x->ndim >= 3)
            return kn_fail(KILN_ERR_UNSUPPORTED,
                           "only 2-D ConvTranspose (X of rank 4, NCHW) is supported; X is %s",
                           kn_shape_str(x, sx, sizeof sx));
        return kn_fail(KILN_ERR_SHAPE, "X %s must be (N, C, H, W)", kn_shape_str(x, sx, sizeof sx));
    }
    if (w->ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "W %s must be (C, M/group, kH, kW)",
                       kn_shape_str(w, sw, sizeof sw));
    for (int i = 0; i < 4; i++)
        if (x->d[i] < 1 || w->d[i] < 1 || w->d[i] > KN_CONVT_ATTR_MAX)
            return kn_fail(KILN_ERR_SHAPE, "X %s and W %s must have positive dimensions",
                           kn_shape_str(x, sx, sizeof sx), kn_shape_str(w, sw, sizeof sw));
    g->N = x->d[0];
    g->C = x->d[1];
    g->group = kn_node_int(node, "group", 1);
    if (g->group < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "group is %lld", (long long)g->group);
    if (g->C % g->group)
        return kn_fail(KILN_ERR_SHAPE, "X %s has %lld channels, not a multiple of group %lld",
                       kn_shape_str(x, sx, sizeof sx), (long long)g->C, (long long)g->group);
    if (w->d[0] != g->C)
        return kn_fail(KILN_ERR_SHAPE, "W %s must have one row per input channel of X %s",
                       kn_shape_str(w, sw, sizeof sw), kn_shape_str(x, sx, sizeof sx));
    g->Cg = g->C / g->group;
    g->Mg = w->d[1];
    g->M = g->Mg * g->group;
    int64_t kernel_shape[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel_shape, 2);
    bool kernel_matches = n_kernel == 2 && kernel_shape[0] == w->d[2] && kernel_shape[1] == w->d[3];
    if (n_kernel >= 0 && !kernel_matches)
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W %s",
                       kn_shape_str(w, sw, sizeof sw));
    if (b && (b->ndim != 1 || b->d[0] != g->M))
        return kn_fail(KILN_ERR_SHAPE, "B %s must be (%lld), one bias per output channel",
                       kn_shape_str(b, sb, sizeof sb), (long long)g->M);

    int64_t strides[2] = {1, 1}, dilations[2] = {1, 1}, pads[4] = {0, 0, 0, 0};
    int64_t output_padding[2] = {0, 0}, output_shape[2] = {-1, -1};
    KN_TRY(read_ints(node, "strides", 2, 2, 1, strides));
    KN_TRY(read_ints(node, "dilations", 2, 2, 1, dilations));
    KN_TRY(read_ints(node, "pads", 4, 4, 0, pads));
    KN_TRY(read_ints(node, "output_padding", 2, 2, 0, output_padding));
    /* output_shape may also be given in full, (N, M, OH, OW) */
    KN_TRY(read_ints(node, "output_shape", 2, 4, 1, output_shape));
    convt_pad pad = CONVT_PAD_NOTSET;
    KN_TRY(convt_pad_of(node, &pad));
    if (pad != CONVT_PAD_NOTSET && (pads[0] || pads[1] || pads[2] || pads[3]))
        return kn_fail(KILN_ERR_INVALID_ARG, "pads cannot be set together with auto_pad %s",
                       kn_node_string(node, "auto_pad", ""));
    const int64_t h_pads[2] = {pads[0], pads[2]}, w_pads[2] = {pads[1], pads[3]};
    KN_TRY(convt_axis_resolve(&g->h, x->d[2], w->d[2], strides[0], dilations[0], h_pads,
                              output_padding[0], output_shape[0], pad, "height"));
    KN_TRY(convt_axis_resolve(&g->w, x->d[3], w->d[3], strides[1], dilations[1], w_pads,
                              output_padding[1], output_shape[1], pad, "width"));
    g->taps = g->h.kernel * g->w.kernel;
    g->x_plane = g->h.out * g->w.out;
    g->y_plane = g->h.in * g->w.in;
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
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "ConvTranspose has one output, got %d", node->n_out);
    const kn_value *x = kn_node_input(g, node, 0), *w = kn_node_input(g, node, 1);
    const kn_value *b = kn_node_input(g, node, 2);
    if (!x || !w)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X and W are required");
    if (x->dtype != KN_F32 || w->dtype != KN_F32 || (b && b->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "only f32 inputs are supported");
    convt_geom geom;
    KN_TRY(convt_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &geom));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = kn_shape_of(4, (int64_t[]){geom.N, geom.M, geom.h.in, geom.w.in});
    y->dtype = KN_F32;
    return KILN_OK;
}

/* A 1x1 kernel at stride 1 without cropping maps each input pixel onto the same output pixel: the
 * column matrix is Y itself. */
static bool convt_is_pointwise(const convt_geom *g) {
    return g->taps == 1 && g->h.stride == 1 && g->w.stride == 1 && g->h.pad_begin == 0 &&
           g->w.pad_begin == 0 && g->h.in == g->h.out && g->w.in == g->w.out;
}

/* The column matrix for one image, (M*kH*kW, H*W). */
static float *convt_col_scratch(kn_op_ctx *ctx, const convt_geom *g) {
    size_t bytes;
    if (!kn_size_mul((size_t)(g->M * g->taps), (size_t)g->x_plane, &bytes) ||
        !kn_size_mul(bytes, sizeof(float), &bytes))
        return NULL;
    return kn_op_scratch(ctx, bytes);
}

static kiln_status convt_forward(const kn_op_call *call) {
    convt_geom g;
    KN_TRY(convt_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (C, M/group, kH, kW)
    const float *bias = bias_of(call) ? kn_f32(bias_of(call)) : NULL; // (M)
    float *y = kn_f32(call->out[0]);      // (N, M, OH, OW)
    bool pointwise = convt_is_pointwise(&g);
    float *col = pointwise ? NULL : convt_col_scratch(call->ctx, &g);
    if (!pointwise && !col)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the column buffer of %lld x %lld floats",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    int64_t rows = g.Mg * g.taps; // each group's rows of the column matrix
    for (int64_t n = 0; n < g.N; n++) {
        const float *xn = x + n * g.C * g.x_plane;
        float *yn = y + n * g.M * g.y_plane;
        for (int64_t m = 0; m < g.M; m++)
            for (int64_t p = 0; p < g.y_plane; p++)
                yn[m * g.y_plane + p] = bias ? bias[m] : 0.0f;
        // Pointwise: the column matrix is Y itself, so the product adds onto the bias directly.
        float *target = pointwise ? yn : col;
        for (int64_t grp = 0; grp < g.group; grp++)
            kn_sgemm(true, false, rows, g.x_plane, g.Cg, 1.0f, w + grp * g.Cg * rows, rows,
                     xn + grp * g.Cg * g.x_plane, g.x_plane, pointwise ? 1.0f : 0.0f,
                     target + grp * rows * g.x_plane, g.x_plane);
        if (!pointwise)
            kn_col2im(g.M, &g.h, &g.w, col, yn);
    }
    return KILN_OK;
}

/* dB[m] += sum of dY over the batch and the output plane of channel m. */
static void convt_bias_backward(const convt_geom *g, const float *dy, float *db) {
#pragma omp parallel for schedule(static) if (g->N * g->M * g->y_plane >= KN_CONVT_PARALLEL_MIN)
    for (int64_t m = 0; m < g->M; m++) {
        double sum = 0.0;
        for (int64_t n = 0; n < g->N; n++) {
            const float *plane = dy + (n * g->M + m) * g->y_plane;
            for (int64_t p = 0; p < g->y_plane; p++)
                sum += plane[p];
        }
        db[m] += (float)sum;
    }
}

/* Per image n: col = im2col(dY_n) (M*kH*kW, H*W), then per group dX_g += W_g @ col_g and
 * dW_g += X_g @ col_g^T. A pointwise ConvTranspose uses dY_n as col directly. */
static kiln_status convt_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout)
        return KILN_OK;
    convt_geom g;
    KN_TRY(convt_geom_of_call(call, &g));
    const float *x = kn_f32(call->in[0]); // (N, C, H, W)
    const float *w = kn_f32(call->in[1]); // (C, M/group, kH, kW)
    const float *dy = kn_f32(dout);       // (N, M, OH, OW)
    float *dx = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *dw = call->din[1] ? kn_f32(call->din[1]) : NULL;
    float *db = bias_of(call) && call->din[2] ? kn_f32(call->din[2]) : NULL;
    if (db)
        convt_bias_backward(&g, dy, db);
    if (!dx && !dw)
        return KILN_OK;
    bool pointwise = convt_is_pointwise(&g);
    float *col = pointwise ? NULL : convt_col_scratch(call->ctx, &g);
    if (!pointwise && !col)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the column buffer of %lld x %lld floats",
                       (long long)(g.M * g.taps), (long long)g.x_plane);
    int64_t rows = g.Mg * g.taps;
    for (int64_t n = 0; n < g.N; n++) {
        const float *dyn = dy + n * g.M * g.y_plane;
        if (!pointwise)
            kn_im2col(g.M, &g.h, &g.w, dyn, col);
        const float *cols = pointwise ? dyn : col;
        for (int64_t grp = 0; grp < g.group; grp++) {
            const float *col_g = cols + grp * rows * g.x_plane; // (M/group*kH*kW, H*W)
            int64_t x_at = (n * g.C + grp * g.Cg) * g.x_plane;  // X_g and dX_g: (C/group, H*W)
            if (dx)
                kn_sgemm(false, false, g.Cg, g.x_plane, rows, 1.0f, w + grp * g.Cg * rows, rows,
                         col_g, g.x_plane, 1.0f, dx + x_at, g.x_plane);
            if (dw)
                kn_sgemm(false, true, g.Cg, rows, g.x_plane, 1.0f, x + x_at, g.x_plane, col_g,
                         g.x_plane, 1.0f, dw + grp * g.Cg * rows, rows);
        }
    }
    return KILN_OK;
}

/* Two per multiply-add of the product, one per bias add. */
static int64_t convt_flops(const kn_graph *graph, const kn_node *node) {
    const kn_value *x = kn_node_input(graph, node, 0), *w = kn_node_input(graph, node, 1);
    const kn_value *b = kn_node_input(graph, node, 2);
    convt_geom g;
    if (convt_geom_of(node, &x->shape, &w->shape, b ? &b->shape : NULL, &g) != KILN_OK)
        return 0;
    int64_t products = g.N * g.C * g.x_plane * g.Mg * g.taps;
    return 2 * products + (b ? g.N * g.M * g.y_plane : 0);
}

const kn_op kn_op_convtranspose = {
    .name = "ConvTranspose",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = convt_infer,
    .forward = convt_forward,
    .backward = convt_backward,
    .flops = convt_flops,
};
