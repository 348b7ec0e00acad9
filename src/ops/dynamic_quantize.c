/* DynamicQuantizeLinear(x) -> y (u8), y_scale (f32 scalar), y_zero_point (u8 scalar): x quantized with
 * the scale and zero point its own range gives, as onnx's reference and onnxruntime do:
 *     lo = min(0, min x), hi = max(0, max x)          (the range always holds 0)
 *     y_scale = (hi - lo) / 255
 *     y_zero_point = saturate(round(-lo / y_scale))
 *     y = saturate(round(x / y_scale) + y_zero_point)
 * rounding half to even, saturating to [0, 255]. An all-zero x (y_scale 0) gives zero point 0 and y 0.
 * x is f32. No gradient.
 */
#include <math.h>

#include "core/status.h"
#include "ops/movement.h"

static kiln_status dql_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 3));
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x || x->dtype != KN_F32)
        return kn_fail(KILN_ERR_INVALID_ARG, "x must be f32");
    kn_shape scalar = {.ndim = 0};
    kn_set_output(g, node, 0, &x->shape, KN_U8);
    kn_set_output(g, node, 1, &scalar, KN_F32);
    kn_set_output(g, node, 2, &scalar, KN_U8);
    return KILN_OK;
}

static float saturate_u8(float v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static kiln_status dql_forward(const kn_op_call *call) {
    const float *x = call->in[0]->data;
    int64_t n = kn_shape_numel(&call->in[0]->shape);
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    float scale = (hi - lo) / 255.0f;
    float zero_point = scale > 0 ? saturate_u8(nearbyintf(-lo / scale)) : 0;
    uint8_t *y = call->out[0]->data;
    for (int64_t i = 0; i < n; i++)
        y[i] = scale > 0 ? (uint8_t)saturate_u8(nearbyintf(x[i] / scale) + zero_point) : 0;
    *(float *)call->out[1]->data = scale;
    *(uint8_t *)call->out[2]->data = (uint8_t)zero_point;
    return KILN_OK;
}

const kn_op kn_op_dynamicquantizelinear = {.name = "DynamicQuantizeLinear", .min_inputs = 1, .max_inputs = 1,
                                           .infer = dql_infer, .forward = dql_forward};
