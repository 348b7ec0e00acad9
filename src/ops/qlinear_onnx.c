/* ONNX's integer ops as their definition: QLinearConv, QLinearMatMul (core/quant.h, "ONNX's integer
 * ops": exact sums of the levels less their zero points, then one f32 product and QuantizeLinear's
 * rounding), ConvInteger, MatMulInteger (the int32 sums themselves, wrapping like int32 arithmetic
 * past its range) and DynamicQuantizeLinear, which quantizes an f32 tensor to u8 with the scale and zero
 * point of its own range (what dynamically quantized models feed MatMulInteger).
 *
 * Levels are u8 or i8, each zero point of its levels' dtype: x's per tensor; w's (B's) per tensor or
 * one per output channel (a MatMul's column); A's per tensor or, for MatMulInteger and QLinearMatMul,
 * one per row of A. QLinearConv's optional bias is int32 on the scale s_x * s_w, added to the sum.
 * Convolutions are 1-D or 2-D (X of rank 3 or 4) with Conv's attributes; matrix products are numpy
 * matmul's, batch dims broadcast.
 *
 * These run whatever the operands are, for any model; the optimizer (src/runtime/optimize.c) turns
 * QLinearConv and QLinearMatMul with constant weights into the packed integer layers (ops/qlinear.c),
 * which compute the same numbers faster. Inference only: no backward.
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/quant.h"
#include "ops/conv_gemm.h"
#include "ops/matmul_dims.h"
#include "ops/movement.h"
#include "ops/op.h"
#include "ops/window.h"

static bool is_level_type(kn_dtype t) { return t == KN_U8 || t == KN_I8; }

static int32_t level_at(const kn_tensor *t, int64_t i) {
    return t->dtype == KN_I8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

/* Zero point of index i of a per-tensor (one element) or per-index zero point; 0 when absent. */
static int32_t zero_at(const kn_tensor *z, int64_t i) {
    if (!z)
        return 0;
    return level_at(z, kn_numel(z) == 1 ? 0 : i);
}

static float scale_at(const kn_tensor *s, int64_t i) {
    return ((const float *)s->data)[kn_numel(s) == 1 ? 0 : i];
}

/* Levels `what` must be u8 or i8. */
static kiln_status check_levels(const kn_value *v, const char *what) {
    if (!v)
        return kn_fail(KILN_ERR_INVALID_ARG, "input %s is required", what);
    if (!is_level_type(v->dtype))
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s has dtype %s; u8 or i8 levels are supported", what,
                       kn_dtype_name(v->dtype));
    return KILN_OK;
}

/* A scale or zero point of one element or `count` (1-D); a zero point of `levels`' dtype, a scale f32. */
static kiln_status check_param(const kn_value *p, const kn_value *levels, int64_t count, const char *what) {
    if (!p)
        return KILN_OK;
    int64_t n = kn_shape_numel(&p->shape);
    if (p->shape.ndim > 1 || (n != 1 && n != count))
        return kn_fail(KILN_ERR_SHAPE, "%s has %lld elements of rank %d; one, or %lld in 1-D, are supported", what,
                       (long long)n, p->shape.ndim, (long long)count);
    kn_dtype want = levels ? levels->dtype : KN_F32;
    if (p->dtype != want)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s has dtype %s; %s expected", what, kn_dtype_name(p->dtype),
                       kn_dtype_name(want));
    return KILN_OK;
}

/* Scales must be finite and > 0: checked on the values when they run. */
static kiln_status check_scale_values(const kn_tensor *s, const char *what) {
    for (int64_t i = 0; i < kn_numel(s); i++) {
        float v = ((const float *)s->data)[i];
        if (!(v > 0.0f && v < INFINITY))
            return kn_fail(KILN_ERR_INVALID_ARG, "%s[%lld] = %g; scales must be finite and > 0", what, (long long)i,
                           (double)v);
    }
    return KILN_OK;
}

/* Levels [from, from + n) of t less their zero points into dst[0, n) as int32; the zero point of
 * element from + i is zero_at(z, (i / inner) % count): per tensor, per row or per column. */
static void widen_levels(const kn_tensor *t, int64_t from, int64_t n, const kn_tensor *z, int64_t inner,
                         int64_t count, int32_t *dst) {
    bool per_index = z && kn_numel(z) > 1;
    for (int64_t i = 0; i < n; i++)
        dst[i] = level_at(t, from + i) - zero_at(z, per_index ? (i / inner) % count : 0);
}

