/* kiln eval: loss, accuracy and confusion matrix of a model on a dataset. */
#include <string.h>

#include "cli.h"
#include "core/threads.h"
#include "train/evaluate.h"

static const char usage[] = "M.kiln|M.onnx --data DATA [--batch B] [--loss ce|bce|mse|mae] [--json]";

static void print_confusion(const kn_graph *g, const kn_eval_result *r) {
    printf("confusion matrix (rows: true class, columns: predicted)\n%14s", "");
    for (int64_t j = 0; j < r->class_count; j++)
        printf(" %6lld", (long long)j);
    printf("\n");
    for (int64_t i = 0; i < r->class_count; i++) {
        const char *name = (g->class_names && i < g->n_classes) ? g->class_names[i] : "";
        printf("%3lld %-10.10s", (long long)i, name);
        for (int64_t j = 0; j < r->class_count; j++)
            printf(" %6lld", (long long)r->confusion[i * r->class_count + j]);
        printf("\n");
    }
}

static void print_json(const char *model, const char *data, const kn_eval_result *r) {
    printf("{\"command\":\"eval\",\"model\":");
    cli_json_string(stdout, model);
    printf(",\"data\":");
    cli_json_string(stdout, data);
    printf(",\"samples\":%lld,\"loss\":%.6f", (long long)r->count, r->loss);
    if (r->accuracy >= 0)
        printf(",\"accuracy\":%.6f", r->accuracy);
    if (r->confusion) {
        printf(",\"confusion\":[");
        for (int64_t i = 0; i < r->class_count; i++) {
            printf(i ? ",[" : "[");
            for (int64_t j = 0; j < r->class_count; j++)
                printf(j ? ",%lld" : "%lld", (long long)r->confusion[i * r->class_count + j]);
            printf("]");
        }
        printf("]");
    }
    printf("}\n");
}

int cmd_eval(int argc, char **argv) {
    const char *data = NULL, *loss_name = NULL, *label = NULL;
    int64_t batch = 256, threads = 0;
    bool json = false;
    const cli_option options[] = {
        {"--data", CLI_STRING, &data, "evaluation data: fashion-mnist:test, IDX, CSV or X.npy,Y.npy"},
        {"--batch", CLI_INT, &batch, "batch size (default 256)"},
        {"--loss", CLI_STRING, &loss_name, "ce|bce|mse|mae (default: the loss the model was trained with)"},
        {"--label", CLI_STRING, &label, "CSV: the target column (default: last)"},
        {"--threads", CLI_INT, &threads, "threads (default: all cores)"},
        {"--json", CLI_FLAG, &json, "print one JSON object with the results"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    const char *model = NULL;
    int n_pos;
    if (!cli_parse("eval", usage, argc, argv, 2, options, n_options, &model, 1, &n_pos))
        return 2;
    if (!model || !data) {
        fprintf(stderr, "kiln eval: error: a model and --data are required\n");
        cli_print_help(stderr, "eval", usage, options, n_options);
        return 2;
    }
    kn_threads_set((int)threads);
    kn_graph g;
    kiln_status st = cli_load_model(model, 1, &g, NULL, NULL);
    if (st != KILN_OK)
        return cli_fail("eval", st);
    kn_loss loss = {.reduction = KN_REDUCTION_MEAN};
    const char *trained_loss = kn_graph_meta(&g, "train.loss");
    st = kn_loss_parse(loss_name ? loss_name : trained_loss ? trained_loss : "ce", &loss.kind);
    kn_data_options data_options = kn_data_options_for_model(&g);
    data_options.label_column = label;
    data_options.quiet = json;
    kn_dataset ds = {0};
    if (st == KILN_OK)
        st = kn_dataset_load(data, &data_options, &ds);
    kn_eval_result r = {0};
    if (st == KILN_OK)
        st = kn_evaluate(&g, &ds, &loss, batch, &r);
    int rc = 0;
    if (st != KILN_OK) {
        rc = cli_fail("eval", st);
    } else if (json) {
        print_json(model, data, &r);
    } else {
        printf("%s on %s: %lld sample%s\n  loss      %.4f (%s)\n", model, data, (long long)r.count,
               cli_plural(r.count), r.loss, kn_loss_name(loss.kind));
        if (r.accuracy >= 0)
            printf("  accuracy  %.4f\n", r.accuracy);
        if (r.confusion)
            print_confusion(&g, &r);
    }
    kn_eval_result_free(&r);
    kn_dataset_free(&ds);
    kn_graph_free(&g);
    return rc;
}
