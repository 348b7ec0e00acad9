/* BatchNormalization: per-channel normalisation of X (N, C, ...).
 *
 * Eval mode normalises with the running statistics. Batch mode normalises with the batch mean and
 * biased batch variance; it is on when kiln trains (ctx->training) and for a node with ONNX's
 * training_mode = 1 (opset 14+), whose run does not train. Two ways to move the running statistics:
 * - kiln's trainer: in training, the state inputs input_mean / input_var are updated in place, as
 *   PyTorch does, with the UNBIASED batch variance going into the variance:
 *     running = running * momentum + batch * (1 - momentum)   (ONNX momentum 0.9 == PyTorch 0.1)
 * - ONNX's outputs running_mean and running_var (training_mode = 1 only): the same formula with the
 *   BIASED batch variance ("ReduceVar ... the population variance" in the ONNX spec); the inputs are
 *   left as they are unless kiln trains.
 * Backward needs the batch statistics again: the training tape gives forward a buffer (kn_op_call.saved,
 * 2 x C doubles: each channel's mean and biased variance) that backward reads; called without one,
 * backward recomputes them from X, the same way, so the bits are the same either way. Backward never
 * touches the running statistics; gradients flowing into the running_mean / running_var outputs reach X
 * and the inputs they blend.
 *
 * With kn_op_call.fused_relu the training tape runs a following Relu inside this op: the normalised
 * values are cut at 0 as they are written, and backward masks dY with the Relu's output.
 *
 * Each channel's sums are taken by one thread in a fixed order — per plane in 16 float lanes (so the
 * loops vectorise), the plane sums added in double — so results are bit-identical whatever the thread
 * count.
 */
#include <math.h>
#include <string.h>

#include "core/threads.h"
#include "kernels/pool2x2.h"
#include "ops/lane_sum.h"
#include "ops/movement.h"
#include "ops/op.h"

enum { BN_PARALLEL_MIN = KN_PARALLEL_MIN_MEMORY }; /* elements below which threads cost more than they save */

enum { BN_X, BN_SCALE, BN_B, BN_MEAN, BN_VAR };         /* inputs */
enum { BN_Y, BN_RUNNING_MEAN, BN_RUNNING_VAR };          /* outputs */

/* Whether the node normalises with batch statistics: kiln trains, or ONNX's training_mode = 1. */
static bool bn_uses_batch_stats(const kn_node *node, const kn_op_ctx *ctx) {
    return ctx->training || kn_node_int(node, "training_mode", 0) != 0;
}

/* A run's view of the node: X as (N, C, inner), inner the product of the spatial dims (1 for a 2-D (N, C)
 * input), and the attributes, looked up once per run rather than once per block of channels. */
typedef struct bn_view {
    int64_t N, C, inner;
    float epsilon, momentum;
    bool batch_stats; /* bn_uses_batch_stats */
} bn_view;

static bn_view bn_view_of(const kn_op_call *call) {
    const kn_shape *x = &call->in[BN_X]->shape;
    return (bn_view){x->d[0], x->d[1], kn_shape_span(x, 2, x->ndim), kn_node_float(call->node, "epsilon", 1e-5f),
                     kn_node_float(call->node, "momentum", 0.9f), bn_uses_batch_stats(call->node, call->ctx)};
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
    int64_t training_mode = kn_node_int(node, "training_mode", 0);
    if (training_mode != 0 && training_mode != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "training_mode %lld must be 0 or 1",
                       (long long)training_mode);
    if (node->n_out > (training_mode ? 3 : 1))
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs requested; %s", node->n_out,
                       training_mode ? "with training_mode = 1 there are 3 (Y, running_mean, "
                                       "running_var)"
                                     : "without training_mode = 1 there is only Y");
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
    kn_value *y = kn_node_output(g, node, BN_Y);
    y->shape = *x;
    y->dtype = KN_F32;
    for (int i = BN_RUNNING_MEAN; i < node->n_out; i++) {
        kn_value *running = kn_node_output(g, node, i);
        running->shape = kn_shape_of(1, &x->d[1]);
        running->dtype = KN_F32;
    }
    return KILN_OK;
}

