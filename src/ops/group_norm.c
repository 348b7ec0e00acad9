/* GroupNormalization(X (N, C, spatial...), scale, bias): the C channels split into num_groups groups of
 * C / num_groups; each (n, group) normalised by its own mean and (biased) variance over the group's
 * channels and spatial positions, y = scale * (x - mean) / sqrt(variance + epsilon) + bias, epsilon
 * 1e-5 by default. scale and bias hold one value per group (opset 18) or per channel (opset 21); when
 * C equals num_groups the two read the same.
 *
 * f32; statistics in double. No gradient.
 */
#include <math.h>

#include "core/status.h"
#include "ops/movement.h"

/* num_groups checked against X; scale and bias of one value per group or per channel. */
static kiln_status groupnorm_check(const kn_node *node, const kn_shape *x, const kn_shape *scale,
                                   const kn_shape *bias, int64_t *groups) {
    if (x->ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "X must be (N, C, ...), got rank %d", x->ndim);
    *groups = kn_node_int(node, "num_groups", 0);
    int64_t C = x->d[1];
    if (*groups < 1 || C % *groups)
        return kn_fail(KILN_ERR_INVALID_ARG, "num_groups %lld must be positive and divide the %lld channels",
                       (long long)*groups, (long long)C);
    const kn_shape *params[2] = {scale, bias};
    for (int i = 0; i < 2; i++) {
        int64_t n = kn_shape_numel(params[i]);
        if (params[i]->ndim != 1 || (n != C && n != *groups))
            return kn_fail(KILN_ERR_SHAPE, "%s must be 1-D of num_groups (%lld) or C (%lld) values",
                           i ? "bias" : "scale", (long long)*groups, (long long)C);
    }
    return KILN_OK;
}

static kiln_status groupnorm_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0), *scale = kn_node_input(g, node, 1),
                   *bias = kn_node_input(g, node, 2);
    if (!x || !scale || !bias)
        return kn_fail(KILN_ERR_INVALID_ARG, "inputs X, scale and bias are required");
    if (x->dtype != KN_F32 || scale->dtype != KN_F32 || bias->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X, scale and bias must be f32");
    int64_t groups;
    KN_TRY(groupnorm_check(node, &x->shape, &scale->shape, &bias->shape, &groups));
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

/* The parameter of channel c: per channel when it has C values, else per group. */
static float param_at(const kn_tensor *p, int64_t c, int64_t C, int64_t per_group) {
    return ((const float *)p->data)[kn_shape_numel(&p->shape) == C ? c : c / per_group];
}

static kiln_status groupnorm_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0], *scale = call->in[1], *bias = call->in[2];
    int64_t groups;
    KN_TRY(groupnorm_check(call->node, &x->shape, &scale->shape, &bias->shape, &groups));
    double eps = kn_node_float(call->node, "epsilon", 1e-5f);
    int64_t N = x->shape.d[0], C = x->shape.d[1], per_group = C / groups;
    int64_t plane = kn_shape_span(&x->shape, 2, x->shape.ndim), span = per_group * plane;
    const float *src = x->data;
    float *dst = call->out[0]->data;
    for (int64_t b = 0; b < N * groups; b++) {
        const float *v = src + b * span;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < span; i++)
            mean += v[i];
        mean = span ? mean / (double)span : 0;
        for (int64_t i = 0; i < span; i++)
            var += (v[i] - mean) * (v[i] - mean);
        var = span ? var / (double)span : 0;
        double inv = 1.0 / sqrt(var + eps);
        for (int64_t i = 0; i < span; i++) {
            int64_t c = (b % groups) * per_group + i / plane;
            dst[b * span + i] = (float)(param_at(scale, c, C, per_group) * ((v[i] - mean) * inv) +
                                        param_at(bias, c, C, per_group));
        }
    }
    return KILN_OK;
}

const kn_op kn_op_groupnormalization = {.name = "GroupNormalization", .min_inputs = 3, .max_inputs = 3,
                                        .infer = groupnorm_infer, .forward = groupnorm_forward};
