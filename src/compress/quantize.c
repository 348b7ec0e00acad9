/* Post-training quantization of a graph (quantize.h): which layers, weights with optional bias
 * correction, BatchNormalization re-estimation, and activations calibrated into QDQ pairs. */
#include "compress/quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/qdq.h"
#include "core/align.h"
#include "core/status.h"
#include "ops/op.h"

kn_quant_options kn_quant_options_default(void) {
    return (kn_quant_options){.bits = 8, .granularity = KN_QUANT_PER_CHANNEL, .symmetric = -1, .weight_clip = -1,
                              .calib = {KN_CALIB_MINMAX, 100.0}, .calib_samples = 512,
                              .adaround_options = kn_adaround_options_default(), .seed = 1};
}

kiln_status kn_quant_options_check(const kn_quant_options *o) {
    if (o->bits != 16 && o->bits != 8 && o->bits != 4 && o->bits != 2 && o->bits != 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "--bits %d: 16, 8, 4, 2 or 1 are supported", o->bits);
    if (o->granularity == KN_QUANT_PER_BLOCK && o->block < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "block:%lld: a block has at least 1 element", (long long)o->block);
    if (o->codebook != 0 && o->codebook != 2 && o->codebook != 4 && o->codebook != 16 && o->codebook != 256)
        return kn_fail(KILN_ERR_INVALID_ARG, "--codebook %d: 2, 4, 16 or 256 entries (the codebook storage's "
                       "1, 2, 4 and 8-bit indices)", o->codebook);
    if (o->codebook && o->log2)
        return kn_fail(KILN_ERR_INVALID_ARG, "--codebook and --log2 are two different level sets; choose one");
    if (o->log2 && (o->bits < 2 || o->bits > 8))
        return kn_fail(KILN_ERR_INVALID_ARG, "--log2 needs --bits 8, 4 or 2");
    bool codebook_levels = o->codebook || o->log2 || o->bits == 1;
    if (codebook_levels && o->granularity == KN_QUANT_PER_BLOCK)
        return kn_fail(KILN_ERR_INVALID_ARG, "codebook levels (--codebook, --log2, --bits 1) are per tensor or "
                       "per channel, not per block");
    if (o->calib.method == KN_CALIB_PERCENTILE && !(o->calib.percentile > 0 && o->calib.percentile <= 100))
        return kn_fail(KILN_ERR_INVALID_ARG, "percentile %g is not in (0, 100]", o->calib.percentile);
    if (o->adaround && (codebook_levels || o->bits == 16))
        return kn_fail(KILN_ERR_INVALID_ARG, "--adaround learns the rounding of affine levels: --bits 8, 4 or 2 "
                       "without --codebook or --log2");
    if (o->adaround)
        KN_TRY(kn_adaround_options_check(&o->adaround_options));
    return KILN_OK;
}

/* ---- the layers ---- */

static bool is_f32_initializer(const kn_graph *g, int v) {
    if (v < 0)
        return false;
    const kn_value *x = &g->values[v];
    return (x->kind == KN_VALUE_PARAM || x->kind == KN_VALUE_CONST) && x->dtype == KN_F32 && x->data &&
           x->shape.ndim >= 2;
}

/* The output-channel axis of a layer's weight. */
static int weight_axis(const kn_graph *g, const kn_node *n) {
    const kn_op *op = n->op;
    if (op == &kn_op_convtranspose)
        return 1;
    if (op == &kn_op_gemm)
        return kn_node_int(n, "transB", 0) ? 0 : 1;
    if (op == &kn_op_matmul)
        return g->values[n->in[1]].shape.ndim - 1;
    return 0; /* Conv */
}