enum { BN_LANES = KN_SUM_LANES };

/* sum((x - m)^2) over one plane. */
static double plane_squared_deviation(const float *x, int64_t n, float m) {
    float lane[BN_LANES] = {0};
    int64_t i = 0;
    for (; i + BN_LANES <= n; i += BN_LANES)
        for (int k = 0; k < BN_LANES; k++) {
            float d = x[i + k] - m;
            lane[k] += d * d;
        }
    double s = 0;
    for (; i < n; i++) {
        double d = (double)x[i] - m;
        s += d * d;
    }
    for (int k = 0; k < BN_LANES; k++)
        s += lane[k];
    return s;
}

/* The gradient of the normalized value at i: dy[i], or with a fused Relu (relu_y = its output)
 * dy[i] where the Relu passed its input and 0 where it cut it. `masked` is a constant at every
 * inlined call, so that the loops stay branch-free. */
static inline float bn_dy(const float *dy, const float *relu_y, int64_t i, bool masked) {
    float g = dy[i];
    if (!masked)
        return g;
    /* g where relu_y > 0, else +0: written as a bit mask, which gcc vectorizes where it would not
     * if-convert the select */
    uint32_t bits, keep = -(uint32_t)(relu_y[i] > 0.0f);
    memcpy(&bits, &g, sizeof bits);
    bits &= keep;
    memcpy(&g, &bits, sizeof g);
    return g;
}

/* sum(dy) and sum(dy * (x - m)) over one plane. */
static inline void plane_gradient_sums(const float *dy, const float *relu_y, bool masked, const float *x,
                                       int64_t n, float m, double *sum_dy, double *sum_dy_dev) {
    float lane_dy[BN_LANES] = {0}, lane_dev[BN_LANES] = {0};
    int64_t i = 0;
    for (; i + BN_LANES <= n; i += BN_LANES)
        for (int k = 0; k < BN_LANES; k++) {
            float g = bn_dy(dy, relu_y, i + k, masked);
            lane_dy[k] += g;
            lane_dev[k] += g * (x[i + k] - m);
        }
    double a = 0, b = 0;
    for (; i < n; i++) {
        float g = bn_dy(dy, relu_y, i, masked);
        a += g;
        b += (double)g * ((double)x[i] - m);
    }
    for (int k = 0; k < BN_LANES; k++) {
        a += lane_dy[k];
        b += lane_dev[k];
    }
    *sum_dy += a;
    *sum_dy_dev += b;
}

/* Adds g to element c of input i's gradient (stores it into a fresh one); nothing when none is wanted. */
static void channel_gradient_put(const kn_op_call *call, int i, int64_t c, float g) {
    if (!call->din[i])
        return;
    float *d = kn_f32(call->din[i]);
    d[c] = (kn_din_fresh(call, i) ? 0.0f : d[c]) + g;
}

/* Channels one thread takes together: the loops go image by image over the block's planes, which lie
 * next to each other in memory, instead of channel by channel over planes C * inner apart (a plane of
 * 196 or 784 floats is too short for the prefetchers: that order ran at a third of the speed). Every
 * channel's sums are the same, in the same order. Per-channel arrays of this size live on the stack. */
enum { BN_BLOCK = 64 };

/* A block of channels [c0, c1), at most BN_BLOCK of them. */
typedef struct bn_block {
    int64_t c0, c1;
} bn_block;

/* The planes of image n and channel c: x + bn_plane(v, n, c). */
static inline int64_t bn_plane(bn_view v, int64_t n, int64_t c) { return (n * v.C + c) * v.inner; }

/* Mean and biased variance of each channel of block b over (N, inner), mean[c - b.c0], var[c - b.c0];
 * two passes for accuracy. */
