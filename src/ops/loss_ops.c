/* ONNX's loss ops, forward only: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.
 *
 *     NegativeLogLikelihoodLoss(input (N, C, d...), target (N, d...) i64/i32, weight (C) optional)
 *         loss[n, d] = -input[n, target[n, d], d] * weight[target[n, d]] (weight 1 when absent);
 *         0 where target = ignore_index (an optional attribute), which also gets weight 0.
 *         reduction "mean" (default): sum of loss / sum of the weights used; "sum"; "none": (N, d...)
 *     SoftmaxCrossEntropyLoss(scores (N, C, d...), labels, weights): log_prob = log softmax over C,
 *         then the NLL loss above; output 1 (optional) is log_prob
 *
 * Sums are taken in double. A target outside [0, C) that is not ignore_index fails with
 * KILN_ERR_INVALID_ARG. f32 only; the training losses of kiln train are in src/train.
 */
#include <math.h>
#include <string.h>

#include "core/status.h"
#include "ops/movement.h"

typedef enum loss_reduction { LOSS_NONE, LOSS_SUM, LOSS_MEAN } loss_reduction;

static kiln_status loss_reduction_of(const kn_node *node, loss_reduction *r) {
    const char *s = kn_node_string(node, "reduction", "mean");
    if (strcmp(s, "none") == 0)
        *r = LOSS_NONE;
    else if (strcmp(s, "sum") == 0)
        *r = LOSS_SUM;
    else if (strcmp(s, "mean") == 0)
        *r = LOSS_MEAN;
    else
        return kn_fail(KILN_ERR_INVALID_ARG, "reduction '%s' is not none, sum or mean", s);
    return KILN_OK;
}

/* Checks (input, target, weight) and sets output 0: the loss, a scalar unless reduction = none. */
static kiln_status loss_infer_common(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0), *t = kn_node_input(g, node, 1),
                   *w = kn_node_input(g, node, 2);
    if (!x || !t)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs 0 and 1 are required");
    if (x->dtype != KN_F32 || (w && w->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32", x->name,
                       kn_dtype_name(x->dtype));
    if (t->dtype != KN_I64 && t->dtype != KN_I32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "target '%s' is %s; expected i64 or i32", t->name,
                       kn_dtype_name(t->dtype));
    char xs[96], ts[96];
    bool fits = x->shape.ndim >= 2 && t->shape.ndim == x->shape.ndim - 1 &&
                t->shape.d[0] == x->shape.d[0];
    for (int k = 2; fits && k < x->shape.ndim; k++)
        fits = t->shape.d[k - 1] == x->shape.d[k];
    if (!fits)
        return kn_fail(KILN_ERR_SHAPE, "target %s does not fit input %s: expected (N, d...) for "
                       "(N, C, d...)", kn_shape_str(&t->shape, ts, sizeof ts),
                       kn_shape_str(&x->shape, xs, sizeof xs));
    if (w && (w->shape.ndim != 1 || w->shape.d[0] != x->shape.d[1]))
        return kn_fail(KILN_ERR_SHAPE, "weight must be 1-D with one value per class (%lld)",
                       (long long)x->shape.d[1]);
    loss_reduction r = LOSS_MEAN;
    KN_TRY(loss_reduction_of(node, &r));
    kn_set_output(g, node, 0, r == LOSS_NONE ? &t->shape : &(kn_shape){0, {0}}, KN_F32);
    return KILN_OK;
}

