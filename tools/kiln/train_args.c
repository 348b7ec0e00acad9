#include "train_args.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"

cli_train_args cli_train_args_defaults(int64_t epochs) {
    return (cli_train_args){.optimizer = "adam", .loss = "ce", .schedule = "constant", .epochs = epochs,
                            .batch = 64, .seed = 1, .lr = NAN, .momentum = NAN, .dampening = NAN,
                            .weight_decay = NAN, .gamma = 0.1};
}

int cli_train_option_table(cli_train_args *a, cli_option *options) {
    const cli_option table[CLI_TRAIN_OPTION_COUNT] = {
        {"--data", CLI_STRING, &a->data, "training data: fashion-mnist, IDX, CSV or X.npy,Y.npy"},
        {"--val", CLI_STRING, &a->val, "validation data (same forms as --data)"},
        {"--val-split", CLI_FLOAT, &a->val_split, "hold out this fraction of --data for validation"},
        {"--early-stop", CLI_INT, &a->early_stop, "stop when the validation loss has not improved for N epochs"},
        {"--save-best", CLI_FLAG, &a->save_best, "write the epoch of lowest validation loss, not the last"},
        {"--epochs", CLI_INT, &a->epochs, "epochs"},
        {"--batch", CLI_INT, &a->batch, "batch size (default 64)"},
        {"--optimizer", CLI_STRING, &a->optimizer, "sgd|adam|adamw|adagrad|adafactor (default adam)"},
        {"--lr", CLI_FLOAT, &a->lr, "learning rate (default: the optimizer's)"},
        {"--momentum", CLI_FLOAT, &a->momentum, "SGD momentum"},
        {"--dampening", CLI_FLOAT, &a->dampening, "SGD dampening"},
        {"--nesterov", CLI_FLAG, &a->nesterov, "SGD Nesterov momentum"},
        {"--weight-decay", CLI_FLOAT, &a->weight_decay, "weight decay"},
        {"--loss", CLI_STRING, &a->loss, "ce|bce|mse|mae (default ce)"},
        {"--label-smoothing", CLI_FLOAT, &a->label_smoothing, "cross-entropy label smoothing"},
        {"--schedule", CLI_STRING, &a->schedule, "constant|step|cosine (default constant)"},
        {"--warmup", CLI_INT, &a->warmup, "linear warm-up steps"},
        {"--step-size", CLI_INT, &a->step_size, "step schedule: decay every N steps"},
        {"--gamma", CLI_FLOAT, &a->gamma, "step schedule: decay factor (default 0.1)"},
        {"--min-lr", CLI_FLOAT, &a->min_lr, "cosine schedule: final learning rate"},
        {"--clip-norm", CLI_FLOAT, &a->clip_norm, "clip gradients to this global L2 norm"},
        {"--augment", CLI_STRING, &a->augment, "shift:N (move images up to N px), flip, mixup:A (mix pairs, Beta(A,A)); comma-joined"},
        {"--label", CLI_STRING, &a->label, "CSV: the target column (default: last)"},
        {"--seed", CLI_INT, &a->seed, "random seed (default 1)"},
        {"--threads", CLI_INT, &a->threads, "threads (default: all cores)"},
        {"--log", CLI_STRING, &a->log, "write per-epoch metrics to this CSV file"},
        {"--json", CLI_FLAG, &a->json, "print one JSON object with the results"},
        {"--quiet", CLI_FLAG, &a->quiet, "no progress output"},
    };
    memcpy(options, table, sizeof table);
    return CLI_TRAIN_OPTION_COUNT;
}