static void bn_block_moments(const float *x, bn_view v, bn_block b, double *mean, double *var) {
    double sum[BN_BLOCK] = {0}, squares[BN_BLOCK] = {0};
    float m[BN_BLOCK];
    for (int64_t n = 0; n < v.N; n++)
        for (int64_t c = b.c0; c < b.c1; c++)
            sum[c - b.c0] += kn_lane_sum(x + bn_plane(v, n, c), v.inner);
    double count = (double)(v.N * v.inner);
    for (int64_t c = b.c0; c < b.c1; c++) {
        mean[c - b.c0] = sum[c - b.c0] / count;
        m[c - b.c0] = (float)mean[c - b.c0];
    }
    for (int64_t n = 0; n < v.N; n++)
        for (int64_t c = b.c0; c < b.c1; c++)
            squares[c - b.c0] += plane_squared_deviation(x + bn_plane(v, n, c), v.inner, m[c - b.c0]);
    for (int64_t c = b.c0; c < b.c1; c++)
        var[c - b.c0] = squares[c - b.c0] / count;
}

/* The block that starts at channel c0 of a piece of the channels ending at `last` (a contiguous run,
 * taken BN_BLOCK at a time). */
static bn_block bn_block_at(int64_t c0, int64_t last) {
    return (bn_block){c0, last - c0 < BN_BLOCK ? last : c0 + BN_BLOCK};
}

/* y = (x - mean) * (scale / sqrt(var + eps)) + B over one plane, then relu(y) when `relu` (a
 * constant at each inlined call). */
static inline void plane_normalize(const float *x, float *y, int64_t n, float shift, float gain, float bias,
                                   bool relu) {
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - shift) * gain + bias;
        y[i] = relu ? (v < 0.0f ? 0.0f : v) : v; /* Relu's formula: NaN passes through */
    }
}

/* Forward over block b: the batch statistics (when used; into `saved` and the running statistics as
 * bn_forward describes), then Y. */
static void bn_block_forward(const kn_op_call *call, bn_view v, bn_block b) {
    const float *x = kn_f32(call->in[BN_X]);
    const float *scale = kn_f32(call->in[BN_SCALE]);
    const float *bias = kn_f32(call->in[BN_B]);
    float *running_mean = kn_f32(call->in[BN_MEAN]); // (C), updated in training
    float *running_var = kn_f32(call->in[BN_VAR]);   // (C), updated in training
    float *y = kn_f32(call->out[BN_Y]);
    int n_out = call->node->n_out;
    float *mean_out = n_out > BN_RUNNING_MEAN ? kn_f32(call->out[BN_RUNNING_MEAN]) : NULL; // (C)
    float *var_out = n_out > BN_RUNNING_VAR ? kn_f32(call->out[BN_RUNNING_VAR]) : NULL;    // (C)
    const float epsilon = v.epsilon, momentum = v.momentum;
    int64_t count = v.N * v.inner;
    bool training = call->ctx->training;
    double *saved = call->saved; // (C, 2): mean and biased variance, for backward

    double mean[BN_BLOCK], var[BN_BLOCK];
    if (v.batch_stats)
        bn_block_moments(x, v, b, mean, var);
    float shift[BN_BLOCK], gain[BN_BLOCK];
    for (int64_t c = b.c0; c < b.c1; c++) {
        int64_t k = c - b.c0;
        if (v.batch_stats) {
            if (saved) {
                saved[2 * c] = mean[k];
                saved[2 * c + 1] = var[k];
            }
            if (mean_out)
                mean_out[c] = (float)(running_mean[c] * (double)momentum + mean[k] * (1.0 - momentum));
            if (var_out)
                var_out[c] = (float)(running_var[c] * (double)momentum + var[k] * (1.0 - momentum));
        } else {
            mean[k] = running_mean[c];
            var[k] = running_var[c];
        }
        if (training) {
            double unbiased_var = var[k] * (double)count / (double)(count - 1);
            running_mean[c] = (float)(running_mean[c] * (double)momentum + mean[k] * (1.0 - momentum));
            running_var[c] = (float)(running_var[c] * (double)momentum + unbiased_var * (1.0 - momentum));
        }
        shift[k] = (float)mean[k];
        gain[k] = (float)(scale[c] / sqrt(var[k] + epsilon));
    }
    for (int64_t n = 0; n < v.N; n++)
        for (int64_t c = b.c0; c < b.c1; c++) {
            int64_t k = c - b.c0, at = bn_plane(v, n, c);
            if (call->fused_relu)
                plane_normalize(x + at, y + at, v.inner, shift[k], gain[k], bias[c], true);
            else
                plane_normalize(x + at, y + at, v.inner, shift[k], gain[k], bias[c], false);
        }
}

