/* Dropout: in training y = x * mask / (1 - ratio), in eval y = x.
 *
 * The mask is not stored: element i is kept when kn_hash_uniform(key, i) >= ratio, with the key
 * derived from the run seed, the training step and the node index. Forward and backward therefore see
 * the same mask, and it does not depend on the thread count. ctx->training decides the mode; ONNX's
 * optional training_mode input is ignored. In eval the copy works for every dtype (an ONNX model may
 * keep an f16 Dropout); training needs f32.
 */
#include <string.h>

#include "core/rng.h"
#include "ops/op.h"

enum { DROPOUT_PARALLEL_MIN = 1 << 15 }; /* elements below which threads cost more than they save */

/* The drop ratio: the constant second input (opset 12) when given, else the "ratio" attribute. */
static kiln_status dropout_ratio(const kn_node *node, const kn_tensor *ratio_input, float *ratio) {
    float r = kn_node_float(node, "ratio", 0.5f);
    if (ratio_input) {
        if (ratio_input->dtype != KN_F32 || kn_shape_numel(&ratio_input->shape) != 1)
            return kn_fail(KILN_ERR_UNSUPPORTED,
                           "the ratio input must be one f32 value, got %lld of dtype %s",
                           (long long)kn_shape_numel(&ratio_input->shape),
                           kn_dtype_name(ratio_input->dtype));
        r = kn_f32(ratio_input)[0];
    }
    if (!(r >= 0 && r < 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "ratio %g must be in [0, 1)", r);
    *ratio = r;
    return KILN_OK;
}

static const kn_tensor *dropout_ratio_input(const kn_op_call *call) {
    return call->node->n_in > 1 ? call->in[1] : NULL;
}

/* The mask stream of this node at this step. */
static uint64_t dropout_key(const kn_op_ctx *ctx) {
    return kn_mix64(kn_mix64(kn_mix64(ctx->seed) ^ ctx->step) ^ (uint64_t)ctx->node_index);
}

static kiln_status dropout_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    const kn_value *ratio_value = kn_node_input(g, node, 1);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input data is missing");
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "%d outputs requested; only output 0 is supported (no mask output)",
                       node->n_out);
    kn_tensor ratio_input;
    if (ratio_value) {
        if (!ratio_value->data)
            return kn_fail(KILN_ERR_UNSUPPORTED, "the ratio input '%s' must be a constant",
                           ratio_value->name);
        ratio_input = (kn_tensor){ratio_value->shape, ratio_value->dtype, ratio_value->data};
    }
    float ratio;
    KN_TRY(dropout_ratio(node, ratio_value ? &ratio_input : NULL, &ratio));
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = x->shape;
    y->dtype = x->dtype;
    return KILN_OK;
}

static kiln_status dropout_forward(const kn_op_call *call) {
    const kn_tensor *input = call->in[0];
    int64_t n = kn_numel(input);
    if (!call->ctx->training) {
        size_t bytes = (size_t)n * kn_dtype_size(input->dtype);
        if (call->out[0]->data != input->data && bytes > 0)
            memcpy(call->out[0]->data, input->data, bytes);
        return KILN_OK;
    }
    if (input->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "training Dropout on %s data; only f32 is supported",
                       kn_dtype_name(input->dtype));
    const float *x = kn_f32(input);
    float *y = kn_f32(call->out[0]);
    float ratio;
    KN_TRY(dropout_ratio(call->node, dropout_ratio_input(call), &ratio));
    float gain = 1.0f / (1.0f - ratio);
    uint64_t key = dropout_key(call->ctx);
#pragma omp parallel for schedule(static) if (n >= DROPOUT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        y[i] = kn_hash_uniform(key, (uint64_t)i) >= ratio ? x[i] * gain : 0.0f;
    return KILN_OK;
}

static kiln_status dropout_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout || !call->din[0])
        return KILN_OK;
    if (call->in[0]->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "no Dropout gradient for %s data (only f32)",
                       kn_dtype_name(call->in[0]->dtype));
    const float *dy = kn_f32(dout);
    float *dx = kn_f32(call->din[0]);
    int64_t n = kn_numel(dout);
    const bool fresh = kn_din_fresh(call, 0);
    if (!call->ctx->training) {
#pragma omp parallel for schedule(static) if (n >= DROPOUT_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            dx[i] = (fresh ? 0.0f : dx[i]) + dy[i];
        return KILN_OK;
    }
    float ratio;
    KN_TRY(dropout_ratio(call->node, dropout_ratio_input(call), &ratio));
    float gain = 1.0f / (1.0f - ratio);
    uint64_t key = dropout_key(call->ctx);
#pragma omp parallel for schedule(static) if (n >= DROPOUT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        dx[i] = (fresh ? 0.0f : dx[i]) + (kn_hash_uniform(key, (uint64_t)i) >= ratio ? dy[i] * gain : 0.0f);
    return KILN_OK;
}

/* No flops entry: at inference Dropout is an identity copy. */
const kn_op kn_op_dropout = {
    .name = "Dropout",
    .min_inputs = 1,
    .max_inputs = 3,
    .infer = dropout_infer,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .backward_stores = true,
};