kiln_status kn_quant_layers_find(const kn_graph *g, kn_quant_layer **layers, int *n) {
    *layers = NULL;
    *n = 0;
    kn_quant_layer *list = malloc(sizeof *list * (size_t)(g->n_nodes ? g->n_nodes : 1));
    if (!list)
        return kn_fail(KILN_ERR_NOMEM, "out of memory listing layers");
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *node = &g->nodes[i];
        const kn_op *op = node->op;
        bool compute = op == &kn_op_conv || op == &kn_op_convtranspose || op == &kn_op_gemm ||
                       op == &kn_op_matmul;
        if (!compute || node->n_in < 2 || !is_f32_initializer(g, node->in[1]) || node->in[0] < 0)
            continue;
        list[(*n)++] = (kn_quant_layer){i, node->in[1], weight_axis(g, node), node->in[0], 0};
    }
    *layers = list;
    return KILN_OK;
}

static bool skipped(const kn_graph *g, const kn_quant_layer *l, const kn_quant_options *o) {
    for (int k = 0; k < o->n_skip; k++)
        if (strcmp(o->skip[k], g->nodes[l->node].name) == 0 || strcmp(o->skip[k], g->values[l->weight].name) == 0)
            return true;
    return false;
}

/* ---- bias correction ---- */

/* Per-channel sums of layer inputs (channel axis 1, or the last axis of a 2-D input). */
typedef struct channel_sums {
    double **sum;           /* per watched value: (channels) */
    int64_t *count;         /* per watched value: elements per channel seen */
} channel_sums;

static int channel_axis(const kn_tensor *x) { return x->shape.ndim >= 2 ? 1 : 0; }

static kiln_status visit_channel_sums(void *ctx, int k, const kn_tensor *x) {
    channel_sums *c = ctx;
    int axis = channel_axis(x);
    int64_t channels = x->shape.d[axis], inner = kn_shape_span(&x->shape, axis + 1, x->shape.ndim);
    int64_t outer = kn_shape_span(&x->shape, 0, axis);
    const float *v = x->data; // (outer, channels, inner)
    for (int64_t o = 0; o < outer; o++)
        for (int64_t ch = 0; ch < channels; ch++)
            for (int64_t i = 0; i < inner; i++)
                c->sum[k][ch] += v[(o * channels + ch) * inner + i];
    c->count[k] += outer * inner;
    return KILN_OK;
}

/* The bias of a layer, when it has one we know how to correct: Conv (any groups) and Gemm without
 * transA and with alpha = beta = 1; -1 otherwise. */
static int correctable_bias(const kn_graph *g, const kn_node *n) {
    const kn_op *op = n->op;
    bool conv = op == &kn_op_conv;
    bool gemm = op == &kn_op_gemm && !kn_node_int(n, "transA", 0) && kn_node_float(n, "alpha", 1) == 1.0f &&
                kn_node_float(n, "beta", 1) == 1.0f;
    if ((!conv && !gemm) || n->n_in < 3 || n->in[2] < 0)
        return -1;
    const kn_value *b = &g->values[n->in[2]];
    bool ok = (b->kind == KN_VALUE_PARAM || b->kind == KN_VALUE_CONST) && b->dtype == KN_F32 && b->data &&
              b->shape.ndim == 1;
    return ok ? n->in[2] : -1;
}

/* b[o] -= sum over the inputs i of o of (w_q - w)[o, i] * E[x_i]: the mean output shift the rounding of
 * the weights causes, taken back out (Nagel et al. 2019, "Data-free quantization", analytic bias
 * correction with the input means measured on calibration data). A convolution's input mean is per
 * channel, so padding at the borders is ignored. */
