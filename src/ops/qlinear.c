/* The integer layers: QLinearConvPacked and QLinearGemmPacked (and MaxPoolInteger and AddInteger between them),
 * which the inference optimizer makes out of DequantizeLinear -> Conv / Gemm / MatMul
 * [-> BatchNormalization] [-> Relu or Clip] [-> QuantizeLinear] chains (src/runtime/optimize.c). Their
 * numbers are core/quant.h's "Integer layers": exact int32 sums of the levels, then one fused
 * multiply-add and the QuantizeLinear rounding; the kernels are kernels/qgemm.h's.
 *
 * Inputs, all but x constants the optimizer writes once:
 *   0 x      activation levels, u8 or i8 (kn_x_signed): Conv (N, C, H, W), Gemm (..., K) of rank
 *            >= 2 (a MatMul's leading dims are rows)
 *   1 w      the weights' i8 levels packed for kernels/qgemm.h: Conv as B slivers, one block of
 *            kn_qgemm_b_bytes(M/group, K) per group; Gemm as V panels of its N columns
 *   2 mult   (M) f32, the accumulator's multiplier per output channel
 *   3 bias   (M) f32
 *   4 corr   (M) i32, z_x' * sum_k w[c][k] (z_x' the zero point in u8 form: z_x + 128 for i8)
 *   5 r      optional: a residual of the output's shape, added before the activation (a fused Add):
 *            f32, or u8 / i8 levels dequantized with kn_r_scale and kn_r_zero_point
 *   6 z_x    QLinearGemmPacked, optional: x's zero point given at run time (one level of x's type, a
 *            dynamically quantized MatMulInteger's); input 4 then holds sum_k w[c][k] and each run
 *            uses corr[c] = z_x' * sum_k w[c][k]
 * Attributes:
 *   kn_x_signed, kn_x_zero_point    the input's type and zero point (as stored)
 *   kn_y_type                        0 f32, 1 u8, 2 i8, 3 i32 sums (kernels/qgemm.h KN_QOUT_*)
 *   kn_y_scale, kn_y_zero_point      the output's quantization, when it is u8 or i8
 *   kn_activation                    "Relu", "Clip" (bounds kn_min, kn_max: ReLU6) or absent
 *   kn_r_scale, kn_r_zero_point      the residual's quantization, when it is u8 or i8
 *   Conv: kn_w_shape (M, C/group, kH, kW) and Conv's own (strides, pads, dilations, group, auto_pad)
 *   Gemm: kn_k, kn_n
 * Inference only: no backward.
 */
#include <math.h>
#include <string.h>

#include "core/quant.h"
#include "core/threads.h"
#include "kernels/qgemm.h"
#include "ops/movement.h"
#include "ops/op.h"
#include "ops/window.h"

/* Output channels a layer may have (a bound on hostile attributes, far above real layers'). */
#define KN_QLINEAR_MAX_CHANNELS (1 << 24)

static kn_dtype y_dtype_of(const kn_node *node) {
    switch (kn_node_int(node, "kn_y_type", KN_QOUT_F32)) {
    case KN_QOUT_U8: return KN_U8;
    case KN_QOUT_I8: return KN_I8;
    case KN_QOUT_I32: return KN_I32;
    default: return KN_F32;
    }
}

/* x's type, and its rank: `rank`, or at least 2 when rank is 0. */
static kiln_status check_x(const kn_node *node, const kn_tensor *x, int rank) {
    kn_dtype want = kn_node_int(node, "kn_x_signed", 0) ? KN_I8 : KN_U8;
    if (x->dtype != want)
        return kn_fail(KILN_ERR_UNSUPPORTED, "x has dtype %s; this layer was built for %s",
                       kn_dtype_name(x->dtype), kn_dtype_name(want));
    if (rank ? x->shape.ndim != rank : x->shape.ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "x has rank %d; this layer takes rank %d", x->shape.ndim, rank);
    return KILN_OK;
}

static kiln_status check_output_attrs(const kn_node *node) {
    int64_t y_type = kn_node_int(node, "kn_y_type", KN_QOUT_F32);
    if (y_type < KN_QOUT_F32 || y_type > KN_QOUT_I32)
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_y_type %lld is not 0, 1, 2 or 3", (long long)y_type);
    const char *act = kn_node_string(node, "kn_activation", NULL);
    if (act && strcmp(act, "Relu") != 0 && strcmp(act, "Clip") != 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "kn_activation '%s': Relu and Clip are fused here", act);
    if (act && strcmp(act, "Clip") == 0 &&
        (isnan(kn_node_float(node, "kn_min", -INFINITY)) || isnan(kn_node_float(node, "kn_max", INFINITY))))
        return kn_fail(KILN_ERR_INVALID_ARG, "a fused Clip has a NaN bound");
    float y_scale = kn_node_float(node, "kn_y_scale", 1.0f);
    if (y_type != KN_QOUT_F32 && !(y_scale > 0.0f && y_scale < INFINITY))
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_y_scale %g must be finite and > 0", (double)y_scale);
    return KILN_OK;
}

/* The per-channel constants: (channels) f32, f32, i32, and the packed weights of `w_bytes`. */
static kiln_status check_constants(kn_tensor *const *in, int64_t channels, size_t w_bytes) {
    const kn_tensor *w = in[1], *mult = in[2], *bias = in[3], *corr = in[4];
    if (!w || !mult || !bias || !corr)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs w, mult, bias and corr are required");
    if (w->dtype != KN_I8 || (size_t)kn_numel(w) != w_bytes)
        return kn_fail(KILN_ERR_SHAPE, "the packed weights have %lld elements of %s; %zu i8 expected",
                       (long long)kn_numel(w), kn_dtype_name(w->dtype), w_bytes);
    if (mult->dtype != KN_F32 || bias->dtype != KN_F32 || corr->dtype != KN_I32 ||
        kn_numel(mult) != channels || kn_numel(bias) != channels || kn_numel(corr) != channels)
        return kn_fail(KILN_ERR_SHAPE, "mult, bias (f32) and corr (i32) must have %lld elements",
                       (long long)channels);
    return KILN_OK;
}

static int residual_type_of(kn_dtype t) {
    return t == KN_F32 ? KN_QRES_F32 : t == KN_U8 ? KN_QRES_U8 : t == KN_I8 ? KN_QRES_I8 : KN_QRES_NONE;
}

/* The residual input, when given: f32, u8 or i8 of the output's shape y, its scale finite and > 0. */
static kiln_status check_residual(const kn_node *node, const kn_tensor *r, const kn_shape *y) {
    if (!r)
        return KILN_OK;
    if (residual_type_of(r->dtype) == KN_QRES_NONE)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the residual has dtype %s; f32, u8 or i8 expected",
                       kn_dtype_name(r->dtype));
    if (!kn_shape_equal(&r->shape, y))
        return kn_fail(KILN_ERR_SHAPE, "the residual's shape differs from the output's");
    float s = kn_node_float(node, "kn_r_scale", 1.0f);
    if (r->dtype != KN_F32 && !(s > 0.0f && s < INFINITY))
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_r_scale %g must be finite and > 0", (double)s);
    return KILN_OK;
}

static const kn_tensor *residual_of(const kn_op_call *call) {
    return call->node->n_in > 5 ? call->in[5] : NULL;
}

/* The part of the layer's epilogue its attributes and the residual's dtype decide: what a node's
 * per-plan state keeps; epilogue_bind completes it at each run. */
static kn_qepilogue epilogue_attrs(const kn_op_call *call) {
    const kn_node *node = call->node;
    const kn_tensor *r = residual_of(call);
    const char *act = kn_node_string(node, "kn_activation", "");
    return (kn_qepilogue){
        .relu = strcmp(act, "Relu") == 0, .y_type = (int)kn_node_int(node, "kn_y_type", KN_QOUT_F32),
        .y_scale = kn_node_float(node, "kn_y_scale", 1.0f),
        .y_zero_point = (int32_t)kn_node_int(node, "kn_y_zero_point", 0),
        .clip = strcmp(act, "Clip") == 0, .clip_lo = kn_node_float(node, "kn_min", -INFINITY),
        .clip_hi = kn_node_float(node, "kn_max", INFINITY),
        .r_type = r ? residual_type_of(r->dtype) : KN_QRES_NONE, .r_scale = kn_node_float(node, "kn_r_scale", 1.0f),
        .r_zero_point = (int32_t)kn_node_int(node, "kn_r_zero_point", 0),
    };
}

/* The layer's epilogue over its `channels` output channels: the prepared attributes' part, this call's
 * per-channel constants, and what kn_qepilogue_prepare derives from their values. */
