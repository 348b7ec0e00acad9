/* BatchNormalization: per-channel normalisation of X (N, C, ...).
 *
 * Eval mode normalises with the running statistics. Training mode normalises with the batch mean and
 * biased batch variance and updates the running statistics in place, as PyTorch does:
 *   running = running * momentum + batch * (1 - momentum)   (ONNX momentum 0.9 == PyTorch 0.1)
 * with the unbiased batch variance going into running_var. Backward recomputes the batch statistics
 * from X instead of saving them, so it holds no state and never touches the running statistics.
 *
 * Each channel's sums run in double over (N, spatial) in a fixed order by one thread, so results are
 * bit-identical whatever the thread count.
 */
#include <math.h>

#include "ops/op.h"

enum { BN_PARALLEL_MIN = 1 << 15 }; /* elements below which threads cost more than they save */

enum { BN_X, BN_SCALE, BN_B, BN_MEAN, BN_VAR };

/* X viewed as (N, C, inner): inner is the product of the spatial dims, 1 for a 2-D (N, C) input. */
typedef struct bn_view {
    int64_t N, C, inner;
} bn_view;

static bn_view bn_view_of(const kn_shape *x) {
    return (bn_view){x->d[0], x->d[1], kn_shape_span(x, 2, x->ndim)};
}