static void bias_correct(kn_graph *g, const kn_quant_layer *l, const float *w_float, const double *mean) {
    const kn_node *n = &g->nodes[l->node];
    int bias = correctable_bias(g, n);
    if (bias < 0)
        return;
    kn_value *b = &g->values[bias], *w = &g->values[l->weight];
    const float *wq = w->data;
    float *bd = b->data;
    int64_t out = w->shape.d[l->axis], per_out = kn_shape_numel(&w->shape) / (out ? out : 1);
    if (b->shape.d[0] != out)
        return;
    kn_value_drop_storage(b);
    bool conv = n->op == &kn_op_conv;
    int64_t groups = conv ? kn_node_int(n, "group", 1) : 1;
    int64_t in_per_group = conv ? w->shape.d[1] : per_out, kernel = conv ? per_out / in_per_group : 1;
    for (int64_t o = 0; o < out; o++) {
        int64_t first_in = conv ? o / (out / groups) * in_per_group : 0;
        double shift = 0;
        for (int64_t i = 0; i < per_out; i++) {
            /* Conv weight (out, in/groups, k...) and Gemm transB (out, in): element o * per_out + i;
             * Gemm without transB (in, out): element i * out + o. */
            int64_t e = l->axis == 0 ? o * per_out + i : i * out + o;
            shift += ((double)wq[e] - w_float[e]) * mean[first_in + i / kernel];
        }
        bd[o] -= (float)shift;
    }
}

/* ---- BatchNormalization re-estimation ---- */

typedef struct bn_moments {
    double *sum, *sum_sq;
    int64_t count;
} bn_moments;

static kiln_status visit_bn_moments(void *ctx, int k, const kn_tensor *x) {
    (void)k;
    bn_moments *m = ctx;
    int64_t channels = x->shape.d[1], inner = kn_shape_span(&x->shape, 2, x->shape.ndim);
    const float *v = x->data; // (batch, channels, inner)
    for (int64_t b = 0; b < x->shape.d[0]; b++)
        for (int64_t c = 0; c < channels; c++)
            for (int64_t i = 0; i < inner; i++) {
                double e = v[(b * channels + c) * inner + i];
                m->sum[c] += e;
                m->sum_sq[c] += e * e;
            }
    m->count += x->shape.d[0] * inner;
    return KILN_OK;
}

/* Sets every BatchNormalization's running mean and variance to the moments of its input over the
 * calibration data, in node order, so each sees the statistics of the ones before it already fixed.
 * The variance is the unbiased one, as PyTorch keeps. */
static kiln_status recalibrate_bn(kn_graph *g, const kn_dataset *calib) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if (n->op != &kn_op_batchnormalization || n->n_in < 5)
            continue;
        kn_value *mean = &g->values[n->in[3]], *var = &g->values[n->in[4]];
        int64_t channels = kn_shape_numel(&mean->shape);
        if (mean->dtype != KN_F32 || var->dtype != KN_F32 || !mean->data || !var->data ||
            kn_shape_numel(&var->shape) != channels)
            continue;
        bn_moments m = {calloc((size_t)channels + 1, sizeof(double)), calloc((size_t)channels + 1, sizeof(double)), 0};
        kiln_status st = m.sum && m.sum_sq ? kn_calib_run(g, calib, &n->in[0], 1, visit_bn_moments, &m)
                                           : kn_fail(KILN_ERR_NOMEM, "out of memory for BatchNormalization statistics");
        if (st == KILN_OK && m.count > 1) {
            kn_value_drop_storage(mean);
            kn_value_drop_storage(var);
            for (int64_t c = 0; c < channels; c++) {
                double mu = m.sum[c] / (double)m.count;
                double v = (m.sum_sq[c] / (double)m.count - mu * mu) * (double)m.count / (double)(m.count - 1);
                ((float *)mean->data)[c] = (float)mu;
                ((float *)var->data)[c] = (float)fmax(v, 0.0);
            }
        }
        free(m.sum);
        free(m.sum_sq);
        KN_TRY(st);
    }
    return KILN_OK;
}

/* ---- activations ---- */

typedef struct act_params {
    float scale;
    int32_t zero_point;
    kn_quant_range range;
} act_params;

typedef struct act_measure {
    const act_params *params;
    double *signal, *noise;
    int64_t *clipped;
} act_measure;