/* acc as int32: saturated for the QLinear ops (core/quant.h), wrapped for the Integer ops. */
static int32_t saturate_i32(int64_t acc) {
    return acc > INT32_MAX ? INT32_MAX : acc < INT32_MIN ? INT32_MIN : (int32_t)acc;
}
static int32_t wrap_i32(int64_t acc) { return (int32_t)(uint32_t)(uint64_t)acc; }

/* The output: int32 sums (y_scale NULL), or levels of the QLinear ops' requantization with
 * multiplier mult(channel) and zero point y_zero. */
typedef struct qout {
    kn_tensor *y;
    const kn_tensor *x_scale, *w_scale, *y_scale, *y_zero; /* NULL for the Integer ops */
} qout;

static void qout_store(const qout *o, int64_t i, int64_t channel, int64_t acc) {
    if (!o->y_scale) {
        ((int32_t *)o->y->data)[i] = wrap_i32(acc);
        return;
    }
    float mult = kn_quant_requant_multiplier(scale_at(o->x_scale, 0), scale_at(o->w_scale, channel),
                                             scale_at(o->y_scale, 0));
    bool is_signed = o->y->dtype == KN_I8;
    int32_t q = kn_quant_requant_level(saturate_i32(acc), mult, zero_at(o->y_zero, 0), kn_quant_range_of(8, is_signed));
    if (is_signed)
        ((int8_t *)o->y->data)[i] = (int8_t)q;
    else
        ((uint8_t *)o->y->data)[i] = (uint8_t)q;
}

/* ---- convolutions ---------------------------------------------------------------------------------- */

typedef struct iconv_geom {
    int64_t N, C, M, group, Cg, Mg;
    kn_window_axis h, w;
    int64_t K, out_plane; /* C/group * kH * kW, OH * OW */
} iconv_geom;

static kiln_status iconv_geom_of(const kn_node *node, const kn_shape *x, const kn_shape *w, iconv_geom *g) {
    char sx[96];
    if (x->ndim != 3 && x->ndim != 4)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X %s: 1-D and 2-D integer convolutions (rank 3 or 4) are supported",
                       kn_shape_str(x, sx, sizeof sx));
    KN_TRY(kn_conv_check_operands(node, x, w, "M, C/group", &g->group));
    int rank = x->ndim - 2;
    g->N = x->d[0];
    g->C = x->d[1];
    g->M = w->d[0];
    g->Cg = g->C / g->group;
    if (g->M % g->group || w->d[1] != g->Cg)
        return kn_fail(KILN_ERR_SHAPE, "W has %lld output channels and %lld input channels per group; group %lld "
                       "and X's %lld channels do not fit", (long long)g->M, (long long)w->d[1],
                       (long long)g->group, (long long)g->C);
    g->Mg = g->M / g->group;
    int64_t kernel[2];
    int n_kernel = kn_node_ints(node, "kernel_shape", kernel, 2);
    if (n_kernel >= 0 && (n_kernel != rank || kernel[0] != w->d[2] || (rank == 2 && kernel[1] != w->d[3])))
        return kn_fail(KILN_ERR_SHAPE, "kernel_shape does not match the spatial dims of W");
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve_as_2d(node, rank, &x->d[2], &w->d[2], false, axes));
    g->h = axes[0];
    g->w = axes[1];
    g->K = kn_count_mul(g->Cg, kn_count_mul(g->h.kernel, g->w.kernel));
    g->out_plane = kn_count_mul(g->h.out, g->w.out);
    return KILN_OK;
}

/* The output shape of X (rank 3 or 4) under geometry g. */
static kn_shape iconv_out_shape(const kn_shape *x, const iconv_geom *g) {
    kn_shape y = *x;
    y.d[1] = g->M;
    y.d[y.ndim - 1] = g->w.out;
    if (y.ndim == 4)
        y.d[2] = g->h.out;
    return y;
}

/* Inputs of the two convolutions: x and w with their zero points, and QLinearConv's scales and bias. */
typedef struct iconv_inputs {
    int x, x_zero, w, w_zero; /* input indices; -1 when the op has none */
    int x_scale, w_scale, y_scale, y_zero, bias;
} iconv_inputs;