static kn_qepilogue epilogue_bind(const kn_qepilogue *attrs, const kn_op_call *call, int64_t channels) {
    kn_qepilogue e = *attrs;
    e.corr = call->in[4]->data;
    e.mult = kn_f32(call->in[2]);
    e.bias = kn_f32(call->in[3]);
    kn_qepilogue_prepare(&e, channels);
    return e;
}

/* How far windows reach past one side of an axis: before 0 (begin) and past in - 1 (end). */
static void window_reach(const kn_window_axis *a, int64_t *begin, int64_t *end) {
    int64_t last = (a->out - 1) * a->stride - a->pad_begin + (a->kernel - 1) * a->dilation;
    *begin = a->pad_begin > 0 ? a->pad_begin : 0;
    *end = last - (a->in - 1) > 0 ? last - (a->in - 1) : 0;
}

/* ---- QLinearConvPacked ------------------------------------------------------------------------- */

typedef struct qconv_geom {
    int64_t N, C, M, group, Cg, Mg, K; /* K = C/group * kH * kW */
    kn_window_axis h, w;
    int64_t out_plane;
} qconv_geom;

static kiln_status qconv_geom_of(const kn_node *node, const kn_shape *x, qconv_geom *g) {
    int64_t ws[4];
    if (kn_node_ints(node, "kn_w_shape", ws, 4) != 4)
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_w_shape must be 4 dims");
    for (int d = 0; d < 4; d++) /* so that K and the packed sizes below cannot overflow */
        if (ws[d] <= 0 || ws[d] > (d == 0 ? KN_QLINEAR_MAX_CHANNELS : KN_QGEMM_MAX_K))
            return kn_fail(KILN_ERR_INVALID_ARG, "kn_w_shape dim %d is %lld, outside [1, %d]", d, (long long)ws[d],
                           d == 0 ? KN_QLINEAR_MAX_CHANNELS : KN_QGEMM_MAX_K);
    g->group = kn_node_int(node, "group", 1);
    g->N = x->d[0];
    g->C = x->d[1];
    g->M = ws[0];
    if (g->group <= 0 || g->M % g->group || g->C != ws[1] * g->group)
        return kn_fail(KILN_ERR_SHAPE, "x has %lld channels; the weights take %lld in %lld group(s)",
                       (long long)g->C, (long long)(ws[1] * g->group), (long long)g->group);
    g->Cg = ws[1];
    g->Mg = g->M / g->group;
    g->K = kn_count_mul(kn_count_mul(ws[1], ws[2]), ws[3]);
    if (g->K > KN_QGEMM_MAX_K)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%lld products per output exceed the int32 bound",
                       (long long)g->K);
    kn_window_axis axes[2];
    KN_TRY(kn_window_resolve(node, &x->d[2], &ws[2], false, axes));
    g->h = axes[0];
    g->w = axes[1];
    g->out_plane = kn_count_mul(g->h.out, g->w.out);
    return KILN_OK;
}

static kiln_status qconv_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (inputs.n != 5 && inputs.n != 6)
        return kn_fail(KILN_ERR_INVALID_ARG, "takes 5 or 6 inputs, got %d", inputs.n);
    KN_TRY(check_x(node, inputs.in[0], 4));
    KN_TRY(check_output_attrs(node));
    qconv_geom geom;
    KN_TRY(qconv_geom_of(node, &inputs.in[0]->shape, &geom));
    KN_TRY(check_constants(inputs.in, geom.M, kn_qgemm_b_bytes(geom.Mg, geom.K) * (size_t)geom.group));
    kn_shape y = kn_shape_of(4, (int64_t[]){geom.N, geom.M, geom.h.out, geom.w.out});
    KN_TRY(check_residual(node, kn_input_at(inputs.in, inputs.n, 5), &y));
    kn_set_output(g, node, 0, &y, y_dtype_of(node));
    return KILN_OK;
}

/* Output rows per block: whole output rows making about this many columns, so that a block's packed
 * column matrix stays in cache while every filter passes over it (qconv_block_rows). */
#define KN_QCONV_BLOCK_COLS 512

/* dst[0, n) = v: for the few bytes of padding around a tap's copy (n < 16 but for wide kernels), two
 * fixed-size stores that overlap, which the compiler inlines, where memset of a few bytes (or a loop,
 * which the compiler makes one) is a call. */
static void fill_row(uint8_t *dst, uint8_t v, int64_t n) {
    if (n >= 16) {
        memset(dst, v, (size_t)n);
    } else if (n >= 8) {
        memset(dst, v, 8);
        memset(dst + n - 8, v, 8);
    } else if (n >= 4) {
        memset(dst, v, 4);
        memset(dst + n - 4, v, 4);
    } else if (n >= 2) {
        memset(dst, v, 2);
        memset(dst + n - 2, v, 2);
    } else if (n == 1) {
        dst[0] = v;
    }
}

/* row ((oh1 - oh0) * OW) = output rows [oh0, oh1) of row (c, i, j) of image x's column matrix, as
 * stored: row[(oh - oh0, ow)] = x[c][ih][iw] with ih = oh*sh - ph + i*dh and iw = ow*sw - pw + j*dw, or
 * pad where the tap reads padding. oh_range and ow_range: the outputs whose tap i, j reads real pixels
 * (kn_window_tap_range, from the prepared state). */
static void qconv_unfold_row(const qconv_geom *g, const uint8_t *plane, int64_t i, int64_t j,
                             const int64_t oh_range[2], const int64_t ow_range[2], const uint8_t *mask, int64_t oh0,
                             int64_t oh1, uint8_t pad, uint8_t *row) {
    const kn_window_axis *h = &g->h, *w = &g->w;
    const int64_t OW = w->out, W = w->in;
    const int64_t ow_lo = ow_range[0], ow_hi = ow_range[1];
    const int64_t oh_lo = oh_range[0] > oh0 ? oh_range[0] : oh0, oh_hi = oh_range[1] < oh1 ? oh_range[1] : oh1;
    const int64_t L = (oh1 - oh0) * OW;
    const int64_t di = i * h->dilation - h->pad_begin, dj = j * w->dilation - w->pad_begin;
    if (oh_lo < oh_hi && ow_lo < ow_hi && h->stride == 1 && w->stride == 1 && OW == W) {
        // Output (oh, ow) reads input (oh + di, ow + dj): one copy from the first real tap to the last,
        // shifted by di * W + dj, padding before and after it; the columns that wrapped around into
        // neighbouring rows become padding too.
        // Between the copy's rows, the columns past ow_hi of one and before ow_lo of the next are one gap:
        // with the tap column's mask (0xff at those columns), one pass that selects, else a fill per gap.
        int64_t first = oh_lo * OW + ow_lo, count = (oh_hi - 1) * OW + ow_hi - first, at = first - oh0 * OW;
        const uint8_t *restrict src = plane + first + di * W + dj;
        fill_row(row, pad, at);
        if (mask && (ow_lo > 0 || ow_hi < OW)) {
            uint8_t *restrict dst = row + at;
            const uint8_t *restrict m = mask + at;
            for (int64_t k = 0; k < count; k++)
                dst[k] = (uint8_t)((src[k] & ~m[k]) | (pad & m[k]));
        } else {
            memcpy(row + at, src, (size_t)count);
            for (int64_t oh = oh_lo; oh + 1 < oh_hi && OW - ow_hi + ow_lo > 0; oh++)
                fill_row(row + (oh - oh0) * OW + ow_hi, pad, OW - ow_hi + ow_lo);
        }
        fill_row(row + at + count, pad, L - at - count);
        return;
    }
    memset(row, pad, (size_t)L); /* then the taps that read real pixels */
    if (oh_lo >= oh_hi || ow_lo >= ow_hi)
        return;
    const int64_t sw = w->stride, n = ow_hi - ow_lo;
    for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
        uint8_t *restrict dst = row + (oh - oh0) * OW + ow_lo;
        const uint8_t *restrict src = plane + (oh * h->stride + di) * W + ow_lo * sw + dj;
        if (sw == 1)
            memcpy(dst, src, (size_t)n);
        else if (sw == 2)
            for (int64_t t = 0; t < n; t++)
                dst[t] = src[2 * t];
        else
            for (int64_t t = 0; t < n; t++)
                dst[t] = src[t * sw];
    }
}

