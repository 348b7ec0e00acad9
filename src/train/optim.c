#include "core/threads.h"
#include "train/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Elementwise update loops go parallel from this many elements; below it thread start-up costs more
 * than it saves. Each element is updated by one thread, so results do not depend on the thread count. */
enum { KN_OPTIM_PARALLEL_MIN = KN_PARALLEL_MIN_MEMORY };

/* A named state buffer, as checkpoints see it. */
typedef struct kn_optim_buffer {
    char *name; /* "<buffer>/<param name>" */
    float *data;
    int64_t numel;
} kn_optim_buffer;

/* One parameter and its state; buffers a method does not use are NULL. */
typedef struct kn_optim_slot {
    kn_param_ref param; /* param.name points at the optimizer's own copy */
    int64_t numel;
    float *moment1;     /* SGD momentum_buffer, Adam and Adafactor exp_avg            (numel) */
    float *moment2;     /* Adam exp_avg_sq, Adagrad sum, unfactored Adafactor exp_avg_sq (numel) */
    float *row, *col;   /* factored Adafactor exp_avg_sq_row (lead, rows), exp_avg_sq_col (lead, cols) */
    int64_t lead, rows, cols; /* Adafactor's view of the parameter: (lead, rows, cols); 1-D: (1, 1, numel) */
} kn_optim_slot;

struct kn_optim {
    kn_optim_config config;
    int64_t t;
    int n_params;
    kn_optim_slot *slots;
    int n_states;
    kn_optim_buffer *states; /* at most 3 per parameter */
    double *factors;         /* Adafactor: 1/sqrt of the normalised row and column moments, (lead, rows + cols) */
};

static const char *const kn_optim_names[] = {
    [KN_OPTIM_SGD] = "sgd",
    [KN_OPTIM_ADAM] = "adam",
    [KN_OPTIM_ADAMW] = "adamw",
    [KN_OPTIM_ADAGRAD] = "adagrad",
    [KN_OPTIM_ADAFACTOR] = "adafactor",
};
enum { KN_OPTIM_KIND_COUNT = sizeof kn_optim_names / sizeof kn_optim_names[0] };

kiln_status kn_optim_parse(const char *name, kn_optim_kind *out) {
    for (int kind = 0; name && kind < KN_OPTIM_KIND_COUNT; kind++) {
        if (strcmp(name, kn_optim_names[kind]) == 0) {
            *out = (kn_optim_kind)kind;
            return KILN_OK;
        }
    }
    return kn_fail(KILN_ERR_INVALID_ARG, "unknown optimizer '%s' (valid: sgd, adam, adamw, adagrad, adafactor)",
                   name ? name : "(null)");
}

const char *kn_optim_name(kn_optim_kind kind) {
    if ((int)kind < 0 || (int)kind >= KN_OPTIM_KIND_COUNT)
        return "?";
    return kn_optim_names[kind];
}

float kn_optim_default_lr(kn_optim_kind kind) {
    switch (kind) {
    case KN_OPTIM_ADAM:
    case KN_OPTIM_ADAMW: return 1e-3f;
    case KN_OPTIM_SGD:
    case KN_OPTIM_ADAGRAD:
    case KN_OPTIM_ADAFACTOR: return 1e-2f;
    }
    return 1e-3f;
}

kn_optim_config kn_optim_defaults(kn_optim_kind kind) {
    kn_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lr = kn_optim_default_lr(kind);
    switch (kind) {
    case KN_OPTIM_SGD: break;
    case KN_OPTIM_ADAM:
    case KN_OPTIM_ADAMW:
        c.beta1 = 0.9f;
        c.beta2 = 0.999f;
        c.eps = 1e-8f;
        c.weight_decay = kind == KN_OPTIM_ADAMW ? 1e-2f : 0.0f;
        break;
    case KN_OPTIM_ADAGRAD: c.eps = 1e-10f; break;
    case KN_OPTIM_ADAFACTOR:
        c.lr = 0.0f; /* unset: the relative step decides */
        c.eps1 = 1e-30f;
        c.eps2 = 1e-3f;
        c.clip_threshold = 1.0f;
        c.decay_rate = -0.8f;
        c.relative_step = true;
        c.scale_parameter = true;
        break;
    }
    return c;
}

