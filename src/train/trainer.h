/* The training loop: epochs of shuffled mini-batches through the tape, the loss, gradient clipping,
 * the LR schedule and the optimizer; validation, a CSV log and an atomic checkpoint after every epoch
 * (and at an interrupt, mid-epoch); exact resumption from a checkpoint, which records the run's options
 * (train/checkpoint.h); early stopping on the validation loss and keeping the best epoch's weights. */
#ifndef KN_TRAINER_H
#define KN_TRAINER_H

#include <signal.h>

#include "format/kiln_file.h"
#include "train/augment.h"
#include "train/data.h"
#include "train/loss.h"
#include "train/optim.h"
#include "train/schedule.h"

typedef enum kn_progress_event { KN_PROGRESS_STEP, KN_PROGRESS_EPOCH } kn_progress_event;

typedef struct kn_train_progress {
    kn_progress_event event;
    int64_t epoch, epochs;            /* epoch counts from 1 */
    int64_t batch_index, batches;     /* within the epoch */
    int64_t step;                     /* optimizer steps so far, over all epochs */
    double loss, accuracy;            /* running means over the epoch so far; accuracy < 0: none */
    double samples_per_second;        /* 0 until measured (from the run's second step on) */
    double eta_seconds;               /* until the end of training; 0 until measured */
    float lr;
    /* At KN_PROGRESS_EPOCH: */
    bool has_val;
    double val_loss, val_accuracy;
    double epoch_seconds;
} kn_train_progress;

typedef void (*kn_progress_fn)(const kn_train_progress *progress, void *user);

struct kn_tape;

/* Where compression joins the training loop (pruning masks, gradient quantization, distillation). Every
 * function may be NULL; each gets `user` first and fails the run with its status. Per batch they run in
 * this order: forward, loss, on_loss, backward, clipping, on_gradients, optimizer, on_step. */
typedef struct kn_train_hooks {
    void *user;
    /* The batch's loss is in *loss and its gradient dLoss/dpred in kn_tape_output_grad(tape, 0); the hook
     * may change both (a distillation loss mixes in the teacher's). inputs: the batch as the tape has it. */
    kiln_status (*on_loss)(void *user, struct kn_tape *tape, const int64_t *labels, double *loss);
    /* Parameter gradients after clipping, before the optimizer reads them (gradient quantization). */
    kiln_status (*on_gradients)(void *user, kn_param_ref *params, int n_params, int64_t step);
    /* After optimizer step number `step` (counting from 1): parameters may be changed (pruning masks,
     * gradual pruning schedules). */
    kiln_status (*on_step)(void *user, kn_graph *g, int64_t step);
    /* State the hook keeps from step to step that a resumed run needs (gradient quantization's
     * error-feedback residuals). checkpoint_state gives it as named f32 tensors in a malloc'd array
     * (the trainer frees the array, never the names or data, which stay the hook's), written into every
     * checkpoint beside the optimizer's state; restore_state gets a resumed run's checkpoint extras
     * before its first step and takes its own by name. */
    kiln_status (*checkpoint_state)(void *user, const kn_param_ref *params, int n_params, kn_named_tensor **state,
                                    int *n_state);
    kiln_status (*restore_state)(void *user, const kn_param_ref *params, int n_params, const kn_named_tensor *state,
                                 int n_state);
} kn_train_hooks;

typedef struct kn_train_options {
    int64_t epochs;
    int64_t batch;
    kn_optim_config optim;
    kn_schedule schedule;        /* base_lr and total_steps are filled in by kn_train */
    float clip_norm;             /* <= 0: no clipping */
    kn_loss loss;
    uint64_t seed;
    int64_t early_stop;          /* > 0: stop once the validation loss has not improved for this many epochs */
    bool keep_best;              /* end with the parameters and state of the epoch of lowest validation loss */
    kn_augment augment;          /* random views of image samples and mixup, per sample per epoch (train/augment.h) */
    const char *out_path;        /* final model (.kiln); NULL: the caller writes g */
    const char *checkpoint_path; /* written after every epoch; NULL: none */
    const char *log_path;        /* CSV metrics; NULL: none */
    bool resume;                 /* continue from the graph's "train.*" checkpoint metadata */
    /* When *interrupt becomes non-zero (a signal handler sets it), training stops after the step in
     * progress, writes the checkpoint (mid-epoch: with its position in the epoch) and returns KILN_OK with
     * result->interrupted. NULL: never. */
    const volatile sig_atomic_t *interrupt;
    kn_progress_fn progress;
    void *progress_user;
    const kn_train_hooks *hooks; /* NULL: none */
} kn_train_options;

typedef struct kn_train_result {
    int64_t epochs_done, steps;
    double train_loss, train_accuracy;  /* of the last epoch; accuracy < 0: none */
    bool has_val;
    double val_loss, val_accuracy;
    double seconds, samples_per_second;
    bool interrupted;                   /* stopped by options->interrupt; no final model was written */
    bool stopped_early;                 /* by options->early_stop */
    int64_t best_epoch;                 /* with validation: the epoch of lowest validation loss (from 1) */
    double best_val_loss, best_val_accuracy;
} kn_train_result;

/* Trains g in place on `train` (validating on `val` when not NULL) and writes options->out_path (if set).
 * With options->resume, g comes from a checkpoint whose "train.epochs_done" / "train.step" metadata say
 * where training stopped; it continues from there with the optimizer state restored from `optim_state`
 * (the checkpoint's extras), giving the same weights as a run that never stopped. */
kiln_status kn_train(kn_graph *g, const kn_dataset *train, const kn_dataset *val, const kn_train_options *options,
                     const kn_named_tensor *optim_state, int n_optim_state, kn_train_result *result);

#endif