/* v = the packed column matrix (kernels/qgemm.h's V, depth K, L = (oh1 - oh0) * OW columns) of output
 * rows [oh0, oh1) and channels [c0, c0 + Cg) of image x (C, H, W), as u8: the top bit flipped when x is
 * i8 (flip 0x80), the zero point's level where a tap reads padding. Four rows of the column matrix are
 * unfolded into rows (4, L rounded up to 16), then interleaved into one depth group of every panel. A
 * pointwise convolution (1x1, stride 1, no padding) needs no unfolding: its rows are the image's own,
 * read in place wherever the L16 bytes read stay before x_end, the input's end (the columns past L are
 * dropped with their outputs). range, masks (or NULL), mask_len: the tap ranges and column masks of the
 * prepared state (qconv_state); shifted, where the state asks for it (shifted_bytes), room for
 * qconv_shift_planes, whose planes then hold every row. */
static bool qconv_is_pointwise(const qconv_geom *g) {
    const kn_window_axis *h = &g->h, *w = &g->w;
    return h->kernel == 1 && w->kernel == 1 && h->stride == 1 && w->stride == 1 && h->pad_begin == 0 &&
           w->pad_begin == 0 && h->out == h->in && w->out == w->in;
}

/* shifted (Cg, kW, R, W) = the rows [oh0 - ph, oh0 - ph + R) of each input channel [c0, c0 + Cg), framed by
 * pad rows, each shifted by kernel column j's offset with the columns it reads as padding at pad, for the
 * geometries with column masks (stride 1, OW == W): with R = oh1 - oh0 + (kH - 1) * dh, row (c, i, j) of
 * the column matrix for output rows [oh0, oh1) is then the L bytes from row i * dh of plane (c, j). Each
 * plane is the one copy-and-select pass of qconv_unfold_row over R rows ("output" row oh standing for
 * input row oh - ph), so kH rows of the column matrix cost one. */
static void qconv_shift_planes(const qconv_geom *g, const int64_t *w_range, const uint8_t *masks, int64_t mask_len,
                               const uint8_t *x, int64_t c0, int64_t oh0, int64_t R, uint8_t pad, uint8_t *shifted) {
    const int64_t real_rows[2] = {g->h.pad_begin, g->h.pad_begin + g->h.in}, plane = g->h.in * g->w.in;
    for (int64_t c = 0; c < g->Cg; c++)
        for (int64_t j = 0; j < g->w.kernel; j++)
            qconv_unfold_row(g, x + (c0 + c) * plane, 0, j, real_rows, w_range + 2 * j, masks + j * mask_len, oh0,
                             oh0 + R, pad, shifted + (c * g->w.kernel + j) * R * g->w.in);
}

static void qconv_unfold(const kn_qgemm_kernel *kernel, const qconv_geom *g, bool pointwise, const int64_t *range,
                         const uint8_t *masks, int64_t mask_len, const uint8_t *x, const uint8_t *x_end, int64_t c0,
                         int64_t oh0, int64_t oh1, uint8_t flip, uint8_t pad, uint8_t *rows, uint8_t *shifted,
                         uint8_t *v) {
    int64_t L = (oh1 - oh0) * g->w.out, L16 = (L + 15) / 16 * 16;
    int64_t kq = (g->K + 3) / 4, plane = g->h.in * g->w.in;
    const int64_t *h_range = range, *w_range = range + 2 * g->h.kernel;
    const int64_t R = oh1 - oh0 + (g->h.kernel - 1) * g->h.dilation;
    if (shifted)
        qconv_shift_planes(g, w_range, masks, mask_len, x, c0, oh0, R, pad, shifted);
    const uint8_t *row_at[4];
    // Row k of the column matrix is channel c0 + c, kernel row i, column j: stepped along with k (no
    // division per row).
    int64_t c = 0, i = 0, j = 0;
    for (int64_t grp4 = 0; grp4 < kq; grp4++) {
        for (int r = 0; r < 4; r++) {
            int64_t k = grp4 * 4 + r;
            uint8_t *row = rows + r * L16;
            const uint8_t *own = k < g->K && pointwise ? x + (c0 + k) * plane + oh0 * g->w.in : NULL;
            row_at[r] = row;
            if (own && x_end - own >= L16) {
                row_at[r] = own;
            } else if (k < g->K && shifted) { /* the columns past L are read from what follows, and dropped */
                row_at[r] = shifted + ((c * g->w.kernel + j) * R + i * g->h.dilation) * g->w.in;
            } else if (k < g->K) {
                qconv_unfold_row(g, x + (c0 + c) * plane, i, j, h_range + 2 * i, w_range + 2 * j,
                                 masks ? masks + j * mask_len : NULL, oh0, oh1, pad, row);
                fill_row(row + L, pad, L16 - L);
            } else {
                memset(row, 0, (size_t)L16); /* past K: the weights are 0 */
            }
            if (++j == g->w.kernel) {
                j = 0;
                if (++i == g->h.kernel) {
                    i = 0;
                    c++;
                }
            }
        }
        kn_qgemm_interleave(kernel, row_at, L16 / 16, flip, v + grp4 * 64, (size_t)kq * 64);
    }
}

/* ---- depthwise: one input and one output channel per group ----
 * Packed for the product, such a group would be one row of kH * kW taps: three of each sliver's four
 * rows and most of every tile would be padding. Each output plane is computed instead by
 * kn_qgemm_depthwise over its input plane, copied (in the kernels' u8 form) into a frame of the zero
 * point's level as the unfolding pads it, so the sums are the same exact integers; the same epilogue
 * follows.
 * The frame is stored in sh x sw phases for strides (sh, sw): phase (a, b) holds the frame's rows
 * a, a + sh, ... and columns b, b + sw, ..., as a plane of `pitch` columns. Then each tap reads, for the
 * outputs (oh, ow), the bytes oh * pitch + ow of one phase from some start: the outputs of the whole
 * plane are one run over the phase (row oh at oh * pitch; the few outputs between rows' ends are computed
 * and dropped), so a plane takes one kernel call whatever the strides. */

static bool qconv_is_depthwise(const qconv_geom *g) {
    return g->Cg == 1 && g->Mg == 1 && g->h.kernel * g->w.kernel <= KN_QGEMM_DW_MAX_TAPS;
}

/* A depthwise plane's frame: pads[0..4) = top, left, bottom, right widths; rows and cols of the framed
 * plane; strides sh, sw; each phase prows rows of pitch columns. */
typedef struct dw_frame {
    int64_t pads[4], rows, cols, sh, sw, prows, pitch;
} dw_frame;

static dw_frame dw_frame_of(const qconv_geom *g) {
    dw_frame f;
    window_reach(&g->h, &f.pads[0], &f.pads[2]);
    window_reach(&g->w, &f.pads[1], &f.pads[3]);
    f.rows = f.pads[0] + g->h.in + f.pads[2];
    f.cols = f.pads[1] + g->w.in + f.pads[3];
    f.sh = g->h.stride;
    f.sw = g->w.stride;
    f.prows = (f.rows + f.sh - 1) / f.sh;
    f.pitch = (f.cols + f.sw - 1) / f.sw;
    return f;
}

static size_t dw_phases_bytes(const dw_frame *f) { return (size_t)(f->sh * f->sw * f->prows * f->pitch); }

/* Frame bytes: the phases, 16 more so that vector loads past a run's end (and the depthwise kernels'
 * KN_QGEMM_DW_SLACK) stay inside, and one framed row (pitch * sw bytes) that a row's phases are dealt
 * from. */
static size_t dw_frame_bytes(const dw_frame *f) { return dw_phases_bytes(f) + 16 + (size_t)(f->sw * f->pitch); }

/* dst[0, n) = src[0, n): 16-byte pieces, the last one ending at n over the one before, or two such 8-byte
 * or 4-byte pieces for a short row; fixed-size copies the compiler inlines, where memcpy of a row of a few
 * bytes (a late layer's 7 or 14) is a call. */
static void copy_row(uint8_t *restrict dst, const uint8_t *restrict src, int64_t n) {
    if (n >= 16) {
        for (int64_t k = 0; k + 16 < n; k += 16)
            memcpy(dst + k, src + k, 16);
        memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        for (int64_t k = 0; k < n; k++)
            dst[k] = src[k];
    }
}

/* dst[0, n) = src[0, n) ^ flip: a loop of its own, which the compiler vectorizes. */
static void copy_flipped(uint8_t *restrict dst, const uint8_t *restrict src, int64_t n, uint8_t flip) {
    if (flip == 0) {
        copy_row(dst, src, n);
        return;
    }
    for (int64_t k = 0; k < n; k++)
        dst[k] = src[k] ^ flip;
}

/* Start of row index i of row phase a, column phase b: frame row a + i * sh. */
static uint8_t *dw_phase_at(const dw_frame *f, uint8_t *framed, int64_t a, int64_t i, int64_t b) {
    return framed + ((a * f->sw + b) * f->prows + i) * f->pitch;
}