/* Fails with "<optimizer>: <field> = <value> must be <rule>" when !ok. */
static kiln_status kn_optim_require(bool ok, const kn_optim_config *c, const char *field, double value,
                                    const char *rule) {
    if (ok)
        return KILN_OK;
    return kn_fail(KILN_ERR_INVALID_ARG, "%s: %s = %g must be %s", kn_optim_name(c->kind), field, value, rule);
}

static kiln_status kn_optim_check_config(const kn_optim_config *c) {
    if ((int)c->kind < 0 || (int)c->kind >= KN_OPTIM_KIND_COUNT)
        return kn_fail(KILN_ERR_INVALID_ARG, "optimizer: unknown kind %d", (int)c->kind);
    KN_TRY(kn_optim_require(isfinite(c->weight_decay) && c->weight_decay >= 0, c, "weight_decay", c->weight_decay,
                            "finite and >= 0"));
    switch (c->kind) {
    case KN_OPTIM_SGD:
        KN_TRY(kn_optim_require(isfinite(c->momentum) && c->momentum >= 0, c, "momentum", c->momentum,
                                "finite and >= 0"));
        KN_TRY(kn_optim_require(isfinite(c->dampening), c, "dampening", c->dampening, "finite"));
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return kn_fail(KILN_ERR_INVALID_ARG, "sgd: nesterov needs momentum > 0 and dampening 0 (got %g and %g)",
                           (double)c->momentum, (double)c->dampening);
        break;
    case KN_OPTIM_ADAM:
    case KN_OPTIM_ADAMW:
        KN_TRY(kn_optim_require(c->beta1 >= 0 && c->beta1 < 1, c, "beta1", c->beta1, "in [0, 1)"));
        KN_TRY(kn_optim_require(c->beta2 >= 0 && c->beta2 < 1, c, "beta2", c->beta2, "in [0, 1)"));
        KN_TRY(kn_optim_require(isfinite(c->eps) && c->eps >= 0, c, "eps", c->eps, "finite and >= 0"));
        break;
    case KN_OPTIM_ADAGRAD:
        KN_TRY(kn_optim_require(isfinite(c->lr_decay) && c->lr_decay >= 0, c, "lr_decay", c->lr_decay,
                                "finite and >= 0"));
        KN_TRY(kn_optim_require(isfinite(c->initial_accumulator_value) && c->initial_accumulator_value >= 0, c,
                                "initial_accumulator_value", c->initial_accumulator_value, "finite and >= 0"));
        KN_TRY(kn_optim_require(isfinite(c->eps) && c->eps >= 0, c, "eps", c->eps, "finite and >= 0"));
        break;
    case KN_OPTIM_ADAFACTOR:
        /* eps1 > 0 keeps the second moment of an all-zero gradient row away from 0/0. */
        KN_TRY(kn_optim_require(isfinite(c->eps1) && c->eps1 > 0, c, "eps1", c->eps1, "finite and > 0"));
        KN_TRY(kn_optim_require(isfinite(c->eps2) && c->eps2 >= 0, c, "eps2", c->eps2, "finite and >= 0"));
        KN_TRY(kn_optim_require(isfinite(c->clip_threshold) && c->clip_threshold > 0, c, "clip_threshold",
                                c->clip_threshold, "finite and > 0"));
        KN_TRY(kn_optim_require(isfinite(c->decay_rate) && c->decay_rate <= 0, c, "decay_rate", c->decay_rate,
                                "finite and <= 0"));
        KN_TRY(kn_optim_require(c->af_beta1 < 1, c, "af_beta1", c->af_beta1, "< 1 (<= 0: no first moment)"));
        break;
    }
    return KILN_OK;
}

