/* FakeQuantize: quantization in the forward pass, the straight-through estimator and LSQ's scale
 * gradient in the backward pass (the formulas are in ops/fake_quantize.h). */
#include "core/threads.h"
#include "ops/fake_quantize.h"

#include <math.h>
#include <stdlib.h>

#include "ops/movement.h"

/* Below this many elements a loop stays on one thread. */
#define KN_FAKE_QUANT_PARALLEL_MIN KN_PARALLEL_MIN_COMPUTE
/* Chunks of a per-tensor scale's gradient sum (see fake_quant_backward). */
#define KN_FAKE_QUANT_CHUNKS 64

kn_quant_range kn_fake_quant_range(const kn_node *node) {
    return kn_quant_range_of((int)kn_node_int(node, "bits", 8), kn_node_int(node, "signed", 1) != 0);
}

kiln_status kn_fake_quant_layout_of(const kn_node *node, const kn_shape *x, kn_fake_quant_layout *l) {
    int64_t axis_attr = kn_node_int(node, "axis", -1);
    if (axis_attr == -1) {
        *l = (kn_fake_quant_layout){1, 1, kn_shape_numel(x)};
        return KILN_OK;
    }
    if (axis_attr < 0 || axis_attr >= x->ndim)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d (-1: per tensor)",
                       (long long)axis_attr, x->ndim);
    int axis = (int)axis_attr;
    *l = (kn_fake_quant_layout){kn_shape_span(x, 0, axis), x->d[axis], kn_shape_span(x, axis + 1, x->ndim)};
    return KILN_OK;
}

/* Channel c's range [lo, hi] and mean |x| over the layout. */
static void channel_stats(const float *x, kn_fake_quant_layout l, int64_t c, float *lo, float *hi, float *mean_abs) {
    float mn = 0, mx = 0;
    double abs_sum = 0;
    for (int64_t o = 0; o < l.outer; o++) {
        const float *row = x + (o * l.channels + c) * l.inner; // (inner)
        for (int64_t i = 0; i < l.inner; i++) {
            mn = fminf(mn, row[i]);
            mx = fmaxf(mx, row[i]);
            abs_sum += fabsf(row[i]);
        }
    }
    int64_t n = l.outer * l.inner;
    *lo = mn;
    *hi = mx;
    *mean_abs = n ? (float)(abs_sum / (double)n) : 0.0f;
}

float kn_fake_quant_mse_scale(const float *x, kn_fake_quant_layout l, int64_t c, kn_quant_range r) {
    float lo, hi, mean_abs;
    channel_stats(x, l, c, &lo, &hi, &mean_abs);
    float max_abs = fmaxf(-lo, hi);
    if (!(max_abs > 0))
        return 1.0f;
    float best = max_abs / (float)r.qmax;
    double best_err = INFINITY;
    for (int step = KN_FAKE_QUANT_MSE_STEPS; step >= 1; step--) {
        float s = max_abs * (float)step / (float)KN_FAKE_QUANT_MSE_STEPS / (float)r.qmax;
        double err = 0;
        for (int64_t o = 0; o < l.outer; o++)
            for (int64_t i = (o * l.channels + c) * l.inner; i < (o * l.channels + c + 1) * l.inner; i++) {
                double d = (double)x[i] - kn_quant_fake(x[i], s, 0, r);
                err += d * d;
            }
        if (err < best_err)
            best_err = err, best = s;
    }
    return best;
}

void kn_fake_quant_params(const kn_node *node, const float *x, const float *scale, kn_fake_quant_layout l,
                          float *scales, int32_t *zero_points) {
    int bits = (int)kn_node_int(node, "bits", 8);
    int32_t zero_point = (int32_t)kn_node_int(node, "zero_point", 0);
    bool symmetric = kn_node_int(node, "symmetric", 1) != 0;
    kn_quant_range r = kn_fake_quant_range(node);
    for (int64_t c = 0; c < l.channels; c++) {
        if (scale) {
            scales[c] = fmaxf(scale[l.channels == 1 ? 0 : c], KN_FAKE_QUANT_MIN_SCALE);
            zero_points[c] = bits == 1 ? 0 : zero_point;
            continue;
        }
        float lo, hi, mean_abs;
        channel_stats(x, l, c, &lo, &hi, &mean_abs);
        zero_points[c] = 0;
        if (bits == 1)
            scales[c] = mean_abs; /* binary weights: alpha = mean |x| (XNOR-Net) */
        else
            kn_quant_params(lo, hi, r, symmetric, &scales[c], &zero_points[c]);
    }
}

/* ---- shape inference ---- */

