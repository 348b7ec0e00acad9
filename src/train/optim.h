/* Optimizers: SGD, Adam, AdamW and Adagrad exactly as PyTorch 1.13 defines them, and Adafactor from
 * Shazeer & Stern 2018 (the formulas are in optim.c). An optimizer updates float32 parameters in place
 * from their gradients; its state (step count and buffers) is exposed by name for checkpoints.
 */
#ifndef KN_TRAIN_OPTIM_H
#define KN_TRAIN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

typedef enum kn_optim_kind { KN_OPTIM_SGD, KN_OPTIM_ADAM, KN_OPTIM_ADAMW, KN_OPTIM_ADAGRAD, KN_OPTIM_ADAFACTOR } kn_optim_kind;

typedef struct kn_optim_config {
    kn_optim_kind kind;
    float lr;                 /* <= 0 or NAN: kn_optim_default_lr(kind); Adafactor: relative step size when not set */
    float momentum, dampening; bool nesterov;  /* SGD */
    float weight_decay;       /* SGD/Adam/Adagrad: L2 added to the gradient (PyTorch); AdamW, Adafactor: decoupled */
    float beta1, beta2, eps;  /* Adam/AdamW; eps also for Adagrad (1e-10) */
    float lr_decay, initial_accumulator_value; /* Adagrad */
    /* Adafactor (Shazeer & Stern 2018): */
    float eps1, eps2, clip_threshold, decay_rate; bool relative_step, scale_parameter, warmup_init;
    float af_beta1;           /* af_beta1 <= 0: no first moment */
} kn_optim_config;

/* PyTorch's defaults for `kind` (SGD: lr 1e-2, the CLI's default, as PyTorch has none; Adafactor: the
 * paper's eps1 1e-30, eps2 1e-3, d 1, decay_rate -0.8, relative step with parameter scaling, no first
 * moment, lr unset). Fields that do not apply to `kind` are 0. */
kn_optim_config kn_optim_defaults(kn_optim_kind kind);
/* The learning rate used when config.lr is unset: SGD 1e-2, Adam/AdamW 1e-3, Adagrad 1e-2, Adafactor 1e-2
 * (the ceiling of its relative step, used as the fixed step when relative_step is off). */
float kn_optim_default_lr(kn_optim_kind kind);

/* "sgd" "adam" "adamw" "adagrad" "adafactor"; an unknown name gives KILN_ERR_INVALID_ARG listing them. */
kiln_status kn_optim_parse(const char *name, kn_optim_kind *out);
const char *kn_optim_name(kn_optim_kind kind);

/* One parameter: data and grad hold numel(shape) floats each and outlive the optimizer. */
typedef struct kn_param_ref {
    const char *name;
    float *data;
    float *grad;
    kn_shape shape;
} kn_param_ref;

typedef struct kn_optim kn_optim;

/* Checks the config and copies it and the param list (names too, not the data). Every state buffer is
 * allocated here (zeros, or Adagrad's initial accumulator) so a checkpoint can save it before the first
 * step. Parameter names must be unique. NULL with kiln_last_error set on failure. */
kn_optim *kn_optim_create(const kn_optim_config *config, int n_params, const kn_param_ref *params);
void kn_optim_free(kn_optim *opt);

/* One update of every parameter from its grad; lr (finite, >= 0) is the scheduled learning rate for
 * this step (ignored by Adafactor with relative_step). Increments the step count first (t starts at 1
 * like PyTorch). */
kiln_status kn_optim_step(kn_optim *opt, float lr);

/* Checkpointing: the step count and every state buffer. */
int64_t kn_optim_step_count(const kn_optim *opt);
void kn_optim_set_step_count(kn_optim *opt, int64_t t);
int kn_optim_state_count(const kn_optim *opt);
/* i-th state buffer, in a fixed order (parameter by parameter): its stable name "<buffer>/<param name>"
 * (buffer: momentum_buffer; exp_avg, exp_avg_sq; sum; Adafactor exp_avg_sq_row, exp_avg_sq_col or
 * exp_avg_sq, and exp_avg), its data and element count. NULL when i is out of range. */
float *kn_optim_state(const kn_optim *opt, int i, const char **name, int64_t *numel);

#endif