static const iconv_inputs qlinearconv_inputs = {0, 2, 3, 5, 1, 4, 6, 7, 8};
static const iconv_inputs convinteger_inputs = {0, 2, 1, 3, -1, -1, -1, -1, -1};

static const kn_value *input_value(const kn_graph *g, const kn_node *node, int i) {
    return i >= 0 && i < node->n_in && node->in[i] >= 0 ? kn_node_input(g, node, i) : NULL;
}

static kiln_status iconv_infer(kn_graph *g, const kn_node *node, const iconv_inputs *ix) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = input_value(g, node, ix->x), *w = input_value(g, node, ix->w);
    KN_TRY(check_levels(x, "x"));
    KN_TRY(check_levels(w, "w"));
    iconv_geom geom;
    KN_TRY(iconv_geom_of(node, &x->shape, &w->shape, &geom));
    KN_TRY(check_param(input_value(g, node, ix->x_zero), x, 1, "x_zero_point"));
    KN_TRY(check_param(input_value(g, node, ix->w_zero), w, geom.M, "w_zero_point"));
    kn_dtype y_type = KN_I32;
    if (ix->y_scale >= 0) {
        const kn_value *y_zero = input_value(g, node, ix->y_zero), *bias = input_value(g, node, ix->bias);
        if (!input_value(g, node, ix->x_scale) || !input_value(g, node, ix->w_scale) ||
            !input_value(g, node, ix->y_scale))
            return kn_fail(KILN_ERR_INVALID_ARG, "x_scale, w_scale and y_scale are required");
        KN_TRY(check_param(input_value(g, node, ix->x_scale), NULL, 1, "x_scale"));
        KN_TRY(check_param(input_value(g, node, ix->w_scale), NULL, geom.M, "w_scale"));
        KN_TRY(check_param(input_value(g, node, ix->y_scale), NULL, 1, "y_scale"));
        if (y_zero && !is_level_type(y_zero->dtype))
            return kn_fail(KILN_ERR_UNSUPPORTED, "y_zero_point has dtype %s; u8 or i8", kn_dtype_name(y_zero->dtype));
        KN_TRY(check_param(y_zero, y_zero, 1, "y_zero_point"));
        if (bias && (bias->dtype != KN_I32 || bias->shape.ndim != 1 || bias->shape.d[0] != geom.M))
            return kn_fail(KILN_ERR_SHAPE, "B must be i32 (%lld), one bias per output channel", (long long)geom.M);
        y_type = y_zero ? y_zero->dtype : KN_U8;
    }
    kn_shape y = iconv_out_shape(&x->shape, &geom);
    kn_set_output(g, node, 0, &y, y_type);
    return KILN_OK;
}

/* The sums of image n into acc (M, OH * OW); xi (C, H, W) and wi (M, K) hold levels less zero points. */
static void iconv_sums(const iconv_geom *g, const int32_t *xi, const int32_t *wi, const int32_t *bias, int64_t *acc) {
    const kn_window_axis *h = &g->h, *w = &g->w;
    for (int64_t m = 0; m < g->M; m++) {
        const int32_t *wm = wi + m * g->K;
        const int32_t *xg = xi + (m / g->Mg) * g->Cg * h->in * w->in;
        for (int64_t oh = 0; oh < h->out; oh++)
            for (int64_t ow = 0; ow < w->out; ow++) {
                int64_t sum = bias ? bias[m] : 0;
                for (int64_t c = 0; c < g->Cg; c++)
                    for (int64_t i = 0; i < h->kernel; i++) {
                        int64_t ih = kn_window_start(h, oh) + i * h->dilation;
                        if (ih < 0 || ih >= h->in)
                            continue; /* padding holds the zero point: it adds 0 */
                        for (int64_t j = 0; j < w->kernel; j++) {
                            int64_t iw = kn_window_start(w, ow) + j * w->dilation;
                            if (iw >= 0 && iw < w->in)
                                sum += (int64_t)xg[(c * h->in + ih) * w->in + iw] *
                                       wm[(c * h->kernel + i) * w->kernel + j];
                        }
                    }
                acc[m * g->out_plane + oh * w->out + ow] = sum;
            }
    }
}

