/* Normalisations kiln runs but does not train: InstanceNormalization, LRN and
 * MeanVarianceNormalization.
 *
 *     InstanceNormalization(x (N, C, d...), scale (C), B (C)): each (n, c) plane normalised by its
 *         own mean and variance (biased), then scale[c] y + B[c]; epsilon 1e-5 by default
 *     LRN(x (N, C, d...)): x / (bias + alpha / size * sum of x^2 over the `size` channels around c)^beta,
 *         the window [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]; alpha 1e-4, beta 0.75,
 *         bias 1 by default
 *     MeanVarianceNormalization(x): (x - mean) / sqrt(variance) over `axes` (default 0, 2, 3), no
 *         epsilon beyond what ONNX's definition has (1e-9 added to the standard deviation)
 *
 * f32; statistics in double. No gradients.
 */
#include <math.h>

#include "core/status.h"
#include "ops/movement.h"

static kiln_status f32_input(const kn_value *x, int min_rank) {
    if (!x)
        return kn_fail(KILN_ERR_INVALID_ARG, "input 0 is required");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "input '%s' is %s; supported: f32", x->name,
                       kn_dtype_name(x->dtype));
    if (x->shape.ndim < min_rank)
        return kn_fail(KILN_ERR_SHAPE, "input '%s' has %d dims; at least %d needed", x->name,
                       x->shape.ndim, min_rank);
    return KILN_OK;
}

/* ---- InstanceNormalization ---- */

static kiln_status instancenorm_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(f32_input(x, 3));
    for (int i = 1; i <= 2; i++) {
        const kn_value *p = kn_node_input(g, node, i);
        if (!p || p->dtype != KN_F32 || p->shape.ndim != 1 || p->shape.d[0] != x->shape.d[1])
            return kn_fail(KILN_ERR_SHAPE, "input %d must be f32 of shape (C) = (%lld)", i,
                           (long long)x->shape.d[1]);
    }
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

static kiln_status instancenorm_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    const float *scale = kn_f32(call->in[1]), *bias = kn_f32(call->in[2]);
    double eps = kn_node_float(call->node, "epsilon", 1e-5f);
    int64_t n = x->shape.d[0], c = x->shape.d[1], plane = kn_shape_span(&x->shape, 2, x->shape.ndim);
    const float *xs = kn_f32(x);
    float *y = kn_f32(call->out[0]); /* (n, c, plane) */
    for (int64_t p = 0; p < n * c; p++) {
        const float *xp = xs + p * plane;
        double sum = 0.0, sq = 0.0;
        for (int64_t i = 0; i < plane; i++)
            sum += xp[i];
        double mean = plane ? sum / (double)plane : 0.0;
        for (int64_t i = 0; i < plane; i++)
            sq += (xp[i] - mean) * (xp[i] - mean);
        double inv = 1.0 / sqrt((plane ? sq / (double)plane : 0.0) + eps);
        int64_t ch = p % c;
        for (int64_t i = 0; i < plane; i++)
            y[p * plane + i] = (float)((xp[i] - mean) * inv * scale[ch] + bias[ch]);
    }
    return KILN_OK;
}

/* ---- LRN ---- */

static kiln_status lrn_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(f32_input(x, 2));
    if (kn_node_int(node, "size", 0) < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "size must be >= 1");
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

static kiln_status lrn_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    int64_t size = kn_node_int(call->node, "size", 1);
    double alpha = kn_node_float(call->node, "alpha", 1e-4f), beta = kn_node_float(call->node, "beta", 0.75f);
    double bias = kn_node_float(call->node, "bias", 1.0f);
    int64_t n = x->shape.d[0], c = x->shape.d[1], plane = kn_shape_span(&x->shape, 2, x->shape.ndim);
    int64_t before = (size - 1) / 2, after = size - 1 - before;
    const float *xs = kn_f32(x);
    float *y = kn_f32(call->out[0]); /* (n, c, plane) */
    for (int64_t in = 0; in < n; in++)
        for (int64_t ic = 0; ic < c; ic++)
            for (int64_t i = 0; i < plane; i++) {
                double sq = 0.0;
                for (int64_t k = ic - before; k <= ic + after; k++)
                    if (k >= 0 && k < c) {
                        double v = xs[(in * c + k) * plane + i];
                        sq += v * v;
                    }
                int64_t at = (in * c + ic) * plane + i;
                y[at] = (float)(xs[at] / pow(bias + alpha / (double)size * sq, beta));
            }
    return KILN_OK;
}

