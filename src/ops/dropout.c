/* Dropout: in training y = x * mask / (1 - ratio), in eval y = x; the optional output `mask` (bool)
 * says which elements were kept (all of them in eval).
 *
 * The mode is training when kiln trains (ctx->training) or when ONNX's optional training_mode input
 * (opset 12+, a bool scalar, read at run time) is true. The mask is not stored: element i is kept
 * when kn_hash32_uniform(key, i) >= ratio, with the key derived from the run seed, the training step
 * and the node index (ONNX's `seed` attribute is not used). Forward and backward therefore see the
 * same mask, and it does not depend on the thread count. In eval the copy works for every dtype (an
 * ONNX model may keep an f16 Dropout); training needs f32.
 */
#include <string.h>

#include "core/threads.h"
#include "core/rng.h"
#include "ops/movement.h"
#include "ops/op.h"

enum { DROPOUT_PARALLEL_MIN = KN_PARALLEL_MIN_MEMORY }; /* elements below which threads cost more than they save */

enum { DROPOUT_DATA, DROPOUT_RATIO, DROPOUT_TRAINING_MODE };

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

static const kn_tensor *dropout_input(const kn_op_call *call, int i) {
    return call->node->n_in > i ? call->in[i] : NULL;
}

/* Whether this run drops: kiln trains, or the training_mode input is true. */
static bool dropout_training(const kn_op_call *call) {
    const kn_tensor *mode = dropout_input(call, DROPOUT_TRAINING_MODE);
    return call->ctx->training || (mode && *(const uint8_t *)mode->data != 0);
}

/* The mask stream of this node at this step. */
static uint64_t dropout_key(const kn_op_ctx *ctx) {
    return kn_mix64(kn_mix64(kn_mix64(ctx->seed) ^ ctx->step) ^ (uint64_t)ctx->node_index);
}

static kiln_status dropout_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, DROPOUT_DATA);
    const kn_value *ratio_value = kn_node_input(g, node, DROPOUT_RATIO);
    const kn_value *mode = kn_node_input(g, node, DROPOUT_TRAINING_MODE);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input data is missing");
    if (node->n_out > 2)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs requested; Dropout has 2 (output, mask)",
                       node->n_out);
    if (mode && (mode->dtype != KN_BOOL || kn_shape_numel(&mode->shape) != 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "training_mode '%s' must be one bool, got %lld of dtype "
                       "%s", mode->name, (long long)kn_shape_numel(&mode->shape),
                       kn_dtype_name(mode->dtype));
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
    if (node->n_out > 1) {
        kn_value *mask = kn_node_output(g, node, 1);
        mask->shape = x->shape;
        mask->dtype = KN_BOOL;
    }
    return KILN_OK;
}

/* One pass of dropout_map over a range of elements. */
typedef struct dropout_pass {
    const float *src;
    float *dst;
    uint8_t *mask;
    uint64_t key;
    float ratio, gain;
    bool accumulate; /* dst += kept(src), else dst = kept(src) */
} dropout_pass;

/* Called with `accumulate` constant, so that each inlined loop is branch-free. */
static inline void dropout_kept_loop(const dropout_pass *d, int64_t begin, int64_t end, bool accumulate) {
    const float *src = d->src;
    float *dst = d->dst;
    const uint64_t key = d->key;
    const float ratio = d->ratio, gain = d->gain;
    for (int64_t i = begin; i < end; i++) {
        float x = src[i];
        float kept = kn_hash32_uniform(key, (uint32_t)i) >= ratio ? x * gain : 0.0f;
        dst[i] = accumulate ? dst[i] + kept : kept;
    }
}

static void dropout_kept_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const dropout_pass *d = ctx;
    if (d->accumulate)
        dropout_kept_loop(d, begin, end, true);
    else
        dropout_kept_loop(d, begin, end, false);
}

static void dropout_mask_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const dropout_pass *d = ctx;
    uint8_t *mask = d->mask;
    const uint64_t key = d->key;
    const float ratio = d->ratio;
    for (int64_t i = begin; i < end; i++)
        mask[i] = kn_hash32_uniform(key, (uint32_t)i) >= ratio;
}

/* The training map of forward (dst = kept(src), and the mask when wanted) and backward (dst +=
 * kept(src), or = into a fresh gradient): element i is kept, scaled by 1 / (1 - ratio), where the
 * node's stream is >= ratio. The loops load src[i] whatever the draw, so that they have no branch
 * and vectorize. */
static void dropout_map(const kn_op_call *call, float ratio, const float *src, float *dst,
                        bool accumulate, uint8_t *mask) {
    int64_t n = kn_numel(call->in[DROPOUT_DATA]);
    dropout_pass d = {.src = src, .dst = dst, .mask = mask, .key = dropout_key(call->ctx), .ratio = ratio,
                      .gain = 1.0f / (1.0f - ratio), .accumulate = accumulate};
    int threads = kn_threads_for(n, DROPOUT_PARALLEL_MIN);
    kn_parallel_range(n, threads, dropout_kept_range, &d);
    if (mask)
        kn_parallel_range(n, threads, dropout_mask_range, &d);
}

static kiln_status dropout_forward(const kn_op_call *call) {
    const kn_tensor *input = call->in[DROPOUT_DATA];
    int64_t n = kn_numel(input);
    uint8_t *mask = call->node->n_out > 1 ? call->out[1]->data : NULL;
    if (!dropout_training(call)) {
        size_t bytes = (size_t)n * kn_dtype_size(input->dtype);
        if (call->out[0]->data != input->data && bytes > 0)
            memcpy(call->out[0]->data, input->data, bytes);
        if (mask && n > 0)
            memset(mask, 1, (size_t)n);
        return KILN_OK;
    }
    if (input->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "training Dropout on %s data; only f32 is supported",
                       kn_dtype_name(input->dtype));
    float ratio;
    KN_TRY(dropout_ratio(call->node, dropout_input(call, DROPOUT_RATIO), &ratio));
    dropout_map(call, ratio, kn_f32(input), kn_f32(call->out[0]), false, mask);
    return KILN_OK;
}

/* The mask output is not differentiable: only output 0's gradient flows. */
static kiln_status dropout_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout[0];
    if (!dout || !call->din[DROPOUT_DATA])
        return KILN_OK;
    if (call->in[DROPOUT_DATA]->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "no Dropout gradient for %s data (only f32)",
                       kn_dtype_name(call->in[DROPOUT_DATA]->dtype));
    if (!dropout_training(call)) /* the eval gradient: dy passes through unchanged */
        return kn_copy_backward(call);
    float ratio;
    KN_TRY(dropout_ratio(call->node, dropout_input(call, DROPOUT_RATIO), &ratio));
    dropout_map(call, ratio, kn_f32(dout), kn_f32(call->din[DROPOUT_DATA]), !kn_din_fresh(call, DROPOUT_DATA), NULL);
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
    .in_place = true,
    .trains_differently = true,
};