static kiln_status iconv_forward(const kn_op_call *call, const iconv_inputs *ix) {
    const kn_node *node = call->node;
    const kn_tensor *x = call->in[ix->x], *w = call->in[ix->w];
    const kn_tensor *x_zero = kn_input_at(call->in, node->n_in, ix->x_zero);
    const kn_tensor *w_zero = kn_input_at(call->in, node->n_in, ix->w_zero);
    iconv_geom g;
    KN_TRY(iconv_geom_of(node, &x->shape, &w->shape, &g));
    qout o = {call->out[0], NULL, NULL, NULL, NULL};
    const int32_t *bias = NULL;
    if (ix->y_scale >= 0) {
        o = (qout){call->out[0], call->in[ix->x_scale], call->in[ix->w_scale], call->in[ix->y_scale],
                   kn_input_at(call->in, node->n_in, ix->y_zero)};
        KN_TRY(check_scale_values(o.x_scale, "x_scale"));
        KN_TRY(check_scale_values(o.w_scale, "w_scale"));
        KN_TRY(check_scale_values(o.y_scale, "y_scale"));
        const kn_tensor *b = kn_input_at(call->in, node->n_in, ix->bias);
        bias = b ? b->data : NULL;
    }
    int64_t image = g.C * g.h.in * g.w.in, outputs = g.M * g.out_plane;
    // acc (M, OH * OW) int64, then xi (C, H, W) and wi (M, K) int32: 8 bytes per output, 4 per level.
    int64_t words = kn_count_add(kn_count_mul(outputs, 2), kn_count_add(image, kn_count_mul(g.M, g.K)));
    size_t bytes = 0;
    int64_t *acc = kn_size_mul((size_t)words, sizeof(int32_t), &bytes) ? kn_op_scratch(call->ctx, bytes) : NULL;
    if (!acc)
        return kn_fail(KILN_ERR_NOMEM, "no memory for the sums of %lld outputs", (long long)outputs);
    int32_t *xi = (int32_t *)(acc + outputs), *wi = xi + image;
    widen_levels(w, 0, kn_numel(w), w_zero, g.K, g.M, wi);
    for (int64_t n = 0; n < g.N; n++) {
        widen_levels(x, n * image, image, x_zero, 1, 1, xi);
        iconv_sums(&g, xi, wi, bias, acc);
        for (int64_t i = 0; i < outputs; i++)
            qout_store(&o, n * outputs + i, i / g.out_plane, acc[i]);
    }
    return KILN_OK;
}

static int64_t iconv_flops(const kn_graph *gr, const kn_node *node, int w_input) {
    const kn_value *x = input_value(gr, node, 0), *w = input_value(gr, node, w_input);
    iconv_geom g;
    if (!x || !w || iconv_geom_of(node, &x->shape, &w->shape, &g) != KILN_OK)
        return 0;
    return 2 * g.N * g.M * g.out_plane * g.K;
}

static kiln_status qlinearconv_infer(kn_graph *g, const kn_node *node) {
    return iconv_infer(g, node, &qlinearconv_inputs);
}
static kiln_status qlinearconv_forward(const kn_op_call *call) { return iconv_forward(call, &qlinearconv_inputs); }
static int64_t qlinearconv_flops(const kn_graph *g, const kn_node *node) { return iconv_flops(g, node, 3); }
static kiln_status convinteger_infer(kn_graph *g, const kn_node *node) {
    return iconv_infer(g, node, &convinteger_inputs);
}
static kiln_status convinteger_forward(const kn_op_call *call) { return iconv_forward(call, &convinteger_inputs); }
static int64_t convinteger_flops(const kn_graph *g, const kn_node *node) { return iconv_flops(g, node, 1); }

/* ---- matrix products ------------------------------------------------------------------------------- */

/* A (..., M, K) @ B (..., K, N), numpy matmul, as MatMul has it (ops/matmul_dims.h). */
typedef struct imm_inputs {
    int a, a_zero, b, b_zero;
    int a_scale, b_scale, y_scale, y_zero; /* -1 for MatMulInteger */
} imm_inputs;

static const imm_inputs qlinearmatmul_inputs = {0, 2, 3, 5, 1, 4, 6, 7};
static const imm_inputs matmulinteger_inputs = {0, 2, 1, 3, -1, -1, -1, -1};

