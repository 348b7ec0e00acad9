/* QuantizeLinear and DequantizeLinear (ONNX opset 13):
 *
 *   QuantizeLinear:   y = saturate(round(x / scale) + zero_point)   f32 -> u8 or i8
 *   DequantizeLinear: y = (x - zero_point) * scale                   u8, i8 or i32 -> f32
 *
 * with one scale (and zero point) for the whole tensor when they are scalars, or one per index
 * along the `axis` attribute (default 1) when they are 1-D. round is to nearest with ties to even,
 * like ONNX; a NaN quantizes to the lowest value. No backward: quantization-aware training needs a
 * fake-quantize op with a straight-through gradient, which is a separate op for later.
 */
#include <math.h>

#include "core/threads.h"
#include "core/quant.h"
#include "kernels/qgemm.h"
#include "ops/movement.h"

/* x viewed as (outer, channels, inner): channel c uses scale[c] and zero_point[c]; channels is 1 for
 * per-tensor parameters. */
typedef struct quant_layout {
    int64_t outer, channels, inner;
} quant_layout;

static kiln_status quant_layout_make(const kn_node *node, const kn_shape *x, const kn_tensor *scale,
                                     const kn_tensor *zero_point, quant_layout *q) {
    if (scale->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the scale must be f32, got %s",
                       kn_dtype_name(scale->dtype));
    if (scale->shape.ndim > 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "the scale must be a scalar or 1-D, got rank %d",
                       scale->shape.ndim);
    if (zero_point && !kn_shape_equal(&zero_point->shape, &scale->shape))
        return kn_fail(KILN_ERR_INVALID_ARG, "the zero point has %lld elements of rank %d; it must "
                       "match the scale (%lld of rank %d)", (long long)kn_numel(zero_point),
                       zero_point->shape.ndim, (long long)kn_numel(scale), scale->shape.ndim);
    if (scale->shape.ndim == 0 || kn_numel(scale) == 1) {
        *q = (quant_layout){1, 1, kn_shape_numel(x)};
        return KILN_OK;
    }
    int64_t axis_attr = kn_node_int(node, "axis", 1);
    int axis = kn_axis_normalize(axis_attr, x->ndim);
    if (axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d",
                       (long long)axis_attr, x->ndim);
    if (scale->shape.d[0] != x->d[axis])
        return kn_fail(KILN_ERR_SHAPE, "%lld scales for axis %d of size %lld",
                       (long long)scale->shape.d[0], axis, (long long)x->d[axis]);
    *q = (quant_layout){kn_shape_span(x, 0, axis), x->d[axis], kn_shape_span(x, axis + 1, x->ndim)};
    return KILN_OK;
}

static int64_t zero_point_at(const kn_tensor *zero_point, int64_t c) {
    if (!zero_point)
        return 0;
    switch (zero_point->dtype) {
    case KN_U8: return ((const uint8_t *)zero_point->data)[c];
    case KN_I8: return ((const int8_t *)zero_point->data)[c];
    default: return ((const int32_t *)zero_point->data)[c];
    }
}

static kiln_status quant_inputs(kn_tensor *const *in, int n_in, const kn_tensor **x,
                                const kn_tensor **scale, const kn_tensor **zero_point) {
    *x = kn_input_at(in, n_in, 0);
    *scale = kn_input_at(in, n_in, 1);
    *zero_point = kn_input_at(in, n_in, 2);
    if (!*x || !*scale)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs x and scale are required");
    return KILN_OK;
}

/* ---- QuantizeLinear ---- */

static kiln_status quantize_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x, *scale, *zero_point;
    KN_TRY(quant_inputs(inputs.in, inputs.n, &x, &scale, &zero_point));
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "x has dtype %s; only f32 is supported",
                       kn_dtype_name(x->dtype));
    kn_dtype out = zero_point ? zero_point->dtype : KN_U8;
    if (out != KN_U8 && out != KN_I8)
        return kn_fail(KILN_ERR_UNSUPPORTED, "the zero point has dtype %s; u8 and i8 are supported",
                       kn_dtype_name(out));
    quant_layout q;
    KN_TRY(quant_layout_make(node, &x->shape, scale, zero_point, &q));
    kn_set_output(g, node, 0, &x->shape, out);
    return KILN_OK;
}

/* Rows of QuantizeLinear's input, each of one channel. */
typedef struct quantize_rows {
    const kn_qgemm_kernel *kernel;
    const float *x, *scales; /* x: (outer, channels, inner) */
    const kn_tensor *zero_point;
    int64_t channels, inner;
    bool is_signed;
    uint8_t *y;
} quantize_rows;