static kiln_status kn_optim_check_params(const kn_optim_config *c, int n_params, const kn_param_ref *params) {
    for (int i = 0; i < n_params; i++) {
        const kn_param_ref *p = &params[i];
        size_t bytes;
        if (!p->name || !p->name[0])
            return kn_fail(KILN_ERR_INVALID_ARG, "%s: parameter %d has no name", kn_optim_name(c->kind), i);
        if (!p->data || !p->grad)
            return kn_fail(KILN_ERR_INVALID_ARG, "%s: parameter '%s' has no %s", kn_optim_name(c->kind), p->name,
                           p->data ? "gradient" : "data");
        if (p->shape.ndim < 0 || p->shape.ndim > KN_MAX_DIMS || !kn_shape_bytes(&p->shape, KN_F32, &bytes) ||
            bytes == 0)
            return kn_fail(KILN_ERR_SHAPE, "%s: parameter '%s' has an empty or invalid shape", kn_optim_name(c->kind),
                           p->name);
        for (int j = 0; j < i; j++)
            if (strcmp(params[j].name, p->name) == 0)
                return kn_fail(KILN_ERR_INVALID_ARG, "%s: two parameters are named '%s'; state names must be unique",
                               kn_optim_name(c->kind), p->name);
    }
    return KILN_OK;
}

/* Allocates a state buffer of `numel` floats set to `init` and lists it as "<buffer>/<param>". */
static float *kn_optim_add_state(kn_optim *opt, const char *buffer, const char *param, int64_t numel, float init) {
    size_t bytes;
    if (!kn_size_mul((size_t)numel, sizeof(float), &bytes)) {
        kn_fail(KILN_ERR_NOMEM, "%s: state %s/%s of %lld floats is too large", kn_optim_name(opt->config.kind),
                buffer, param, (long long)numel);
        return NULL;
    }
    size_t name_size = strlen(buffer) + 1 + strlen(param) + 1;
    kn_optim_buffer *state = &opt->states[opt->n_states];
    state->name = malloc(name_size);
    state->data = malloc(bytes);
    if (!state->name || !state->data) {
        free(state->name);
        free(state->data);
        kn_fail(KILN_ERR_NOMEM, "%s: out of memory for state %s/%s (%zu bytes)", kn_optim_name(opt->config.kind),
                buffer, param, bytes);
        return NULL;
    }
    snprintf(state->name, name_size, "%s/%s", buffer, param);
    for (int64_t i = 0; i < numel; i++)
        state->data[i] = init;
    state->numel = numel;
    opt->n_states++;
    return state->data;
}

/* The state each method keeps for one parameter (PyTorch's buffer names; Hugging Face's for Adafactor). */
static kiln_status kn_optim_slot_init(kn_optim *opt, kn_optim_slot *s) {
    const kn_optim_config *c = &opt->config;
    const char *name = s->param.name;
    switch (c->kind) {
    case KN_OPTIM_SGD:
        if (c->momentum != 0 && !(s->moment1 = kn_optim_add_state(opt, "momentum_buffer", name, s->numel, 0.0f)))
            return KILN_ERR_NOMEM;
        break;
    case KN_OPTIM_ADAM:
    case KN_OPTIM_ADAMW:
        if (!(s->moment1 = kn_optim_add_state(opt, "exp_avg", name, s->numel, 0.0f)) ||
            !(s->moment2 = kn_optim_add_state(opt, "exp_avg_sq", name, s->numel, 0.0f)))
            return KILN_ERR_NOMEM;
        break;
    case KN_OPTIM_ADAGRAD:
        if (!(s->moment2 = kn_optim_add_state(opt, "sum", name, s->numel, c->initial_accumulator_value)))
            return KILN_ERR_NOMEM;
        break;
    case KN_OPTIM_ADAFACTOR: {
        const kn_shape *shape = &s->param.shape;
        s->lead = 1;
        s->rows = 1;
        s->cols = s->numel;
        if (shape->ndim >= 2) {
            s->lead = kn_shape_span(shape, 0, shape->ndim - 2);
            s->rows = shape->d[shape->ndim - 2];
            s->cols = shape->d[shape->ndim - 1];
            if (!(s->row = kn_optim_add_state(opt, "exp_avg_sq_row", name, s->lead * s->rows, 0.0f)) ||
                !(s->col = kn_optim_add_state(opt, "exp_avg_sq_col", name, s->lead * s->cols, 0.0f)))
                return KILN_ERR_NOMEM;
        } else if (!(s->moment2 = kn_optim_add_state(opt, "exp_avg_sq", name, s->numel, 0.0f))) {
            return KILN_ERR_NOMEM;
        }
        if (c->af_beta1 > 0 && !(s->moment1 = kn_optim_add_state(opt, "exp_avg", name, s->numel, 0.0f)))
            return KILN_ERR_NOMEM;
        break;
    }
    }
    return KILN_OK;
}

