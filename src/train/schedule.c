#include "train/schedule.h"

#include <math.h>
#include <string.h>

static const char *const kn_schedule_names[] = {
    [KN_SCHEDULE_CONSTANT] = "constant",
    [KN_SCHEDULE_STEP] = "step",
    [KN_SCHEDULE_COSINE] = "cosine",
};
enum { KN_SCHEDULE_KIND_COUNT = sizeof kn_schedule_names / sizeof kn_schedule_names[0] };

kiln_status kn_schedule_parse(const char *name, kn_schedule_kind *out) {
    for (int kind = 0; name && kind < KN_SCHEDULE_KIND_COUNT; kind++) {
        if (strcmp(name, kn_schedule_names[kind]) == 0) {
            *out = (kn_schedule_kind)kind;
            return KILN_OK;
        }
    }
    return kn_fail(KILN_ERR_INVALID_ARG, "unknown LR schedule '%s' (valid: constant, step, cosine)",
                   name ? name : "(null)");
}

const char *kn_schedule_name(kn_schedule_kind kind) {
    if ((int)kind < 0 || (int)kind >= KN_SCHEDULE_KIND_COUNT)
        return "?";
    return kn_schedule_names[kind];
}

kiln_status kn_schedule_validate(const kn_schedule *s) {
    if ((int)s->kind < 0 || (int)s->kind >= KN_SCHEDULE_KIND_COUNT)
        return kn_fail(KILN_ERR_INVALID_ARG, "LR schedule: unknown kind %d", (int)s->kind);
    const char *name = kn_schedule_name(s->kind);
    if (!(isfinite(s->base_lr) && s->base_lr > 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "%s schedule: learning rate %g must be finite and > 0", name,
                       (double)s->base_lr);
    if (s->warmup_steps < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s schedule: warm-up steps %lld must be >= 0", name,
                       (long long)s->warmup_steps);
    if (s->kind == KN_SCHEDULE_STEP && (s->step_size <= 0 || !(isfinite(s->gamma) && s->gamma > 0)))
        return kn_fail(KILN_ERR_INVALID_ARG, "step schedule: step size %lld must be > 0 and gamma %g finite and > 0",
                       (long long)s->step_size, (double)s->gamma);
    if (s->kind == KN_SCHEDULE_COSINE && s->total_steps <= s->warmup_steps)
        return kn_fail(KILN_ERR_INVALID_ARG, "cosine schedule: total steps %lld must exceed the %lld warm-up steps",
                       (long long)s->total_steps, (long long)s->warmup_steps);
    if (s->kind == KN_SCHEDULE_COSINE && !(s->min_lr >= 0 && s->min_lr <= s->base_lr))
        return kn_fail(KILN_ERR_INVALID_ARG, "cosine schedule: min_lr %g must be in [0, base_lr %g]",
                       (double)s->min_lr, (double)s->base_lr);
    return KILN_OK;
}

/* Unvalidated fields degrade gracefully (no decay, or min_lr) rather than divide by zero. */
float kn_schedule_lr(const kn_schedule *s, int64_t step) {
    const double base = s->base_lr;
    if (step < 0)
        step = 0;
    if (step < s->warmup_steps)
        return (float)(base * (double)(step + 1) / (double)s->warmup_steps);
    const int64_t since_warmup = step - (s->warmup_steps > 0 ? s->warmup_steps : 0);
    switch (s->kind) {
    case KN_SCHEDULE_CONSTANT: break;
    case KN_SCHEDULE_STEP:
        if (s->step_size > 0)
            return (float)(base * pow(s->gamma, (double)(since_warmup / s->step_size)));
        break;
    case KN_SCHEDULE_COSINE: {
        const int64_t decay_steps = s->total_steps - s->warmup_steps;
        const double progress = decay_steps > 0 ? fmin(1.0, (double)since_warmup / (double)decay_steps) : 1.0;
        return (float)(s->min_lr + (base - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress)));
    }
    }
    return (float)base;
}

double kn_grad_clip_global_norm(const kn_param_ref *params, int n, float max_norm) {
    double sum_sq = 0.0;
    for (int i = 0; i < n; i++) {
        const float *g = params[i].grad;
        const int64_t count = kn_shape_numel(&params[i].shape);
        for (int64_t j = 0; j < count; j++)
            sum_sq += (double)g[j] * g[j];
    }
    const double norm = sqrt(sum_sq);
    if (!(max_norm > 0) || !isfinite(norm))
        return norm;
    /* PyTorch's coefficient, 1e-6 included, so a norm just at max_norm is scaled as there. */
    const double coef = (double)max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const float scale = (float)coef;
        for (int i = 0; i < n; i++) {
            float *g = params[i].grad;
            const int64_t count = kn_shape_numel(&params[i].shape);
            for (int64_t j = 0; j < count; j++)
                g[j] *= scale;
        }
    }
    return norm;
}