/* The framed plane of input plane x (H, W) as stored, in its phases. */
static void dw_fill_frame(const kn_qgemm_kernel *kernel, const qconv_geom *g, const dw_frame *f, const uint8_t *x,
                          uint8_t flip, uint8_t pad, uint8_t *framed) {
    const int64_t H = g->h.in, W = g->w.in, sw = f->sw, left = f->pads[1];
    memset(framed, pad ^ flip, dw_phases_bytes(f) + 16);
    // Input row r is frame row r + top: row phase a at index i, both stepped along (no division per row).
    int64_t a = f->pads[0] % f->sh, i = f->pads[0] / f->sh;
    uint8_t *restrict row = framed + dw_phases_bytes(f) + 16; // a framed row, for sw > 1
    memset(row, pad ^ flip, (size_t)(sw * f->pitch));
    for (int64_t r = 0; r < H; r++) {
        if (sw == 1) {
            copy_flipped(dw_phase_at(f, framed, a, i, 0) + left, x + r * W, W, flip);
        } else { /* framed whole, then dealt: frame column c goes to phase c % sw at c / sw */
            copy_flipped(row + left, x + r * W, W, flip);
            if (sw == 2) {
                kn_qgemm_deal2(kernel, row, f->pitch, dw_phase_at(f, framed, a, i, 0), dw_phase_at(f, framed, a, i, 1));
            } else {
                for (int64_t b = 0; b < sw; b++) {
                    uint8_t *restrict dst = dw_phase_at(f, framed, a, i, b);
                    for (int64_t k = 0; k < f->pitch; k++)
                        dst[k] = row[sw * k + b];
                }
            }
        }
        if (++a == f->sh) {
            a = 0;
            i++;
        }
    }
}

/* tap_at[t] = where tap t of output (0, 0) reads, as an offset into the phased frame (frame row fr is row
 * fr / sh of row phase fr % sh, as dw_phase_at counts): the same for every plane. */
static void dw_tap_offsets(const qconv_geom *g, const dw_frame *f, int64_t *tap_at) {
    const int64_t taps = g->h.kernel * g->w.kernel;
    for (int64_t t = 0; t < taps; t++) { /* tap (i, j) reads frame row fr, column fc */
        int64_t fr = kn_window_start(&g->h, 0) + (t / g->w.kernel) * g->h.dilation + f->pads[0];
        int64_t fc = kn_window_start(&g->w, 0) + (t % g->w.kernel) * g->w.dilation + f->pads[1];
        tap_at[t] = ((fr % f->sh * f->sw + fc % f->sw) * f->prows + fr / f->sh) * f->pitch + fc / f->sw;
    }
}

/* Output plane y of channel c from its framed input plane: tap_at the taps' offsets (dw_tap_offsets), w
 * the channel's weights, acc a scratch of OH * pitch sums, r the residual plane or NULL. */
static void dw_plane(const kn_qgemm_kernel *kernel, const qconv_geom *g, const dw_frame *f, const uint8_t *framed,
                     const int64_t *tap_at, const int32_t *w, const kn_qepilogue *epi, int64_t c, int32_t *acc,
                     const void *r, void *y) {
    const int64_t OH = g->h.out, OW = g->w.out;
    const int taps = (int)(g->h.kernel * g->w.kernel);
    const uint8_t *src[KN_QGEMM_DW_MAX_TAPS];
    for (int t = 0; t < taps; t++)
        src[t] = framed + tap_at[t];
    kn_qdw_plane plane = {.src = src, .w = w, .taps = taps, .rows = OH, .cols = OW, .pitch = f->pitch,
                          .channel = c, .r = r, .y = y, .acc = acc};
    kn_qgemm_depthwise_plane(kernel, epi, &plane);
}

/* QLinearConvPacked's per-plan state (kn_op.prepare): what its attributes and input shapes decide. The
 * tap ranges follow it: tap i of the kernel's rows reads real pixels for the output rows
 * [range[2i], range[2i + 1]), tap j of its columns for the output columns [range[2(kH + j)], ... + 1). */
typedef struct qconv_state {
    kn_dtype x_dtype;
    qconv_geom g;      /* g.N is the batch prepared for; forward takes its own from x */
    kn_qepilogue epi;  /* the attributes' part (epilogue_attrs) */
    uint8_t pad;       /* x's zero point as stored: the level of a tap that reads padding */
    bool pointwise, depthwise;
    dw_frame frame;    /* depthwise: the framed plane, and where each tap reads in it (dw_tap_offsets) */
    int64_t tap_at[KN_QGEMM_DW_MAX_TAPS];
    int64_t block_rows; /* output rows per block (qconv_block_rows) */
    /* Stride 1 and OW == W (qconv_unfold_row's one copy per row): mask_len bytes per kernel column j at
     * masks_at bytes from the state's start, 0xff at each position (oh, ow) of a block whose column ow
     * tap j reads as padding; masks_at 0: none (other geometries, or more than KN_QCONV_MAX_MASKS). */
    size_t masks_at;
    int64_t mask_len;
    size_t shifted_bytes; /* with masks: scratch of qconv_shift_planes (and 16 bytes read past), 0: none */
    int64_t range[];   /* (kH + kW, 2) */
} qconv_state;

/* Bytes of shifted planes a block may take (qconv_shift_planes; far above real layers'). */
#define KN_QCONV_MAX_SHIFTED ((int64_t)1 << 22)

/* Bytes of column masks a layer may keep (far above real layers': 7 columns of 512). */
#define KN_QCONV_MAX_MASKS ((int64_t)1 << 20)

/* Output rows per block: whole output rows making about KN_QCONV_BLOCK_COLS columns. */
static int64_t qconv_block_rows(const qconv_geom *g) {
    int64_t rows = g->w.out >= KN_QCONV_BLOCK_COLS ? 1 : KN_QCONV_BLOCK_COLS / g->w.out;
    return rows < g->h.out ? rows : g->h.out;
}

/* Bytes per column mask of the geometry, 0 when it keeps none (see qconv_state): a block's rows and the
 * (kH - 1) * dh more its shifted planes hold (qconv_shift_planes). */
static int64_t qconv_mask_len(const qconv_geom *g) {
    int64_t rows = kn_count_add(qconv_block_rows(g), kn_count_mul(g->h.kernel - 1, g->h.dilation));
    int64_t len = kn_count_mul(rows, g->w.out);
    bool one_copy = g->h.stride == 1 && g->w.stride == 1 && g->w.out == g->w.in;
    return one_copy && !qconv_is_depthwise(g) && !qconv_is_pointwise(g) &&
                   kn_count_mul(g->w.kernel, len) <= KN_QCONV_MAX_MASKS
               ? len
               : 0;
}

/* The state and, when the geometry holds (else prepare reports why), its tap ranges (kH + kW pairs)
 * and padding masks. */
static size_t qconv_prepared_bytes(const kn_op_call *call) {
    size_t bytes = sizeof(qconv_state);
    qconv_geom g;
    if (call->in[0]->shape.ndim == 4 && qconv_geom_of(call->node, &call->in[0]->shape, &g) == KILN_OK)
        bytes += sizeof(int64_t) * 2 * (size_t)(g.h.kernel + g.w.kernel) + (size_t)(g.w.kernel * qconv_mask_len(&g));
    else
        kn_error_clear(); /* prepare meets the same failure and reports it */
    return bytes;
}

static kiln_status qconv_prepare(const kn_op_call *call, void *state) {
    const kn_node *node = call->node;
    const kn_tensor *x = call->in[0];
    qconv_state *st = state;
    KN_TRY(check_x(node, x, 4));
    KN_TRY(check_output_attrs(node));
    KN_TRY(qconv_geom_of(node, &x->shape, &st->g));
    const qconv_geom *g = &st->g;
    st->x_dtype = x->dtype;
    st->epi = epilogue_attrs(call);
    st->pad = (uint8_t)(kn_node_int(node, "kn_x_zero_point", 0) & 0xff);
    st->pointwise = qconv_is_pointwise(g);
    st->depthwise = qconv_is_depthwise(g);
    if (st->depthwise) {
        st->frame = dw_frame_of(g);
        dw_tap_offsets(g, &st->frame, st->tap_at);
    }
    for (int64_t i = 0; i < g->h.kernel; i++)
        kn_window_tap_range(&g->h, i, &st->range[2 * i], &st->range[2 * i + 1]);
    for (int64_t j = 0; j < g->w.kernel; j++)
        kn_window_tap_range(&g->w, j, &st->range[2 * (g->h.kernel + j)], &st->range[2 * (g->h.kernel + j) + 1]);
    st->block_rows = qconv_block_rows(g);
    st->mask_len = qconv_mask_len(g);
    st->masks_at = st->mask_len ? sizeof(qconv_state) + sizeof(int64_t) * 2 * (size_t)(g->h.kernel + g->w.kernel) : 0;
    int64_t shifted = kn_count_mul(kn_count_mul(g->Cg, g->w.kernel), st->mask_len);
    st->shifted_bytes = st->mask_len && shifted <= KN_QCONV_MAX_SHIFTED ? (size_t)shifted + 16 : 0;
    uint8_t *masks = (uint8_t *)state + st->masks_at;
    for (int64_t j = 0; st->mask_len && j < g->w.kernel; j++) {
        const int64_t lo = st->range[2 * (g->h.kernel + j)], hi = st->range[2 * (g->h.kernel + j) + 1];
        for (int64_t p = 0; p < st->mask_len; p++)
            masks[j * st->mask_len + p] = p % g->w.out < lo || p % g->w.out >= hi ? 0xff : 0;
    }
    return KILN_OK;
}