static kiln_status bn_infer(kn_graph *g, const kn_node *node) {
    static const char *const names[] = {"X", "scale", "B", "input_mean", "input_var"};
    for (int i = 0; i < 5; i++) {
        const kn_value *v = kn_node_input(g, node, i);
        if (!v)
            return kn_fail(KILN_ERR_INVALID_ARG, "input %s is missing", names[i]);
        if (v->dtype != KN_F32)
            return kn_fail(KILN_ERR_UNSUPPORTED, "input %s has dtype %s; only f32 is supported",
                           names[i], kn_dtype_name(v->dtype));
    }
    if (node->n_out != 1)
        return kn_fail(KILN_ERR_UNSUPPORTED,
                       "%d outputs requested; only Y is supported (no running_mean/var outputs)",
                       node->n_out);
    const kn_shape *x = &kn_node_input(g, node, BN_X)->shape;
    char buf[96];
    if (x->ndim < 2)
        return kn_fail(KILN_ERR_SHAPE, "X has shape %s; expected (N, C, ...) with rank >= 2",
                       kn_shape_str(x, buf, sizeof buf));
    for (int i = BN_SCALE; i <= BN_VAR; i++) {
        const kn_shape *p = &kn_node_input(g, node, i)->shape;
        if (p->ndim != 1 || p->d[0] != x->d[1])
            return kn_fail(KILN_ERR_SHAPE, "%s has shape %s; expected (%lld), the channels of X",
                           names[i], kn_shape_str(p, buf, sizeof buf), (long long)x->d[1]);
    }
    float epsilon = kn_node_float(node, "epsilon", 1e-5f);
    float momentum = kn_node_float(node, "momentum", 0.9f);
    if (!(epsilon > 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "epsilon %g must be > 0", epsilon);
    if (!(momentum >= 0 && momentum <= 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "momentum %g must be in [0, 1]", momentum);
    kn_value *y = kn_node_output(g, node, 0);
    y->shape = *x;
    y->dtype = KN_F32;
    return KILN_OK;
}

/* Mean and biased variance of channel c over (N, inner); two passes for accuracy. */
static void bn_channel_moments(const float *x, bn_view v, int64_t c, double *mean, double *var) {
    double sum = 0;
    for (int64_t n = 0; n < v.N; n++) {
        const float *plane = x + (n * v.C + c) * v.inner;
        for (int64_t i = 0; i < v.inner; i++)
            sum += plane[i];
    }
    double count = (double)(v.N * v.inner);
    double m = sum / count;
    double squares = 0;
    for (int64_t n = 0; n < v.N; n++) {
        const float *plane = x + (n * v.C + c) * v.inner;
        for (int64_t i = 0; i < v.inner; i++) {
            double d = plane[i] - m;
            squares += d * d;
        }
    }
    *mean = m;
    *var = squares / count;
}

/* y = (x - mean) * (scale / sqrt(var + eps)) + B over one channel. */
static void bn_channel_normalize(const float *x, float *y, bn_view v, int64_t c, double mean,
                                 double var, float scale, float bias, float epsilon) {
    float shift = (float)mean;
    float gain = (float)(scale / sqrt(var + epsilon));
    for (int64_t n = 0; n < v.N; n++) {
        const float *xp = x + (n * v.C + c) * v.inner;
        float *yp = y + (n * v.C + c) * v.inner;
        for (int64_t i = 0; i < v.inner; i++)
            yp[i] = (xp[i] - shift) * gain + bias;
    }
}

static kiln_status bn_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[BN_X];
    bn_view v = bn_view_of(&x->shape);
    const float *xd = kn_f32(x);
    const float *scale = kn_f32(call->in[BN_SCALE]);
    const float *bias = kn_f32(call->in[BN_B]);
    float *running_mean = kn_f32(call->in[BN_MEAN]); // (C), updated in training
    float *running_var = kn_f32(call->in[BN_VAR]);   // (C), updated in training
    float *y = kn_f32(call->out[0]);
    float epsilon = kn_node_float(call->node, "epsilon", 1e-5f);
    float momentum = kn_node_float(call->node, "momentum", 0.9f);
    int64_t count = v.N * v.inner;
    bool training = call->ctx->training;
    if (training && count < 2)
        return kn_fail(KILN_ERR_SHAPE,
                       "BatchNormalization: training needs more than 1 value per channel, got %lld",
                       (long long)count);

#pragma omp parallel for schedule(static) if (v.N * v.C * v.inner >= BN_PARALLEL_MIN)
    for (int64_t c = 0; c < v.C; c++) {
        double mean = running_mean[c], var = running_var[c];
        if (training) {
            bn_channel_moments(xd, v, c, &mean, &var);
            double unbiased_var = var * (double)count / (double)(count - 1);
            running_mean[c] = (float)(running_mean[c] * (double)momentum + mean * (1.0 - momentum));
            running_var[c] =
                (float)(running_var[c] * (double)momentum + unbiased_var * (1.0 - momentum));
        }
        bn_channel_normalize(xd, y, v, c, mean, var, scale[c], bias[c], epsilon);
    }
    return KILN_OK;
}

/* The gradients of one channel. Training (batch statistics), with xhat = (x - mean) / std:
 *   dx = scale / std * (dy - mean(dy) - xhat * mean(dy * xhat))
 * Eval (running statistics, a fixed affine map): dx = dy * scale / std, and the running mean and
 * variance, being inputs of that map, get their gradients too. */
static void bn_channel_backward(const kn_op_call *call, bn_view v, int64_t c) {
    const float *x = kn_f32(call->in[BN_X]);
    const float *dy = kn_f32(call->dout[0]);
    float *dx = call->din[BN_X] ? kn_f32(call->din[BN_X]) : NULL;
    float epsilon = kn_node_float(call->node, "epsilon", 1e-5f);
    bool training = call->ctx->training;
    double scale = kn_f32(call->in[BN_SCALE])[c];

    double mean, var;
    if (training) {
        bn_channel_moments(x, v, c, &mean, &var);
    } else {
        mean = kn_f32(call->in[BN_MEAN])[c];
        var = kn_f32(call->in[BN_VAR])[c];
    }
    double inv_std = 1.0 / sqrt(var + epsilon);
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < v.N; n++) {
        const float *xp = x + (n * v.C + c) * v.inner;
        const float *dyp = dy + (n * v.C + c) * v.inner;
        for (int64_t i = 0; i < v.inner; i++) {
            sum_dy += dyp[i];
            sum_dy_xhat += dyp[i] * ((xp[i] - mean) * inv_std);
        }
    }
    if (call->din[BN_SCALE])
        kn_f32(call->din[BN_SCALE])[c] += (float)sum_dy_xhat;
    if (call->din[BN_B])
        kn_f32(call->din[BN_B])[c] += (float)sum_dy;
    if (!training && call->din[BN_MEAN])
        kn_f32(call->din[BN_MEAN])[c] += (float)(-scale * inv_std * sum_dy);
    if (!training && call->din[BN_VAR])
        kn_f32(call->din[BN_VAR])[c] += (float)(-0.5 * scale * inv_std * inv_std * sum_dy_xhat);
    if (!dx)
        return;

    double count = (double)(v.N * v.inner);
    double mean_dy = training ? sum_dy / count : 0;
    double mean_dy_xhat = training ? sum_dy_xhat / count : 0;
    double gain = scale * inv_std;
    for (int64_t n = 0; n < v.N; n++) {
        const float *xp = x + (n * v.C + c) * v.inner;
        const float *dyp = dy + (n * v.C + c) * v.inner;
        float *dxp = dx + (n * v.C + c) * v.inner;
        for (int64_t i = 0; i < v.inner; i++) {
            double xhat = (xp[i] - mean) * inv_std;
            dxp[i] += (float)(gain * (dyp[i] - mean_dy - xhat * mean_dy_xhat));
        }
    }
}

static kiln_status bn_backward(const kn_op_call *call) {
    if (!call->dout[0])
        return KILN_OK;
    bn_view v = bn_view_of(&call->in[BN_X]->shape);
#pragma omp parallel for schedule(static) if (v.N * v.C * v.inner >= BN_PARALLEL_MIN)
    for (int64_t c = 0; c < v.C; c++)
        bn_channel_backward(call, v, c);
    return KILN_OK;
}

/* At inference the op folds into one multiply-add per element: y = x * a[c] + b[c]. */
static int64_t bn_flops(const kn_graph *g, const kn_node *node) {
    return 2 * kn_shape_numel(&kn_node_input(g, node, BN_X)->shape);
}

const kn_op kn_op_batchnormalization = {
    .name = "BatchNormalization",
    .min_inputs = 5,
    .max_inputs = 5,
    .infer = bn_infer,
    .forward = bn_forward,
    .backward = bn_backward,
    .flops = bn_flops,
};
