/* The before/after numbers of a compression step, measured on the model as it would be saved: the
 * .kiln bytes are written to memory, the runtime loads them back for FLOPs, memory and latency, and the
 * evaluation runs on a graph read back from them — what a user of the output file gets. */
#include "compress/summary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/status.h"
#include "core/threads.h"
#include "format/kiln_file.h"
#include "runtime/runtime.h"
#include "train/evaluate.h"

static void count_params(const kn_graph *g, kn_model_summary *out) {
    for (int v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        if (val->kind != KN_VALUE_PARAM)
            continue;
        int64_t n = kn_shape_numel(&val->shape);
        out->params += n;
        const float *x = val->data;
        for (int64_t i = 0; x && i < n; i++)
            out->nonzeros += x[i] != 0.0f;
    }
}

/* A session of `model` on the calling thread's count (kn_threads_get: the command's --threads). A session
 * left at the default count would set all cores for this thread when it plans (runtime.md, Threads). */
static kiln_status session_create_here(const kiln_model *model, bool optimize, kiln_session **out) {
    kiln_session_options *options = kiln_session_options_create();
    if (!options)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for session options");
    kiln_status st = kiln_session_options_set_threads(options, kn_threads_get());
    if (st == KILN_OK)
        st = kiln_session_options_set_optimize(options, optimize);
    if (st == KILN_OK)
        st = kiln_session_create(model, options, out);
    kiln_session_options_free(options);
    return st;
}

/* FLOPs per sample from the unoptimized graph at batch 1 (the model as designed), memory from the
 * optimized one (what a session allocates). */
static kiln_status measure_plan(const kiln_model *model, kn_model_summary *out) {
    kiln_session *saved = NULL, *optimized = NULL;
    kiln_memory_info memory;
    kiln_status st = session_create_here(model, false, &saved);
    if (st == KILN_OK)
        st = kiln_session_memory(saved, &memory);
    for (int i = 0; st == KILN_OK && i < kiln_session_profile_count(saved, KILN_PROFILE_BY_NODE); i++) {
        kiln_profile_entry e;
        st = kiln_session_profile_entry(saved, KILN_PROFILE_BY_NODE, i, &e);
        out->flops += e.flops;
    }
    if (st == KILN_OK)
        st = session_create_here(model, true, &optimized);
    if (st == KILN_OK)
        st = kiln_session_memory(optimized, &memory);
    if (st == KILN_OK)
        out->peak_memory = (int64_t)(memory.arena_bytes + memory.workspace_bytes + memory.weight_bytes);
    kiln_session_free(saved);
    kiln_session_free(optimized);
    return st;
}

/* Median milliseconds of `runs` runs after two warm-up runs; runs <= 0: as many as fit in about 0.3 s
 * (at least 5, at most 200). */
static kiln_status time_batch(const kiln_model *model, int64_t batch, int runs, double *median_ms) {
    kiln_session *s = NULL;
    KN_TRY(session_create_here(model, true, &s));
    double times[200];
    int n = 0;
    kiln_status st = kn_session_fill_uniform(s, batch);
    for (int i = 0; st == KILN_OK && i < 2; i++)
        st = kiln_session_run(s);
    double start = kn_seconds_now();
    int limit = runs > 0 ? (runs < 200 ? runs : 200) : 200;
    while (st == KILN_OK && n < limit && (runs > 0 || n < 5 || kn_seconds_now() - start < 0.3)) {
        double t0 = kn_seconds_now();
        st = kiln_session_run(s);
        times[n++] = kn_seconds_now() - t0;
    }
    kiln_session_free(s);
    KN_TRY(st);
    *median_ms = 1e3 * kn_sort_median(times, n);
    return KILN_OK;
}

static kiln_status evaluate_saved(const void *buf, size_t size, const kn_summary_options *o, kn_model_summary *out) {
    kn_graph copy;
    KN_TRY(kn_kiln_load_buffer(buf, size, &copy, NULL, NULL));
    kn_loss loss;
    kiln_status st = kn_loss_of_model(&copy, &loss);
    kn_eval_result r = {0};
    if (st == KILN_OK)
        st = kn_evaluate(&copy, o->data, &loss, o->eval_batch > 0 ? o->eval_batch : 256, &r);
    if (st == KILN_OK) {
        out->has_eval = true;
        out->accuracy = r.accuracy;
        out->loss = r.loss;
    }
    kn_eval_result_free(&r);
    kn_graph_free(&copy);
    return st;
}

kiln_status kn_model_summarize(const kn_graph *g, const kn_summary_options *options, kn_model_summary *out) {
    memset(out, 0, sizeof *out);
    out->latency_ms[0] = out->latency_ms[1] = -1;
    kn_summary_options none = {0};
    const kn_summary_options *o = options ? options : &none;
    count_params(g, out);
    void *buf = NULL;
    size_t size = 0;
    KN_TRY(kn_kiln_save_buffer(g, NULL, 0, &buf, &size));
    out->file_bytes = (int64_t)size;
    kiln_model *model = NULL;
    kiln_status st = kiln_model_load_memory(buf, size, &model);
    if (st == KILN_OK)
        st = measure_plan(model, out);
    if (st == KILN_OK && o->latency)
        st = time_batch(model, 1, o->latency_runs, &out->latency_ms[0]);
    if (st == KILN_OK && o->latency)
        st = time_batch(model, 32, o->latency_runs, &out->latency_ms[1]);
    kiln_model_free(model);
    if (st == KILN_OK && o->data)
        st = evaluate_saved(buf, size, o, out);
    free(buf);
    return st;
}

/* ---- printing ---- */