/* Adafactor's scratch: (lead, rows + cols) doubles for the largest factored parameter. */
static kiln_status kn_optim_alloc_factors(kn_optim *opt) {
    size_t most = 0;
    for (int i = 0; i < opt->n_params; i++) {
        const kn_optim_slot *s = &opt->slots[i];
        size_t count = (size_t)(s->lead * (s->rows + s->cols));
        if (s->row && count > most)
            most = count;
    }
    size_t bytes;
    if (most == 0)
        return KILN_OK;
    if (!kn_size_mul(most, sizeof(double), &bytes) || !(opt->factors = malloc(bytes)))
        return kn_fail(KILN_ERR_NOMEM, "adafactor: out of memory for %zu scratch factors", most);
    return KILN_OK;
}

kn_optim *kn_optim_create(const kn_optim_config *config, int n_params, const kn_param_ref *params) {
    if (!config || n_params < 0 || (n_params > 0 && !params)) {
        kn_fail(KILN_ERR_INVALID_ARG, "optimizer: NULL config or bad parameter list (%d parameters)", n_params);
        return NULL;
    }
    if (kn_optim_check_config(config) != KILN_OK || kn_optim_check_params(config, n_params, params) != KILN_OK)
        return NULL;
    kn_optim *opt = calloc(1, sizeof *opt);
    if (!opt) {
        kn_fail(KILN_ERR_NOMEM, "optimizer: out of memory");
        return NULL;
    }
    opt->config = *config;
    if (!(opt->config.lr > 0)) /* also NAN */
        opt->config.lr = kn_optim_default_lr(config->kind);
    opt->slots = calloc((size_t)n_params + 1, sizeof *opt->slots);
    opt->states = calloc(3 * (size_t)n_params + 1, sizeof *opt->states);
    if (!opt->slots || !opt->states) {
        kn_fail(KILN_ERR_NOMEM, "optimizer: out of memory for %d parameters", n_params);
        kn_optim_free(opt);
        return NULL;
    }
    for (int i = 0; i < n_params; i++) {
        kn_optim_slot *s = &opt->slots[i];
        char *name = malloc(strlen(params[i].name) + 1);
        if (!name) {
            kn_fail(KILN_ERR_NOMEM, "optimizer: out of memory");
            kn_optim_free(opt);
            return NULL;
        }
        strcpy(name, params[i].name);
        s->param = params[i];
        s->param.name = name;
        s->numel = kn_shape_numel(&params[i].shape);
        opt->n_params = i + 1;
        if (kn_optim_slot_init(opt, s) != KILN_OK) {
            kn_optim_free(opt);
            return NULL;
        }
    }
    if (kn_optim_alloc_factors(opt) != KILN_OK) {
        kn_optim_free(opt);
        return NULL;
    }
    return opt;
}

void kn_optim_free(kn_optim *opt) {
    if (!opt)
        return;
    for (int i = 0; i < opt->n_params; i++)
        free((char *)opt->slots[i].param.name);
    for (int i = 0; i < opt->n_states; i++) {
        free(opt->states[i].name);
        free(opt->states[i].data);
    }
    free(opt->slots);
    free(opt->states);
    free(opt->factors);
    free(opt);
}

/* One step of SGD, Adam(W) or Adagrad on one parameter, for kn_parallel_range over its elements (each
 * piece derives the step's scalars itself: the same floats in every piece). */
