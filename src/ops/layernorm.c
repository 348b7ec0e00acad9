/* LayerNormalization: normalises X over the dims [axis, rank) and applies Scale and the optional B.
 * The optional outputs Mean and InvStdDev = 1 / sqrt(variance + epsilon) hold each row's statistics,
 * shaped like X with the normalised dims set to 1. Statistics are computed in f32 or wider, the only
 * stash_type (1) kiln has.
 *
 * X is viewed as (rows, D) with D the product of the normalised dims. Row statistics run in double;
 * backward reads them as forward saved them (kn_op_call.saved, on the training tape), or else
 * recomputes them from X rather than reading the outputs, which are optional and rounded to float. Gradients
 * flowing into Mean and InvStdDev reach X too. dScale and dB sum over rows in row order inside one
 * thread per column block, so results do not depend on the thread count.
 */
#include <math.h>

#include "core/threads.h"
#include "ops/lane_sum.h"
#include "ops/op.h"

enum { LN_PARALLEL_MIN = KN_PARALLEL_MIN_MEMORY }; /* elements below which threads cost more than they save */
enum { LN_COLUMN_BLOCK = 64 };       /* columns whose dScale/dB one thread accumulates at a time */

/* X as (rows, D): D spans the normalised dims. */
typedef struct ln_view {
    int64_t rows, D;
} ln_view;

static int ln_axis(const kn_node *node, int rank) {
    return kn_axis_normalize(kn_node_int(node, "axis", -1), rank);
}

static ln_view ln_view_of(const kn_node *node, const kn_shape *x) {
    int axis = ln_axis(node, x->ndim);
    return (ln_view){kn_shape_span(x, 0, axis), kn_shape_span(x, axis, x->ndim)};
}

/* Scale and B must have X's normalised dims, or be 1-D with D elements. */
static kiln_status ln_check_param(const kn_value *p, const char *name, const kn_shape *x, int axis) {
    kn_shape normalized = kn_shape_of(x->ndim - axis, x->d + axis);
    int64_t D = kn_shape_numel(&normalized);
    char got[96], want[96];
    if (p->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "%s has dtype %s; only f32 is supported", name,
                       kn_dtype_name(p->dtype));
    if (kn_shape_equal(&p->shape, &normalized) || (p->shape.ndim == 1 && p->shape.d[0] == D))
        return KILN_OK;
    return kn_fail(KILN_ERR_SHAPE, "%s has shape %s; expected %s, X's dims from axis %d (or %lld "
                   "elements in 1-D)", name, kn_shape_str(&p->shape, got, sizeof got),
                   kn_shape_str(&normalized, want, sizeof want), axis, (long long)D);
}

enum { LN_Y, LN_MEAN, LN_INV_STD_DEV };

