/* Softmax and LogSoftmax along one axis (opset-13 semantics: attribute axis, default -1, normalises
 * along that axis only).
 *
 * The input is seen as (outer, axis_len, inner): every (outer, inner) pair is one lane of axis_len
 * values `inner` apart, normalised on its own. Both forms subtract the lane's max before exp, so large
 * logits (1000) neither overflow nor lose the small entries:
 *     softmax:    y_k = exp(x_k - m) / s             s = sum_j exp(x_j - m),  m = max_j x_j
 *     logsoftmax: y_k = (x_k - m) - log(s)
 * Softmax over a contiguous axis takes exp from kernels/vmath (vectorized, within a few ULP of libm).
 * Backward, from the saved output:
 *     softmax:    dx_k += y_k (dy_k - sum_j dy_j y_j)
 *     logsoftmax: dx_k += dy_k - exp(y_k) sum_j dy_j
 */
#include <math.h>

#include "core/threads.h"
#include "core/status.h"
#include "kernels/vmath.h"
#include "ops/op.h"

/* Below this many elements a loop stays on one thread: waking the team costs more than it saves. */
#define KN_SOFTMAX_PARALLEL_MIN 16384

typedef struct softmax_lanes {
    int64_t outer, axis_len, inner;
} softmax_lanes;

static kiln_status softmax_axis(const kn_node *node, const kn_shape *shape, int *axis) {
    int64_t attr = kn_node_int(node, "axis", -1);
    *axis = kn_axis_normalize(attr, shape->ndim);
    if (*axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for a %d-D input", (long long)attr,
                       shape->ndim);
    return KILN_OK;
}

static kiln_status softmax_lanes_of(const kn_node *node, const kn_shape *shape, softmax_lanes *lanes) {
    int axis;
    KN_TRY(softmax_axis(node, shape, &axis));
    lanes->outer = kn_shape_span(shape, 0, axis);
    lanes->axis_len = shape->d[axis];
    lanes->inner = kn_shape_span(shape, axis + 1, shape->ndim);
    return KILN_OK;
}

/* Offset of the first value of lane `lane` (0 <= lane < outer * inner). */
static int64_t lane_start(const softmax_lanes *lanes, int64_t lane) {
    int64_t o = lane / lanes->inner, i = lane % lanes->inner;
    return o * lanes->axis_len * lanes->inner + i;
}

static kiln_status softmax_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; only f32 is supported", x->name,
                       kn_dtype_name(x->dtype));
    int axis;
    KN_TRY(softmax_axis(node, &x->shape, &axis));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = KN_F32;
    return KILN_OK;
}

static float lane_max(const float *x, int64_t n, int64_t stride) {
    float m = -INFINITY;
    for (int64_t k = 0; k < n; k++)
        if (x[k * stride] > m)
            m = x[k * stride];
    return m;
}

/* A contiguous lane (the softmax of a last axis): y = x - m, then e^y by kernels/vmath in place. The
 * sum runs in the same order as the strided loop below. */
static void softmax_lane_contiguous(const float *x, float *y, int64_t n) {
    float m = lane_max(x, n, 1);
    for (int64_t k = 0; k < n; k++)
        y[k] = x[k] - m;
    kn_vmath_best()->exp(y, y, n);
    float s = 0.0f;
    for (int64_t k = 0; k < n; k++)
        s += y[k];
    float inv_s = 1.0f / s;
    for (int64_t k = 0; k < n; k++)
        y[k] *= inv_s;
}

static void softmax_lane(const float *x, float *y, int64_t n, int64_t stride) {
    if (stride == 1) {
        softmax_lane_contiguous(x, y, n);
        return;
    }
    float m = lane_max(x, n, stride);
    float s = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float e = expf(x[k * stride] - m);
        y[k * stride] = e;
        s += e;
    }
    float inv_s = 1.0f / s;
    for (int64_t k = 0; k < n; k++)
        y[k * stride] *= inv_s;
}

static void logsoftmax_lane(const float *x, float *y, int64_t n, int64_t stride) {
    float m = lane_max(x, n, stride);
    float s = 0.0f;
    for (int64_t k = 0; k < n; k++)
        s += expf(x[k * stride] - m);
    float log_s = logf(s);
    for (int64_t k = 0; k < n; k++) /* (x - m) first: exact for the large entries, log_s then adds */
        y[k * stride] = (x[k * stride] - m) - log_s;
}