static kiln_status visit_act_error(void *ctx, int k, const kn_tensor *x) {
    act_measure *m = ctx;
    const act_params *p = &m->params[k];
    const float *v = x->data;
    double lo = (p->range.qmin - p->zero_point - 0.5) * (double)p->scale;
    double hi = (p->range.qmax - p->zero_point + 0.5) * (double)p->scale;
    for (int64_t i = 0; i < kn_numel(x); i++) {
        double e = (double)v[i] - kn_quant_fake(v[i], p->scale, p->zero_point, p->range);
        m->signal[k] += (double)v[i] * v[i];
        m->noise[k] += e * e;
        m->clipped[k] += v[i] < lo || v[i] > hi;
    }
    return KILN_OK;
}

static kiln_status report_add(kn_quant_report *r, const kn_quant_stat *s) {
    if (!r)
        return KILN_OK;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        kn_quant_stat *p = realloc(r->stats, sizeof *p * (size_t)cap);
        if (!p)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for the report");
        r->stats = p;
        r->cap = cap;
    }
    r->stats[r->n++] = *s;
    return KILN_OK;
}

/* Calibrates values[0..n) on `calib`, measures each one's quantization error there, and inserts their
 * QDQ pairs; their report lines go to stats[0..n). */
static kiln_status quantize_activations(kn_graph *g, const kn_dataset *calib, const int *values, int n,
                                        const kn_quant_options *o, kn_quant_stat *stats) {
    bool symmetric = o->symmetric == 1;
    kn_calib_hist *hists = calloc((size_t)n + 1, sizeof *hists);
    act_params *params = calloc((size_t)n + 1, sizeof *params);
    double *moments = calloc(2 * (size_t)n + 1, sizeof(double));
    int64_t *clipped = calloc((size_t)n + 1, sizeof(int64_t));
    kiln_status st = hists && params && moments && clipped
                         ? kn_calib_collect(g, calib, values, n, hists)
                         : kn_fail(KILN_ERR_NOMEM, "out of memory for %d activation histograms", n);
    for (int k = 0; k < n && st == KILN_OK; k++) {
        double lo, hi;
        kn_calib_choose_range(&hists[k], &o->calib, 8, symmetric, &lo, &hi);
        params[k].range = kn_quant_range_of(8, symmetric);
        kn_quant_params((float)lo, (float)hi, params[k].range, symmetric, &params[k].scale, &params[k].zero_point);
    }
    act_measure measure = {params, moments, moments + n, clipped};
    if (st == KILN_OK)
        st = kn_calib_run(g, calib, values, n, visit_act_error, &measure);
    for (int k = 0; k < n && st == KILN_OK; k++) {
        kn_quant_stat *s = &stats[k];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", g->values[values[k]].name);
        snprintf(s->encoding, sizeof s->encoding, "%s QDQ per-tensor", symmetric ? "i8" : "u8");
        s->bits = 8;
        s->lo = hists[k].lo;
        s->hi = hists[k].hi;
        s->scale_min = s->scale_max = params[k].scale;
        s->count = hists[k].count;
        s->clip_fraction = s->count ? (double)clipped[k] / (double)s->count : 0;
        s->sqnr_db = measure.noise[k] > 0 ? 10 * log10(measure.signal[k] / measure.noise[k]) : INFINITY;
    }
    for (int k = 0; k < n && st == KILN_OK; k++)
        st = kn_qdq_insert_activation(g, values[k], params[k].scale, params[k].zero_point, 8, symmetric);
    free(hists);
    free(params);
    free(moments);
    free(clipped);
    return st;
}

/* ---- the whole pass ---- */

static kn_weight_quant weight_quant_of(const kn_quant_options *o, const kn_quant_layer *l) {
    int bits = l->bits;
    bool mse = o->weight_clip == 1 || (o->weight_clip < 0 && bits <= 4);
    return (kn_weight_quant){
        .bits = bits, .bf16 = o->bf16, .symmetric = o->symmetric != 0,
        .axis = o->granularity == KN_QUANT_PER_CHANNEL ? l->axis : -1,
        .block = o->granularity == KN_QUANT_PER_BLOCK ? o->block : 0,
        .mse_clip = mse && bits < 16 && !o->codebook && !o->log2, .codebook = bits < 16 ? o->codebook : 0,
        .log2 = o->log2 && bits > 1 && bits < 16, .seed = o->seed};
}

