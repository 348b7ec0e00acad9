#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/status.h"
#include "train/best_epoch.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/objective.h"
#include "train/tape.h"

/* Everything one training run holds; released by trainer_release. */
typedef struct trainer {
    kn_graph *g;
    const kn_train_options *opt;
    kn_tape tape;
    kn_objective objective;
    kn_param_ref *params;
    int n_params;
    kn_optim *optim;
    kn_schedule schedule;
    FILE *log;
    int64_t epochs_done, step;
    /* The epoch in progress: batches done and their running sums, carried by a checkpoint written mid-epoch
     * (on an interrupt) so the resumed epoch reports what an uninterrupted one would. */
    int64_t epoch_batches, epoch_correct, epoch_seen;
    double epoch_loss_sum;
    /* When this run's first step ended: rates and ETAs are measured from there, as the first step also
     * pays for setting up (allocation, first touches) and a rate from it alone would mislead. */
    double first_step_end;
    kn_best_epoch best; /* by validation loss: early stopping, keep_best */
} trainer;

static void trainer_release(trainer *t) {
    kn_best_epoch_free(&t->best);
    kn_optim_free(t->optim);
    free(t->params);
    kn_objective_free(&t->objective);
    kn_tape_free(&t->tape);
    if (t->log)
        fclose(t->log);
}

static kiln_status collect_params(trainer *t) {
    kn_graph *g = t->g;
    t->params = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(kn_param_ref));
    if (!t->params)
        return kn_fail(KILN_ERR_NOMEM, "out of memory listing parameters");
    for (int v = 0; v < g->n_values; v++) {
        kn_value *val = &g->values[v];
        if (val->kind != KN_VALUE_PARAM)
            continue;
        t->params[t->n_params++] =
            (kn_param_ref){val->name, val->data, kn_tape_grad(&t->tape, v)->data, val->shape};
    }
    if (t->n_params == 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the model has no trainable parameters");
    return KILN_OK;
}

static kiln_status parse_counter(const kn_graph *g, const char *key, int64_t *out) {
    const char *text = kn_graph_meta(g, key);
    char *end;
    errno = 0;
    long long v = text ? strtoll(text, &end, 10) : -1;
    if (!text || errno || *end || v < 0)
        return kn_fail(KILN_ERR_FORMAT, "not a checkpoint: metadata '%s' is %s", key, text ? "invalid" : "missing");
    *out = v;
    return KILN_OK;
}

/* The running sums of an epoch a checkpoint interrupted; absent (0) in one written at an epoch's end. */
static kiln_status restore_epoch_sums(trainer *t) {
    if (!kn_graph_meta(t->g, "train.epoch_seen"))
        return KILN_OK;
    KN_TRY(parse_counter(t->g, "train.epoch_seen", &t->epoch_seen));
    KN_TRY(parse_counter(t->g, "train.epoch_correct", &t->epoch_correct));
    const char *text = kn_graph_meta(t->g, "train.epoch_loss_sum");
    char *end;
    t->epoch_loss_sum = text ? strtod(text, &end) : NAN;
    if (!text || *end || !isfinite(t->epoch_loss_sum))
        return kn_fail(KILN_ERR_FORMAT, "not a checkpoint: metadata 'train.epoch_loss_sum' is %s",
                       text ? "invalid" : "missing");
    return KILN_OK;
}