/* What every plane of a depthwise convolution reads (qconv_depthwise). */
typedef struct dw_run {
    const kn_qgemm_kernel *kernel;
    const qconv_state *st;
    const qconv_geom *g;
    const int32_t *w;          /* the weights as int32 (C, taps) */
    const kn_qepilogue *epi;
    const uint8_t *xs;         /* (N, C, H, W) */
    char *ys;                  /* (N, C, OH, OW) */
    const char *rs;            /* as ys, or NULL */
    size_t y_size, r_size;
    uint8_t flip;
    uint8_t *frames;           /* per_thread bytes for each slot: a frame, then at acc_at the plane's sums */
    size_t per_thread, acc_at;
} dw_run;

/* Plane p (image and channel), framed in the slot's part of the scratch. */
static void dw_plane_of(void *ctx, int64_t p, int slot) {
    const dw_run *run = ctx;
    const qconv_geom *g = run->g;
    const int64_t taps = g->h.kernel * g->w.kernel, c = p % g->C;
    uint8_t *framed = run->frames + run->per_thread * (size_t)slot;
    dw_fill_frame(run->kernel, g, &run->st->frame, run->xs + p * g->h.in * g->w.in, run->flip, run->st->pad, framed);
    dw_plane(run->kernel, g, &run->st->frame, framed, run->st->tap_at, run->w + c * taps, run->epi, c,
             (int32_t *)(framed + run->acc_at), run->rs ? run->rs + (size_t)(p * g->out_plane) * run->r_size : NULL,
             run->ys + (size_t)(p * g->out_plane) * run->y_size);
}

static kiln_status qconv_depthwise(const kn_op_call *call, const qconv_state *st, const qconv_geom *g) {
    const kn_tensor *x = call->in[0];
    const int64_t taps = g->h.kernel * g->w.kernel, planes = g->N * g->C;
    const dw_frame *f = &st->frame;
    int threads = kn_threads_get();
    // Scratch: the weights as int32 (C, taps), then per thread a frame and, 64-byte aligned after it,
    // the plane's sums (OH * pitch). The geometry's checks bound the sizes far below SIZE_MAX / threads.
    size_t weights = sizeof(int32_t) * (size_t)(g->C * taps), frame = dw_frame_bytes(f);
    size_t acc_at = (frame + 63) / 64 * 64, per_thread = 0, total = 0;
    int64_t sums = g->h.out * f->pitch;
    bool sized = kn_size_mul(sizeof(int32_t), (size_t)sums, &per_thread) &&
                 kn_size_add(per_thread + 63, acc_at, &per_thread) &&
                 kn_size_mul(per_thread / 64 * 64, (size_t)threads, &total) &&
                 kn_size_add(total, weights, &total);
    per_thread = per_thread / 64 * 64;
    uint8_t *scratch = sized ? kn_op_scratch(call->ctx, total) : NULL;
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d framed planes of %zu bytes", threads, frame);
    int32_t *w = (int32_t *)scratch;
    const int8_t *packed = call->in[1]->data; // one B sliver per channel: tap k at (k/4) * 4 * MR + k % 4
    size_t b_bytes = kn_qgemm_b_bytes(1, taps);
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t k = 0; k < taps; k++)
            w[c * taps + k] = packed[(size_t)c * b_bytes + (size_t)(k / 4 * 4 * KN_QGEMM_MR + k % 4)];
    kn_qepilogue epi = epilogue_bind(&st->epi, call, g->C);
    dw_run run = {
        .kernel = kn_qgemm_kernel_best(), .st = st, .g = g, .w = w, .epi = &epi, .xs = x->data,
        .ys = call->out[0]->data,
        .y_size = kn_qout_size(epi.y_type), .r_size = kn_qres_size(epi.r_type), .flip = x->dtype == KN_I8 ? 0x80 : 0,
        .frames = scratch + weights, .per_thread = per_thread, .acc_at = acc_at,
    };
    run.rs = run.r_size ? residual_of(call)->data : NULL;
    kn_parallel_for(planes, kn_threads_for(planes * g->out_plane * taps, KN_PARALLEL_MIN_SPARSE), dw_plane_of, &run);
    return KILN_OK;
}

/* The prepared state for this call, which must have been made for x's dtype and per-image shape. */
static kiln_status qconv_state_of(const kn_op_call *call, const qconv_state **st) {
    const void *state = NULL;
    KN_TRY(kn_op_call_prepared(call, &state));
    *st = state;
    const kn_tensor *x = call->in[0];
    const qconv_geom *g = &(*st)->g;
    if (x->dtype != (*st)->x_dtype || x->shape.ndim != 4 || x->shape.d[1] != g->C || x->shape.d[2] != g->h.in ||
        x->shape.d[3] != g->w.in)
        return kn_fail(KILN_ERR_INTERNAL, "x is not the input the layer was prepared for");
    return KILN_OK;
}

/* What every block of a packed convolution's run reads (qconv_forward). */
typedef struct qconv_run {
    const kn_qgemm_kernel *kernel;
    const qconv_state *st;
    qconv_geom g;              /* the state's, at this call's batch */
    const uint8_t *masks;      /* the state's column masks, or NULL */
    int64_t blocks, block_rows;
    const uint8_t *xs, *w;     /* (N, C, H, W) levels; the packed weights */
    char *ys;                  /* (N, M, OH, OW) */
    const char *rs;            /* as ys, or NULL */
    size_t y_size, r_size, v_bytes, b_bytes, rows_bytes;
    const kn_qepilogue *epi;
    uint8_t flip;
    int inner;                 /* threads of each block's product */
    uint8_t *scratch;          /* per_thread bytes for each thread that takes blocks */
    size_t per_thread;
} qconv_run;

/* Block `item` (image n, group grp, output rows [oh0, oh1)): its column matrix unfolded into v (then
 * 4 unfolded rows, then the shifted planes where the state has them), and its product through the
 * epilogue. */
static void qconv_block(const qconv_run *run, int64_t item, uint8_t *v) {
    const qconv_geom *g = &run->g;
    const int64_t OW = g->w.out, OH = g->h.out;
    int64_t n = item / (g->group * run->blocks), grp = item / run->blocks % g->group, blk = item % run->blocks;
    int64_t oh0 = blk * run->block_rows, oh1 = oh0 + run->block_rows < OH ? oh0 + run->block_rows : OH;
    uint8_t *rows = v + run->v_bytes, *shifted = run->st->shifted_bytes ? rows + run->rows_bytes : NULL;
    qconv_unfold(run->kernel, g, run->st->pointwise, run->st->range, run->masks, run->st->mask_len,
                 run->xs + n * g->C * g->h.in * g->w.in, run->xs + g->N * g->C * g->h.in * g->w.in, grp * g->Cg, oh0,
                 oh1, run->flip, run->st->pad, rows, shifted, v);
    kn_qepilogue group_epi = *run->epi;
    group_epi.corr += grp * g->Mg;
    group_epi.mult += grp * g->Mg;
    group_epi.bias += grp * g->Mg;
    size_t at = (size_t)((n * g->M + grp * g->Mg) * g->out_plane + oh0 * OW);
    kn_qgemm_problem p = {
        .R = g->Mg, .L = (oh1 - oh0) * OW, .K = g->K, .b = run->w + (size_t)grp * run->b_bytes, .v = v,
        .v_unsigned = true, .channel_per_row = true, .epi = &group_epi,
        .y = run->ys + at * run->y_size, .ldy = g->out_plane, .r = run->rs ? run->rs + at * run->r_size : NULL,
    };
    kn_qgemm_run(run->kernel, &p, run->inner);
}