/* What forward's pieces of the channels read. */
typedef struct bn_run {
    const kn_op_call *call;
    bn_view v;
} bn_run;

static void bn_channels_forward(void *ctx, int64_t first, int64_t last, int slot) {
    (void)slot;
    const bn_run *r = ctx;
    for (int64_t c0 = first; c0 < last; c0 += BN_BLOCK)
        bn_block_forward(r->call, r->v, bn_block_at(c0, last));
}

static kiln_status bn_forward(const kn_op_call *call) {
    bn_view v = bn_view_of(call);
    if (v.batch_stats && v.N * v.inner < 2)
        return kn_fail(KILN_ERR_SHAPE,
                       "BatchNormalization: batch statistics need more than 1 value per channel, "
                       "got %lld", (long long)(v.N * v.inner));
    bn_run run = {.call = call, .v = v};
    kn_parallel_range(v.C, kn_threads_for(v.N * v.C * v.inner, BN_PARALLEL_MIN), bn_channels_forward, &run);
    return KILN_OK;
}

/* dx = gain * (dy - offset) - slope * (x - m) over one plane, added to dx or stored. */
static inline void plane_input_gradient(const float *x, const float *dy, const float *relu_y, bool masked,
                                        float *dx, int64_t n, float gain, float offset, float slope, float m,
                                        bool store) {
    for (int64_t i = 0; i < n; i++)
        dx[i] = (store ? 0.0f : dx[i]) + (gain * (bn_dy(dy, relu_y, i, masked) - offset) - slope * (x[i] - m));
}

/* Block b's batch means and biased variances: as forward saved them, or computed again from X. */
static void bn_block_batch_moments(const kn_op_call *call, bn_view v, bn_block b, double *mean, double *var) {
    const double *saved = call->saved;
    if (!saved) {
        bn_block_moments(kn_f32(call->in[BN_X]), v, b, mean, var);
        return;
    }
    for (int64_t c = b.c0; c < b.c1; c++) {
        mean[c - b.c0] = saved[2 * c];
        var[c - b.c0] = saved[2 * c + 1];
    }
}

/* Where the gradient of the (fused Relu's) output comes from: dY itself, or with a fused MaxPool
 * (kn_op_call.fused_pool_dout) that pool's output gradient, made into dY one plane at a time into a
 * buffer of `inner` floats per thread. */
typedef struct bn_dy_source {
    const float *dy;        // (N, C, inner): dY, when there is no fused pool
    const float *pool_dy;   // (N, C, inner / 4): the pool's output gradient, or NULL
    const float *relu_y;    // (N, C, inner): the Relu's output, the pool's input
    kn_pool2x2 pool;        // the planes' geometry
    kn_maxpool2x2_backward_fn pool_backward;
} bn_dy_source;

/* Plane (n, c) of dY: in place, or the pool's backward of its output gradient stored into buf (what it
 * would have stored into dY, every element: its windows tile the plane). */
static const float *bn_dy_plane(const bn_dy_source *src, bn_view v, int64_t n, int64_t c, float *buf) {
    if (!src->pool_dy)
        return src->dy + bn_plane(v, n, c);
    src->pool_backward(&src->pool, src->relu_y + bn_plane(v, n, c), src->pool_dy + bn_plane(v, n, c) / 4, buf, true);
    return buf;
}