typedef struct optim_update {
    const kn_optim_config *config;
    int64_t t;
    float lr;
    const kn_optim_slot *slot;
} optim_update;

/* PyTorch's SGD, with d = 1 - dampening:
 *   g += wd p;   b = g at t = 1, else momentum b + d g;   g = nesterov ? g + momentum b : b;   p -= lr g
 * Scalars are rounded to float once, where PyTorch rounds them. */
static void sgd_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const optim_update *u = ctx;
    const kn_optim_config *c = u->config;
    const kn_optim_slot *s = u->slot;
    const float lr = u->lr;
    float *p = s->param.data, *buf = s->moment1;
    const float *grad = s->param.grad;
    const float wd = c->weight_decay, momentum = c->momentum, keep = (float)(1.0 - (double)c->dampening);
    const bool first = u->t == 1, nesterov = c->nesterov;
    for (int64_t i = begin; i < end; i++) {
        float g = grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        if (buf) {
            buf[i] = first ? g : momentum * buf[i] + keep * g;
            g = nesterov ? g + momentum * buf[i] : buf[i];
        }
        p[i] += -lr * g;
    }
}

/* PyTorch's Adam (L2: g += wd p) and AdamW (decoupled: p *= 1 - lr wd first):
 *   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)     (eps after the corrected sqrt) */
static void adam_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const optim_update *u = ctx;
    const kn_optim_config *c = u->config;
    const kn_optim_slot *s = u->slot;
    const float lr = u->lr;
    const int64_t t = u->t;
    float *p = s->param.data, *m = s->moment1, *v = s->moment2;
    const float *grad = s->param.grad;
    const bool decoupled = c->kind == KN_OPTIM_ADAMW;
    const float l2 = decoupled ? 0.0f : c->weight_decay;
    const float shrink = decoupled ? (float)(1.0 - (double)lr * c->weight_decay) : 1.0f;
    const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const float one_minus_b1 = (float)(1.0 - (double)b1), one_minus_b2 = (float)(1.0 - (double)b2);
    const double correction1 = 1.0 - pow(b1, (double)t), correction2 = 1.0 - pow(b2, (double)t);
    const float neg_step = (float)(-(double)lr / correction1), correction2_sqrt = (float)sqrt(correction2);
    for (int64_t i = begin; i < end; i++) {
        float g = grad[i];
        if (l2 != 0.0f)
            g += l2 * p[i];
        m[i] = b1 * m[i] + one_minus_b1 * g;
        v[i] = b2 * v[i] + one_minus_b2 * g * g;
        float denom = sqrtf(v[i]) / correction2_sqrt + eps;
        p[i] = p[i] * shrink + neg_step * m[i] / denom;
    }
}

/* PyTorch's Adagrad:  g += wd p;   sum += g^2;   p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps) */
static void adagrad_range(void *ctx, int64_t begin, int64_t end, int slot) {
    (void)slot;
    const optim_update *u = ctx;
    const kn_optim_config *c = u->config;
    const kn_optim_slot *s = u->slot;
    const float lr = u->lr;
    const int64_t t = u->t;
    float *p = s->param.data, *sum = s->moment2;
    const float *grad = s->param.grad;
    const float wd = c->weight_decay, eps = c->eps;
    const float neg_clr = (float)(-(double)lr / (1.0 + (double)(t - 1) * c->lr_decay));
    for (int64_t i = begin; i < end; i++) {
        float g = grad[i];
        if (wd != 0.0f)
            g += wd * p[i];
        sum[i] += g * g;
        p[i] += neg_clr * g / (sqrtf(sum[i]) + eps);
    }
}