static kiln_status imm_infer(kn_graph *g, const kn_node *node, const imm_inputs *ix) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *a = input_value(g, node, ix->a), *b = input_value(g, node, ix->b);
    KN_TRY(check_levels(a, "A"));
    KN_TRY(check_levels(b, "B"));
    kn_matmul_dims d;
    KN_TRY(kn_matmul_dims_of(&a->shape, &b->shape, &d));
    KN_TRY(check_param(input_value(g, node, ix->a_zero), a, d.M, "a_zero_point"));
    KN_TRY(check_param(input_value(g, node, ix->b_zero), b, d.N, "b_zero_point"));
    kn_dtype y_type = KN_I32;
    if (ix->y_scale >= 0) {
        const kn_value *y_zero = input_value(g, node, ix->y_zero);
        if (!input_value(g, node, ix->a_scale) || !input_value(g, node, ix->b_scale) ||
            !input_value(g, node, ix->y_scale))
            return kn_fail(KILN_ERR_INVALID_ARG, "a_scale, b_scale and y_scale are required");
        KN_TRY(check_param(input_value(g, node, ix->a_scale), NULL, 1, "a_scale"));
        KN_TRY(check_param(input_value(g, node, ix->b_scale), NULL, d.N, "b_scale"));
        KN_TRY(check_param(input_value(g, node, ix->y_scale), NULL, 1, "y_scale"));
        if (y_zero && !is_level_type(y_zero->dtype))
            return kn_fail(KILN_ERR_UNSUPPORTED, "y_zero_point has dtype %s; u8 or i8", kn_dtype_name(y_zero->dtype));
        KN_TRY(check_param(y_zero, y_zero, 1, "y_zero_point"));
        y_type = y_zero ? y_zero->dtype : KN_U8;
    }
    kn_set_output(g, node, 0, &d.out, y_type);
    return KILN_OK;
}

static kiln_status imm_forward(const kn_op_call *call, const imm_inputs *ix) {
    const kn_node *node = call->node;
    const kn_tensor *a = call->in[ix->a], *b = call->in[ix->b];
    kn_matmul_dims d;
    KN_TRY(kn_matmul_dims_of(&a->shape, &b->shape, &d));
    qout o = {call->out[0], NULL, NULL, NULL, NULL};
    if (ix->y_scale >= 0) {
        o = (qout){call->out[0], call->in[ix->a_scale], call->in[ix->b_scale], call->in[ix->y_scale],
                   kn_input_at(call->in, node->n_in, ix->y_zero)};
        KN_TRY(check_scale_values(o.x_scale, "a_scale"));
        KN_TRY(check_scale_values(o.w_scale, "b_scale"));
        KN_TRY(check_scale_values(o.y_scale, "y_scale"));
    }
    int64_t na = kn_numel(a), nb = kn_numel(b);
    size_t bytes = 0; // a row of sums (N int64), then A and B widened to int32
    int64_t *row = kn_size_mul((size_t)(na + nb + 2 * d.N), sizeof(int32_t), &bytes) ? kn_op_scratch(call->ctx, bytes)
                                                                                    : NULL;
    if (!row)
        return kn_fail(KILN_ERR_NOMEM, "no memory to widen A and B");
    int32_t *ai = (int32_t *)(row + d.N), *bi = ai + na;
    // A's zero point per row (index (i / K) % M), B's per column (index i % N).
    widen_levels(a, 0, na, kn_input_at(call->in, node->n_in, ix->a_zero), d.K, d.M, ai);
    widen_levels(b, 0, nb, kn_input_at(call->in, node->n_in, ix->b_zero), 1, d.N, bi);
    for (int64_t t = 0; t < d.n_batch; t++) {
        int64_t ma, mb;
        kn_matmul_matrices(&d, t, &ma, &mb);
        const int32_t *am = ai + ma * d.M * d.K, *bm = bi + mb * d.K * d.N;
        for (int64_t m = 0; m < d.M; m++) { /* row m of Y, B's rows added in turn: B read in order */
            memset(row, 0, sizeof(int64_t) * (size_t)d.N);
            for (int64_t k = 0; k < d.K; k++) {
                const int64_t a_mk = am[m * d.K + k];
                const int32_t *restrict b_k = bm + k * d.N;
                for (int64_t n = 0; n < d.N; n++)
                    row[n] += a_mk * b_k[n];
            }
            for (int64_t n = 0; n < d.N; n++)
                qout_store(&o, (t * d.M + m) * d.N + n, n, row[n]);
        }
    }
    return KILN_OK;
}

