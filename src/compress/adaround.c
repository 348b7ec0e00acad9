/* AdaRound: learned up/down rounding of a layer's quantized weights (adaround.h says what and why). */
#include "compress/adaround.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/calibrate.h"
#include "core/quant.h"
#include "core/rng.h"
#include "core/status.h"
#include "format/storage_internal.h"
#include "ops/op.h"
#include "train/optim.h"
#include "train/tape.h"

/* The rectified sigmoid's stretch (the paper's zeta and gamma): h reaches 0 and 1 at finite V, so the
 * regulariser can make it exactly binary. */
static const float ZETA = 1.1f, GAMMA = -0.1f;
static const float BETA_START = 20.0f, BETA_END = 2.0f, WARMUP = 0.2f;

kn_adaround_options kn_adaround_options_default(void) {
    return (kn_adaround_options){.iters = 500, .lambda = 0.01f, .lr = 1e-2f, .batch = 32, .seed = 1};
}

kiln_status kn_adaround_options_check(const kn_adaround_options *o) {
    if (o->iters < 1 || o->iters > 10000000)
        return kn_fail(KILN_ERR_INVALID_ARG, "--adaround-iters %lld: 1 to 10000000 steps", (long long)o->iters);
    if (!(o->lambda >= 0 && isfinite(o->lambda)))
        return kn_fail(KILN_ERR_INVALID_ARG, "--adaround-lambda %g: a finite number >= 0", (double)o->lambda);
    if (!(o->lr > 0 && isfinite(o->lr)))
        return kn_fail(KILN_ERR_INVALID_ARG, "--adaround-lr %g: a finite number > 0", (double)o->lr);
    if (o->batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "AdaRound batch %lld: at least 1 sample", (long long)o->batch);
    return KILN_OK;
}

/* ---- collecting a layer's inputs ---- */

typedef struct collect_ctx {
    float *x;              /* (samples, sample) once the first batch shows the sample's size */
    int64_t samples, filled, per_sample;
    kn_shape sample;
} collect_ctx;

static kiln_status visit_collect(void *ctx, int k, const kn_tensor *t) {
    (void)k;
    collect_ctx *c = ctx;
    if (t->shape.ndim < 1 || t->shape.d[0] < 1)
        return kn_fail(KILN_ERR_UNSUPPORTED, "AdaRound: a layer input without a batch dimension");
    kn_shape sample = {.ndim = t->shape.ndim - 1};
    for (int d = 1; d < t->shape.ndim; d++)
        sample.d[d - 1] = t->shape.d[d];
    if (!c->x) {
        c->sample = sample;
        c->per_sample = kn_shape_numel(&sample);
        c->x = malloc(sizeof(float) * (size_t)(c->samples * c->per_sample + 1));
        if (!c->x)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld layer inputs", (long long)c->samples);
    }
    int64_t n = kn_numel(t);
    if (!kn_shape_equal(&sample, &c->sample) || c->filled + n > c->samples * c->per_sample)
        return kn_fail(KILN_ERR_UNSUPPORTED, "AdaRound: a layer input whose first dimension is not the batch");
    memcpy(c->x + c->filled, t->data, sizeof(float) * (size_t)n);
    c->filled += n;
    return KILN_OK;
}

kiln_status kn_adaround_collect(kn_graph *g, const kn_dataset *calib, int v, float **x, kn_shape *sample_shape) {
    collect_ctx c = {.samples = calib->count};
    kiln_status st = kn_calib_run(g, calib, &v, 1, visit_collect, &c);
    if (st == KILN_OK && c.filled != c.samples * c.per_sample)
        st = kn_fail(KILN_ERR_UNSUPPORTED, "AdaRound: a layer input whose first dimension is not the batch");
    if (st != KILN_OK) {
        free(c.x);
        return st;
    }
    *x = c.x;
    *sample_shape = c.sample;
    return KILN_OK;
}

/* ---- the layer alone: its op on an input x and a trainable weight w ---- */

typedef struct layer_graph {
    kn_graph g;
    kn_tape t;
    int x, w, y;
    kn_shape sample;
    int64_t batch, per_out;   /* the tape's batch; output elements per sample */
} layer_graph;