/* Adafactor: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018,
 * arXiv:1804.04235. Algorithm 4 (factored second moment for matrices), Algorithm 5 (vectors), section 6
 * (update clipping), 7.1 (increasing decay), 8 (relative step size). For parameter X, gradient G, t >= 1:
 *
 *   beta2_t = 1 - t^decay_rate                                       (decay_rate -0.8: beta2_1 = 0)
 *   rho_t   = lr (not relative_step) | min(1e-2, 1/sqrt(t)) | min(1e-6 t, 1/sqrt(t)) (warmup_init)
 *   alpha_t = max(eps2, RMS(X_{t-1})) rho_t   (scale_parameter; else alpha_t = rho_t)
 *   ndim >= 2, viewed as (lead, rows, cols), each of the `lead` matrices on its own:
 *     R_t = beta2_t R_{t-1} + (1 - beta2_t) rowmean(G^2 + eps1)       (rows)
 *     C_t = beta2_t C_{t-1} + (1 - beta2_t) colmean(G^2 + eps1)       (cols)
 *     V_t = R_t C_t^T / mean(R_t)
 *   ndim <= 1:  V_t = beta2_t V_{t-1} + (1 - beta2_t)(G^2 + eps1)
 *   U_t = G / sqrt(V_t);   U^_t = U_t / max(1, RMS(U_t) / clip_threshold)
 *   af_beta1 > 0:  m_t = af_beta1 m_{t-1} + (1 - af_beta1) U^_t, used in place of U^_t
 *   X_t = X_{t-1} - alpha_t weight_decay X_{t-1} - alpha_t U^_t
 *
 * RMS is over the whole parameter. Row/column means in place of the paper's sums give the same V_t.
 * The first moment follows the task's contract (momentum of the clipped update, before alpha_t); T2T and
 * Hugging Face average alpha_t U^_t instead, which is the same whenever alpha_t is constant.
 * Arithmetic is in double; the state is stored in float, and every step reads it back from there, so a
 * restored checkpoint continues bit-identically. Runs on one thread: its sums keep a fixed order. */

static double kn_rms(const float *x, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)x[i] * x[i];
    return sqrt(sum / (double)n);
}

/* Updates R and C of one parameter from G and leaves in `factors` (lead, rows + cols):
 * sqrt(mean(R) / R_i) for each row, then 1 / sqrt(C_j) for each column, so that U_ij = G_ij * both. */
static void kn_adafactor_factored_moment(const kn_optim_slot *s, double beta2, double eps1, double *factors) {
    const float *grad = s->param.grad;
    for (int64_t b = 0; b < s->lead; b++) {
        float *row = s->row + b * s->rows, *col = s->col + b * s->cols;  // (rows), (cols)
        double *row_factor = factors + b * (s->rows + s->cols);           // (rows)
        double *col_factor = row_factor + s->rows;                        // (cols), first the column sums
        const float *g = grad + b * s->rows * s->cols;                    // (rows, cols)
        for (int64_t j = 0; j < s->cols; j++)
            col_factor[j] = 0.0;
        for (int64_t i = 0; i < s->rows; i++) {
            double row_sum = 0.0;
            for (int64_t j = 0; j < s->cols; j++) {
                double sq = (double)g[i * s->cols + j] * g[i * s->cols + j] + eps1;
                row_sum += sq;
                col_factor[j] += sq;
            }
            row[i] = (float)(beta2 * row[i] + (1.0 - beta2) * row_sum / (double)s->cols);
        }
        double row_mean = 0.0;
        for (int64_t i = 0; i < s->rows; i++)
            row_mean += row[i];
        row_mean /= (double)s->rows;
        for (int64_t i = 0; i < s->rows; i++)
            row_factor[i] = sqrt(row_mean / row[i]);
        for (int64_t j = 0; j < s->cols; j++) {
            col[j] = (float)(beta2 * col[j] + (1.0 - beta2) * col_factor[j] / (double)s->rows);
            col_factor[j] = 1.0 / sqrt((double)col[j]);
        }
    }
}

static void kn_adafactor_unfactored_moment(const kn_optim_slot *s, double beta2, double eps1) {
    for (int64_t i = 0; i < s->numel; i++) {
        double sq = (double)s->param.grad[i] * s->param.grad[i] + eps1;
        s->moment2[i] = (float)(beta2 * s->moment2[i] + (1.0 - beta2) * sq);
    }
}

