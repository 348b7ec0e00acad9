/* kiln report: one HTML page comparing models (compress/report.h): each model is measured as saved —
 * accuracy and loss on --data, parameters, non-zeros, FLOPs, file bytes, peak memory, latency at batch
 * 1 and 32 — and drawn against the others. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "compress/report.h"
#include "core/threads.h"
#include "format/file_write.h"

static const char usage[] = "M... [--data DATA] --out report.html [options]";

enum { MAX_MODELS = 16 };

typedef struct page {
    char *bytes;
    size_t size;
} page;

static kiln_status emit_page(int fd, void *ctx) {
    const page *p = ctx;
    uint64_t pos = 0;
    return kn_file_write_all(fd, p->bytes, p->size, &pos);
}

/* The model's file name without its folders: the label in every chart. */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Loads the model at `path` into g and measures it; g is freed again on failure. */
static kiln_status measure(const char *path, const char *data, bool latency, kn_graph *g, kn_model_summary *s) {
    KN_TRY(cli_load_model(path, 1, g, NULL, NULL));
    kn_dataset ds = {0};
    kn_data_options data_options = kn_data_options_for_model(g);
    kiln_status st = data ? kn_dataset_load(data, &data_options, &ds) : KILN_OK;
    kn_summary_options o = {.data = data ? &ds : NULL, .latency = latency};
    if (st == KILN_OK)
        st = kn_model_summarize(g, &o, s);
    if (st != KILN_OK) {
        kn_error_prefix("%s: ", path);
        kn_graph_free(g);
    }
    kn_dataset_free(&ds);
    return st;
}

int cmd_report(int argc, char **argv) {
    const char *data = NULL, *out = NULL, *title = "kiln model report";
    int64_t threads = 0;
    bool no_latency = false, json = false, quiet = false;
    const cli_option options[] = {
        {"--data", CLI_STRING, &data, "evaluation data (e.g. fashion-mnist:test)"},
        {"--out", CLI_STRING, &out, "the HTML page to write"},
        {"--title", CLI_STRING, &title, "the page's title"},
        {"--no-latency", CLI_FLAG, &no_latency, "do not time the models"},
        {"--threads", CLI_INT, &threads, "threads (default: all cores)"},
        {"--json", CLI_FLAG, &json, "also print the measurements as one JSON object"},
        {"--quiet", CLI_FLAG, &quiet, "no table on stdout"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    const char *paths[MAX_MODELS];
    int n = 0;
    if (!cli_parse("report", usage, argc, argv, 2, options, n_options, paths, MAX_MODELS, &n))
        return 2;
    if (n < 1 || !out) {
        fprintf(stderr, "kiln report: error: at least one model and --out are required\n");
        cli_print_help(stderr, "report", usage, options, n_options);
        return 2;
    }
    if (!cli_has_suffix(out, ".html") && !cli_has_suffix(out, ".htm"))
        return cli_fail_msg("report", "--out must name an .html file, got '%s'", out);
    for (int i = 0; i < n; i++)
        if (cli_same_file(out, paths[i]))
            return cli_fail_msg("report", "--out %s is the model %s: refusing to overwrite it", out, paths[i]);
    kn_threads_set((int)threads);

    kn_graph graphs[MAX_MODELS];
    kn_report_model models[MAX_MODELS];
    const char *labels[MAX_MODELS];
    kn_model_summary rows[MAX_MODELS];
    int loaded = 0;
    kiln_status st = KILN_OK;
    while (st == KILN_OK && loaded < n) {
        if (!quiet && !json)
            fprintf(stderr, "measuring %s (%d/%d)\n", paths[loaded], loaded + 1, n);
        st = measure(paths[loaded], data, !no_latency, &graphs[loaded], &rows[loaded]);
        if (st != KILN_OK)
            break;
        labels[loaded] = base_name(paths[loaded]);
        models[loaded] = (kn_report_model){labels[loaded], &graphs[loaded], rows[loaded]};
        loaded++;
    }
    page p = {0};
    if (st == KILN_OK) {
        FILE *mem = open_memstream(&p.bytes, &p.size);
        st = mem ? kn_report_write_html(mem, title, data, models, n) : kn_fail(KILN_ERR_NOMEM, "out of memory");
        if (mem)
            fclose(mem);
    }
    if (st == KILN_OK && (st = kn_file_write_atomic(out, emit_page, &p)) != KILN_OK)
        kn_error_prefix("%s: ", out);
    if (st == KILN_OK && json) {
        printf("{\"command\":\"report\",\"out\":");
        cli_json_string(stdout, out);
        printf(",\"models\":");
        kn_summary_print_json(stdout, labels, rows, n);
        printf("}\n");
    } else if (st == KILN_OK && !quiet) {
        kn_summary_print_table(stdout, labels, rows, n);
        printf("report written to %s\n", out);
    }
    free(p.bytes);
    for (int i = 0; i < loaded; i++)
        kn_graph_free(&graphs[i]);
    return st == KILN_OK ? 0 : cli_fail("report", st);
}