static kiln_status copy_attrs(kn_graph *g, int node, const kn_node *from) {
    for (int a = 0; a < from->n_attrs; a++) {
        const kn_attr *at = &from->attrs[a];
        switch (at->type) {
        case KN_ATTR_INT: KN_TRY(kn_node_set_int(g, node, at->name, at->i)); break;
        case KN_ATTR_FLOAT: KN_TRY(kn_node_set_float(g, node, at->name, at->f)); break;
        case KN_ATTR_INTS: KN_TRY(kn_node_set_ints(g, node, at->name, at->n_ints, at->ints)); break;
        case KN_ATTR_STRING: KN_TRY(kn_node_set_string(g, node, at->name, at->s)); break;
        }
    }
    return KILN_OK;
}

static kn_shape batched(const kn_shape *sample, int64_t batch) {
    kn_shape s = {.ndim = sample->ndim + 1};
    s.d[0] = batch;
    for (int d = 0; d < sample->ndim; d++)
        s.d[d + 1] = sample->d[d];
    return s;
}

static kiln_status layer_graph_build(layer_graph *lg, const kn_graph *src, const kn_node *node, const kn_shape *sample,
                                     int64_t batch) {
    kn_graph *g = &lg->g; /* initialised by the caller */
    lg->sample = *sample;
    lg->batch = batch;
    kn_shape xs = batched(sample, batch), none = {0};
    KN_TRY(kn_graph_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &xs, &lg->x));
    KN_TRY(kn_graph_add_value(g, "w", KN_VALUE_PARAM, KN_F32, &src->values[node->in[1]].shape, &lg->w));
    KN_TRY(kn_graph_add_value(g, "y", KN_VALUE_ACT, KN_F32, &none, &lg->y));
    KN_TRY(kn_graph_add_input(g, lg->x));
    KN_TRY(kn_graph_add_output(g, lg->y));
    int in[2] = {lg->x, lg->w}, n;
    KN_TRY(kn_graph_add_node(g, node->op->name, node->name, 2, in, 1, &lg->y, &n));
    KN_TRY(copy_attrs(g, n, node));
    KN_TRY(kn_tape_init_shapes(&lg->t, g, &xs, true));
    lg->per_out = kn_numel(kn_tape_output(&lg->t, 0)) / batch;
    return KILN_OK;
}

static void layer_graph_free(layer_graph *lg) {
    kn_tape_free(&lg->t);
    kn_graph_free(&lg->g);
}

/* Runs the layer on x (count samples) with the weight in lg's w; the output is kn_tape_output(t, 0). */
static kiln_status layer_forward(layer_graph *lg, const float *x, int64_t count) {
    if (count != kn_tape_input(&lg->t, 0)->shape.d[0]) {
        kn_shape xs = batched(&lg->sample, count);
        KN_TRY(kn_tape_set_input_shapes(&lg->t, &xs));
    }
    memcpy(kn_tape_input(&lg->t, 0)->data, x, sizeof(float) * (size_t)(count * kn_shape_numel(&lg->sample)));
    return kn_tape_forward(&lg->t, false);
}

/* The layer's outputs on all samples of x with weight w, into y (samples, per_out). */
static kiln_status layer_outputs(layer_graph *lg, const float *w, const float *x, int64_t samples, float *y) {
    memcpy(lg->g.values[lg->w].data, w, sizeof(float) * (size_t)kn_shape_numel(&lg->g.values[lg->w].shape));
    int64_t per_in = kn_shape_numel(&lg->sample);
    for (int64_t start = 0; start < samples; start += lg->batch) {
        int64_t count = samples - start < lg->batch ? samples - start : lg->batch;
        KN_TRY(layer_forward(lg, x + start * per_in, count));
        memcpy(y + start * lg->per_out, kn_tape_output(&lg->t, 0)->data, sizeof(float) * (size_t)(count * lg->per_out));
    }
    return KILN_OK;
}