/* Block `item`, in the slot's part of the scratch. */
static void qconv_block_of(void *ctx, int64_t item, int slot) {
    const qconv_run *run = ctx;
    qconv_block(run, item, run->scratch + run->per_thread * (size_t)slot);
}

static kiln_status qconv_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const qconv_state *st = NULL;
    KN_TRY(qconv_state_of(call, &st));
    qconv_run run = {.st = st, .g = st->g, .block_rows = st->block_rows};
    qconv_geom *g = &run.g;
    g->N = x->shape.d[0];
    if (st->depthwise)
        return qconv_depthwise(call, st, g);
    run.blocks = (g->h.out + run.block_rows - 1) / run.block_rows;
    int64_t items = g->N * g->group * run.blocks, L16 = (run.block_rows * g->w.out + 15) / 16 * 16;
    run.v_bytes = kn_qgemm_v_bytes(run.block_rows * g->w.out, g->K);
    run.b_bytes = kn_qgemm_b_bytes(g->Mg, g->K);
    run.rows_bytes = (size_t)(4 * L16);
    // V of a block, then 4 unfolded rows, then the shifted planes (at most KN_QCONV_MAX_SHIFTED bytes)
    size_t per_thread = (run.v_bytes + run.rows_bytes + st->shifted_bytes + 63) / 64 * 64;
    // Threads take whole blocks when there are enough of them, else share each block's product; a
    // small layer runs on the calling thread.
    int threads = kn_threads_for(kn_count_mul(g->N * g->M * g->out_plane, g->K), KN_PARALLEL_MIN_INTEGER);
    int outer = items >= threads ? threads : 1;
    run.inner = outer == 1 ? threads : 1;
    uint8_t *scratch = kn_op_scratch(call->ctx, per_thread * (size_t)outer);
    if (!scratch)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %d %zu-byte column matrices", outer, per_thread);
    kn_qepilogue epi = epilogue_bind(&st->epi, call, g->M);
    run.epi = &epi;
    run.y_size = kn_qout_size(epi.y_type);
    run.r_size = kn_qres_size(epi.r_type);
    run.kernel = kn_qgemm_kernel_best();
    run.masks = st->masks_at ? (const uint8_t *)st + st->masks_at : NULL;
    run.flip = x->dtype == KN_I8 ? 0x80 : 0;
    run.xs = x->data;
    run.w = call->in[1]->data;
    run.ys = call->out[0]->data;
    run.rs = run.r_size ? residual_of(call)->data : NULL;
    run.scratch = scratch;
    run.per_thread = per_thread;
    kn_parallel_for(items, outer, qconv_block_of, &run);
    return KILN_OK;
}

static int64_t qconv_flops(const kn_graph *gr, const kn_node *node) {
    const kn_value *x = kn_node_input(gr, node, 0);
    qconv_geom g;
    if (!x || x->shape.ndim != 4 || qconv_geom_of(node, &x->shape, &g) != KILN_OK)
        return 0;
    return 2 * g.N * g.M * g.out_plane * g.K;
}

/* ---- QLinearGemmPacked ------------------------------------------------------------------------- */

static kiln_status qgemm_dims(const kn_node *node, int64_t *K, int64_t *N) {
    *K = kn_node_int(node, "kn_k", 0);
    *N = kn_node_int(node, "kn_n", 0);
    if (*K <= 0 || *N <= 0 || *K > KN_QGEMM_MAX_K || *N > KN_QLINEAR_MAX_CHANNELS)
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_k %lld must be in [1, %d] and kn_n %lld in [1, %d]", (long long)*K,
                       KN_QGEMM_MAX_K, (long long)*N, KN_QLINEAR_MAX_CHANNELS);
    return KILN_OK;
}

static kiln_status qgemm_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    if (inputs.n < 5 || inputs.n > 7)
        return kn_fail(KILN_ERR_INVALID_ARG, "takes 5 to 7 inputs, got %d", inputs.n);
    const kn_shape *xs = &inputs.in[0]->shape;
    KN_TRY(check_x(node, inputs.in[0], 0));
    KN_TRY(check_output_attrs(node));
    int64_t K, N;
    KN_TRY(qgemm_dims(node, &K, &N));
    if (xs->d[xs->ndim - 1] != K)
        return kn_fail(KILN_ERR_SHAPE, "x has %lld columns; the weights take %lld",
                       (long long)xs->d[xs->ndim - 1], (long long)K);
    KN_TRY(check_constants(inputs.in, N, kn_qgemm_v_bytes(N, K)));
    kn_shape y = *xs;
    y.d[y.ndim - 1] = N;
    KN_TRY(check_residual(node, kn_input_at(inputs.in, inputs.n, 5), &y));
    const kn_tensor *z = kn_input_at(inputs.in, inputs.n, 6);
    if (z && (z->dtype != inputs.in[0]->dtype || kn_numel(z) != 1))
        return kn_fail(KILN_ERR_SHAPE, "z_x must be one level of x's dtype");
    kn_set_output(g, node, 0, &y, y_dtype_of(node));
    return KILN_OK;
}

/* QLinearGemmPacked's per-plan state (kn_op.prepare). */
typedef struct qgemm_state {
    kn_dtype x_dtype;
    int64_t K, N;
    kn_qepilogue epi; /* the attributes' part (epilogue_attrs) */
} qgemm_state;

static size_t qgemm_prepared_bytes(const kn_op_call *call) {
    (void)call;
    return sizeof(qgemm_state);
}

static kiln_status qgemm_prepare(const kn_op_call *call, void *state) {
    qgemm_state *st = state;
    KN_TRY(check_x(call->node, call->in[0], 0));
    KN_TRY(check_output_attrs(call->node));
    KN_TRY(qgemm_dims(call->node, &st->K, &st->N));
    st->x_dtype = call->in[0]->dtype;
    st->epi = epilogue_attrs(call);
    return KILN_OK;
}

static kiln_status qgemm_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const kn_tensor *z = call->node->n_in > 6 ? call->in[6] : NULL;
    const void *state = NULL;
    KN_TRY(kn_op_call_prepared(call, &state));
    const qgemm_state *st = state;
    const int64_t K = st->K, N = st->N;
    if (x->dtype != st->x_dtype || x->shape.ndim < 2 || x->shape.d[x->shape.ndim - 1] != K)
        return kn_fail(KILN_ERR_INTERNAL, "x is not the input the layer was prepared for");
    if (z && (z->dtype != x->dtype || kn_numel(z) != 1))
        return kn_fail(KILN_ERR_SHAPE, "z_x must be one level of x's dtype");
    int64_t R = kn_numel(x) / K; // x (R, K): a MatMul's leading dims are rows
    size_t b_bytes = (kn_qgemm_b_bytes(R, K) + 63) / 64 * 64;
    uint8_t *b = kn_op_scratch(call->ctx, b_bytes + (z ? sizeof(int32_t) * (size_t)N : 0)); // x's rows as B slivers
    if (!b)
        return kn_fail(KILN_ERR_NOMEM, "no memory for %zu bytes of packed rows", b_bytes);
    kn_qgemm_pack_rows_b(x->data, R, K, K, x->dtype == KN_I8, b);
    kn_qepilogue epi = epilogue_bind(&st->epi, call, N);
    if (z) { /* this run's correction: z_x' * the weights' row sums, wrapping as the kernels do */
        int32_t *corr = (int32_t *)(b + b_bytes);
        uint32_t z_u8 = (uint32_t)(x->dtype == KN_I8 ? *(const int8_t *)z->data + 128 : *(const uint8_t *)z->data);
        for (int64_t c = 0; c < N; c++)
            corr[c] = (int32_t)(z_u8 * (uint32_t)epi.corr[c]);
        epi.corr = corr;
    }
    kn_qgemm_problem p = {
        .R = R, .L = N, .K = K, .b = b, .v = call->in[1]->data, .v_unsigned = false,
        .channel_per_row = false, .epi = &epi, .y = call->out[0]->data, .ldy = N,
        .r = epi.r_type != KN_QRES_NONE ? residual_of(call)->data : NULL,
    };
    kn_qgemm_run(kn_qgemm_kernel_best(), &p, kn_threads_get());
    return KILN_OK;
}

static int64_t qgemm_flops(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    int64_t K = kn_node_int(node, "kn_k", 0), N = kn_node_int(node, "kn_n", 0);
    return x && x->shape.ndim >= 2 && K > 0 ? 2 * (kn_shape_numel(&x->shape) / K) * K * N : 0;
}

/* ---- MaxPoolInteger ---------------------------------------------------------------------------- */