typedef struct quant_run {
    kn_graph *g;
    const kn_quant_options *o;
    kn_dataset calib;             /* the first calib_samples samples */
    kn_quant_layer *layers;
    int n_layers;
    int *inputs;                  /* activations to quantize (distinct) */
    int n_inputs;
    kn_quant_stat *weight_stats;  /* (n_layers) */
    kn_quant_stat *input_stats;   /* (n_inputs) */
    double **means;               /* bias correction: per layer, the input's channel means, or NULL */
    float **float_weights;        /* adaround: per layer, its f32 weight once it has learned levels, or NULL */
} quant_run;

static void quant_run_free(quant_run *r) {
    for (int i = 0; r->means && i < r->n_layers; i++)
        free(r->means[i]);
    free(r->means);
    for (int i = 0; r->float_weights && i < r->n_layers; i++)
        free(r->float_weights[i]);
    free(r->float_weights);
    free(r->layers);
    free(r->inputs);
    free(r->weight_stats);
    free(r->input_stats);
}

static kiln_status collect_input_means(quant_run *r) {
    kn_graph *g = r->g;
    int *values = malloc(sizeof(int) * (size_t)(r->n_layers + 1));
    channel_sums sums = {calloc((size_t)r->n_layers + 1, sizeof(double *)), calloc((size_t)r->n_layers + 1, sizeof(int64_t))};
    r->means = sums.sum;
    kiln_status st = values && sums.sum && sums.count ? KILN_OK : kn_fail(KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < r->n_layers && st == KILN_OK; i++) {
        const kn_value *x = &g->values[r->layers[i].input];
        int axis = x->shape.ndim >= 2 ? 1 : 0;
        values[i] = r->layers[i].input;
        sums.sum[i] = calloc((size_t)(x->shape.ndim ? x->shape.d[axis] : 1) + 1, sizeof(double));
        if (!sums.sum[i])
            st = kn_fail(KILN_ERR_NOMEM, "out of memory");
    }
    if (st == KILN_OK)
        st = kn_calib_run(g, &r->calib, values, r->n_layers, visit_channel_sums, &sums);
    for (int i = 0; i < r->n_layers && st == KILN_OK; i++) {
        const kn_value *x = &g->values[r->layers[i].input];
        int64_t channels = x->shape.d[x->shape.ndim >= 2 ? 1 : 0];
        for (int64_t c = 0; c < channels; c++)
            sums.sum[i][c] /= (double)(sums.count[i] ? sums.count[i] : 1);
    }
    free(values);
    free(sums.count);
    return st;
}

/* Swaps the f32 weights of the layers before i (kept in r->float_weights) with their quantized data:
 * between two calls the graph computes the float model up to layer i. */
static void swap_float_weights(quant_run *r, int i) {
    for (int j = 0; j < i; j++)
        if (r->float_weights[j]) {
            kn_value *w = &r->g->values[r->layers[j].weight];
            float *quantized = w->data;
            w->data = r->float_weights[j];
            r->float_weights[j] = quantized;
        }
}

/* Learns the rounding of layer i's weight (already quantized to nearest levels) on the calibration
 * data: its inputs from the graph as it is (earlier weights quantized) and from the float model. */