/* An option given for an optimizer or schedule it does nothing for ("--momentum" with adam): 0 when none. */
static int check_applicable(const char *command, kn_optim_kind optim, kn_schedule_kind schedule) {
    static const struct {
        const char *flag;
        bool sgd_only;                /* else: only for `schedule` */
        kn_schedule_kind schedule;
    } only[] = {
        {"--momentum", true, 0},
        {"--dampening", true, 0},
        {"--nesterov", true, 0},
        {"--step-size", false, KN_SCHEDULE_STEP},
        {"--gamma", false, KN_SCHEDULE_STEP},
        {"--min-lr", false, KN_SCHEDULE_COSINE},
    };
    for (size_t i = 0; i < sizeof only / sizeof only[0]; i++) {
        if (!cli_was_given(only[i].flag))
            continue;
        if (only[i].sgd_only && optim != KN_OPTIM_SGD)
            return cli_fail_msg(command, "%s applies to --optimizer sgd; it does nothing for %s", only[i].flag,
                                kn_optim_name(optim));
        if (!only[i].sgd_only && schedule != only[i].schedule)
            return cli_fail_msg(command, "%s applies to --schedule %s; it does nothing for %s", only[i].flag,
                                kn_schedule_name(only[i].schedule), kn_schedule_name(schedule));
    }
    return 0;
}

int cli_train_build_options(const char *command, const cli_train_args *a, kn_train_options *o) {
    memset(o, 0, sizeof *o);
    kn_optim_kind optim;
    if (kn_optim_parse(a->optimizer, &optim) != KILN_OK)
        return cli_fail(command, KILN_ERR_INVALID_ARG);
    kn_schedule_kind schedule;
    if (kn_schedule_parse(a->schedule, &schedule) != KILN_OK)
        return cli_fail(command, KILN_ERR_INVALID_ARG);
    /* Resuming takes the optimizer and schedule from the checkpoint: cli_train_resume_options checks then. */
    int rc = cli_was_given("--resume") ? 0 : check_applicable(command, optim, schedule);
    if (rc)
        return rc;
    o->optim = kn_optim_defaults(optim);
    if (!isnan(a->lr)) {
        if (a->lr <= 0)
            return cli_fail_msg(command, "--lr must be positive, got %g", a->lr);
        o->optim.lr = (float)a->lr;
        o->optim.relative_step = false;
    }
    if (!isnan(a->momentum))
        o->optim.momentum = (float)a->momentum;
    if (!isnan(a->dampening))
        o->optim.dampening = (float)a->dampening;
    if (!isnan(a->weight_decay))
        o->optim.weight_decay = (float)a->weight_decay;
    o->optim.nesterov = a->nesterov;
    if (kn_loss_parse(a->loss, &o->loss.kind) != KILN_OK)
        return cli_fail(command, KILN_ERR_INVALID_ARG);
    o->loss.reduction = KN_REDUCTION_MEAN;
    o->loss.label_smoothing = (float)a->label_smoothing;
    if (kn_schedule_parse(a->schedule, &o->schedule.kind) != KILN_OK)
        return cli_fail(command, KILN_ERR_INVALID_ARG);
    o->schedule.warmup_steps = a->warmup;
    o->schedule.step_size = a->step_size;
    o->schedule.gamma = (float)a->gamma;
    o->schedule.min_lr = (float)a->min_lr;
    o->epochs = a->epochs;
    o->batch = a->batch;
    if (a->clip_norm < 0)
        return cli_fail_msg(command, "--clip-norm must be positive (0: no clipping), got %g", a->clip_norm);
    o->clip_norm = (float)a->clip_norm;
    if (kn_augment_parse(a->augment, &o->augment) != KILN_OK)
        return cli_fail(command, KILN_ERR_INVALID_ARG);
    o->seed = (uint64_t)a->seed;
    if (cli_was_given("--early-stop") && a->early_stop < 1)
        return cli_fail_msg(command, "--early-stop must be at least 1 epoch, got %lld", (long long)a->early_stop);
    o->early_stop = a->early_stop;
    o->keep_best = a->save_best;
    o->log_path = a->log;
    if (a->val && a->val_split > 0)
        return cli_fail_msg(command, "give --val or --val-split, not both");
    if (a->val_split < 0 || a->val_split >= 1)
        return cli_fail_msg(command, "--val-split must be in [0, 1), got %g", a->val_split);
    return 0;
}