static void softmax_lane_backward(const float *y, const float *dy, float *dx, int64_t n,
                                  int64_t stride) {
    float dot = 0.0f;
    for (int64_t k = 0; k < n; k++)
        dot += dy[k * stride] * y[k * stride];
    for (int64_t k = 0; k < n; k++)
        dx[k * stride] += y[k * stride] * (dy[k * stride] - dot);
}

static void logsoftmax_lane_backward(const float *y, const float *dy, float *dx, int64_t n,
                                     int64_t stride) {
    float sum = 0.0f;
    for (int64_t k = 0; k < n; k++)
        sum += dy[k * stride];
    for (int64_t k = 0; k < n; k++)
        dx[k * stride] += dy[k * stride] - expf(y[k * stride]) * sum;
}

static kiln_status softmax_forward_either(const kn_op_call *call, bool log_form) {
    softmax_lanes lanes;
    KN_TRY(softmax_lanes_of(call->node, &call->in[0]->shape, &lanes));
    const float *x = kn_f32(call->in[0]);
    float *y = kn_f32(call->out[0]);
    int64_t n_elements = kn_numel(call->in[0]);
    if (n_elements == 0)
        return KILN_OK;
    int64_t n_lanes = lanes.outer * lanes.inner;
#pragma omp parallel for num_threads(kn_threads_get()) schedule(static) if (n_elements >= KN_SOFTMAX_PARALLEL_MIN)
    for (int64_t lane = 0; lane < n_lanes; lane++) {
        int64_t start = lane_start(&lanes, lane);
        if (log_form)
            logsoftmax_lane(x + start, y + start, lanes.axis_len, lanes.inner);
        else
            softmax_lane(x + start, y + start, lanes.axis_len, lanes.inner);
    }
    return KILN_OK;
}

static kiln_status softmax_backward_either(const kn_op_call *call, bool log_form) {
    if (!call->dout[0] || !call->din[0])
        return KILN_OK;
    softmax_lanes lanes;
    KN_TRY(softmax_lanes_of(call->node, &call->out[0]->shape, &lanes));
    const float *y = kn_f32(call->out[0]);
    const float *dy = kn_f32(call->dout[0]);
    float *dx = kn_f32(call->din[0]);
    int64_t n_elements = kn_numel(call->out[0]);
    if (n_elements == 0)
        return KILN_OK;
    int64_t n_lanes = lanes.outer * lanes.inner;
#pragma omp parallel for num_threads(kn_threads_get()) schedule(static) if (n_elements >= KN_SOFTMAX_PARALLEL_MIN)
    for (int64_t lane = 0; lane < n_lanes; lane++) {
        int64_t start = lane_start(&lanes, lane);
        if (log_form)
            logsoftmax_lane_backward(y + start, dy + start, dx + start, lanes.axis_len, lanes.inner);
        else
            softmax_lane_backward(y + start, dy + start, dx + start, lanes.axis_len, lanes.inner);
    }
    return KILN_OK;
}

static kiln_status softmax_forward(const kn_op_call *call) {
    return softmax_forward_either(call, false);
}

static kiln_status logsoftmax_forward(const kn_op_call *call) {
    return softmax_forward_either(call, true);
}

static kiln_status softmax_backward(const kn_op_call *call) {
    return softmax_backward_either(call, false);
}

static kiln_status logsoftmax_backward(const kn_op_call *call) {
    return softmax_backward_either(call, true);
}

/* Per element: max compare, subtract, exp, add to the sum, and the final scale or subtract. */
static int64_t softmax_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(5, kn_shape_numel(&kn_node_output(g, node, 0)->shape));
}

const kn_op kn_op_softmax = {.name = "Softmax", .min_inputs = 1, .max_inputs = 1,
                             .infer = softmax_infer, .forward = softmax_forward,
                             .backward = softmax_backward, .flops = softmax_flops};
const kn_op kn_op_logsoftmax = {.name = "LogSoftmax", .min_inputs = 1, .max_inputs = 1,
                                .infer = softmax_infer, .forward = logsoftmax_forward,
                                .backward = logsoftmax_backward, .flops = softmax_flops};