static kiln_status adaround_layer(quant_run *r, int i, const float *w_float) {
    kn_graph *g = r->g;
    const kn_quant_layer *l = &r->layers[i];
    kn_adaround_inputs in = {.samples = r->calib.count};
    float *quantized = NULL, *original = NULL;
    kiln_status st = kn_adaround_collect(g, &r->calib, l->input, &quantized, &in.sample_shape);
    bool earlier_quantized = false;
    for (int j = 0; j < i; j++)
        earlier_quantized |= r->float_weights[j] != NULL;
    if (st == KILN_OK && earlier_quantized) {
        kn_shape shape;
        swap_float_weights(r, i);
        st = kn_adaround_collect(g, &r->calib, l->input, &original, &shape);
        swap_float_weights(r, i);
    }
    in.quantized = quantized;
    in.original = original ? original : quantized;
    kn_adaround_result result;
    if (st == KILN_OK)
        st = kn_adaround_weight(g, l->node, l->weight, w_float, &in, &r->o->adaround_options, &result);
    if (st == KILN_OK) {
        kn_quant_stat *stat = &r->weight_stats[i];
        kn_quant_weight_stat(stat, &g->values[l->weight], w_float);
        stat->adaround = true;
        stat->round_nearest_mse = result.nearest_mse;
        stat->round_learned_mse = result.kept_nearest ? result.nearest_mse : result.learned_mse;
        stat->round_flipped = result.flipped;
    }
    free(quantized);
    free(original);
    return st;
}

/* A copy of n floats, 64-byte aligned as initializer data is (it stands in for a weight's data). */
static float *float_copy(const float *x, int64_t n) {
    float *copy = kn_aligned_alloc(sizeof(float) * (size_t)n);
    if (copy)
        memcpy(copy, x, sizeof(float) * (size_t)n);
    return copy;
}

/* Layer i's weight quantized (its rounding learned, its bias corrected when asked). */
static kiln_status quantize_weight(quant_run *r, int i) {
    kn_graph *g = r->g;
    kn_quant_layer *l = &r->layers[i];
    kn_weight_quant q = weight_quant_of(r->o, l);
    int64_t n = kn_shape_numel(&g->values[l->weight].shape);
    float *w_float = r->means || r->o->adaround ? float_copy(g->values[l->weight].data, n) : NULL;
    if ((r->means || r->o->adaround) && !w_float)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kn_quant_weight(g, l->weight, &q, &r->weight_stats[i]);
    const kn_storage *s = g->values[l->weight].storage;
    bool learnable = s && kn_encoding_is_affine(s->encoding); /* not f16, codebook, or sparse (pruned) */
    if (st == KILN_OK && r->o->adaround && learnable)
        st = adaround_layer(r, i, w_float);
    if (st == KILN_OK && w_float && r->means && r->means[i])
        bias_correct(g, l, w_float, r->means[i]);
    if (r->o->adaround && learnable) /* the float model of the layers after this one needs it */
        r->float_weights[i] = w_float;
    else
        free(w_float);
    if (st != KILN_OK)
        kn_error_prefix("layer '%s': ", g->nodes[l->node].name);
    return st;
}

static kiln_status quantize_weights(quant_run *r) {
    kn_graph *g = r->g;
    bool *done = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(bool)); /* weights shared by layers */
    if (!done)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = KILN_OK;
    for (int i = 0; i < r->n_layers && st == KILN_OK; i++) {
        kn_quant_layer *l = &r->layers[i];
        snprintf(r->weight_stats[i].layer, sizeof r->weight_stats[i].layer, "%s", g->nodes[l->node].name);
        if (l->bits == 0 || done[l->weight]) /* f32, or shared with a layer done already */
            continue;
        done[l->weight] = true;
        st = quantize_weight(r, i);
    }
    free(done);
    return st;
}

