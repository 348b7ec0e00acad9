/* kiln prune: removes weights (unstructured, stored sparse) or whole channels and neurons (structured,
 * a smaller dense graph) from a model, optionally after a per-layer sensitivity scan, with fine-tuning
 * that keeps the pruned weights at zero; prints what it bought. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compress/prune.h"
#include "compress/prune_structured.h"
#include "compress/summary.h"
#include "core/threads.h"
#include "train/api.h"
#include "train_args.h"

static const char usage[] = "M --data DATA --out OUT.kiln|OUT.onnx [--amount A] [options]";

typedef struct prune_args {
    cli_train_args train;
    const char *model, *out, *method, *scope, *skip, *structured, *schedule, *resume, *checkpoint;
    double amount, target_sparsity;
    int64_t calib, steps, finetune;
    bool sensitivity, no_latency;
} prune_args;


/* The kn_prune_config the options ask for; prints the error and returns 1 when one is bad. */
static int build_config(const prune_args *a, char *skip_buf, size_t skip_size, kn_prune_config *c) {
    *c = kn_prune_config_default();
    if (kn_prune_method_parse(a->method, &c->method) != KILN_OK)
        return cli_fail("prune", KILN_ERR_INVALID_ARG);
    if (a->structured && kn_prune_structure_parse(a->structured, &c->structure) != KILN_OK)
        return cli_fail("prune", KILN_ERR_INVALID_ARG);
    if (!isnan(a->amount) && !isnan(a->target_sparsity))
        return cli_fail_msg("prune", "give --amount or --target-sparsity, not both");
    c->target_is_sparsity = !isnan(a->target_sparsity);
    c->amount = c->target_is_sparsity ? a->target_sparsity : isnan(a->amount) ? 0.5 : a->amount;
    if (!(c->amount >= 0 && c->amount < 1))
        return cli_fail_msg("prune", "--%s must be in [0, 1), got %g", c->target_is_sparsity ? "target-sparsity" :
                            "amount", c->amount);
    if (strcmp(a->scope, "layer") != 0 && strcmp(a->scope, "global") != 0)
        return cli_fail_msg("prune", "unknown --scope '%s' (layer or global)", a->scope);
    c->global = strcmp(a->scope, "global") == 0;
    if (strcmp(a->schedule, "agp") == 0)
        c->schedule = KN_SCHEDULE_AGP;
    else if (strcmp(a->schedule, "oneshot") != 0)
        return cli_fail_msg("prune", "unknown --schedule '%s' (oneshot or agp)", a->schedule);
    if (c->schedule == KN_SCHEDULE_AGP && a->finetune < 1)
        return cli_fail_msg("prune", "--schedule agp prunes while fine-tuning: give --finetune E");
    if (a->steps < 1 || a->calib < 1)
        return cli_fail_msg("prune", "--steps and --calib must be at least 1");
    c->steps = a->steps;
    c->calib_batches = a->calib;
    c->calib_batch = a->train.batch;
    c->seed = (uint64_t)a->train.seed;
    if (a->skip) {
        if (snprintf(skip_buf, skip_size, "%s", a->skip) >= (int)skip_size)
            return cli_fail_msg("prune", "--skip is too long");
        for (char *name = strtok(skip_buf, ","); name; name = strtok(NULL, ",")) {
            if (c->n_skip == KN_PRUNE_MAX_SKIP)
                return cli_fail_msg("prune", "--skip takes at most %d names", KN_PRUNE_MAX_SKIP);
            c->skip[c->n_skip++] = name;
        }
    }
    const char *input = a->resume ? a->resume : a->model;
    if (!cli_has_suffix(a->out, ".kiln") && !cli_has_suffix(a->out, ".onnx"))
        return cli_fail_msg("prune", "--out %s: the output must end in .kiln or .onnx", a->out);
    if (cli_same_file(input, a->out) || strcmp(input, a->out) == 0)
        return cli_fail_msg("prune", "--out %s is the input model; write somewhere else", a->out);
    return 0;
}

/* ---- printing ---- */

static void print_sensitivity(const kn_prune_sensitivity *s, bool json) {
    if (json) {
        printf(",\"sensitivity\":{\"base_accuracy\":%.6f,\"layers\":[", s->base_accuracy);
        for (int l = 0; l < s->n_layers; l++) {
            printf("%s{\"name\":", l ? "," : "");
            cli_json_string(stdout, s->names[l]);
            printf(",\"accuracy\":[");
            for (int a = 0; a < KN_SENSITIVITY_LEVELS; a++)
                printf("%s%.6f", a ? "," : "", s->accuracy[l][a]);
            printf("],\"chosen\":%.6f}", s->chosen[l]);
        }
        printf("]}");
        return;
    }
    printf("sensitivity: accuracy with each layer alone pruned (unpruned %.4f)\n%-28s", s->base_accuracy, "layer");
    for (int a = 0; a < KN_SENSITIVITY_LEVELS; a++)
        printf("   %2d%%  ", 10 * (a + 1));
    printf("  chosen\n");
    for (int l = 0; l < s->n_layers; l++) {
        printf("%-28.28s", s->names[l]);
        for (int a = 0; a < KN_SENSITIVITY_LEVELS; a++)
            printf(" %.4f", s->accuracy[l][a]);
        printf("  %5.1f%%\n", 100 * s->chosen[l]);
    }
}