/* MaxPool over levels: QuantizeLinear is non-decreasing, so the level of a window's largest value is the
 * largest level in the window, and the optimizer moves a QuantizeLinear from after a MaxPool to before
 * it (onto an integer layer's output) without changing a number. 2-D, NCHW, u8 or i8, MaxPool's
 * attributes (kernel_shape, strides, pads, dilations, auto_pad, ceil_mode); one output. A window of
 * padding only gives the lowest level, the level of MaxPool's -inf. */

static kiln_status qmaxpool_geom(const kn_node *node, const kn_shape *x, kn_window_axis axes[2]) {
    int64_t kernel[2];
    if (x->ndim != 4)
        return kn_fail(KILN_ERR_SHAPE, "x has rank %d; 4 (N, C, H, W) is supported", x->ndim);
    if (kn_node_ints(node, "kernel_shape", kernel, 2) != 2 || kernel[0] < 1 || kernel[1] < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "kernel_shape must be 2 positive sizes");
    return kn_window_resolve(node, &x->d[2], kernel, kn_node_int(node, "ceil_mode", 0) != 0, axes);
}

static kiln_status qmaxpool_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x || (x->dtype != KN_U8 && x->dtype != KN_I8))
        return kn_fail(KILN_ERR_UNSUPPORTED, "x must be u8 or i8 levels");
    kn_window_axis axes[2];
    KN_TRY(qmaxpool_geom(node, &x->shape, axes));
    kn_shape y = kn_shape_of(4, (int64_t[]){x->shape.d[0], x->shape.d[1], axes[0].out, axes[1].out});
    kn_set_output(g, node, 0, &y, x->dtype);
    return KILN_OK;
}

/* 2x2 windows at stride 2 inside the plane (no padding, no dilation): the usual pooling, which
 * kn_qgemm_maxpool2x2 runs. */
static bool qmaxpool_is_2x2(const kn_window_axis *h, const kn_window_axis *w) {
    return h->kernel == 2 && w->kernel == 2 && h->stride == 2 && w->stride == 2 && h->dilation == 1 &&
           w->dilation == 1 && h->pad_begin == 0 && w->pad_begin == 0 && 2 * h->out <= h->in && 2 * w->out <= w->in;
}

/* Output rows of the 2x2 pooling per unit of work when all planes make one tall plane. */
#define QMAXPOOL_RUN_ROWS 256

/* The 2x2 pooling in units of unit_rows output rows, unit i's input and output in_step and out_step bytes
 * after unit i - 1's (the last unit ends at total_rows). */
typedef struct qmaxpool_2x2_run {
    const kn_qgemm_kernel *kernel;
    const uint8_t *x;
    uint8_t *y;
    int64_t total_rows, unit_rows, in_step, out_step, in_w, cols;
    bool is_signed;
} qmaxpool_2x2_run;

static void qmaxpool_2x2_unit(void *ctx, int64_t i, int slot) {
    (void)slot;
    const qmaxpool_2x2_run *r = ctx;
    int64_t rows = r->total_rows - i * r->unit_rows < r->unit_rows ? r->total_rows - i * r->unit_rows : r->unit_rows;
    kn_qgemm_maxpool2x2(r->kernel, r->x + i * r->in_step, rows, r->in_w, r->cols, r->is_signed, r->y + i * r->out_step);
}

/* best[0, OW) = the maximum across each window of one row of column maxima (pw bytes, framed): with
 * stride 1 or 2 (the row dealt into its two column phases, in `phases`: pw + 1 bytes) each tap reads
 * contiguous bytes, so the maxima run as vector loops; other strides take the windows one by one. */
static void qmaxpool_across(const kn_qgemm_kernel *kernel, const kn_window_axis *w, int64_t left,
                            const uint8_t *column_max, int64_t pw, uint8_t *phases, uint8_t *restrict best) {
    const int64_t OW = w->out, s = w->stride;
    if (s > 2) {
        for (int64_t ow = 0; ow < OW; ow++) {
            const uint8_t *first = column_max + ow * s - w->pad_begin + left;
            uint8_t m = 0;
            for (int64_t j = 0; j < w->kernel; j++)
                m = first[j * w->dilation] > m ? first[j * w->dilation] : m;
            best[ow] = m;
        }
        return;
    }
    int64_t half = (pw + 1) / 2;
    if (s == 2)
        kn_qgemm_deal2(kernel, column_max, pw / 2, phases, phases + half);
    if (s == 2 && pw % 2)
        phases[half - 1] = column_max[pw - 1];
    memset(best, 0, (size_t)OW);
    for (int64_t j = 0; j < w->kernel; j++) {
        int64_t at = j * w->dilation - w->pad_begin + left; /* tap j of output ow reads column ow * s + at */
        const uint8_t *restrict tap = s == 1 ? column_max + at : phases + (at % 2) * half + at / 2;
        for (int64_t ow = 0; ow < OW; ow++)
            best[ow] = tap[ow] > best[ow] ? tap[ow] : best[ow];
    }
}

/* One plane, any window: the plane is copied (levels flipped to compare as u8) into `padded`, framed by
 * the lowest level wherever a window can reach outside it, so that every window is read without bounds
 * checks (then each output row takes the maximum down its window's rows, then across); pads[0..4) =
 * top, left, bottom, right frame widths; `padded` has room for the framed plane and four more rows. */
static void qmaxpool_plane(const kn_qgemm_kernel *kernel, const kn_window_axis *h, const kn_window_axis *w,
                           const int64_t pads[4], const uint8_t *x, uint8_t flip, uint8_t *padded, uint8_t *y) {
    const int64_t pw = pads[1] + w->in + pads[3], ph = pads[0] + h->in + pads[2], width = w->in;
    memset(padded, 0, (size_t)(pw * ph)); /* 0 is the lowest level once flipped */
    for (int64_t r = 0; r < h->in; r++)
        copy_flipped(padded + (r + pads[0]) * pw + pads[1], x + r * width, width, flip);
    uint8_t *restrict column_max = padded + pw * ph; // (pw): the window rows' maximum of each padded column
    uint8_t *phases = column_max + pw, *best = phases + 2 * pw; // (pw + 1), (OW <= pw)
    for (int64_t oh = 0; oh < h->out; oh++) {
        const uint8_t *top = padded + (oh * h->stride - h->pad_begin + pads[0]) * pw;
        memcpy(column_max, top, (size_t)pw);
        for (int64_t i = 1; i < h->kernel; i++) {
            const uint8_t *restrict row = top + i * h->dilation * pw;
            for (int64_t c = 0; c < pw; c++)
                column_max[c] = row[c] > column_max[c] ? row[c] : column_max[c];
        }
        qmaxpool_across(kernel, w, pads[1], column_max, pw, phases, best);
        for (int64_t ow = 0; ow < w->out; ow++)
            y[oh * w->out + ow] = best[ow] ^ flip;
    }
}

/* What every plane of a pooling reads (qmaxpool_forward's general path). */
typedef struct qmaxpool_run {
    const kn_qgemm_kernel *kernel;
    const kn_window_axis *axes; /* height, width */
    const int64_t *pads;
    const uint8_t *xs;          /* (N*C, H, W) */
    uint8_t *ys;
    int64_t in_plane, out_plane;
    uint8_t flip;
    uint8_t *padded;            /* padded_bytes for each slot: a framed plane */
    size_t padded_bytes;
} qmaxpool_run;

static void qmaxpool_plane_of(void *ctx, int64_t p, int slot) {
    const qmaxpool_run *r = ctx;
    qmaxpool_plane(r->kernel, &r->axes[0], &r->axes[1], r->pads, r->xs + p * r->in_plane, r->flip,
                   r->padded + r->padded_bytes * (size_t)slot, r->ys + p * r->out_plane);
}

/* MaxPoolInteger's per-plan state (kn_op.prepare): the window, and how far it reaches past the plane. */
typedef struct qmaxpool_state {
    kn_window_axis axes[2];
    bool is_2x2;     /* qmaxpool_is_2x2 */
    int64_t pads[4]; /* window_reach: top, left, bottom, right */
} qmaxpool_state;

static size_t qmaxpool_prepared_bytes(const kn_op_call *call) {
    (void)call;
    return sizeof(qmaxpool_state);
}

static kiln_status qmaxpool_prepare(const kn_op_call *call, void *state) {
    qmaxpool_state *st = state;
    KN_TRY(qmaxpool_geom(call->node, &call->in[0]->shape, st->axes));
    st->is_2x2 = qmaxpool_is_2x2(&st->axes[0], &st->axes[1]);
    window_reach(&st->axes[0], &st->pads[0], &st->pads[2]);
    window_reach(&st->axes[1], &st->pads[1], &st->pads[3]);
    return KILN_OK;
}

