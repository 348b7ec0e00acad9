/* kiln train: trains a spec, .kiln, .onnx or checkpoint on a dataset and writes a .kiln model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/threads.h"
#include "train/trainer.h"

static const char usage[] = "--model SPEC.txt|M.kiln|M.onnx --data DATA --out M.kiln [options]";

typedef struct train_args {
    const char *model, *data, *val, *out, *resume, *log, *checkpoint, *optimizer, *loss, *schedule, *label;
    int64_t epochs, batch, seed, threads, warmup, step_size;
    double lr, momentum, dampening, weight_decay, val_split, clip_norm, label_smoothing, gamma, min_lr;
    bool nesterov, json, quiet;
} train_args;

typedef struct progress_state {
    cli_progress bar;
    bool json;
} progress_state;

static void on_progress(const kn_train_progress *p, void *user) {
    progress_state *s = user;
    char label[32], detail[160], eta[32];
    snprintf(label, sizeof label, "epoch %lld/%lld", (long long)p->epoch, (long long)p->epochs);
    if (p->event == KN_PROGRESS_STEP) {
        cli_format_duration(p->eta_seconds, eta, sizeof eta);
        char acc[32] = "";
        if (p->accuracy >= 0)
            snprintf(acc, sizeof acc, " acc %.4f", p->accuracy);
        snprintf(detail, sizeof detail, "%lld/%lld loss %.4f%s %.0f samples/s ETA %s", (long long)p->batch_index,
                 (long long)p->batches, p->loss, acc, p->samples_per_second, eta);
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

static int build_options(const train_args *a, kn_train_options *o) {
    memset(o, 0, sizeof *o);
    kn_optim_kind optim;
    if (kn_optim_parse(a->optimizer, &optim) != KILN_OK)
        return cli_fail("train", KILN_ERR_INVALID_ARG);
    o->optim = kn_optim_defaults(optim);
    if (!isnan(a->lr)) {
        if (a->lr <= 0)
            return cli_fail_msg("train", "--lr must be positive, got %g", a->lr);
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
        return cli_fail("train", KILN_ERR_INVALID_ARG);
    o->loss.reduction = KN_REDUCTION_MEAN;
    o->loss.label_smoothing = (float)a->label_smoothing;
    if (kn_schedule_parse(a->schedule, &o->schedule.kind) != KILN_OK)
        return cli_fail("train", KILN_ERR_INVALID_ARG);
    o->schedule.warmup_steps = a->warmup;
    o->schedule.step_size = a->step_size;
    o->schedule.gamma = (float)a->gamma;
    o->schedule.min_lr = (float)a->min_lr;
    o->epochs = a->epochs;
    o->batch = a->batch;
    o->clip_norm = (float)a->clip_norm;
    o->seed = (uint64_t)a->seed;
    o->out_path = a->out;
    o->log_path = a->log;
    o->resume = a->resume != NULL;
    return 0;
}

static void print_json(const train_args *a, const kn_graph *g, const kn_train_result *r, const kn_train_options *o) {
    printf("{\"command\":\"train\",\"model\":");
    cli_json_string(stdout, a->resume ? a->resume : a->model);
    printf(",\"data\":");
    cli_json_string(stdout, a->data);
    printf(",\"out\":");
    cli_json_string(stdout, a->out);
    printf(",\"params\":%lld,\"epochs\":%lld,\"steps\":%lld,\"batch\":%lld,\"optimizer\":\"%s\",\"lr\":%.6g,"
           "\"threads\":%d,\"train_loss\":%.6f",
           (long long)kn_graph_param_count(g), (long long)r->epochs_done, (long long)r->steps, (long long)o->batch,
           kn_optim_name(o->optim.kind), (double)o->optim.lr, kn_threads_get(), r->train_loss);
    if (r->train_accuracy >= 0)
        printf(",\"train_accuracy\":%.6f", r->train_accuracy);
    if (r->has_val) {
        printf(",\"val_loss\":%.6f", r->val_loss);
        if (r->val_accuracy >= 0)
            printf(",\"val_accuracy\":%.6f", r->val_accuracy);
    }
    printf(",\"seconds\":%.3f,\"samples_per_second\":%.1f}\n", r->seconds, r->samples_per_second);
}

static int run(const train_args *a) {
    kn_train_options o;
    int rc = build_options(a, &o);
    if (rc)
        return rc;
    char checkpoint[4096];
    if (a->checkpoint)
        snprintf(checkpoint, sizeof checkpoint, "%s", a->checkpoint);
    else if (snprintf(checkpoint, sizeof checkpoint, "%s.ckpt", a->out) >= (int)sizeof checkpoint)
        return cli_fail_msg("train", "--out path is too long");
    o.checkpoint_path = checkpoint;
    kn_threads_set((int)a->threads);

    kn_graph g;
    kn_named_tensor *state = NULL;
    int n_state = 0;
    kiln_status st = cli_load_model(a->resume ? a->resume : a->model, (uint64_t)a->seed, &g, &state, &n_state);
    if (st != KILN_OK)
        return cli_fail("train", st);

    kn_data_options data_options = {.label_column = a->label, .quiet = a->quiet || a->json,
                                    .class_names = g.class_names, .class_count = g.n_classes};
    if (g.input_mean && g.input_std) {
        data_options.feature_mean = g.input_mean;
        data_options.feature_std = g.input_std;
        data_options.feature_count = g.n_norm;
    }
    kn_dataset all = {0}, train = {0}, val = {0};
    bool split = false;
    st = kn_dataset_load(a->data, &data_options, &all);
    if (st == KILN_OK && a->val) {
        kn_data_options val_options = data_options;
        if (all.feature_mean) {
            val_options.feature_mean = all.feature_mean;
            val_options.feature_std = all.feature_std;
            val_options.feature_count = all.sample_size;
        }
        if (all.class_names) {
            val_options.class_names = (const char *const *)all.class_names;
            val_options.class_count = all.class_count;
        }
        st = kn_dataset_load(a->val, &val_options, &val);
    } else if (st == KILN_OK && a->val_split > 0) {
        st = kn_dataset_split(&all, a->val_split, (uint64_t)a->seed, &train, &val);
        split = st == KILN_OK;
    }
    progress_state ps = {.json = a->json};
    cli_progress_init(&ps.bar, a->quiet || a->json);
    o.progress = on_progress;
    o.progress_user = &ps;
    kn_train_result r;
    const kn_dataset *train_set = split ? &train : &all;
    bool has_val = a->val || split;
    if (st == KILN_OK && !a->json && !a->quiet)
        printf("training %s on %s (%lld samples%s), %lld params, %s, batch %lld, %d threads\n",
               a->resume ? a->resume : a->model, a->data, (long long)train_set->count,
               has_val ? ", with validation" : "", (long long)kn_graph_param_count(&g), a->optimizer,
               (long long)a->batch, kn_threads_get());
    fflush(stdout);
    if (st == KILN_OK)
        st = kn_train(&g, train_set, has_val ? &val : NULL, &o, state, n_state, &r);
    cli_progress_end_line(&ps.bar);
    if (st == KILN_OK) {
        if (a->json)
            print_json(a, &g, &r, &o);
        else
            printf("done: %lld epochs, %lld steps in %.1fs (%.0f samples/s); model written to %s, checkpoint %s\n",
                   (long long)r.epochs_done, (long long)r.steps, r.seconds, r.samples_per_second, a->out, checkpoint);
    }
    rc = st == KILN_OK ? 0 : cli_fail("train", st);
    kn_dataset_free(&all);
    kn_dataset_free(&train);
    kn_dataset_free(&val);
    kn_named_tensors_free(state, n_state);
    kn_graph_free(&g);
    return rc;
}

int cmd_train(int argc, char **argv) {
    train_args a = {.optimizer = "adam", .loss = "ce", .schedule = "constant", .epochs = 5, .batch = 64, .seed = 1,
                    .lr = NAN, .momentum = NAN, .dampening = NAN, .weight_decay = NAN, .gamma = 0.1};
    const cli_option options[] = {
        {"--model", CLI_STRING, &a.model, "model spec (.txt), .kiln or .onnx model to train"},
        {"--data", CLI_STRING, &a.data, "training data: fashion-mnist, IDX, CSV or X.npy,Y.npy"},
        {"--val", CLI_STRING, &a.val, "validation data (same forms as --data)"},
        {"--val-split", CLI_FLOAT, &a.val_split, "hold out this fraction of --data for validation"},
        {"--out", CLI_STRING, &a.out, "where to write the trained model (.kiln)"},
        {"--epochs", CLI_INT, &a.epochs, "total epochs (default 5)"},
        {"--batch", CLI_INT, &a.batch, "batch size (default 64)"},
        {"--optimizer", CLI_STRING, &a.optimizer, "sgd|adam|adamw|adagrad|adafactor (default adam)"},
        {"--lr", CLI_FLOAT, &a.lr, "learning rate (default: the optimizer's)"},
        {"--momentum", CLI_FLOAT, &a.momentum, "SGD momentum"},
        {"--dampening", CLI_FLOAT, &a.dampening, "SGD dampening"},
        {"--nesterov", CLI_FLAG, &a.nesterov, "SGD Nesterov momentum"},
        {"--weight-decay", CLI_FLOAT, &a.weight_decay, "weight decay"},
        {"--loss", CLI_STRING, &a.loss, "ce|bce|mse|mae (default ce)"},
        {"--label-smoothing", CLI_FLOAT, &a.label_smoothing, "cross-entropy label smoothing"},
        {"--schedule", CLI_STRING, &a.schedule, "constant|step|cosine (default constant)"},
        {"--warmup", CLI_INT, &a.warmup, "linear warm-up steps"},
        {"--step-size", CLI_INT, &a.step_size, "step schedule: decay every N steps"},
        {"--gamma", CLI_FLOAT, &a.gamma, "step schedule: decay factor (default 0.1)"},
        {"--min-lr", CLI_FLOAT, &a.min_lr, "cosine schedule: final learning rate"},
        {"--clip-norm", CLI_FLOAT, &a.clip_norm, "clip gradients to this global L2 norm"},
        {"--label", CLI_STRING, &a.label, "CSV: the target column (default: last)"},
        {"--seed", CLI_INT, &a.seed, "random seed (default 1)"},
        {"--threads", CLI_INT, &a.threads, "threads (default: all cores)"},
        {"--resume", CLI_STRING, &a.resume, "continue from this checkpoint"},
        {"--checkpoint", CLI_STRING, &a.checkpoint, "checkpoint path (default OUT.ckpt)"},
        {"--log", CLI_STRING, &a.log, "write per-epoch metrics to this CSV file"},
        {"--json", CLI_FLAG, &a.json, "print one JSON object with the results"},
        {"--quiet", CLI_FLAG, &a.quiet, "no progress output"},
    };
    int n_pos;
    if (!cli_parse("train", usage, argc, argv, 2, options, (int)(sizeof options / sizeof options[0]), NULL, 0, &n_pos))
        return 2;
    if ((!a.model && !a.resume) || !a.data || !a.out) {
        fprintf(stderr, "kiln train: error: --model (or --resume), --data and --out are required\n");
        cli_print_help(stderr, "train", usage, options, (int)(sizeof options / sizeof options[0]));
        return 2;
    }
    if (a.val && a.val_split > 0)
        return cli_fail_msg("train", "give --val or --val-split, not both");
    if (a.val_split < 0 || a.val_split >= 1)
        return cli_fail_msg("train", "--val-split must be in [0, 1), got %g", a.val_split);
    return run(&a);
}