static void print_layers(const kn_graph *g, const kn_prune_config *c, const kn_prune_structured_result *r, bool json) {
    if (json)
        printf(",\"layers\":[");
    if (c->structure != KN_PRUNE_UNSTRUCTURED) {
        for (int l = 0; l < r->n_layers; l++) {
            if (json) {
                printf("%s{\"name\":", l ? "," : "");
                cli_json_string(stdout, r->layers[l].name);
                printf(",\"units_before\":%lld,\"units_after\":%lld}", (long long)r->layers[l].before,
                       (long long)r->layers[l].after);
            } else {
                printf("%-28s %5lld -> %5lld %s\n", r->layers[l].name, (long long)r->layers[l].before,
                       (long long)r->layers[l].after, c->structure == KN_PRUNE_CHANNEL ? "channels" : "neurons");
            }
        }
    } else {
        kn_prune_layer layers[256];
        int n = 0;
        kn_prune_config all = *c;
        all.n_skip = 0;
        if (kn_prune_layers(g, &all, layers, 256, &n) != KILN_OK)
            n = 0;
        for (int l = 0; l < n; l++) {
            int64_t zeros, total;
            kn_prune_count(g, &layers[l], 1, &zeros, &total);
            if (json) {
                printf("%s{\"name\":", l ? "," : "");
                cli_json_string(stdout, g->values[layers[l].weight].name);
                printf(",\"weights\":%lld,\"zeros\":%lld}", (long long)total, (long long)zeros);
            } else {
                printf("%-28s %8lld weights, sparsity %6.2f%%\n", g->values[layers[l].weight].name, (long long)total,
                       100.0 * (double)zeros / (double)(total ? total : 1));
            }
        }
    }
    if (json)
        printf("]");
}

/* ---- the command ---- */

static int run(const prune_args *a, const kn_prune_config *config) {
    kn_train_options finetune;
    int rc = cli_train_build_options("prune", &a->train, &finetune);
    if (rc)
        return rc;
    finetune.epochs = a->finetune;
    finetune.resume = a->resume != NULL;
    char checkpoint[4096];
    if (snprintf(checkpoint, sizeof checkpoint, "%s", a->checkpoint ? a->checkpoint : a->out) >= (int)sizeof checkpoint ||
        (!a->checkpoint && strlen(checkpoint) + 5 >= sizeof checkpoint))
        return cli_fail_msg("prune", "--out path is too long");
    if (!a->checkpoint)
        strcat(checkpoint, ".ckpt");
    finetune.checkpoint_path = a->finetune > 0 ? checkpoint : NULL;
    kn_threads_set((int)a->train.threads);

    kn_graph g;
    kn_named_tensor *state = NULL;
    int n_state = 0;
    kiln_status st = cli_load_model(a->resume ? a->resume : a->model, (uint64_t)a->train.seed, &g,
                                    a->resume ? &state : NULL, a->resume ? &n_state : NULL);
    if (st != KILN_OK)
        return cli_fail("prune", st);
    cli_train_data data;
    st = cli_train_data_load(&a->train, &g, &data);
    if (st != KILN_OK) {
        kn_graph_free(&g);
        return cli_fail("prune", st);
    }
    const kn_dataset *val = cli_train_data_val(&data);
    kn_summary_options so = {.data = val, .latency = !a->no_latency};
    kn_model_summary rows[2];
    cli_train_progress progress;
    cli_train_progress_init(&progress, &a->train);
    finetune.progress = cli_train_on_progress;
    finetune.progress_user = &progress;
    kn_prune_sensitivity *scan = a->sensitivity ? calloc(1, sizeof *scan) : NULL;
    kn_prune_structured_result structured = {0};
    kn_prune_report report = {.sensitivity = scan, .structured = &structured};
    kn_prune_job job = {.config = *config, .data = cli_train_data_train(&data), .val = val,
                        .sensitivity = a->sensitivity, .finetune = a->finetune > 0 ? &finetune : NULL,
                        .resume = a->resume != NULL, .optim_state = state, .n_optim_state = n_state};
    if (a->sensitivity && !scan)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for the sensitivity scan");
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &so, &rows[0]);
    if (st == KILN_OK)
        st = kn_prune_run(&g, &job, &report);
    cli_progress_end_line(&progress.bar);
    if (st == KILN_OK)
        st = kn_model_summarize(&g, &so, &rows[1]);
    if (st == KILN_OK)
        st = kn_graph_save_path(&g, a->out);
    if (st == KILN_OK) {
        const char *labels[2] = {"before", "after"};
        if (a->train.json) {
            printf("{\"command\":\"prune\",\"model\":");
            cli_json_string(stdout, a->resume ? a->resume : a->model);
            printf(",\"out\":");
            cli_json_string(stdout, a->out);
            printf(",\"method\":\"%s\",\"structured\":%s%s%s,\"amount\":%.6f", kn_prune_method_name(config->method),
                   a->structured ? "\"" : "", a->structured ? a->structured : "null", a->structured ? "\"" : "",
                   config->amount);
            if (scan)
                print_sensitivity(scan, true);
            print_layers(&g, config, &structured, true);
            printf(",\"summary\":");
            kn_summary_print_json(stdout, labels, rows, 2);
            printf("}\n");
        } else {
            if (scan)
                print_sensitivity(scan, false);
            print_layers(&g, config, &structured, false);
            kn_summary_print_table(stdout, labels, rows, 2);
            printf("written to %s\n", a->out);
        }
    }
    rc = st == KILN_OK ? 0 : cli_fail("prune", st);
    free(scan);
    cli_train_data_free(&data);
    kn_named_tensors_free(state, n_state);
    kn_graph_free(&g);
    return rc;
}