static kiln_status ln_infer(kn_graph *g, const kn_node *node) {
    const kn_value *x = kn_node_input(g, node, 0);
    const kn_value *scale = kn_node_input(g, node, 1);
    const kn_value *bias = kn_node_input(g, node, 2);
    if (!x || !scale)
        return kn_fail(KILN_ERR_INVALID_ARG, "input %s is missing", x ? "Scale" : "X");
    if (x->dtype != KN_F32)
        return kn_fail(KILN_ERR_UNSUPPORTED, "X has dtype %s; only f32 is supported",
                       kn_dtype_name(x->dtype));
    if (node->n_out > 3)
        return kn_fail(KILN_ERR_INVALID_ARG, "%d outputs requested; LayerNormalization has 3 (Y, "
                       "Mean, InvStdDev)", node->n_out);
    int64_t stash_type = kn_node_int(node, "stash_type", 1);
    if (stash_type != 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "stash_type %lld; only 1 (f32 statistics) is supported",
                       (long long)stash_type);
    int64_t axis_attr = kn_node_int(node, "axis", -1);
    int axis = ln_axis(node, x->shape.ndim);
    if (axis < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "axis %lld is out of range for X of rank %d",
                       (long long)axis_attr, x->shape.ndim);
    float epsilon = kn_node_float(node, "epsilon", 1e-5f);
    if (!(epsilon > 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "epsilon %g must be > 0", epsilon);
    KN_TRY(ln_check_param(scale, "Scale", &x->shape, axis));
    if (bias)
        KN_TRY(ln_check_param(bias, "B", &x->shape, axis));
    kn_value *y = kn_node_output(g, node, LN_Y);
    y->shape = x->shape;
    y->dtype = KN_F32;
    kn_shape row_stats = x->shape; /* (dims before axis, 1, ..., 1) */
    for (int k = axis; k < row_stats.ndim; k++)
        row_stats.d[k] = 1;
    for (int i = LN_MEAN; i < node->n_out; i++) {
        kn_value *stats = kn_node_output(g, node, i);
        stats->shape = row_stats;
        stats->dtype = KN_F32;
    }
    return KILN_OK;
}

/* Mean and 1 / sqrt(biased variance + epsilon) of one row; two passes for accuracy, each in
 * kn_lane_sum's vectorized lanes. The second pass centres on the mean rounded to float, c, and takes
 * out the exact (m - c)^2 that adds: mean((x - c)^2) = variance + (m - c)^2. */
static void ln_row_moments(const float *x, int64_t D, float epsilon, double *mean, double *inv_std) {
    double m = kn_lane_sum(x, D) / (double)D;
    float c = (float)m;
    double variance = kn_lane_sum_squares(x, c, D) / (double)D - (m - c) * (m - c);
    *mean = m;
    *inv_std = 1.0 / sqrt((variance > 0 ? variance : 0) + epsilon);
}

/* What forward's rows read. */
typedef struct ln_forward_run {
    ln_view v;
    const float *x, *scale, *bias; // (rows, D), (D), (D) or none
    float *y;                      // (rows, D)
    float *mean_out, *inv_std_out; // (rows) or none
    float epsilon;
    double *saved;                 // (rows, 2): mean, inv_std for backward, or none
} ln_forward_run;

static void ln_rows_forward(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const ln_forward_run *f = ctx;
    const ln_view v = f->v;
    const float *scale = f->scale, *bias = f->bias;
    for (int64_t r = begin; r < end; r++) {
        const float *xr = f->x + r * v.D;
        float *yr = f->y + r * v.D;
        double mean, inv_std;
        ln_row_moments(xr, v.D, f->epsilon, &mean, &inv_std);
        if (f->saved) {
            f->saved[2 * r] = mean;
            f->saved[2 * r + 1] = inv_std;
        }
        float m = (float)mean, s = (float)inv_std;
        for (int64_t j = 0; j < v.D; j++)
            yr[j] = (xr[j] - m) * s * scale[j] + (bias ? bias[j] : 0.0f);
        if (f->mean_out)
            f->mean_out[r] = m;
        if (f->inv_std_out)
            f->inv_std_out[r] = s;
    }
}

static kiln_status ln_forward(const kn_op_call *call) {
    const kn_tensor *x = call->in[0];
    ln_view v = ln_view_of(call->node, &x->shape);
    const kn_tensor *bias_t = call->node->n_in > 2 ? call->in[2] : NULL;
    int n_out = call->node->n_out;
    ln_forward_run f = {
        .v = v, .x = kn_f32(x), .scale = kn_f32(call->in[1]), .bias = bias_t ? kn_f32(bias_t) : NULL,
        .y = kn_f32(call->out[LN_Y]), .mean_out = n_out > LN_MEAN ? kn_f32(call->out[LN_MEAN]) : NULL,
        .inv_std_out = n_out > LN_INV_STD_DEV ? kn_f32(call->out[LN_INV_STD_DEV]) : NULL,
        .epsilon = kn_node_float(call->node, "epsilon", 1e-5f), .saved = call->saved,
    };
    kn_parallel_range(v.rows, kn_threads_for(v.rows * v.D, LN_PARALLEL_MIN), ln_rows_forward, &f);
    return KILN_OK;
}

/* The gradient of one row, from dy (NULL when none flows into Y) and the gradients of the row's Mean
 * and InvStdDev outputs (0 when none flow):
 *   dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) + dmean / D - dinv_std * inv_std^2 * xhat / D
 * with g = dy * scale and xhat = (x - mean) * inv_std. */
static void ln_row_backward(const float *x, const float *dy, const float *scale, double dmean,
                            double dinv_std, float *dx, int64_t D, double mean, double inv_std) {
    double sum_g = 0, sum_g_xhat = 0;
    for (int64_t j = 0; dy && j < D; j++) {
        double g = (double)dy[j] * scale[j];
        sum_g += g;
        sum_g_xhat += g * ((x[j] - mean) * inv_std);
    }
    double mean_g = sum_g / (double)D, mean_g_xhat = sum_g_xhat / (double)D;
    double shift = dmean / (double)D, slope = dinv_std * inv_std * inv_std / (double)D;
    for (int64_t j = 0; j < D; j++) {
        double xhat = (x[j] - mean) * inv_std;
        double g = dy ? (double)dy[j] * scale[j] : 0.0;
        dx[j] += (float)(inv_std * (g - mean_g - xhat * mean_g_xhat) + shift - slope * xhat);
    }
}

/* What backward's rows and column blocks read. */
typedef struct ln_backward_run {
    ln_view v;
    const float *x, *dy;           // (rows, D); dy or none
    const float *dmean, *dinv_std; // (rows) or none
    const float *scale;            // (D)
    float *dx, *dscale, *dbias;    // (rows, D), (D), (D), each or none
    float epsilon;
    double *stats;                 // (rows, 2): mean, inv_std
    bool recompute;                // stats are scratch, to fill from X
} ln_backward_run;

static void ln_rows_backward(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const ln_backward_run *b = ctx;
    const int64_t D = b->v.D;
    double *stats = b->stats;
    for (int64_t r = begin; r < end; r++) {
        if (b->recompute)
            ln_row_moments(b->x + r * D, D, b->epsilon, &stats[2 * r], &stats[2 * r + 1]);
        if (b->dx)
            ln_row_backward(b->x + r * D, b->dy ? b->dy + r * D : NULL, b->scale, b->dmean ? b->dmean[r] : 0.0,
                            b->dinv_std ? b->dinv_std[r] : 0.0, b->dx + r * D, D, stats[2 * r], stats[2 * r + 1]);
    }
}

/* Block `block` of LN_COLUMN_BLOCK columns of dScale and dB, summed over the rows in row order. */
static void ln_columns_backward(void *ctx, int64_t block, int slot) {
    (void)slot;
    const ln_backward_run *b = ctx;
    const ln_view v = b->v;
    int64_t j0 = block * LN_COLUMN_BLOCK;
    int64_t width = v.D - j0 < LN_COLUMN_BLOCK ? v.D - j0 : LN_COLUMN_BLOCK;
    double sum_dy_xhat[LN_COLUMN_BLOCK] = {0}, sum_dy[LN_COLUMN_BLOCK] = {0};
    for (int64_t r = 0; r < v.rows; r++) {
        const float *xr = b->x + r * v.D + j0;
        const float *dyr = b->dy + r * v.D + j0;
        double mean = b->stats[2 * r], inv_std = b->stats[2 * r + 1];
        for (int64_t j = 0; j < width; j++) {
            sum_dy_xhat[j] += dyr[j] * ((xr[j] - mean) * inv_std);
            sum_dy[j] += dyr[j];
        }
    }
    for (int64_t j = 0; j < width; j++) {
        if (b->dscale)
            b->dscale[j0 + j] += (float)sum_dy_xhat[j];
        if (b->dbias)
            b->dbias[j0 + j] += (float)sum_dy[j];
    }
}

static kiln_status ln_backward(const kn_op_call *call) {
    int n_out = call->node->n_out;
    const kn_tensor *dout = call->dout[LN_Y];
    const kn_tensor *dmean_t = n_out > LN_MEAN ? call->dout[LN_MEAN] : NULL;
    const kn_tensor *dinv_t = n_out > LN_INV_STD_DEV ? call->dout[LN_INV_STD_DEV] : NULL;
    if (!dout && !dmean_t && !dinv_t)
        return KILN_OK;
    ln_view v = ln_view_of(call->node, &call->in[0]->shape);
    const float *x = kn_f32(call->in[0]);                 // (rows, D)
    const float *dy = dout ? kn_f32(dout) : NULL;         // (rows, D)
    const float *dmean = dmean_t ? kn_f32(dmean_t) : NULL; // (rows)
    const float *dinv_std = dinv_t ? kn_f32(dinv_t) : NULL; // (rows)
    const float *scale = kn_f32(call->in[1]);             // (D)
    float *dx = call->din[0] ? kn_f32(call->din[0]) : NULL;
    float *dscale = dy && call->din[1] ? kn_f32(call->din[1]) : NULL;
    kn_tensor *dbias_t = dy && call->node->n_in > 2 ? call->din[2] : NULL;
    float *dbias = dbias_t ? kn_f32(dbias_t) : NULL;
    float epsilon = kn_node_float(call->node, "epsilon", 1e-5f);

    double *stats = call->saved; // (rows, 2): mean, inv_std as forward saved them
    if (!stats) {
        size_t bytes;
        if (!kn_size_mul((size_t)v.rows, 2 * sizeof(double), &bytes))
            return kn_fail(KILN_ERR_NOMEM, "LayerNormalization: %lld rows overflow the workspace size",
                           (long long)v.rows);
        stats = kn_op_scratch(call->ctx, bytes ? bytes : 1);
        if (!stats)
            return kn_fail(KILN_ERR_NOMEM, "LayerNormalization: out of memory for %zu bytes of workspace",
                           bytes);
    }
    ln_backward_run b = {
        .v = v, .x = x, .dy = dy, .dmean = dmean, .dinv_std = dinv_std, .scale = scale, .dx = dx, .dscale = dscale,
        .dbias = dbias, .epsilon = epsilon, .stats = stats, .recompute = stats != call->saved,
    };
    int threads = kn_threads_for(v.rows * v.D, LN_PARALLEL_MIN);
    kn_parallel_range(v.rows, threads, ln_rows_backward, &b);
    if (!dscale && !dbias)
        return KILN_OK;
    kn_parallel_for((v.D + LN_COLUMN_BLOCK - 1) / LN_COLUMN_BLOCK, threads, ln_columns_backward, &b);
    return KILN_OK;
}

/* Forward's row statistics for backward: (rows, 2) doubles. */
static size_t ln_saved_bytes(const kn_graph *g, const kn_node *node) {
    ln_view v = ln_view_of(node, &kn_node_input(g, node, 0)->shape);
    size_t bytes;
    return kn_size_mul((size_t)v.rows, 2 * sizeof(double), &bytes) ? bytes : 0;
}

/* Per element: statistics (add; subtract, multiply, add) and normalise + affine (subtract, two
 * multiplies, add). */
static int64_t ln_flops(const kn_graph *g, const kn_node *node) {
    return kn_count_mul(8, kn_shape_numel(&kn_node_input(g, node, 0)->shape));
}

const kn_op kn_op_layernormalization = {
    .name = "LayerNormalization",
    .min_inputs = 2,
    .max_inputs = 3,
    .infer = ln_infer,
    .forward = ln_forward,
    .backward = ln_backward,
    .saved_bytes = ln_saved_bytes,
    .flops = ln_flops,
};