static kiln_status fake_quant_infer(kn_graph *g, const kn_node *node) {
    KN_TRY(kn_check_outputs(node, 1));
    const kn_value *x = kn_node_input(g, node, 0), *scale = kn_node_input(g, node, 1);
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input x is required");
    if (x->dtype != KN_F32 || (scale && scale->dtype != KN_F32))
        return kn_fail(KILN_ERR_UNSUPPORTED, "x and the scale must be f32");
    int64_t bits = kn_node_int(node, "bits", 8), is_signed = kn_node_int(node, "signed", 1);
    if (bits < 1 || bits > 8)
        return kn_fail(KILN_ERR_INVALID_ARG, "bits is %lld; 1 to 8 are supported", (long long)bits);
    if (bits == 1 && !is_signed)
        return kn_fail(KILN_ERR_INVALID_ARG, "1-bit fake quantization is binary (+-alpha): it must be signed");
    kn_quant_range r = kn_fake_quant_range(node);
    int64_t zp = kn_node_int(node, "zero_point", 0);
    if (zp < r.qmin || zp > r.qmax)
        return kn_fail(KILN_ERR_INVALID_ARG, "zero_point %lld is outside the level range [%d, %d]", (long long)zp,
                       r.qmin, r.qmax);
    kn_fake_quant_layout l;
    KN_TRY(kn_fake_quant_layout_of(node, &x->shape, &l));
    if (scale) {
        int64_t n = kn_shape_numel(&scale->shape);
        if (scale->shape.ndim > 1 || (n != 1 && n != l.channels))
            return kn_fail(KILN_ERR_SHAPE, "the scale has %lld elements of rank %d; it must be one or one per "
                           "channel (%lld)", (long long)n, scale->shape.ndim, (long long)l.channels);
    }
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

/* ---- forward ---- */

/* The per-channel scales and zero points of this call, in one malloc'd block (scales first). */
static kiln_status call_params(const kn_op_call *call, kn_fake_quant_layout *l, float **scales, int32_t **zps) {
    const kn_tensor *x = call->in[0], *scale = kn_input_at(call->in, call->node->n_in, 1);
    KN_TRY(kn_fake_quant_layout_of(call->node, &x->shape, l));
    *scales = malloc((sizeof(float) + sizeof(int32_t)) * (size_t)l->channels);
    if (!*scales)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld scales", (long long)l->channels);
    *zps = (int32_t *)(*scales + l->channels);
    kn_fake_quant_params(call->node, kn_f32(x), scale ? kn_f32(scale) : NULL, *l, *scales, *zps);
    return KILN_OK;
}

/* What forward's elements read: the layout, the channels' scales and zero points, the level range. */
typedef struct fake_quant_run {
    kn_fake_quant_layout l;
    const float *scales;
    const int32_t *zps;
    kn_quant_range r;
    bool binary;
    const float *x; /* (outer, channels, inner) */
    float *y;
    int64_t n;
} fake_quant_run;

static void fake_quant_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const fake_quant_run *q = ctx;
    const float *x = q->x;
    for (int64_t i = begin; i < end; i++) {
        int64_t c = q->l.channels == 1 ? 0 : i / q->l.inner % q->l.channels;
        q->y[i] = q->binary ? (x[i] >= 0.0f ? q->scales[c] : -q->scales[c])
                            : kn_quant_fake(x[i], q->scales[c], q->zps[c], q->r);
    }
}

static kiln_status fake_quant_forward(const kn_op_call *call) {
    fake_quant_run q = {.r = kn_fake_quant_range(call->node), .binary = kn_node_int(call->node, "bits", 8) == 1,
                        .x = kn_f32(call->in[0]), .y = kn_f32(call->out[0]), .n = kn_numel(call->in[0])};
    float *scales;
    int32_t *zps;
    KN_TRY(call_params(call, &q.l, &scales, &zps));
    q.scales = scales;
    q.zps = zps;
    kn_parallel_range(q.n, kn_threads_for(q.n, KN_FAKE_QUANT_PARALLEL_MIN), fake_quant_range, &q);
    free(scales);
    return KILN_OK;
}

/* ---- backward ---- */

/* d y / d x and d y / d scale of one element (see the header). */
static inline void element_grads(float x, float s, int32_t zp, kn_quant_range r, bool binary, float *dydx,
                                 float *dyds) {
    if (binary) {
        *dydx = 1.0f;
        *dyds = x >= 0.0f ? 1.0f : -1.0f;
        return;
    }
    float u = x / s, q = nearbyintf(u) + (float)zp;
    if (q < (float)r.qmin || q > (float)r.qmax) {
        *dydx = 0.0f;
        *dyds = (float)((q < (float)r.qmin ? r.qmin : r.qmax) - zp);
    } else {
        *dydx = 1.0f;
        *dyds = nearbyintf(u) - u;
    }
}