static kiln_status plan_layers(quant_run *r) {
    KN_TRY(kn_quant_layers_find(r->g, &r->layers, &r->n_layers));
    for (int k = 0; k < r->o->n_skip; k++) {
        bool found = false;
        for (int i = 0; i < r->n_layers; i++) {
            const kn_quant_layer one = r->layers[i];
            kn_quant_options only = {.skip = &r->o->skip[k], .n_skip = 1};
            found |= skipped(r->g, &one, &only);
        }
        if (!found)
            return kn_fail(KILN_ERR_INVALID_ARG, "--skip %s: no quantizable layer (Conv, ConvTranspose, Gemm, "
                           "MatMul) or its weight has that name", r->o->skip[k]);
    }
    r->weight_stats = calloc((size_t)r->n_layers + 1, sizeof *r->weight_stats);
    r->inputs = malloc(sizeof(int) * (size_t)(r->n_layers + 1));
    r->input_stats = calloc((size_t)r->n_layers + 1, sizeof *r->input_stats);
    r->float_weights = calloc((size_t)r->n_layers + 1, sizeof *r->float_weights);
    if (!r->weight_stats || !r->inputs || !r->input_stats || !r->float_weights)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    bool activations = !r->o->weights_only && r->o->bits <= 8;
    for (int i = 0; i < r->n_layers; i++) {
        kn_quant_layer *l = &r->layers[i];
        l->bits = skipped(r->g, l, r->o) ? 0 : r->o->layer_bits ? r->o->layer_bits[i] : r->o->bits;
        bool seen = false;
        for (int k = 0; k < r->n_inputs; k++)
            seen |= r->inputs[k] == l->input;
        if (activations && l->bits > 0 && !seen && r->g->values[l->input].dtype == KN_F32)
            r->inputs[r->n_inputs++] = l->input;
    }
    return KILN_OK;
}

/* The report, layer by layer: each layer's input activation (the first time it is seen), then its weight. */
static kiln_status report_fill(const quant_run *r, kn_quant_report *report) {
    for (int i = 0; i < r->n_layers; i++) {
        for (int k = 0; k < r->n_inputs; k++)
            if (r->inputs[k] == r->layers[i].input && r->input_stats[k].name[0] && !r->input_stats[k].layer[0]) {
                snprintf(r->input_stats[k].layer, sizeof r->input_stats[k].layer, "%s", r->weight_stats[i].layer);
                KN_TRY(report_add(report, &r->input_stats[k]));
            }
        if (r->weight_stats[i].name[0])
            KN_TRY(report_add(report, &r->weight_stats[i]));
    }
    return KILN_OK;
}

kiln_status kn_quantize(kn_graph *g, const kn_dataset *calib, const kn_quant_options *o, kn_quant_report *report) {
    KN_TRY(kn_quant_options_check(o));
    quant_run r = {.g = g, .o = o};
    kiln_status st = plan_layers(&r);
    bool needs_data = r.n_inputs > 0 || o->bias_correction || o->recalibrate_bn || o->adaround;
    if (st == KILN_OK && needs_data && !calib)
        st = kn_fail(KILN_ERR_INVALID_ARG, "%s needs calibration data (--calib DATA)",
                     o->adaround ? "--adaround"
                     : r.n_inputs > 0 ? "quantizing activations (without --weights-only)"
                     : o->bias_correction ? "bias correction" : "--recalibrate-bn");
    if (st == KILN_OK && r.n_layers == 0)
        st = kn_fail(KILN_ERR_INVALID_ARG, "the model has no Conv, ConvTranspose, Gemm or MatMul with an f32 "
                     "weight to quantize");
    if (st == KILN_OK && needs_data) {
        r.calib = *calib;
        int64_t samples = o->calib_samples > 0 ? o->calib_samples : 512;
        r.calib.count = calib->count < samples ? calib->count : samples;
        if (r.calib.count < 1)
            st = kn_fail(KILN_ERR_INVALID_ARG, "the calibration data has no samples");
    }
    if (st == KILN_OK && o->bias_correction)
        st = collect_input_means(&r);
    if (st == KILN_OK)
        st = quantize_weights(&r);
    if (st == KILN_OK && o->recalibrate_bn)
        st = recalibrate_bn(g, &r.calib);
    if (st == KILN_OK && r.n_inputs > 0)
        st = quantize_activations(g, &r.calib, r.inputs, r.n_inputs, o, r.input_stats);
    if (st == KILN_OK)
        st = report_fill(&r, report);
    quant_run_free(&r);
    return st;
}