static void format_count(double v, char *buf, size_t size) {
    const char *units = " KMGT";
    int unit = 0;
    while (v >= 1000 && unit < 4) {
        v /= 1000;
        unit++;
    }
    if (unit)
        snprintf(buf, size, "%.2f%c", v, units[unit]);
    else
        snprintf(buf, size, "%.0f", v);
}

static void format_bytes(double v, char *buf, size_t size) {
    const char *units[] = {"B", "KiB", "MiB", "GiB"};
    int unit = 0;
    while (v >= 1024 && unit < 3) {
        v /= 1024;
        unit++;
    }
    snprintf(buf, size, unit ? "%.1f %s" : "%.0f %s", v, units[unit]);
}

typedef enum row_kind { ROW_ACCURACY, ROW_LOSS, ROW_COUNT, ROW_BYTES, ROW_MS } row_kind;

/* One table row: the label, each model's figure, and the last model against the first. */
static void print_row(FILE *out, const char *label, row_kind kind, const double *v, const bool *have, int n) {
    char cell[32];
    fprintf(out, "  %-14s", label);
    for (int i = 0; i < n; i++) {
        if (!have[i])
            snprintf(cell, sizeof cell, "-");
        else if (kind == ROW_ACCURACY)
            snprintf(cell, sizeof cell, "%.4f", v[i]);
        else if (kind == ROW_LOSS)
            snprintf(cell, sizeof cell, "%.4f", v[i]);
        else if (kind == ROW_COUNT)
            format_count(v[i], cell, sizeof cell);
        else if (kind == ROW_BYTES)
            format_bytes(v[i], cell, sizeof cell);
        else
            snprintf(cell, sizeof cell, "%.3f ms", v[i]);
        fprintf(out, " %14s", cell);
    }
    if (n > 1 && have[0] && have[n - 1]) {
        if (kind == ROW_ACCURACY)
            fprintf(out, "   %+.2f pt", 100 * (v[n - 1] - v[0]));
        else if (kind == ROW_LOSS)
            fprintf(out, "   %+.4f", v[n - 1] - v[0]);
        else if (v[n - 1] > 0 && v[0] >= v[n - 1])
            fprintf(out, "   %.2fx %s", v[0] / v[n - 1], kind == ROW_MS ? "faster" : "smaller");
        else if (v[0] > 0)
            fprintf(out, "   %.2fx %s", v[n - 1] / v[0], kind == ROW_MS ? "slower" : "larger");
    }
    fputc('\n', out);
}

static const struct {
    const char *label;
    row_kind kind;
} table_rows[] = {
    {"accuracy", ROW_ACCURACY}, {"loss", ROW_LOSS},      {"params", ROW_COUNT},      {"non-zeros", ROW_COUNT},
    {"FLOPs/sample", ROW_COUNT}, {"file", ROW_BYTES},    {"peak memory", ROW_BYTES}, {"latency b1", ROW_MS},
    {"latency b32", ROW_MS},
};

/* Row `row` of table_rows for one model; *have false where it was not measured. */
static double row_value(const kn_model_summary *r, int row, bool *have) {
    *have = true;
    switch (row) {
    case 0: *have = r->has_eval && r->accuracy >= 0; return r->accuracy;
    case 1: *have = r->has_eval; return r->loss;
    case 2: return (double)r->params;
    case 3: return (double)r->nonzeros;
    case 4: return (double)r->flops;
    case 5: return (double)r->file_bytes;
    case 6: return (double)r->peak_memory;
    default: *have = r->latency_ms[row - 7] >= 0; return r->latency_ms[row - 7];
    }
}

void kn_summary_print_table(FILE *out, const char *const *labels, const kn_model_summary *rows, int n) {
    enum { MAX_COLUMNS = 16 };
    double v[MAX_COLUMNS];
    bool have[MAX_COLUMNS];
    if (n > MAX_COLUMNS)
        n = MAX_COLUMNS;
    fprintf(out, "  %-14s", "");
    for (int i = 0; i < n; i++)
        fprintf(out, " %14.14s", labels[i]);
    if (n > 1)
        fprintf(out, "   %s vs %s", labels[n - 1], labels[0]);
    fputc('\n', out);
    for (int row = 0; row < (int)(sizeof table_rows / sizeof table_rows[0]); row++) {
        for (int i = 0; i < n; i++)
            v[i] = row_value(&rows[i], row, &have[i]);
        print_row(out, table_rows[row].label, table_rows[row].kind, v, have, n);
    }
}

static void json_number(FILE *out, const char *key, double v, bool present) {
    if (present)
        fprintf(out, ",\"%s\":%.9g", key, v);
    else
        fprintf(out, ",\"%s\":null", key);
}

void kn_summary_print_json(FILE *out, const char *const *labels, const kn_model_summary *rows, int n) {
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        const kn_model_summary *r = &rows[i];
        fprintf(out, "%s{\"label\":\"", i ? "," : "");
        for (const char *c = labels[i]; *c; c++)
            if (*c == '"' || *c == '\\')
                fprintf(out, "\\%c", *c);
            else if ((unsigned char)*c >= 0x20)
                fputc(*c, out);
        fputc('"', out);
        json_number(out, "accuracy", r->accuracy, r->has_eval && r->accuracy >= 0);
        json_number(out, "loss", r->loss, r->has_eval);
        fprintf(out, ",\"params\":%lld,\"nonzeros\":%lld,\"flops\":%lld,\"file_bytes\":%lld,\"peak_memory\":%lld",
                (long long)r->params, (long long)r->nonzeros, (long long)r->flops, (long long)r->file_bytes,
                (long long)r->peak_memory);
        json_number(out, "latency_ms_batch1", r->latency_ms[0], r->latency_ms[0] >= 0);
        json_number(out, "latency_ms_batch32", r->latency_ms[1], r->latency_ms[1] >= 0);
        fputc('}', out);
    }
    fputc(']', out);
}