static kiln_status qmaxpool_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const void *state = NULL;
    KN_TRY(kn_op_call_prepared(call, &state));
    const qmaxpool_state *st = state;
    const kn_window_axis *axes = st->axes;
    const int64_t *pads = st->pads;
    if (x->shape.ndim != 4 || x->shape.d[2] != axes[0].in || x->shape.d[3] != axes[1].in)
        return kn_fail(KILN_ERR_INTERNAL, "x is not the input the pooling was prepared for");
    int64_t planes = x->shape.d[0] * x->shape.d[1];
    int64_t in_plane = axes[0].in * axes[1].in, out_plane = axes[0].out * axes[1].out;
    uint8_t flip = x->dtype == KN_I8 ? 0x80 : 0;
    const uint8_t *xs = x->data; // (N*C, H, W)
    uint8_t *ys = call->out[0]->data;
    const kn_qgemm_kernel *kernel = kn_qgemm_kernel_best();
    int threads = kn_threads_for(planes * in_plane, KN_PARALLEL_MIN_SPARSE);
    if (st->is_2x2) {
        // Units of output rows: where the planes' rows pair up (2 OH == H) all planes are one tall plane, cut
        // into runs of QMAXPOOL_RUN_ROWS rows; else a plane each.
        bool tall = 2 * axes[0].out == axes[0].in;
        qmaxpool_2x2_run r = {.kernel = kernel, .x = xs, .y = ys, .total_rows = planes * axes[0].out,
                              .unit_rows = tall ? QMAXPOOL_RUN_ROWS : axes[0].out, .in_w = axes[1].in,
                              .cols = axes[1].out, .is_signed = flip != 0};
        r.in_step = tall ? 2 * r.unit_rows * r.in_w : in_plane;
        r.out_step = tall ? r.unit_rows * r.cols : out_plane;
        kn_parallel_for((r.total_rows + r.unit_rows - 1) / r.unit_rows, threads, qmaxpool_2x2_unit, &r);
        return KILN_OK;
    }
    int64_t framed_rows = kn_count_add(kn_count_add(pads[0], axes[0].in), kn_count_add(pads[2], 4));
    int64_t framed_cols = kn_count_add(kn_count_add(pads[1], axes[1].in), pads[3]);
    size_t padded_bytes = 0, total = 0;
    bool sized = kn_size_mul((size_t)framed_rows, (size_t)framed_cols, &padded_bytes) &&
                 kn_size_mul(padded_bytes, (size_t)threads, &total);
    uint8_t *padded = sized ? kn_op_scratch(call->ctx, total) : NULL; // a framed plane per thread
    if (!padded)
        return kn_fail(KILN_ERR_NOMEM, "out of memory pooling");
    qmaxpool_run run = {.kernel = kernel, .axes = axes, .pads = pads, .xs = xs, .ys = ys, .in_plane = in_plane,
                        .out_plane = out_plane, .flip = flip, .padded = padded, .padded_bytes = padded_bytes};
    kn_parallel_for(planes, threads, qmaxpool_plane_of, &run);
    return KILN_OK;
}

/* ---- AddInteger --------------------------------------------------------------------------------- */

/* DequantizeLinear(a) + DequantizeLinear(b) [-> Relu] -> QuantizeLinear over levels, as a QDQ model from
 * another tool writes a residual Add (both inputs quantized): each element is computed with the f32
 * operations of those ops in their order (kn_quant_value, one f32 addition, the Relu op's formula,
 * kn_quant_level), so the numbers are theirs, bit for bit. a and b are u8 or i8 levels of one shape.
 * Attributes: kn_a_scale, kn_a_zero_point, kn_b_scale, kn_b_zero_point, kn_y_type (1 u8, 2 i8),
 * kn_y_scale, kn_y_zero_point, kn_activation ("Relu" or absent). */

typedef struct qadd_params {
    float s_a, s_b, s_y;
    int32_t z_a, z_b, z_y;
    bool relu;
    kn_quant_range range;
} qadd_params;

static kiln_status qadd_params_of(const kn_node *node, qadd_params *p) {
    const char *act = kn_node_string(node, "kn_activation", NULL);
    int64_t y_type = kn_node_int(node, "kn_y_type", KN_QOUT_U8);
    *p = (qadd_params){
        .s_a = kn_node_float(node, "kn_a_scale", 1.0f),
        .s_b = kn_node_float(node, "kn_b_scale", 1.0f),
        .s_y = kn_node_float(node, "kn_y_scale", 1.0f),
        .z_a = (int32_t)kn_node_int(node, "kn_a_zero_point", 0),
        .z_b = (int32_t)kn_node_int(node, "kn_b_zero_point", 0),
        .z_y = (int32_t)kn_node_int(node, "kn_y_zero_point", 0),
        .relu = act != NULL, .range = kn_quant_range_of(8, y_type == KN_QOUT_I8),
    };
    if (act && strcmp(act, "Relu") != 0)
        return kn_fail(KILN_ERR_UNSUPPORTED, "kn_activation '%s': only Relu is fused here", act);
    if (y_type != KN_QOUT_U8 && y_type != KN_QOUT_I8)
        return kn_fail(KILN_ERR_INVALID_ARG, "kn_y_type %lld is not 1 (u8) or 2 (i8)", (long long)y_type);
    if (!(p->s_a > 0.0f && p->s_a < INFINITY && p->s_b > 0.0f && p->s_b < INFINITY && p->s_y > 0.0f &&
          p->s_y < INFINITY))
        return kn_fail(KILN_ERR_INVALID_ARG, "the scales must be finite and > 0");
    return KILN_OK;
}

static kiln_status qadd_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *a = kn_node_input(g, node, 0), *b = kn_node_input(g, node, 1);
    if (!a || !b || (a->dtype != KN_U8 && a->dtype != KN_I8) || (b->dtype != KN_U8 && b->dtype != KN_I8))
        return kn_fail(KILN_ERR_UNSUPPORTED, "a and b must be u8 or i8 levels");
    if (!kn_shape_equal(&a->shape, &b->shape))
        return kn_fail(KILN_ERR_SHAPE, "a and b must have one shape");
    qadd_params p;
    KN_TRY(qadd_params_of(node, &p));
    kn_set_output(g, node, 0, &a->shape, p.range.qmin < 0 ? KN_I8 : KN_U8);
    return KILN_OK;
}

/* Level i of t (u8 or i8). */
static int32_t qadd_level(const kn_tensor *t, int64_t i) {
    return t->dtype == KN_I8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

/* What AddInteger's elements read. */
typedef struct qadd_run {
    const kn_tensor *a, *b;
    qadd_params p;
    uint8_t *y;
} qadd_run;

static void qadd_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const qadd_run *r = ctx;
    const qadd_params *p = &r->p;
    for (int64_t i = begin; i < end; i++) {
        float v =
            kn_quant_value(qadd_level(r->a, i), p->s_a, p->z_a) + kn_quant_value(qadd_level(r->b, i), p->s_b, p->z_b);
        if (p->relu)
            v = kn_quant_relu_op(v);
        r->y[i] = (uint8_t)(kn_quant_level(v, p->s_y, p->z_y, p->range) & 0xff);
    }
}

static kiln_status qadd_forward(const kn_op_call *call) {
    qadd_run run = {.a = call->in[0], .b = call->in[1], .y = call->out[0]->data};
    KN_TRY(qadd_params_of(call->node, &run.p));
    int64_t n = kn_numel(run.a);
    kn_parallel_range(n, kn_threads_for(n, KN_PARALLEL_MIN_SPARSE), qadd_range, &run);
    return KILN_OK;
}

const kn_op kn_op_addinteger = {
    .name = "AddInteger", .min_inputs = 2, .max_inputs = 2,
    .infer = qadd_infer, .forward = qadd_forward,
};

const kn_op kn_op_maxpoolinteger = {
    .name = "MaxPoolInteger", .min_inputs = 1, .max_inputs = 1,
    .infer = qmaxpool_infer, .forward = qmaxpool_forward,
    .prepared_bytes = qmaxpool_prepared_bytes, .prepare = qmaxpool_prepare,
};

const kn_op kn_op_qlinearconvpacked = {
    .name = "QLinearConvPacked", .min_inputs = 5, .max_inputs = 6,
    .infer = qconv_infer, .forward = qconv_forward, .flops = qconv_flops,
    .prepared_bytes = qconv_prepared_bytes, .prepare = qconv_prepare,
};

const kn_op kn_op_qlineargemmpacked = {
    .name = "QLinearGemmPacked", .min_inputs = 5, .max_inputs = 7,
    .infer = qgemm_infer, .forward = qgemm_forward, .flops = qgemm_flops,
    .prepared_bytes = qgemm_prepared_bytes, .prepare = qgemm_prepare,
};