/* Restores the counters and the optimizer state a checkpoint carries. */
static kiln_status restore_checkpoint(trainer *t, const kn_named_tensor *state, int n_state) {
    KN_TRY(parse_counter(t->g, "train.epochs_done", &t->epochs_done));
    KN_TRY(parse_counter(t->g, "train.step", &t->step));
    KN_TRY(restore_epoch_sums(t));
    const char *saved_optim = kn_graph_meta(t->g, "train.optimizer");
    const char *optim = kn_optim_name(t->opt->optim.kind);
    if (!saved_optim || strcmp(saved_optim, optim) != 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "the checkpoint was trained with --optimizer %s, not %s",
                       saved_optim ? saved_optim : "(unknown)", optim);
    for (int i = 0; i < kn_optim_state_count(t->optim); i++) {
        const char *name;
        int64_t numel;
        float *data = kn_optim_state(t->optim, i, &name, &numel);
        int found = -1;
        for (int k = 0; k < n_state && found < 0; k++)
            if (strcmp(state[k].name, name) == 0)
                found = k;
        if (found < 0 || kn_shape_numel(&state[found].shape) != numel)
            return kn_fail(KILN_ERR_FORMAT, "the checkpoint lacks optimizer state '%s' (%lld values)", name,
                           (long long)numel);
        memcpy(data, state[found].data, sizeof(float) * (size_t)numel);
    }
    kn_optim_set_step_count(t->optim, t->step);
    const kn_train_hooks *hooks = t->opt->hooks;
    if (hooks && hooks->restore_state)
        KN_TRY(hooks->restore_state(hooks->user, t->params, t->n_params, state, n_state));
    KN_TRY(kn_best_epoch_load_meta(&t->best, t->g));
    return kn_best_epoch_load_extras(&t->best, t->g, state, n_state);
}

static kiln_status set_counter_meta(kn_graph *g, const char *key, int64_t v) {
    char text[32];
    snprintf(text, sizeof text, "%" PRId64, v);
    return kn_graph_set_meta(g, key, text);
}

static kiln_status write_checkpoint(trainer *t) {
    char text[64];
    KN_TRY(set_counter_meta(t->g, "train.epochs_done", t->epochs_done));
    KN_TRY(set_counter_meta(t->g, "train.step", t->step));
    KN_TRY(kn_checkpoint_options_save(t->g, t->opt));
    KN_TRY(set_counter_meta(t->g, "train.epoch_seen", t->epoch_seen));
    KN_TRY(set_counter_meta(t->g, "train.epoch_correct", t->epoch_correct));
    snprintf(text, sizeof text, "%.17g", t->epoch_loss_sum);
    KN_TRY(kn_graph_set_meta(t->g, "train.epoch_loss_sum", text));
    KN_TRY(kn_best_epoch_save_meta(&t->best, t->g));
    /* The extras: the optimizer's state, the hooks' state, then the best epoch's values (when kept). */
    const kn_train_hooks *hooks = t->opt->hooks;
    kn_named_tensor *hook_state = NULL;
    int n_hook = 0;
    if (hooks && hooks->checkpoint_state)
        KN_TRY(hooks->checkpoint_state(hooks->user, t->params, t->n_params, &hook_state, &n_hook));
    int n_optim = kn_optim_state_count(t->optim), n = n_optim + n_hook;
    int n_best = kn_best_epoch_extra_count(&t->best, t->g);
    kn_named_tensor *state = calloc((size_t)(n + n_best + 1), sizeof *state);
    if (!state) {
        free(hook_state);
        return kn_fail(KILN_ERR_NOMEM, "out of memory writing the checkpoint");
    }
    for (int i = 0; i < n_optim; i++) {
        const char *name;
        int64_t numel;
        state[i].data = kn_optim_state(t->optim, i, &name, &numel);
        state[i].name = (char *)name;
        state[i].shape = kn_shape_of(1, &numel);
    }
    if (n_hook)
        memcpy(state + n_optim, hook_state, sizeof *state * (size_t)n_hook);
    free(hook_state);
    int n_extras = n;
    kiln_status st = kn_best_epoch_extras(&t->best, t->g, state, &n_extras);
    if (st == KILN_OK)
        st = kn_kiln_save(t->opt->checkpoint_path, t->g, state, n_extras);
    kn_best_epoch_extras_free(state + n, n_extras - n);
    free(state);
    return st;
}

static kiln_status open_log(trainer *t) {
    const char *path = t->opt->log_path;
    if (!path)
        return KILN_OK;
    /* Always appended to, so that no run destroys an earlier run's log; the header starts an empty file. */
    t->log = fopen(path, "a");
    if (!t->log)
        return kn_fail(KILN_ERR_IO, "%s: cannot open the log: %s", path, strerror(errno));
    if (ftell(t->log) == 0)
        fprintf(t->log, "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n");
    return KILN_OK;
}