static void quantize_row(void *ctx, int64_t r, int slot) {
    (void)slot;
    const quantize_rows *q = ctx;
    int64_t c = r % q->channels;
    kn_qgemm_quantize(q->kernel, q->x + r * q->inner, q->inner, q->scales[c], (int32_t)zero_point_at(q->zero_point, c),
                      q->is_signed, q->y + r * q->inner);
}

static kiln_status quantize_forward(const kn_op_call *call) {
    const kn_tensor *x, *scale, *zero_point;
    KN_TRY(quant_inputs(call->in, call->node->n_in, &x, &scale, &zero_point));
    quant_layout q;
    KN_TRY(quant_layout_make(call->node, &x->shape, scale, zero_point, &q));
    quantize_rows rows = {
        .kernel = kn_qgemm_kernel_best(), /* kn_quant_level's numbers, vectorized */
        .x = kn_f32(x), .scales = kn_f32(scale), .zero_point = zero_point, .channels = q.channels, .inner = q.inner,
        .is_signed = call->out[0]->dtype == KN_I8, .y = call->out[0]->data,
    };
    int64_t n = q.outer * q.channels;
    kn_parallel_for(n, kn_threads_for(n * q.inner, KN_MOVE_PARALLEL_MIN), quantize_row, &rows);
    return KILN_OK;
}

/* ---- DequantizeLinear ---- */

static kiln_status dequantize_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    kn_infer_inputs inputs;
    KN_TRY(kn_infer_inputs_get(g, node, &inputs));
    const kn_tensor *x, *scale, *zero_point;
    KN_TRY(quant_inputs(inputs.in, inputs.n, &x, &scale, &zero_point));
    if (x->dtype != KN_U8 && x->dtype != KN_I8 && x->dtype != KN_I32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "x has dtype %s; u8, i8 and i32 are supported",
                       kn_dtype_name(x->dtype));
    if (zero_point && zero_point->dtype != x->dtype)
        return kn_fail(KILN_ERR_INVALID_ARG, "the zero point has dtype %s but x %s",
                       kn_dtype_name(zero_point->dtype), kn_dtype_name(x->dtype));
    quant_layout q;
    KN_TRY(quant_layout_make(node, &x->shape, scale, zero_point, &q));
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

static int64_t level_at(const kn_tensor *x, int64_t i) {
    switch (x->dtype) {
    case KN_U8: return ((const uint8_t *)x->data)[i];
    case KN_I8: return ((const int8_t *)x->data)[i];
    default: return ((const int32_t *)x->data)[i];
    }
}

/* Rows of DequantizeLinear's input, each of one channel. */
typedef struct dequantize_rows {
    const kn_tensor *x, *zero_point;
    const float *scales;
    int64_t channels, inner;
    float *y; /* (outer, channels, inner) */
} dequantize_rows;

static void dequantize_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const dequantize_rows *q = ctx;
    for (int64_t r = begin; r < end; r++) {
        int64_t c = r % q->channels, zp = zero_point_at(q->zero_point, c);
        for (int64_t i = r * q->inner; i < (r + 1) * q->inner; i++)
            q->y[i] = (float)(level_at(q->x, i) - zp) * q->scales[c];
    }
}

static kiln_status dequantize_forward(const kn_op_call *call) {
    const kn_tensor *x, *scale, *zero_point;
    KN_TRY(quant_inputs(call->in, call->node->n_in, &x, &scale, &zero_point));
    quant_layout q;
    KN_TRY(quant_layout_make(call->node, &x->shape, scale, zero_point, &q));
    dequantize_rows rows = {.x = x, .zero_point = zero_point, .scales = kn_f32(scale), .channels = q.channels,
                            .inner = q.inner, .y = kn_f32(call->out[0])};
    int64_t n = q.outer * q.channels;
    kn_parallel_range(n, kn_threads_for(n * q.inner, KN_MOVE_PARALLEL_MIN), dequantize_range, &rows);
    return KILN_OK;
}

const kn_op kn_op_quantizelinear = {
    .name = "QuantizeLinear", .min_inputs = 2, .max_inputs = 3,
    .infer = quantize_infer, .forward = quantize_forward,
};

const kn_op kn_op_dequantizelinear = {
    .name = "DequantizeLinear", .min_inputs = 2, .max_inputs = 3,
    .infer = dequantize_infer, .forward = dequantize_forward,
};
