/* kiln train: trains a spec, .kiln, .onnx or checkpoint on a dataset and writes a .kiln model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/threads.h"
#include "train/trainer.h"
#include "train_args.h"

static const char usage[] = "--model SPEC.txt|M.kiln|M.onnx --data DATA --out M.kiln [options]";

typedef struct train_args {
    cli_train_args train;
    const char *model, *out, *resume, *checkpoint;
} train_args;

static void print_json(const train_args *a, const kn_graph *g, const kn_train_result *r, const kn_train_options *o) {
    printf("{\"command\":\"train\",\"model\":");
    cli_json_string(stdout, a->resume ? a->resume : a->model);
    printf(",\"data\":");
    cli_json_string(stdout, a->train.data);
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
    int rc = cli_train_build_options("train", &a->train, &o);
    if (rc)
        return rc;
    o.out_path = a->out;
    o.resume = a->resume != NULL;
    char checkpoint[4096];
    if (a->checkpoint)
        snprintf(checkpoint, sizeof checkpoint, "%s", a->checkpoint);
    else if (snprintf(checkpoint, sizeof checkpoint, "%s.ckpt", a->out) >= (int)sizeof checkpoint)
        return cli_fail_msg("train", "--out path is too long");
    o.checkpoint_path = checkpoint;
    kn_threads_set((int)a->train.threads);

    kn_graph g;
    kn_named_tensor *state = NULL;
    int n_state = 0;
    kiln_status st =
        cli_load_model(a->resume ? a->resume : a->model, (uint64_t)a->train.seed, &g, &state, &n_state);
    if (st != KILN_OK)
        return cli_fail("train", st);
    cli_train_data data;
    st = cli_train_data_load(&a->train, &g, &data);
    cli_train_progress progress;
    cli_train_progress_init(&progress, &a->train);
    o.progress = cli_train_on_progress;
    o.progress_user = &progress;
    kn_train_result r;
    const kn_dataset *train_set = cli_train_data_train(&data);
    if (st == KILN_OK && !a->train.json && !a->train.quiet)
        printf("training %s on %s (%lld samples%s), %lld params, %s, batch %lld, %d threads\n",
               a->resume ? a->resume : a->model, a->train.data, (long long)train_set->count,
               data.has_val ? ", with validation" : "", (long long)kn_graph_param_count(&g), a->train.optimizer,
               (long long)a->train.batch, kn_threads_get());
    fflush(stdout);
    if (st == KILN_OK)
        st = kn_train(&g, train_set, cli_train_data_val(&data), &o, state, n_state, &r);
    cli_progress_end_line(&progress.bar);
    if (st == KILN_OK) {
        if (a->train.json)
            print_json(a, &g, &r, &o);
        else
            printf("done: %lld epochs, %lld steps in %.1fs (%.0f samples/s); model written to %s, checkpoint %s\n",
                   (long long)r.epochs_done, (long long)r.steps, r.seconds, r.samples_per_second, a->out, checkpoint);
    }
    rc = st == KILN_OK ? 0 : cli_fail("train", st);
    cli_train_data_free(&data);
    kn_named_tensors_free(state, n_state);
    kn_graph_free(&g);
    return rc;
}

int cmd_train(int argc, char **argv) {
    train_args a = {.train = cli_train_args_defaults(5)};
    cli_option options[CLI_TRAIN_OPTION_COUNT + 4] = {
        {"--model", CLI_STRING, &a.model, "model spec (.txt), .kiln or .onnx model to train"},
        {"--out", CLI_STRING, &a.out, "where to write the trained model (.kiln)"},
        {"--resume", CLI_STRING, &a.resume, "continue from this checkpoint"},
        {"--checkpoint", CLI_STRING, &a.checkpoint, "checkpoint path (default OUT.ckpt)"},
    };
    int n_options = 4 + cli_train_option_table(&a.train, options + 4);
    int n_pos;
    if (!cli_parse("train", usage, argc, argv, 2, options, n_options, NULL, 0, &n_pos))
        return 2;
    if ((!a.model && !a.resume) || !a.train.data || !a.out) {
        fprintf(stderr, "kiln train: error: --model (or --resume), --data and --out are required\n");
        cli_print_help(stderr, "train", usage, options, n_options);
        return 2;
    }
    return run(&a);
}