static void log_epoch(trainer *t, const kn_train_progress *p) {
    if (!t->log)
        return;
    fprintf(t->log, "%" PRId64 ",%" PRId64 ",%.6g,%.6f,", p->epoch, p->step, (double)p->lr, p->loss);
    if (p->accuracy >= 0)
        fprintf(t->log, "%.6f", p->accuracy);
    fprintf(t->log, ",");
    if (p->has_val)
        fprintf(t->log, "%.6f,%s", p->val_loss, "");
    else
        fprintf(t->log, ",");
    if (p->has_val && p->val_accuracy >= 0)
        fprintf(t->log, "%.6f", p->val_accuracy);
    fprintf(t->log, ",%.3f\n", p->epoch_seconds);
    fflush(t->log);
}

/* Class names and input standardisation travel with the model so evaluation and deployment see the
 * data as training did. */
static kiln_status record_data_metadata(kn_graph *g, const kn_dataset *ds) {
    if (!g->class_names && ds->class_names && ds->class_count > 0) {
        const char **names = kn_arena_alloc(&g->arena, sizeof(char *) * (size_t)ds->class_count);
        if (!names)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for class names");
        for (int64_t i = 0; i < ds->class_count; i++)
            if (!(names[i] = kn_arena_strdup(&g->arena, ds->class_names[i])))
                return kn_fail(KILN_ERR_NOMEM, "out of memory for class names");
        g->class_names = names;
        g->n_classes = (int)ds->class_count;
    }
    if (!g->input_mean && ds->feature_mean && ds->feature_std) {
        size_t bytes = sizeof(float) * (size_t)ds->sample_size;
        g->input_mean = kn_arena_alloc(&g->arena, bytes);
        g->input_std = kn_arena_alloc(&g->arena, bytes);
        if (!g->input_mean || !g->input_std)
            return kn_fail(KILN_ERR_NOMEM, "out of memory for input statistics");
        memcpy(g->input_mean, ds->feature_mean, bytes);
        memcpy(g->input_std, ds->feature_std, bytes);
        g->n_norm = ds->sample_size;
    }
    /* CSV column names, so evaluation and kiln run can tell a file whose columns moved. */
    if (ds->columns)
        KN_TRY(kn_graph_set_meta(g, "train.columns", ds->columns));
    return KILN_OK;
}

static kiln_status record_provenance(trainer *t, const kn_dataset *train, const kn_train_result *r) {
    kn_graph *g = t->g;
    char text[64];
    KN_TRY(kn_graph_set_meta(g, "train.data", train->source));
    KN_TRY(kn_checkpoint_options_save(g, t->opt));
    snprintf(text, sizeof text, "%.6g", (double)t->schedule.base_lr);
    KN_TRY(kn_graph_set_meta(g, "train.lr", text));
    if (r->train_accuracy >= 0) {
        snprintf(text, sizeof text, "%.4f", r->train_accuracy);
        KN_TRY(kn_graph_set_meta(g, "train.final_accuracy", text));
    }
    /* With keep_best the model is the best epoch's, and so is its validation accuracy. */
    double val_accuracy = t->opt->keep_best && t->best.epoch > 0 ? t->best.val_accuracy : r->val_accuracy;
    if (r->has_val && val_accuracy >= 0) {
        snprintf(text, sizeof text, "%.4f", val_accuracy);
        KN_TRY(kn_graph_set_meta(g, "train.final_val_accuracy", text));
    }
    KN_TRY(kn_best_epoch_save_meta(&t->best, g));
    return kn_graph_set_meta(g, "producer", "kiln " KILN_VERSION_STRING);
}

static bool interrupt_requested(const kn_train_options *opt) { return opt->interrupt && *opt->interrupt; }

/* One epoch of mini-batches from batch t->epoch_batches on (0, or where an interrupted checkpoint
 * stopped); fills the running loss/accuracy into p. Stops early, with *interrupted, after the step during
 * which opt->interrupt was raised. */