int cmd_prune(int argc, char **argv) {
    prune_args a = {.train = cli_train_args_defaults(0), .method = "l1", .scope = "layer", .schedule = "oneshot",
                    .amount = NAN, .target_sparsity = NAN, .calib = 8, .steps = 10};
    enum { OWN = 16 };
    cli_option options[OWN + CLI_TRAIN_OPTION_COUNT] = {
        {"--out", CLI_STRING, &a.out, "where to write the pruned model (.kiln or .onnx)"},
        {"--method", CLI_STRING, &a.method, "l1|l2|random|taylor|hessian (default l1)"},
        {"--amount", CLI_FLOAT, &a.amount, "fraction of the prunable weights (units) to remove (default 0.5)"},
        {"--target-sparsity", CLI_FLOAT, &a.target_sparsity, "fraction of ALL parameters to be zero"},
        {"--scope", CLI_STRING, &a.scope, "layer|global: amount of every layer, or one threshold (default layer)"},
        {"--skip", CLI_STRING, &a.skip, "comma-separated weight or node names not to prune"},
        {"--structured", CLI_STRING, &a.structured, "channel|filter|neuron: remove whole units, shrink the graph"},
        {"--calib", CLI_INT, &a.calib, "taylor, hessian: batches of --data to score on (default 8)"},
        {"--sensitivity", CLI_FLAG, &a.sensitivity, "scan each layer on --val, choose per-layer amounts"},
        {"--schedule", CLI_STRING, &a.schedule, "oneshot|agp (agp: gradual, during --finetune)"},
        {"--steps", CLI_INT, &a.steps, "agp: pruning steps (default 10)"},
        {"--finetune", CLI_INT, &a.finetune, "fine-tune this many epochs keeping pruned weights at zero"},
        {"--resume", CLI_STRING, &a.resume, "continue a fine-tune from its checkpoint (instead of M)"},
        {"--checkpoint", CLI_STRING, &a.checkpoint, "fine-tuning checkpoint path (default OUT.ckpt)"},
        {"--no-latency", CLI_FLAG, &a.no_latency, "leave latency out of the before/after table"},
        {"--lr-schedule", CLI_STRING, &a.train.schedule, "fine-tuning LR schedule: constant|step|cosine"},
    };
    int n_own = 16;
    cli_option train_options[CLI_TRAIN_OPTION_COUNT];
    int n_train = cli_train_option_table(&a.train, train_options), n_options = n_own;
    for (int k = 0; k < n_train; k++)
        /* --finetune E gives the epochs; --schedule is the pruning schedule here (--lr-schedule the LR's). */
        if (strcmp(train_options[k].name, "--epochs") != 0 && strcmp(train_options[k].name, "--schedule") != 0)
            options[n_options++] = train_options[k];
    const char *model = NULL;
    int n_pos;
    if (!cli_parse("prune", usage, argc, argv, 2, options, n_options, &model, 1, &n_pos))
        return 2;
    a.model = model;
    if ((!a.model && !a.resume) || !a.train.data || !a.out) {
        fprintf(stderr, "kiln prune: error: a model (or --resume), --data and --out are required\n");
        cli_print_help(stderr, "prune", usage, options, n_options);
        return 2;
    }
    if (a.resume && a.finetune < 1) {
        fprintf(stderr, "kiln prune: error: --resume continues a fine-tune: give --finetune E\n");
        return 2;
    }
    kn_prune_config config;
    char skip[4096];
    int rc = build_config(&a, skip, sizeof skip, &config);
    return rc ? rc : run(&a, &config);
}