/* Mean squared error per output element of the layer with weight w on inputs x against target. */
static kiln_status layer_error(layer_graph *lg, const float *w, const float *x, const float *target, int64_t samples,
                               double *mse) {
    memcpy(lg->g.values[lg->w].data, w, sizeof(float) * (size_t)kn_shape_numel(&lg->g.values[lg->w].shape));
    int64_t per_in = kn_shape_numel(&lg->sample);
    double sum = 0;
    for (int64_t start = 0; start < samples; start += lg->batch) {
        int64_t count = samples - start < lg->batch ? samples - start : lg->batch;
        KN_TRY(layer_forward(lg, x + start * per_in, count));
        const float *y = kn_tape_output(&lg->t, 0)->data, *want = target + start * lg->per_out;
        for (int64_t i = 0; i < count * lg->per_out; i++)
            sum += ((double)y[i] - want[i]) * ((double)y[i] - want[i]);
    }
    *mse = sum / (double)(samples * lg->per_out);
    return KILN_OK;
}

/* ---- the rounding variables ---- */

typedef struct rounding {
    int64_t n;
    float *base;     /* (n) floor(w / s) */
    float *scale;    /* (n) the scale of each weight's group */
    float *zero;     /* (n) its zero point */
    float *v, *grad; /* (n) the rounding variables and the loss's gradient for them */
    float *h, *dh;   /* (n) h(V) and its slope at the current V (soft_weights sets them) */
    kn_quant_range range;
} rounding;

static void rounding_free(rounding *r) {
    free(r->base);
    free(r->scale);
    free(r->zero);
    free(r->v);
    free(r->grad);
    free(r->h);
    free(r->dh);
}

/* The rectified sigmoid h(V), and its slope in *dh (0 where it is clipped). */
static float rectified_sigmoid(float v, float *dh) {
    float sig = 1.0f / (1.0f + expf(-v)), u = sig * (ZETA - GAMMA) + GAMMA;
    *dh = u > 0 && u < 1 ? sig * (1 - sig) * (ZETA - GAMMA) : 0;
    return fminf(fmaxf(u, 0.0f), 1.0f);
}

/* The grid every weight is rounded on, from its storage's scales and zero points, and V such that
 * h(V) = frac(w / s), the soft weight then equal to w (inside the clipping range). */
static kiln_status rounding_init(rounding *r, const kn_storage *s, const float *w) {
    int64_t n = kn_shape_numel(&s->shape);
    size_t bytes = sizeof(float) * (size_t)(n ? n : 1);
    *r = (rounding){.n = n, .base = malloc(bytes), .scale = malloc(bytes), .zero = malloc(bytes), .v = malloc(bytes),
                    .grad = malloc(bytes), .h = malloc(bytes), .dh = malloc(bytes),
                    .range = kn_quant_range_of(s->bits, s->encoding != KN_ENC_AFFINE_U8 && s->encoding != KN_ENC_AFFINE_I1)};
    if (!r->base || !r->scale || !r->zero || !r->v || !r->grad || !r->h || !r->dh)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld rounding variables", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t k = kn_storage_group_of(s, i);
        r->scale[i] = s->scale[k];
        r->zero[i] = (float)kn_storage_zero_point(s, k);
        r->base[i] = kn_quant_floor(w[i], r->scale[i]);
        float frac = fminf(fmaxf(w[i] / r->scale[i] - r->base[i], 0.0f), 1.0f);
        float sig = (frac - GAMMA) / (ZETA - GAMMA); /* in [1/12, 11/12]: a finite V */
        r->v[i] = logf(sig / (1 - sig));
    }
    return KILN_OK;
}

/* The soft-quantized weights s * (clamp(floor(w / s) + h(V) + z) - z), keeping h(V) and its slope for
 * the gradient. */
static void soft_weights(rounding *r, float *w) {
    for (int64_t i = 0; i < r->n; i++) {
        r->h[i] = rectified_sigmoid(r->v[i], &r->dh[i]);
        float q = kn_quant_clamp(r->base[i] + r->h[i] + r->zero[i], r->range);
        w[i] = (q - r->zero[i]) * r->scale[i];
    }
}

/* The level of weight i when rounded up (h(V) >= 0.5) or down. */
static int32_t learned_level(const rounding *r, int64_t i) {
    float dh, up = rectified_sigmoid(r->v[i], &dh) >= 0.5f ? 1.0f : 0.0f;
    return (int32_t)kn_quant_clamp(r->base[i] + up + r->zero[i], r->range);
}

static void learned_weights(const rounding *r, float *w) {
    for (int64_t i = 0; i < r->n; i++)
        w[i] = kn_quant_value(learned_level(r, i), r->scale[i], (int32_t)r->zero[i]);
}

