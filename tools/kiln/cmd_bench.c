/* kiln bench: latency (min, median, p99) and throughput of a model on seeded random inputs after a
 * warm-up, the process's peak memory, and with --profile the time of each op. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "core/clock.h"
#include "core/status.h"
#include "core/threads.h"
#include "runtime/runtime.h"

static const char usage[] =
    "M.kiln|M.onnx [--batch B] [--threads T] [--warmup N] [--iters N | --seconds S] [--profile] [--json]";

typedef struct bench_args {
    const char *model;
    int64_t batch, threads, warmup, iters;
    double seconds;
    bool profile, json;
} bench_args;

typedef struct bench_result {
    int64_t runs;
    double min, median, p99, mean, total; /* seconds */
    double cpu;                           /* process CPU seconds over the timed runs (all threads) */
    int64_t peak_rss;                     /* bytes */
    kiln_memory_info memory;
    int threads;
} bench_result;

/* Runs until --iters runs or --seconds have passed; latencies go into a growing array. */
static kiln_status time_runs(const bench_args *a, kiln_session *s, double **latencies, int64_t *runs,
                             double *cpu) {
    int64_t capacity = a->iters > 0 ? a->iters : 1024;
    *runs = 0;
    *latencies = malloc(sizeof(double) * (size_t)capacity);
    if (!*latencies)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld latencies", (long long)capacity);
    double start = cli_now(), cpu_start = kn_process_cpu_seconds();
    while (a->iters > 0 ? *runs < a->iters : (*runs == 0 || cli_now() - start < a->seconds)) {
        if (*runs == capacity) {
            double *grown = realloc(*latencies, sizeof(double) * (size_t)(2 * capacity));
            if (!grown)
                return kn_fail(KILN_ERR_NOMEM, "out of memory for %lld latencies", (long long)(2 * capacity));
            *latencies = grown;
            capacity *= 2;
        }
        double t0 = cli_now();
        KN_TRY(kiln_session_run(s));
        (*latencies)[(*runs)++] = cli_now() - t0;
    }
    *cpu = kn_process_cpu_seconds() - cpu_start;
    return KILN_OK;
}

static kiln_status bench(const bench_args *a, kiln_session *s, bench_result *r) {
    KN_TRY(kn_session_fill_uniform(s, a->batch));
    for (int64_t i = 0; i < a->warmup; i++)
        KN_TRY(kiln_session_run(s));
    kiln_session_profile_reset(s);
    double *latencies;
    kiln_status st = time_runs(a, s, &latencies, &r->runs, &r->cpu);
    if (st == KILN_OK) {
        int64_t n = r->runs;
        r->median = kn_sort_median(latencies, n); /* sorts them: min and p99 below read the order */
        r->total = 0;
        for (int64_t i = 0; i < n; i++)
            r->total += latencies[i];
        r->min = latencies[0];
        r->p99 = latencies[(int64_t)ceil(0.99 * (double)n) - 1]; // nearest rank
        r->mean = r->total / (double)n;
        st = kiln_session_memory(s, &r->memory);
    }
    free(latencies);
    struct rusage usage;
    r->peak_rss = getrusage(RUSAGE_SELF, &usage) == 0 ? (int64_t)usage.ru_maxrss * 1024 : -1;
    r->threads = kn_threads_get();
    return st;
}

/* Profile entries by op, slowest first. */
static int compare_entries(const void *a, const void *b) {
    const kiln_profile_entry *x = a, *y = b;
    return (x->seconds < y->seconds) - (x->seconds > y->seconds);
}

static kiln_status sorted_profile(kiln_session *s, kiln_profile_entry **entries, int *n) {
    *n = kiln_session_profile_count(s, KILN_PROFILE_BY_OP);
    *entries = malloc(sizeof(kiln_profile_entry) * (size_t)(*n ? *n : 1));
    if (!*entries)
        return kn_fail(KILN_ERR_NOMEM, "out of memory for the profile");
    for (int i = 0; i < *n; i++)
        KN_TRY(kiln_session_profile_entry(s, KILN_PROFILE_BY_OP, i, &(*entries)[i]));
    qsort(*entries, (size_t)*n, sizeof(kiln_profile_entry), compare_entries);
    return KILN_OK;
}

static void print_text(const bench_args *a, const bench_result *r, const kiln_profile_entry *profile, int n) {
    char rss[32], arena[32], scratch[32], weights[32];
    cli_format_bytes((double)r->peak_rss, rss, sizeof rss);
    cli_format_bytes((double)r->memory.arena_bytes, arena, sizeof arena);
    cli_format_bytes((double)r->memory.workspace_bytes, scratch, sizeof scratch);
    cli_format_bytes((double)r->memory.weight_bytes, weights, sizeof weights);
    printf("%s: batch %lld, %d thread%s, %lld warm-up + %lld timed runs in %.2f s\n", a->model,
           (long long)a->batch, r->threads, r->threads == 1 ? "" : "s", (long long)a->warmup, (long long)r->runs,
           r->total);
    printf("  latency     min %.4g ms   median %.4g ms   p99 %.4g ms   mean %.4g ms\n", r->min * 1e3,
           r->median * 1e3, r->p99 * 1e3, r->mean * 1e3);
    printf("  throughput  %.1f samples/s\n", (double)a->batch / r->mean);
    printf("  CPU time    %.4g ms per run (all threads)\n", r->cpu / (double)r->runs * 1e3);
    printf("  memory      peak RSS %s; activations %s, op scratch %s, weights %s\n", rss, arena, scratch, weights);
    if (!a->profile)
        return;
    double total = 0;
    for (int i = 0; i < n; i++)
        total += profile[i].seconds;
    printf("\n  %-24s %6s %10s %7s %10s\n", "op", "nodes", "ms/run", "share", "GFLOP/s");
    for (int i = 0; i < n; i++) {
        const kiln_profile_entry *e = &profile[i];
        double per_run = e->runs ? e->seconds / (double)e->runs : 0;
        printf("  %-24s %6d %10.4f %6.1f%% %10.2f\n", e->op, e->nodes, per_run * 1e3,
               total > 0 ? 100 * e->seconds / total : 0.0, per_run > 0 ? (double)e->flops / per_run * 1e-9 : 0.0);
    }
}