/* The gradients of block b's channels from dY. Batch statistics, with xhat = (x - mean) / std:
 *   dx = scale / std * (dy - mean(dy) - xhat * mean(dy * xhat))
 * Running statistics (a fixed affine map): dx = dy * scale / std, and the running mean and
 * variance, being inputs of that map, get their gradients too. */
static void bn_block_backward(const kn_op_call *call, bn_view v, bn_block b, const bn_dy_source *src,
                              float *plane_buf) {
    const float *x = kn_f32(call->in[BN_X]);
    const float *relu_y = call->fused_relu ? kn_f32(call->out[BN_Y]) : NULL;
    float *dx = call->din[BN_X] ? kn_f32(call->din[BN_X]) : NULL;
    const float epsilon = v.epsilon;
    const bool batch_stats = v.batch_stats;

    double mean[BN_BLOCK], var[BN_BLOCK];
    if (batch_stats) {
        bn_block_batch_moments(call, v, b, mean, var);
    } else {
        for (int64_t c = b.c0; c < b.c1; c++) {
            mean[c - b.c0] = kn_f32(call->in[BN_MEAN])[c];
            var[c - b.c0] = kn_f32(call->in[BN_VAR])[c];
        }
    }
    float m[BN_BLOCK];
    for (int64_t c = b.c0; c < b.c1; c++)
        m[c - b.c0] = (float)mean[c - b.c0];
    double sum_dy[BN_BLOCK] = {0}, sum_dy_dev[BN_BLOCK] = {0};
    for (int64_t n = 0; n < v.N; n++)
        for (int64_t c = b.c0; c < b.c1; c++) {
            int64_t k = c - b.c0, at = bn_plane(v, n, c);
            const float *dy = bn_dy_plane(src, v, n, c, plane_buf);
            if (relu_y)
                plane_gradient_sums(dy, relu_y + at, true, x + at, v.inner, m[k], &sum_dy[k], &sum_dy_dev[k]);
            else
                plane_gradient_sums(dy, NULL, false, x + at, v.inner, m[k], &sum_dy[k], &sum_dy_dev[k]);
        }

    /* dx = gain * (dy - mean_dy) - (gain * mean_dy_xhat * inv_std) * (x - mean), in float per element. */
    float gain[BN_BLOCK], offset[BN_BLOCK], slope[BN_BLOCK];
    double count = (double)(v.N * v.inner);
    for (int64_t c = b.c0; c < b.c1; c++) {
        int64_t k = c - b.c0;
        double scale = kn_f32(call->in[BN_SCALE])[c];
        double inv_std = 1.0 / sqrt(var[k] + epsilon);
        double sum_dy_xhat = sum_dy_dev[k] * inv_std;
        channel_gradient_put(call, BN_SCALE, c, (float)sum_dy_xhat);
        channel_gradient_put(call, BN_B, c, (float)sum_dy[k]);
        if (!batch_stats) {
            channel_gradient_put(call, BN_MEAN, c, (float)(-scale * inv_std * sum_dy[k]));
            channel_gradient_put(call, BN_VAR, c, (float)(-0.5 * scale * inv_std * inv_std * sum_dy_xhat));
        } else {
            channel_gradient_put(call, BN_MEAN, c, 0.0f); /* batch statistics: the running ones play no part */
            channel_gradient_put(call, BN_VAR, c, 0.0f);
        }
        double mean_dy = batch_stats ? sum_dy[k] / count : 0;
        double mean_dy_xhat = batch_stats ? sum_dy_xhat / count : 0;
        gain[k] = (float)(scale * inv_std);
        offset[k] = (float)mean_dy;
        slope[k] = (float)(scale * inv_std * mean_dy_xhat * inv_std);
    }
    if (!dx)
        return;
    bool fresh = kn_din_fresh(call, BN_X);
    for (int64_t n = 0; n < v.N; n++)
        for (int64_t c = b.c0; c < b.c1; c++) {
            int64_t k = c - b.c0, at = bn_plane(v, n, c);
            const float *relu_yp = relu_y ? relu_y + at : NULL;
            const float *dy = bn_dy_plane(src, v, n, c, plane_buf);
            /* calls with constant flags, so that each inlined loop is branch-free */
            if (relu_y && fresh)
                plane_input_gradient(x + at, dy, relu_yp, true, dx + at, v.inner, gain[k], offset[k], slope[k], m[k],
                                     true);
            else if (relu_y)
                plane_input_gradient(x + at, dy, relu_yp, true, dx + at, v.inner, gain[k], offset[k], slope[k], m[k],
                                     false);
            else if (fresh)
                plane_input_gradient(x + at, dy, NULL, false, dx + at, v.inner, gain[k], offset[k], slope[k], m[k],
                                     true);
            else
                plane_input_gradient(x + at, dy, NULL, false, dx + at, v.inner, gain[k], offset[k], slope[k], m[k],
                                     false);
        }
}