/* The gradient for V from the reconstruction loss's gradient for the soft weights (grad_w) plus
 * lambda * d/dV sum (1 - |2h - 1|^beta) when beta > 0 (after the warm-up), at the V soft_weights saw. */
static void rounding_gradient(rounding *r, const float *grad_w, float lambda, float beta) {
    float qmin = (float)r->range.qmin, qmax = (float)r->range.qmax;
    for (int64_t i = 0; i < r->n; i++) {
        r->grad[i] = 0;
        if (r->dh[i] == 0) /* h clipped at 0 or 1: nothing flows back to V */
            continue;
        float h = r->h[i], q = r->base[i] + h + r->zero[i];
        /* The clamp of the level passes no gradient outside [qmin, qmax]. */
        float g = q > qmin && q < qmax ? grad_w[i] * r->scale[i] : 0.0f;
        if (beta > 0) {
            float d = 2 * h - 1;
            g -= lambda * 2 * beta * powf(fabsf(d), beta - 1) * (d < 0 ? -1.0f : 1.0f);
        }
        r->grad[i] = g * r->dh[i];
    }
}

/* beta at step t of `iters`: 0 (regulariser off) during the warm-up, then linearly BETA_START -> BETA_END. */
static float beta_at(int64_t t, int64_t iters) {
    double warm = WARMUP * (double)iters;
    if ((double)t < warm)
        return 0;
    double rel = ((double)t - warm) / fmax((double)iters - warm, 1.0);
    return (float)(BETA_END + (BETA_START - BETA_END) * (1.0 - rel));
}

/* ---- optimisation ---- */

typedef struct batch_buffers {
    float *x, *target;    /* (batch, sample), (batch, per_out) */
} batch_buffers;

/* One Adam step: a random batch of (quantized input, float output) pairs, the soft weights forward,
 * the reconstruction gradient back to the weights, then to V. */
static kiln_status adaround_step(layer_graph *lg, rounding *r, kn_optim *opt, const kn_adaround_inputs *in,
                                 const float *target, batch_buffers *b, kn_rng *rng, int64_t t,
                                 const kn_adaround_options *o) {
    int64_t per_in = kn_shape_numel(&lg->sample), count = lg->batch;
    for (int64_t k = 0; k < count; k++) {
        int64_t s = (int64_t)(kn_rng_next(rng) % (uint64_t)in->samples);
        memcpy(b->x + k * per_in, in->quantized + s * per_in, sizeof(float) * (size_t)per_in);
        memcpy(b->target + k * lg->per_out, target + s * lg->per_out, sizeof(float) * (size_t)lg->per_out);
    }
    soft_weights(r, lg->g.values[lg->w].data);
    KN_TRY(layer_forward(lg, b->x, count));
    /* Loss: sum of squared errors per sample, averaged over the batch. */
    const float *y = kn_tape_output(&lg->t, 0)->data;
    float *dy = kn_tape_output_grad(&lg->t, 0)->data;
    for (int64_t i = 0; i < count * lg->per_out; i++)
        dy[i] = 2.0f * (y[i] - b->target[i]) / (float)count;
    kn_tape_zero_param_grads(&lg->t);
    KN_TRY(kn_tape_backward(&lg->t));
    rounding_gradient(r, kn_tape_grad(&lg->t, lg->w)->data, o->lambda, beta_at(t, o->iters));
    return kn_optim_step(opt, o->lr);
}

static kiln_status optimise(layer_graph *lg, rounding *r, const kn_adaround_inputs *in, const float *target,
                            const kn_adaround_options *o) {
    kn_optim_config config = kn_optim_defaults(KN_OPTIM_ADAM);
    config.lr = o->lr;
    kn_param_ref ref = {"adaround.v", r->v, r->grad, {.ndim = 1, .d = {r->n}}};
    kn_optim *opt = kn_optim_create(&config, 1, &ref);
    batch_buffers b = {malloc(sizeof(float) * (size_t)(lg->batch * kn_shape_numel(&lg->sample) + 1)),
                       malloc(sizeof(float) * (size_t)(lg->batch * lg->per_out + 1))};
    kiln_status st = !opt ? KILN_ERR_INVALID_ARG /* kn_optim_create said why */
                     : b.x && b.target ? KILN_OK
                                        : kn_fail(KILN_ERR_NOMEM, "out of memory for an AdaRound batch");
    kn_rng rng = kn_rng_seeded(o->seed);
    for (int64_t t = 0; t < o->iters && st == KILN_OK; t++)
        st = adaround_step(lg, r, opt, in, target, &b, &rng, t, o);
    kn_optim_free(opt);
    free(b.x);
    free(b.target);
    return st;
}