static void print_json(const bench_args *a, const bench_result *r, const kiln_profile_entry *profile, int n) {
    printf("{\"command\":\"bench\",\"model\":");
    cli_json_string(stdout, a->model);
    printf(",\"batch\":%lld,\"threads\":%d,\"warmup\":%lld,\"runs\":%lld,\"seconds\":%.6f,"
           "\"latency_ms\":{\"min\":%.6f,\"median\":%.6f,\"p99\":%.6f,\"mean\":%.6f},\"samples_per_second\":%.3f,"
           "\"cpu_ms_per_run\":%.6f,\"peak_rss_bytes\":%lld,\"activation_bytes\":%zu,\"workspace_bytes\":%zu,"
           "\"weight_bytes\":%zu",
           (long long)a->batch, r->threads, (long long)a->warmup, (long long)r->runs, r->total, r->min * 1e3,
           r->median * 1e3, r->p99 * 1e3, r->mean * 1e3, (double)a->batch / r->mean,
           r->cpu / (double)r->runs * 1e3, (long long)r->peak_rss,
           r->memory.arena_bytes, r->memory.workspace_bytes, r->memory.weight_bytes);
    if (a->profile) {
        printf(",\"profile\":[");
        for (int i = 0; i < n; i++) {
            const kiln_profile_entry *e = &profile[i];
            printf("%s{\"op\":", i ? "," : "");
            cli_json_string(stdout, e->op);
            printf(",\"nodes\":%d,\"ms_per_run\":%.6f,\"flops\":%lld}", e->nodes,
                   e->runs ? e->seconds / (double)e->runs * 1e3 : 0.0, (long long)e->flops);
        }
        printf("]");
    }
    printf("}\n");
}

static int run(const bench_args *a) {
    kiln_model *model;
    kiln_status st = cli_open_model(a->model, &model);
    if (st != KILN_OK)
        return cli_fail("bench", st);
    kiln_session_options *options = kiln_session_options_create();
    kiln_session *s = NULL;
    kiln_profile_entry *profile = NULL;
    int n_profile = 0;
    bench_result r = {0};
    st = options ? kiln_session_options_set_threads(options, (int)a->threads) : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_options_set_profiling(options, a->profile);
    if (st == KILN_OK)
        st = kiln_session_create(model, options, &s);
    if (st == KILN_OK)
        st = bench(a, s, &r);
    if (st == KILN_OK && a->profile)
        st = sorted_profile(s, &profile, &n_profile);
    if (st == KILN_OK && a->json)
        print_json(a, &r, profile, n_profile);
    else if (st == KILN_OK)
        print_text(a, &r, profile, n_profile);
    int rc = st == KILN_OK ? 0 : cli_fail("bench", st);
    free(profile);
    kiln_session_free(s);
    kiln_session_options_free(options);
    kiln_model_free(model);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_args a = {.batch = 1, .warmup = 5, .seconds = 2};
    const cli_option options[] = {
        {"--batch", CLI_INT, &a.batch, "batch size (default 1)"},
        {"--threads", CLI_INT, &a.threads, "threads (default: all cores)"},
        {"--warmup", CLI_INT, &a.warmup, "untimed runs first (default 5)"},
        {"--iters", CLI_INT, &a.iters, "timed runs (default: as many as --seconds allows)"},
        {"--seconds", CLI_FLOAT, &a.seconds, "time to spend on timed runs (default 2)"},
        {"--profile", CLI_FLAG, &a.profile, "time every op and print the table, slowest first"},
        {"--json", CLI_FLAG, &a.json, "print one JSON object with the results"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    int n_pos;
    if (!cli_parse("bench", usage, argc, argv, 2, options, n_options, &a.model, 1, &n_pos))
        return 2;
    const char *bad = !a.model ? "a model is required"
                      : a.batch < 1 ? "--batch must be at least 1"
                      : a.warmup < 0 ? "--warmup must be >= 0"
                      : cli_was_given("--iters") && a.iters < 1 ? "--iters must be at least 1 (leave it out to "
                                                                  "time as many runs as --seconds allows)"
                      : !(a.seconds > 0) ? "--seconds must be positive"
                                         : NULL;
    if (bad) {
        fprintf(stderr, "kiln bench: error: %s; kiln bench --help lists the options\n", bad);
        return 2;
    }
    return run(&a);
}