/* The options a checkpoint records that the command line can set, with the recorded keys each sets. */
static const struct {
    const char *flag;
    const char *keys[2];
} resumable[] = {
    {"--epochs", {"train.epochs"}},
    {"--batch", {"train.batch"}},
    {"--seed", {"train.seed"}},
    {"--optimizer", {"train.optimizer"}},
    {"--lr", {"train.optim.lr", "train.optim.relative_step"}},
    {"--momentum", {"train.optim.momentum"}},
    {"--dampening", {"train.optim.dampening"}},
    {"--nesterov", {"train.optim.nesterov"}},
    {"--weight-decay", {"train.optim.weight_decay"}},
    {"--loss", {"train.loss"}},
    {"--label-smoothing", {"train.loss.label_smoothing"}},
    {"--schedule", {"train.schedule"}},
    {"--warmup", {"train.schedule.warmup_steps"}},
    {"--step-size", {"train.schedule.step_size"}},
    {"--gamma", {"train.schedule.gamma"}},
    {"--min-lr", {"train.schedule.min_lr"}},
    {"--clip-norm", {"train.clip_norm"}},
    {"--augment", {"train.augment"}},
    {"--early-stop", {"train.early_stop"}},
    {"--save-best", {"train.keep_best"}},
};

/* A recorded value as a person reads it: integers and names as they are, floats to 7 digits. */
static void readable(const char *text, char *out, size_t size) {
    char *end;
    (void)strtoll(text, &end, 10);
    if (*end == 0) {
        snprintf(out, size, "%s", text);
        return;
    }
    double v = strtod(text, &end);
    if (*end == 0)
        snprintf(out, size, "%.7g", v);
    else
        snprintf(out, size, "%s", text);
}

int cli_train_resume_options(const char *command, cli_train_args *a, const kn_graph *g, bool override,
                             kn_train_options *o) {
    kn_train_options merged = *o;
    bool found;
    if (kn_checkpoint_options_load(g, &merged, &found) != KILN_OK)
        return cli_fail(command, KILN_ERR_FORMAT);
    if (!found)
        return 0;
    for (size_t i = 0; i < sizeof resumable / sizeof resumable[0]; i++) {
        if (!cli_was_given(resumable[i].flag))
            continue;
        for (int k = 0; k < 2 && resumable[i].keys[k]; k++) {
            const char *key = resumable[i].keys[k];
            char mine[64], recorded[64], shown_mine[64], shown_recorded[64];
            kn_checkpoint_option_text(o, key, mine, sizeof mine);
            kn_checkpoint_option_text(&merged, key, recorded, sizeof recorded);
            bool may_change = override || strcmp(resumable[i].flag, "--epochs") == 0;
            if (strcmp(mine, recorded) != 0 && !may_change) {
                readable(mine, shown_mine, sizeof shown_mine);
                readable(recorded, shown_recorded, sizeof shown_recorded);
                return cli_fail_msg(command, "%s %s differs from the checkpoint's run (%s %s): leave it out to "
                                    "resume that run, or add --override to change it", resumable[i].flag,
                                    shown_mine, resumable[i].flag, shown_recorded);
            }
            kn_checkpoint_option_copy(&merged, o, key);
        }
    }
    int rc = check_applicable(command, merged.optim.kind, merged.schedule.kind);
    if (rc)
        return rc;
    *o = merged;
    a->epochs = o->epochs;
    a->batch = o->batch;
    a->seed = (int64_t)o->seed;
    a->optimizer = kn_optim_name(o->optim.kind);
    return 0;
}

kiln_status cli_train_data_load(const cli_train_args *a, const kn_graph *g, cli_train_data *d) {
    memset(d, 0, sizeof *d);
    kn_data_options data_options = kn_data_options_for_model(g);
    data_options.label_column = a->label;
    data_options.quiet = a->quiet || a->json;
    kiln_status st = kn_dataset_load(a->data, &data_options, &d->all);
    if (st == KILN_OK && a->val) {
        kn_data_options val_options = data_options;
        if (d->all.feature_mean) {
            val_options.feature_mean = d->all.feature_mean;
            val_options.feature_std = d->all.feature_std;
            val_options.feature_count = d->all.sample_size;
        }
        if (d->all.class_names) {
            val_options.class_names = (const char *const *)d->all.class_names;
            val_options.class_count = d->all.class_count;
        }
        if (d->all.columns)
            val_options.columns = d->all.columns;
        st = kn_dataset_load(a->val, &val_options, &d->val);
    } else if (st == KILN_OK && a->val_split > 0) {
        st = kn_dataset_split(&d->all, a->val_split, (uint64_t)a->seed, &d->train, &d->val);
        d->split = st == KILN_OK;
    }
    d->has_val = st == KILN_OK && (a->val || a->val_split > 0);
    if (st != KILN_OK)
        cli_train_data_free(d);
    return st;
}