/* The NLL loss of log-probabilities lp (N, C, D) (D the product of d...) into y. */
static kiln_status nll_run(const kn_node *node, const float *lp, const kn_shape *x_shape,
                           const kn_tensor *target, const float *weight, float *y) {
    loss_reduction r = LOSS_MEAN;
    KN_TRY(loss_reduction_of(node, &r));
    const kn_attr *ignore_attr = kn_node_attr(node, "ignore_index");
    int64_t ignore = kn_node_int(node, "ignore_index", 0);
    int64_t n = x_shape->d[0], c = x_shape->d[1], d = kn_shape_span(x_shape, 2, x_shape->ndim);
    double total = 0.0, weights = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            int64_t at = i * d + j, cls = kn_int_at(target, at);
            float loss = 0.0f;
            if (!ignore_attr || cls != ignore) {
                if (cls < 0 || cls >= c)
                    return kn_fail(KILN_ERR_INVALID_ARG, "target %lld is outside [0, %lld)",
                                   (long long)cls, (long long)c);
                float w = weight ? weight[cls] : 1.0f;
                loss = -lp[(i * c + cls) * d + j] * w;
                weights += w;
            }
            if (r == LOSS_NONE)
                y[at] = loss;
            total += loss;
        }
    if (r == LOSS_SUM)
        y[0] = (float)total;
    else if (r == LOSS_MEAN)
        y[0] = (float)(total / weights);
    return KILN_OK;
}

static kiln_status nll_forward(const kn_op_call *call) {
    const kn_tensor *w = call->node->n_in > 2 ? call->in[2] : NULL;
    return nll_run(call->node, kn_f32(call->in[0]), &call->in[0]->shape, call->in[1],
                   w ? kn_f32(w) : NULL, kn_f32(call->out[0]));
}

static kiln_status sce_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(loss_infer_common(g, node));
    if (node->n_out > 1)
        kn_set_output(g, node, 1, &kn_node_input(g, node, 0)->shape, KN_F32);
    return KILN_OK;
}

/* log softmax over dim 1 of x (N, C, D) into lp. */
static void log_softmax_classes(const float *x, const kn_shape *shape, float *lp) {
    int64_t n = shape->d[0], c = shape->d[1], d = kn_shape_span(shape, 2, shape->ndim);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) {
            const float *xs = x + i * c * d + j;
            float m = -INFINITY;
            for (int64_t k = 0; k < c; k++)
                m = xs[k * d] > m ? xs[k * d] : m;
            double s = 0.0;
            for (int64_t k = 0; k < c; k++)
                s += exp((double)xs[k * d] - m);
            float lse = (float)(m + log(s));
            for (int64_t k = 0; k < c; k++)
                lp[i * c * d + k * d + j] = xs[k * d] - lse;
        }
}

static kiln_status sce_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const kn_tensor *w = call->node->n_in > 2 ? call->in[2] : NULL;
    float *lp; /* (N, C, d...) */
    if (call->node->n_out > 1) {
        lp = kn_f32(call->out[1]);
    } else {
        lp = kn_op_scratch(call->ctx, sizeof(float) * (size_t)kn_numel(x));
        if (!lp && kn_numel(x) > 0)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for the log-probabilities");
    }
    log_softmax_classes(kn_f32(x), &x->shape, lp);
    return nll_run(call->node, lp, &x->shape, call->in[1], w ? kn_f32(w) : NULL,
                   kn_f32(call->out[0]));
}

static size_t sce_workspace(const kn_graph *g, const kn_node *node) {
    return sizeof(float) * (size_t)kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}

static int64_t loss_flops(const kn_graph *g, const kn_node *node) {
    return kn_shape_numel(&kn_node_input(g, node, 1)->shape);
}

static int64_t sce_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(3, kn_shape_numel(&kn_node_input(g, node, 0)->shape));
}

const kn_op kn_op_negativeloglikelihoodloss = {
    .name = "NegativeLogLikelihoodLoss", .min_inputs = 2, .max_inputs = 3,
    .infer = loss_infer_common, .forward = nll_forward, .flops = loss_flops};
const kn_op kn_op_softmaxcrossentropyloss = {
    .name = "SoftmaxCrossEntropyLoss", .min_inputs = 2, .max_inputs = 3, .infer = sce_infer,
    .forward = sce_forward, .flops = sce_flops, .workspace = sce_workspace};
