/* Learning-rate schedules (linear warm-up, then constant, step decay or cosine) and global-norm
 * gradient clipping, as PyTorch's LinearLR + StepLR / CosineAnnealingLR and clip_grad_norm_ compute them.
 */
#ifndef KN_TRAIN_SCHEDULE_H
#define KN_TRAIN_SCHEDULE_H

#include <stdint.h>

#include "core/status.h"
#include "train/optim.h"

typedef enum kn_schedule_kind { KN_SCHEDULE_CONSTANT, KN_SCHEDULE_STEP, KN_SCHEDULE_COSINE } kn_schedule_kind;

typedef struct kn_schedule {
    kn_schedule_kind kind;
    float base_lr;
    int64_t warmup_steps; /* 0: no warm-up */
    int64_t total_steps;  /* cosine: the decay ends at min_lr after total_steps (warm-up included) */
    int64_t step_size;    /* step: multiply by gamma every step_size steps after the warm-up */
    float gamma;
    float min_lr;         /* cosine */
} kn_schedule;

/* "constant" "step" "cosine"; an unknown name gives KILN_ERR_INVALID_ARG listing them. */
kiln_status kn_schedule_parse(const char *name, kn_schedule_kind *out);
const char *kn_schedule_name(kn_schedule_kind kind);

/* Checks the fields kn_schedule_lr reads for s->kind: base_lr > 0, warmup_steps >= 0; step: step_size > 0,
 * gamma > 0; cosine: total_steps > warmup_steps, 0 <= min_lr <= base_lr. */
kiln_status kn_schedule_validate(const kn_schedule *s);

/* The learning rate of step `step` (from 0):
 *   step < warmup_steps:  base_lr (step + 1) / warmup_steps
 *   constant:             base_lr
 *   step:                 base_lr gamma^floor((step - warmup_steps) / step_size)
 *   cosine:               min_lr + (base_lr - min_lr) (1 + cos(pi p)) / 2,
 *                         p = (step - warmup_steps) / (total_steps - warmup_steps), held at 1 past the end */
float kn_schedule_lr(const kn_schedule *s, int64_t step);

/* Scales all grads so their global L2 norm is at most max_norm (max_norm <= 0: no clipping), by
 * max_norm / (norm + 1e-6) like torch.nn.utils.clip_grad_norm_. Returns the norm before clipping
 * (double accumulation, fixed order). A non-finite norm leaves the grads untouched for the caller to
 * report. */
double kn_grad_clip_global_norm(const kn_param_ref *params, int n, float max_norm);

#endif