const kn_dataset *cli_train_data_train(const cli_train_data *d) { return d->split ? &d->train : &d->all; }

const kn_dataset *cli_train_data_val(const cli_train_data *d) { return d->has_val ? &d->val : NULL; }

void cli_train_data_free(cli_train_data *d) {
    kn_dataset_free(&d->all);
    kn_dataset_free(&d->train);
    kn_dataset_free(&d->val);
    memset(d, 0, sizeof *d);
}

void cli_train_progress_init(cli_train_progress *p, const cli_train_args *a) {
    p->json = a->json;
    cli_progress_init(&p->bar, a->quiet || a->json);
}

void cli_train_on_progress(const kn_train_progress *p, void *user) {
    cli_train_progress *s = user;
    char label[32], detail[160], eta[32];
    snprintf(label, sizeof label, "epoch %lld/%lld", (long long)p->epoch, (long long)p->epochs);
    if (p->event == KN_PROGRESS_STEP) {
        char acc[32] = "", rate[64] = "";
        if (p->accuracy >= 0)
            snprintf(acc, sizeof acc, " acc %.4f", p->accuracy);
        if (p->samples_per_second > 0) { /* none on the first step: nothing is measured yet */
            cli_format_duration(p->eta_seconds, eta, sizeof eta);
            snprintf(rate, sizeof rate, " %.0f samples/s ETA %s", p->samples_per_second, eta);
        }
        snprintf(detail, sizeof detail, "%lld/%lld loss %.4f%s%s", (long long)p->batch_index, (long long)p->batches,
                 p->loss, acc, rate);
        cli_progress_update(&s->bar, label, (double)p->batch_index / (double)p->batches, detail,
                            p->batch_index == p->batches);
        return;
    }
    cli_progress_end_line(&s->bar);
    if (s->json || s->bar.quiet)
        return;
    printf("epoch %3lld/%lld  train loss %.4f", (long long)p->epoch, (long long)p->epochs, p->loss);
    if (p->accuracy >= 0)
        printf(" acc %.4f", p->accuracy);
    if (p->has_val) {
        printf("  |  val loss %.4f", p->val_loss);
        if (p->val_accuracy >= 0)
            printf(" acc %.4f", p->val_accuracy);
    }
    printf("  |  %.1fs  lr %.3g\n", p->epoch_seconds, (double)p->lr);
    fflush(stdout);
}

/* Whether `output` is one of the files the DATA string `input` names ("a.csv", "X.npy,Y.npy", ...). */
static bool names_input(const char *output, const char *input) {
    char part[4096];
    for (const char *p = input; *p;) {
        size_t len = strcspn(p, ",");
        if (len < sizeof part) {
            memcpy(part, p, len);
            part[len] = 0;
            if (cli_same_file(output, part))
                return true;
        }
        p += len + (p[len] == ',');
    }
    return false;
}

int cli_check_outputs(const char *command, const char *const *outputs, int n_outputs, const char *const *inputs,
                      int n_inputs) {
    for (int i = 0; i < n_outputs; i++) {
        if (!outputs[i])
            continue;
        for (int k = 0; k < n_inputs; k++)
            if (inputs[k] && names_input(outputs[i], inputs[k]))
                return cli_fail_msg(command, "%s is an input (%s): refusing to write over it", outputs[i], inputs[k]);
        char folder[4096];
        snprintf(folder, sizeof folder, "%s", outputs[i]);
        const char *dir = dirname(folder);
        if (access(dir, W_OK) != 0)
            return cli_fail_msg(command, "cannot write %s: folder %s: %s", outputs[i], dir, strerror(errno));
    }
    return 0;
}