static int64_t imm_flops(const kn_graph *g, const kn_node *node, int b_input) {
    const kn_value *a = input_value(g, node, 0), *b = input_value(g, node, b_input);
    kn_matmul_dims d;
    if (!a || !b || kn_matmul_dims_of(&a->shape, &b->shape, &d) != KILN_OK)
        return 0;
    return kn_matmul_flops(&d);
}

static kiln_status qlinearmatmul_infer(kn_graph *g, const kn_node *node) {
    return imm_infer(g, node, &qlinearmatmul_inputs);
}
static kiln_status qlinearmatmul_forward(const kn_op_call *call) { return imm_forward(call, &qlinearmatmul_inputs); }
static int64_t qlinearmatmul_flops(const kn_graph *g, const kn_node *node) { return imm_flops(g, node, 3); }
static kiln_status matmulinteger_infer(kn_graph *g, const kn_node *node) {
    return imm_infer(g, node, &matmulinteger_inputs);
}
static kiln_status matmulinteger_forward(const kn_op_call *call) { return imm_forward(call, &matmulinteger_inputs); }
static int64_t matmulinteger_flops(const kn_graph *g, const kn_node *node) { return imm_flops(g, node, 1); }

/* ---- DynamicQuantizeLinear ------------------------------------------------------------------------ */

/* ONNX's formula, in f32: with lo = min(0, min x) and hi = max(0, max x) (NaN elements ignored),
 *     scale = (hi - lo) / 255,  zero = round_half_even(clamp(0 - lo / scale, 0, 255)),
 *     y     = kn_quant_level(x, scale, zero) in u8
 * An all-zero (or empty) x has scale 0 and zero point 0, and y is 0 (x / 0 is NaN, which quantizes to 0). */

static kiln_status dynq_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 3));
    const kn_value *x = input_value(g, node, 0);
    if (!x || x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "x must be f32");
    kn_shape scalar = {0};
    kn_set_output(g, node, 0, &x->shape, KN_U8);
    kn_set_output(g, node, 1, &scalar, KN_F32);
    kn_set_output(g, node, 2, &scalar, KN_U8);
    return KILN_OK;
}

static kiln_status dynq_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const float *xs = x->data;
    int64_t n = kn_numel(x);
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        lo = xs[i] < lo ? xs[i] : lo;
        hi = xs[i] > hi ? xs[i] : hi;
    }
    kn_quant_range range = kn_quant_range_of(8, false);
    float scale = (hi - lo) / (float)(range.qmax - range.qmin);
    float zero = nearbyintf(kn_quant_clamp((float)range.qmin - lo / scale, range));
    uint8_t *y = call->out[0]->data;
    for (int64_t i = 0; i < n; i++)
        y[i] = (uint8_t)kn_quant_level(xs[i], scale, (int32_t)zero, range);
    *(float *)call->out[1]->data = scale;
    *(uint8_t *)call->out[2]->data = (uint8_t)zero;
    return KILN_OK;
}

const kn_op kn_op_qlinearconv = {
    .name = "QLinearConv", .min_inputs = 8, .max_inputs = 9,
    .infer = qlinearconv_infer, .forward = qlinearconv_forward, .flops = qlinearconv_flops,
};

const kn_op kn_op_convinteger = {
    .name = "ConvInteger", .min_inputs = 2, .max_inputs = 4,
    .infer = convinteger_infer, .forward = convinteger_forward, .flops = convinteger_flops,
};

const kn_op kn_op_qlinearmatmul = {
    .name = "QLinearMatMul", .min_inputs = 8, .max_inputs = 8,
    .infer = qlinearmatmul_infer, .forward = qlinearmatmul_forward, .flops = qlinearmatmul_flops,
};

const kn_op kn_op_matmulinteger = {
    .name = "MatMulInteger", .min_inputs = 2, .max_inputs = 4,
    .infer = matmulinteger_infer, .forward = matmulinteger_forward, .flops = matmulinteger_flops,
};

const kn_op kn_op_dynamicquantizelinear = {
    .name = "DynamicQuantizeLinear", .min_inputs = 1, .max_inputs = 1,
    .infer = dynq_infer, .forward = dynq_forward,
};