/* What backward's chunks or channels read: forward's run (y unused), dY, and where the gradients go. */
typedef struct fake_quant_grads {
    fake_quant_run q;
    const float *dy; /* (outer, channels, inner) */
    float *dx;       /* or NULL */
    int64_t chunk;   /* elements of a chunk (one scale) */
    double *ds;      /* each chunk's scale gradient (one scale) */
    float *dscale;   /* (channels), or NULL */
    double grad_scale;
} fake_quant_grads;

/* Chunk k of a per-tensor scale's elements: their dx, and their scale gradient into ds[k]. */
static void fake_quant_chunk_grads(void *ctx, int64_t k, int slot) {
    (void)slot;
    const fake_quant_grads *g = ctx;
    const fake_quant_run *q = &g->q;
    for (int64_t i = k * g->chunk; i < q->n && i < (k + 1) * g->chunk; i++) {
        float dydx, dyds;
        element_grads(q->x[i], q->scales[0], q->zps[0], q->r, q->binary, &dydx, &dyds);
        if (g->dx)
            g->dx[i] += dydx * g->dy[i];
        g->ds[k] += (double)dyds * (double)g->dy[i];
    }
}

/* Channel c's dx, and its scale gradient into dscale[c]. */
static void fake_quant_channel_grads(void *ctx, int64_t c, int slot) {
    (void)slot;
    const fake_quant_grads *g = ctx;
    const fake_quant_run *q = &g->q;
    kn_fake_quant_layout l = q->l;
    double ds = 0;
    for (int64_t o = 0; o < l.outer; o++)
        for (int64_t i = (o * l.channels + c) * l.inner; i < (o * l.channels + c + 1) * l.inner; i++) {
            float dydx, dyds;
            element_grads(q->x[i], q->scales[c], q->zps[c], q->r, q->binary, &dydx, &dyds);
            if (g->dx)
                g->dx[i] += dydx * g->dy[i];
            ds += (double)dyds * (double)g->dy[i];
        }
    if (g->dscale)
        g->dscale[c] += (float)(g->grad_scale * ds);
}

static kiln_status fake_quant_backward(const kn_op_call *call) {
    const kn_tensor *dout = call->dout ? call->dout[0] : NULL;
    float *dx = call->din && call->din[0] ? kn_f32(call->din[0]) : NULL;
    const kn_tensor *scale = kn_input_at(call->in, call->node->n_in, 1);
    float *dscale = scale && call->din && call->din[1] ? kn_f32(call->din[1]) : NULL;
    if (!dout || (!dx && !dscale))
        return KILN_OK;
    fake_quant_grads g = {
        .q = {.r = kn_fake_quant_range(call->node), .binary = kn_node_int(call->node, "bits", 8) == 1,
              .x = kn_f32(call->in[0]), .n = kn_numel(call->in[0])},
        .dy = kn_f32(dout), .dx = dx, .dscale = dscale, .grad_scale = kn_node_float(call->node, "grad_scale", 1.0f),
    };
    float *scales;
    int32_t *zps;
    KN_TRY(call_params(call, &g.q.l, &scales, &zps));
    g.q.scales = scales;
    g.q.zps = zps;
    int64_t n = g.q.n;
    int threads = kn_threads_for(n, KN_FAKE_QUANT_PARALLEL_MIN);
    if (g.q.l.channels == 1) {
        /* One scale: the elements go in KN_FAKE_QUANT_CHUNKS fixed chunks over the threads, and the chunks'
         * scale gradients add up in order, so the sum is the same at any thread count. */
        double ds[KN_FAKE_QUANT_CHUNKS] = {0};
        g.ds = ds;
        g.chunk = (n + KN_FAKE_QUANT_CHUNKS - 1) / KN_FAKE_QUANT_CHUNKS;
        kn_parallel_for(KN_FAKE_QUANT_CHUNKS, threads, fake_quant_chunk_grads, &g);
        double sum = 0;
        for (int k = 0; k < KN_FAKE_QUANT_CHUNKS; k++)
            sum += ds[k];
        if (dscale)
            dscale[0] += (float)(g.grad_scale * sum);
    } else {
        /* One channel per iteration: each sums its own scale gradient, so the threads share nothing. */
        kn_parallel_for(g.q.l.channels, threads, fake_quant_channel_grads, &g);
    }
    free(scales);
    return KILN_OK;
}

static int64_t fake_quant_flops(const kn_graph *g, const kn_node *node) {
    return 4 * kn_shape_numel(&kn_node_output(g, node, 0)->shape); /* divide, round, clamp, multiply */
}

const kn_op kn_op_fakequantize = {
    .name = "FakeQuantize", .min_inputs = 1, .max_inputs = 2,
    .infer = fake_quant_infer, .forward = fake_quant_forward, .backward = fake_quant_backward,
    .flops = fake_quant_flops,
};