/* ---- MeanVarianceNormalization ---- */

static kiln_status mvn_axes(const kn_node *node, int rank, unsigned *mask) {
    int64_t axes[KN_MAX_DIMS];
    int n = kn_node_ints(node, "axes", axes, KN_MAX_DIMS);
    if (n < 0) {
        n = 3;
        axes[0] = 0, axes[1] = 2, axes[2] = 3;
    }
    if (n > KN_MAX_DIMS)
        return kn_fail(KILN_ERR_INVALID_ARG, "axes has %d elements", n);
    *mask = 0;
    for (int i = 0; i < n; i++) {
        int a = kn_axis_normalize(axes[i], rank);
        if (a < 0)
            return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for rank %d",
                           (long long)axes[i], rank);
        *mask |= 1u << a;
    }
    return KILN_OK;
}

static kiln_status mvn_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    KN_TRY(f32_input(x, 1));
    unsigned mask;
    KN_TRY(mvn_axes(node, x->shape.ndim, &mask));
    kn_set_output(g, node, 0, &x->shape, KN_F32);
    return KILN_OK;
}

/* The offset of element e's group: its coordinates with the normalised axes set to 0. */
static int64_t mvn_group(const kn_shape *s, unsigned mask, int64_t e) {
    int64_t off = 0, stride = 1;
    for (int d = s->ndim - 1; d >= 0; d--) {
        int64_t c = e % s->d[d];
        e /= s->d[d];
        if (!((mask >> d) & 1u))
            off += c * stride;
        stride *= s->d[d];
    }
    return off;
}

static kiln_status mvn_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    unsigned mask;
    KN_TRY(mvn_axes(call->node, x->shape.ndim, &mask));
    int64_t n = kn_numel(x), count = 1;
    for (int d = 0; d < x->shape.ndim; d++)
        if ((mask >> d) & 1u)
            count *= x->shape.d[d];
    double *sum = kn_op_scratch(call->ctx, 2 * sizeof(double) * (size_t)(n ? n : 1));
    if (!sum)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for MeanVarianceNormalization statistics");
    double *sq = sum + n; /* both indexed by group offset (< n) */
    for (int64_t e = 0; e < n; e++)
        sum[e] = sq[e] = 0.0;
    const float *xs = kn_f32(x);
    for (int64_t e = 0; e < n; e++) {
        int64_t gidx = mvn_group(&x->shape, mask, e);
        sum[gidx] += xs[e];
        sq[gidx] += (double)xs[e] * xs[e];
    }
    float *y = kn_f32(call->out[0]);
    for (int64_t e = 0; e < n; e++) {
        int64_t gidx = mvn_group(&x->shape, mask, e);
        double mean = sum[gidx] / (double)count, var = sq[gidx] / (double)count - mean * mean;
        y[e] = (float)((xs[e] - mean) / (sqrt(var > 0.0 ? var : 0.0) + 1e-9));
    }
    return KILN_OK;
}

static size_t mvn_workspace(const kn_graph *g, const kn_node *node) {
    return 2 * sizeof(double) * (size_t)kn_shape_numel(&kn_node_input(g, node, 0)->shape);
}

const kn_op kn_op_instancenormalization = {.name = "InstanceNormalization", .min_inputs = 3,
                                           .max_inputs = 3, .infer = instancenorm_infer,
                                           .forward = instancenorm_forward};
const kn_op kn_op_lrn = {.name = "LRN", .min_inputs = 1, .max_inputs = 1, .infer = lrn_infer,
                         .forward = lrn_forward};
const kn_op kn_op_meanvariancenormalization = {.name = "MeanVarianceNormalization", .min_inputs = 1,
                                               .max_inputs = 1, .infer = mvn_infer,
                                               .forward = mvn_forward, .workspace = mvn_workspace};