/* U = G / sqrt(V) at element (r, j) of the parameter viewed as (lead * rows, cols). */
static inline double kn_adafactor_u(const kn_optim_slot *s, const double *factors, int64_t r, int64_t j) {
    int64_t e = r * s->cols + j;
    if (!s->row)
        return s->param.grad[e] / sqrt((double)s->moment2[e]);
    int64_t b = r / s->rows;
    const double *row_factor = factors + b * (s->rows + s->cols), *col_factor = row_factor + s->rows;
    return s->param.grad[e] * row_factor[r - b * s->rows] * col_factor[j];
}

static void kn_adafactor_update(const kn_optim *opt, float lr, const kn_optim_slot *s) {
    const kn_optim_config *c = &opt->config;
    const double t = (double)opt->t;
    const double beta2 = 1.0 - pow(t, c->decay_rate);
    double rho = lr;
    if (c->relative_step)
        rho = fmin(c->warmup_init ? 1e-6 * t : 1e-2, 1.0 / sqrt(t));
    float *p = s->param.data;
    const double alpha = c->scale_parameter ? fmax(c->eps2, kn_rms(p, s->numel)) * rho : rho;

    if (s->row)
        kn_adafactor_factored_moment(s, beta2, c->eps1, opt->factors);
    else
        kn_adafactor_unfactored_moment(s, beta2, c->eps1);

    const int64_t n_rows = s->lead * s->rows;
    double sum_u2 = 0.0;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t j = 0; j < s->cols; j++) {
            double u = kn_adafactor_u(s, opt->factors, r, j);
            sum_u2 += u * u;
        }
    const double clip = fmax(1.0, sqrt(sum_u2 / (double)s->numel) / c->clip_threshold);

    const double beta1 = c->af_beta1, decay = alpha * c->weight_decay;
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t j = 0; j < s->cols; j++) {
            int64_t e = r * s->cols + j;
            double u = kn_adafactor_u(s, opt->factors, r, j) / clip;
            if (s->moment1) {
                s->moment1[e] = (float)(beta1 * s->moment1[e] + (1.0 - beta1) * u);
                u = s->moment1[e];
            }
            p[e] = (float)(p[e] - decay * p[e] - alpha * u);
        }
}

kiln_status kn_optim_step(kn_optim *opt, float lr) {
    if (!opt)
        return kn_fail(KILN_ERR_INVALID_ARG, "optimizer step: NULL optimizer");
    const kn_optim_config *c = &opt->config;
    bool uses_lr = !(c->kind == KN_OPTIM_ADAFACTOR && c->relative_step);
    if (uses_lr && !(isfinite(lr) && lr >= 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s step %lld: learning rate %g must be finite and >= 0",
                       kn_optim_name(c->kind), (long long)opt->t + 1, (double)lr);
    opt->t++;
    for (int i = 0; i < opt->n_params; i++) {
        const kn_optim_slot *s = &opt->slots[i];
        optim_update u = {c, opt->t, lr, s};
        int threads = kn_threads_for(s->numel, KN_OPTIM_PARALLEL_MIN);
        switch (c->kind) {
        case KN_OPTIM_SGD: kn_parallel_range(s->numel, threads, sgd_range, &u); break;
        case KN_OPTIM_ADAM:
        case KN_OPTIM_ADAMW: kn_parallel_range(s->numel, threads, adam_range, &u); break;
        case KN_OPTIM_ADAGRAD: kn_parallel_range(s->numel, threads, adagrad_range, &u); break;
        case KN_OPTIM_ADAFACTOR: kn_adafactor_update(opt, lr, s); break;
        }
    }
    return KILN_OK;
}

int64_t kn_optim_step_count(const kn_optim *opt) { return opt->t; }

void kn_optim_set_step_count(kn_optim *opt, int64_t t) { opt->t = t > 0 ? t : 0; }

int kn_optim_state_count(const kn_optim *opt) { return opt->n_states; }

float *kn_optim_state(const kn_optim *opt, int i, const char **name, int64_t *numel) {
    if (i < 0 || i >= opt->n_states)
        return NULL;
    if (name)
        *name = opt->states[i].name;
    if (numel)
        *numel = opt->states[i].numel;
    return opt->states[i].data;
}