static kiln_status run_epoch(trainer *t, const kn_dataset *train, int64_t epoch, int64_t steps_total,
                             int64_t steps_before, kn_train_progress *p, bool *interrupted) {
    const kn_train_options *opt = t->opt;
    const kn_train_hooks *hooks = opt->hooks;
    kn_batcher batcher;
    KN_TRY(kn_batcher_init(&batcher, train, opt->batch, true, opt->seed, epoch));
    batcher.next = t->epoch_batches * opt->batch; /* the epoch's order is fixed by (seed, epoch) */
    int64_t batches = (train->count + opt->batch - 1) / opt->batch;
    kiln_status st = KILN_OK;
    int64_t *batch_labels = malloc(sizeof(int64_t) * (size_t)opt->batch);
    float *batch_targets = train->targets ? malloc(sizeof(float) * (size_t)(opt->batch * train->target_width)) : NULL;
    bool mixing = opt->augment.mixup > 0;
    float *mix_weight = mixing ? malloc(sizeof(float) * (size_t)opt->batch) : NULL; // (batch): mixup's lambdas
    if (!batch_labels || (train->targets && !batch_targets) || (mixing && !mix_weight)) {
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for a batch");
        goto done;
    }
    for (int64_t b = t->epoch_batches; b < batches && !*interrupted; b++) {
        /* A short last batch re-infers shapes; the next epoch's full batches restore them. */
        int64_t want = train->count - b * opt->batch < opt->batch ? train->count - b * opt->batch : opt->batch;
        if (want != t->tape.batch && (st = kn_tape_set_batch(&t->tape, want)) != KILN_OK)
            goto done;
        int64_t n = kn_batcher_next(&batcher, kn_tape_input(&t->tape, 0)->data, train->labels ? batch_labels : NULL,
                                    batch_targets);
        if (n != want) {
            st = kn_fail(KILN_ERR_INTERNAL, "batcher gave %lld samples, expected %lld", (long long)n, (long long)want);
            goto done;
        }
        if (kn_augment_on(&opt->augment) &&
            (st = kn_augment_batch(&opt->augment, kn_tape_input(&t->tape, 0)->data, n, &train->sample_shape, opt->seed,
                                   epoch, batcher.order + batcher.next - n, mix_weight)) != KILN_OK)
            goto done;
        t->tape.ctx.seed = opt->seed;
        t->tape.ctx.step = (uint64_t)t->step;
        if ((st = kn_tape_forward(&t->tape, true)) != KILN_OK)
            goto done;
        double loss;
        int64_t correct = 0;
        kn_tensor *dpred = kn_tape_output_grad(&t->tape, 0);
        st = kn_objective_eval_mixed(&t->objective, kn_tape_output(&t->tape, 0), train->labels ? batch_labels : NULL,
                                     batch_targets, mix_weight, &loss, &correct, dpred);
        if (st != KILN_OK) {
            kn_error_prefix("epoch %lld, step %lld: ", (long long)epoch + 1, (long long)t->step + 1);
            if (st == KILN_ERR_NUMERIC)
                kn_error_prefix("training diverged (try a lower --lr or --clip-norm): ");
            goto done;
        }
        if (hooks && hooks->on_loss && (st = hooks->on_loss(hooks->user, &t->tape, batch_labels, &loss)) != KILN_OK)
            goto done;
        kn_tape_zero_param_grads(&t->tape);
        if ((st = kn_tape_backward(&t->tape)) != KILN_OK)
            goto done;
        if (opt->clip_norm > 0)
            kn_grad_clip_global_norm(t->params, t->n_params, opt->clip_norm);
        if (hooks && hooks->on_gradients &&
            (st = hooks->on_gradients(hooks->user, t->params, t->n_params, t->step)) != KILN_OK)
            goto done;
        float lr = kn_schedule_lr(&t->schedule, t->step);
        if ((st = kn_optim_step(t->optim, lr)) != KILN_OK)
            goto done;
        t->step++;
        if (hooks && hooks->on_step && (st = hooks->on_step(hooks->user, t->g, t->step)) != KILN_OK)
            goto done;
        t->epoch_loss_sum += t->opt->loss.reduction == KN_REDUCTION_MEAN ? loss * (double)n : loss;
        t->epoch_correct += correct;
        t->epoch_seen += n;
        t->epoch_batches = b + 1;

        double now = kn_seconds_now();
        int64_t steps_run = t->step - steps_before;
        if (steps_run == 1)
            t->first_step_end = now;
        double measured = now - t->first_step_end; /* over steps_run - 1 steps */
        p->event = KN_PROGRESS_STEP;
        p->batch_index = b + 1;
        p->batches = batches;
        p->step = t->step;
        p->loss = t->epoch_loss_sum / (double)t->epoch_seen;
        p->accuracy = train->labels ? (double)t->epoch_correct / (double)t->epoch_seen : -1;
        p->lr = lr;
        p->samples_per_second = steps_run > 1 && measured > 0 ? (double)((steps_run - 1) * opt->batch) / measured : 0;
        p->eta_seconds = steps_run > 1 ? measured / (double)(steps_run - 1) * (double)(steps_total - t->step) : 0;
        if (opt->progress)
            opt->progress(p, opt->progress_user);
        *interrupted = interrupt_requested(opt);
    }
done:
    free(batch_labels);
    free(batch_targets);
    free(mix_weight);
    kn_batcher_free(&batcher);
    return st;
}