/* The gradients of block b's channels from the running_mean / running_var outputs (batch statistics):
 *   running_mean = input_mean * momentum + mean * (1 - momentum)
 *   running_var = input_var * momentum + var * (1 - momentum),  var = mean((x - mean)^2)
 * so dx += (1 - momentum) (d running_mean + 2 (x - mean) d running_var) / count, and the inputs
 * get momentum times the outputs' gradients. */
static void bn_block_running_backward(const kn_op_call *call, bn_view v, bn_block b) {
    const kn_tensor *dmean_t = call->dout[BN_RUNNING_MEAN];
    const kn_tensor *dvar_t = call->node->n_out > BN_RUNNING_VAR ? call->dout[BN_RUNNING_VAR] : NULL;
    double momentum = v.momentum;
    double mean[BN_BLOCK], var[BN_BLOCK];
    if (call->din[BN_X])
        bn_block_batch_moments(call, v, b, mean, var);
    for (int64_t c = b.c0; c < b.c1; c++) {
        double dmean = dmean_t ? kn_f32(dmean_t)[c] : 0.0, dvar = dvar_t ? kn_f32(dvar_t)[c] : 0.0;
        if (call->din[BN_MEAN])
            kn_f32(call->din[BN_MEAN])[c] += (float)(momentum * dmean);
        if (call->din[BN_VAR])
            kn_f32(call->din[BN_VAR])[c] += (float)(momentum * dvar);
        if (!call->din[BN_X])
            continue;
        const float *x = kn_f32(call->in[BN_X]);
        float *dx = kn_f32(call->din[BN_X]);
        double count = (double)(v.N * v.inner);
        float shift = (float)((1.0 - momentum) * dmean / count);
        float slope = (float)(2.0 * (1.0 - momentum) * dvar / count);
        float m = (float)mean[c - b.c0];
        for (int64_t n = 0; n < v.N; n++) {
            const float *xp = x + bn_plane(v, n, c);
            float *dxp = dx + bn_plane(v, n, c);
            for (int64_t i = 0; i < v.inner; i++)
                dxp[i] += shift + slope * (xp[i] - m);
        }
    }
}

/* The fused pool's side of src, after checking what the tape promised (kn_maxpool_tiles_2x2): a fused
 * Relu, X (N, C, H, W) of even H and W, and the pool's gradient (N, C, H/2, W/2). */