/* ---- the result ---- */

/* Replaces w's affine storage by one with the same scales and zero points and the learned levels, and
 * its data by what that decodes to. */
static kiln_status store_levels(kn_graph *g, int weight, const rounding *r) {
    kn_value *w = &g->values[weight];
    const kn_storage *old = w->storage;
    kn_storage *s = kn_arena_alloc(&g->arena, sizeof *s);
    int64_t n = kn_shape_numel(&old->shape);
    uint8_t *payload = kn_arena_alloc(&g->arena, old->payload_bytes ? old->payload_bytes : 1); /* zeroed */
    if (!s || !payload)
        return kn_fail(KILN_ERR_NOMEM, "out of memory storing weight '%s'", w->name);
    *s = *old;
    for (int64_t i = 0; i < n; i++)
        kn_packed_put(payload, i, old->bits, (unsigned)learned_level(r, i));
    s->payload = payload;
    kiln_status st = kn_storage_check(s);
    if (st != KILN_OK) {
        kn_error_prefix("storing the learned rounding of '%s': ", w->name);
        return st;
    }
    kn_storage_decode(s, w->data);
    w->storage = s;
    return KILN_OK;
}

kiln_status kn_adaround_weight(kn_graph *g, int node, int weight, const float *w_float, const kn_adaround_inputs *in,
                               const kn_adaround_options *o, kn_adaround_result *result) {
    *result = (kn_adaround_result){0};
    KN_TRY(kn_adaround_options_check(o));
    kn_value *w = &g->values[weight];
    const kn_storage *s = w->storage;
    if (!s || !kn_encoding_is_affine(s->encoding))
        return kn_fail(KILN_ERR_INVALID_ARG, "AdaRound: weight '%s' is not stored as dense affine levels", w->name);
    if (in->samples < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "AdaRound needs calibration samples");
    int64_t n = kn_shape_numel(&w->shape), batch = o->batch < in->samples ? o->batch : in->samples;
    layer_graph lg = {0};
    kn_graph_init(&lg.g);
    rounding r = {0};
    float *target = NULL, *learned = malloc(sizeof(float) * (size_t)(n ? n : 1));
    kiln_status st = learned ? rounding_init(&r, s, w_float) : kn_fail(KILN_ERR_NOMEM, "out of memory");
    if (st == KILN_OK)
        st = layer_graph_build(&lg, g, &g->nodes[node], &in->sample_shape, batch);
    if (st == KILN_OK) {
        target = malloc(sizeof(float) * (size_t)(in->samples * lg.per_out + 1));
        st = target ? layer_outputs(&lg, w_float, in->original, in->samples, target)
                    : kn_fail(KILN_ERR_NOMEM, "out of memory for %lld layer outputs", (long long)in->samples);
    }
    if (st == KILN_OK)
        st = layer_error(&lg, w->data, in->quantized, target, in->samples, &result->nearest_mse);
    if (st == KILN_OK)
        st = optimise(&lg, &r, in, target, o);
    if (st == KILN_OK) {
        learned_weights(&r, learned);
        st = layer_error(&lg, learned, in->quantized, target, in->samples, &result->learned_mse);
    }
    if (st == KILN_OK) {
        result->kept_nearest = !(result->learned_mse < result->nearest_mse);
        for (int64_t i = 0; i < n && !result->kept_nearest; i++)
            result->flipped += learned_level(&r, i) != kn_storage_level(s, i);
        if (!result->kept_nearest)
            st = store_levels(g, weight, &r);
    }
    if (st != KILN_OK)
        kn_error_prefix("AdaRound of '%s': ", w->name);
    layer_graph_free(&lg);
    rounding_free(&r);
    free(target);
    free(learned);
    return st;
}