/* Where in its epoch the run stands: batches already done (0 unless a checkpoint stopped mid-epoch). A
 * step count that does not fall in the epoch means the checkpoint was made with other data or batch. */
static kiln_status locate_in_epoch(trainer *t, int64_t batches) {
    int64_t into = t->step - t->epochs_done * batches;
    if (into < 0 || into >= batches || (into == 0) != (t->epoch_seen == 0))
        return kn_fail(KILN_ERR_INVALID_ARG, "the checkpoint's step %lld is not in epoch %lld of %lld batches: "
                       "it was written with other data or another --batch", (long long)t->step,
                       (long long)t->epochs_done + 1, (long long)batches);
    t->epoch_batches = into;
    return KILN_OK;
}

static kiln_status train_loop(trainer *t, const kn_dataset *train, const kn_dataset *val, kn_train_result *r) {
    const kn_train_options *opt = t->opt;
    int64_t batches = (train->count + opt->batch - 1) / opt->batch;
    int64_t steps_total = batches * opt->epochs;
    int64_t steps_before = t->step;
    double run_start = kn_seconds_now();
    KN_TRY(locate_in_epoch(t, batches));
    for (int64_t epoch = t->epochs_done; epoch < opt->epochs && !r->interrupted; epoch++) {
        double epoch_start = kn_seconds_now();
        kn_train_progress p = {.epoch = epoch + 1, .epochs = opt->epochs};
        KN_TRY(run_epoch(t, train, epoch, steps_total, steps_before, &p, &r->interrupted));
        if (r->interrupted && t->epoch_batches < batches) {
            /* Mid-epoch: the checkpoint carries the epoch's position and running sums. */
            if (opt->checkpoint_path)
                KN_TRY(write_checkpoint(t));
            break;
        }
        r->train_loss = p.loss;
        r->train_accuracy = p.accuracy;
        if (val) {
            kn_eval_result vr;
            KN_TRY(kn_evaluate_on_tape(&t->tape, &t->objective, val, opt->batch, &vr));
            p.has_val = true;
            p.val_loss = vr.loss;
            p.val_accuracy = vr.accuracy;
            kn_eval_result_free(&vr);
            r->has_val = true;
            r->val_loss = p.val_loss;
            r->val_accuracy = p.val_accuracy;
            kn_best_epoch_update(&t->best, t->g, epoch + 1, p.val_loss, p.val_accuracy);
        }
        t->epochs_done = epoch + 1;
        t->epoch_batches = t->epoch_correct = t->epoch_seen = 0;
        t->epoch_loss_sum = 0;
        p.event = KN_PROGRESS_EPOCH;
        p.epoch_seconds = kn_seconds_now() - epoch_start;
        log_epoch(t, &p);
        if (opt->checkpoint_path)
            KN_TRY(write_checkpoint(t));
        if (opt->progress)
            opt->progress(&p, opt->progress_user);
        r->interrupted = r->interrupted && t->epochs_done < opt->epochs;
        r->stopped_early = opt->early_stop > 0 && t->best.epochs_since >= opt->early_stop &&
                           t->epochs_done < opt->epochs;
        if (r->stopped_early)
            break;
    }
    r->best_epoch = t->best.epoch;
    r->best_val_loss = t->best.val_loss;
    r->best_val_accuracy = t->best.val_accuracy;
    if (opt->keep_best && !r->interrupted)
        kn_best_epoch_restore(&t->best, t->g);
    r->epochs_done = t->epochs_done;
    r->steps = t->step;
    r->seconds = kn_seconds_now() - run_start;
    r->samples_per_second = r->seconds > 0 ? (double)((t->step - steps_before) * opt->batch) / r->seconds : 0;
    return KILN_OK;
}