static kiln_status bn_pool_source_of(const kn_op_call *call, bn_dy_source *src) {
    const kn_shape *x = &call->in[BN_X]->shape, *p = &call->fused_pool_dout->shape;
    char sx[96], sp[96];
    if (!call->fused_relu || x->ndim != 4 || x->d[2] % 2 || x->d[3] % 2 || p->ndim != 4 || p->d[0] != x->d[0] ||
        p->d[1] != x->d[1] || p->d[2] * 2 != x->d[2] || p->d[3] * 2 != x->d[3])
        return kn_fail(KILN_ERR_INTERNAL, "a fused 2x2 MaxPool's gradient %s does not pool X %s through a fused Relu",
                       kn_shape_str(p, sp, sizeof sp), kn_shape_str(x, sx, sizeof sx));
    src->pool_dy = kn_f32(call->fused_pool_dout);
    src->relu_y = kn_f32(call->out[BN_Y]);
    src->pool = (kn_pool2x2){x->d[2] / 2, x->d[3] / 2, x->d[3]};
    src->pool_backward = kn_pool2x2_best()->backward;
    return KILN_OK;
}

/* What backward's pieces of the channels read. */
typedef struct bn_backward_run {
    const kn_op_call *call;
    bn_view v;
    bool from_y, from_running; /* the gradients that flow in */
    const bn_dy_source *src;
    float *plane_bufs;         /* `inner` floats per slot, or NULL */
} bn_backward_run;

static void bn_channels_backward(void *ctx, int64_t first, int64_t last, int slot) {
    const bn_backward_run *r = ctx;
    float *plane_buf = r->plane_bufs ? r->plane_bufs + r->v.inner * slot : NULL;
    for (int64_t c0 = first; c0 < last; c0 += BN_BLOCK) {
        if (r->from_y)
            bn_block_backward(r->call, r->v, bn_block_at(c0, last), r->src, plane_buf);
        if (r->from_running)
            bn_block_running_backward(r->call, r->v, bn_block_at(c0, last));
    }
}

static kiln_status bn_backward(const kn_op_call *call) {
    int n_out = call->node->n_out;
    bool from_y = call->dout[BN_Y] != NULL;
    bool from_running = (n_out > BN_RUNNING_MEAN && call->dout[BN_RUNNING_MEAN]) ||
                        (n_out > BN_RUNNING_VAR && call->dout[BN_RUNNING_VAR]);
    if (!from_y && !from_running)
        return KILN_OK;
    bn_view v = bn_view_of(call);
    bn_dy_source src = {.dy = from_y ? kn_f32(call->dout[BN_Y]) : NULL};
    float *plane_bufs = NULL; // (threads, inner): dY's plane made from the fused pool's gradient
    int threads = kn_threads_get();
    if (from_y && call->fused_pool_dout) {
        KN_TRY(bn_pool_source_of(call, &src));
        plane_bufs = kn_op_scratch(call->ctx, sizeof(float) * (size_t)v.inner * (size_t)threads);
        if (!plane_bufs)
            return kn_fail(KILN_ERR_NOMEM, "no memory for %d planes of %lld floats", threads, (long long)v.inner);
    }
    bn_backward_run run = {.call = call, .v = v, .from_y = from_y, .from_running = from_running, .src = &src,
                           .plane_bufs = plane_bufs};
    kn_parallel_range(v.C, kn_threads_for(v.N * v.C * v.inner, BN_PARALLEL_MIN), bn_channels_backward, &run);
    return KILN_OK;
}

/* The batch statistics forward keeps for backward: a mean and a variance per channel. */
static size_t bn_saved_bytes(const kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, BN_X);
    return x && x->shape.ndim >= 2 && x->shape.d[1] > 0 ? 2 * sizeof(double) * (size_t)x->shape.d[1] : 0;
}

/* At inference the op folds into one multiply-add per element: y = x * a[c] + b[c]. */
static int64_t bn_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(2, kn_shape_numel(&kn_node_input(g, node, BN_X)->shape));
}

const kn_op kn_op_batchnormalization = {
    .name = "BatchNormalization", .per_image = true,
    .min_inputs = 5,
    .max_inputs = 5,
    .infer = bn_infer,
    .forward = bn_forward,
    .backward = bn_backward,
    .saved_bytes = bn_saved_bytes,
    .backward_stores = true,
    .trains_fused_relu = true,
    .trains_fused_pool = true,
    .trains_differently = true,
    .flops = bn_flops,
};