static kiln_status check_options(const kn_train_options *o, bool has_val) {
    if (o->epochs < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "--epochs must be at least 1");
    if (o->early_stop < 0)
        return kn_fail(KILN_ERR_INVALID_ARG, "--early-stop must be at least 1 epoch, got %lld",
                       (long long)o->early_stop);
    if ((o->early_stop > 0 || o->keep_best) && !has_val)
        return kn_fail(KILN_ERR_INVALID_ARG, "--early-stop and --save-best watch the validation loss: give --val "
                       "or --val-split");
    if (o->batch < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "--batch must be at least 1");
    return KILN_OK;
}

kiln_status kn_train(kn_graph *g, const kn_dataset *train, const kn_dataset *val, const kn_train_options *options,
                     const kn_named_tensor *optim_state, int n_optim_state, kn_train_result *result) {
    memset(result, 0, sizeof *result);
    KN_TRY(check_options(options, val != NULL));
    KN_TRY(kn_check_input_fits(g, train));
    if (val)
        KN_TRY(kn_check_input_fits(g, val));
    if (train->count < 1)
        return kn_fail(KILN_ERR_INVALID_ARG, "%s has no samples", train->source);
    if (kn_augment_check(&options->augment, &train->sample_shape) != KILN_OK) {
        kn_error_prefix("%s: ", train->source);
        return KILN_ERR_INVALID_ARG;
    }

    /* Training updates parameters (the optimizer) and running statistics (BatchNormalization) in place:
     * their compact storage, if any, would no longer decode to them, so they go back to plain f32. */
    for (int v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VALUE_PARAM || g->values[v].kind == KN_VALUE_STATE)
            kn_value_drop_storage(&g->values[v]);
    trainer t = {.g = g, .opt = options};
    kiln_status st = kn_tape_init(&t.tape, g, options->batch, true);
    if (st == KILN_OK)
        st = kn_objective_init(&t.objective, &options->loss, train, &kn_tape_output(&t.tape, 0)->shape,
                               options->batch);
    if (st == KILN_OK)
        st = collect_params(&t);
    if (st == KILN_OK) {
        t.optim = kn_optim_create(&options->optim, t.n_params, t.params);
        st = t.optim ? KILN_OK : KILN_ERR_INVALID_ARG;
    }
    if (st == KILN_OK)
        st = kn_best_epoch_init(&t.best, g, options->keep_best);
    if (st == KILN_OK && options->resume)
        st = restore_checkpoint(&t, optim_state, n_optim_state);
    if (st == KILN_OK && t.epochs_done >= options->epochs)
        st = kn_fail(KILN_ERR_INVALID_ARG, "the checkpoint has already done %lld epochs; ask for more with --epochs",
                     (long long)t.epochs_done);
    if (st == KILN_OK) {
        t.schedule = options->schedule;
        t.schedule.base_lr = options->optim.lr > 0 ? options->optim.lr : kn_optim_default_lr(options->optim.kind);
        int64_t batches = (train->count + options->batch - 1) / options->batch;
        t.schedule.total_steps = batches * options->epochs;
        if (t.schedule.kind == KN_SCHEDULE_STEP && t.schedule.step_size <= 0)
            t.schedule.step_size = batches; /* decay once per epoch unless told otherwise */
        st = kn_schedule_validate(&t.schedule);
    }
    if (st == KILN_OK) {
        st = record_data_metadata(g, train);
    }
    if (st == KILN_OK)
        st = open_log(&t);
    if (st == KILN_OK)
        st = train_loop(&t, train, val, result);
    if (st == KILN_OK && !result->interrupted)
        st = record_provenance(&t, train, result);
    if (st == KILN_OK && !result->interrupted && options->out_path)
        st = kn_kiln_save(options->out_path, g, NULL, 0);
    trainer_release(&t);
    return st;
}
