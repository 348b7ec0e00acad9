/* kiln_driver — kiln's side of the comparisons with onnxruntime (bench/compare_ort.sh,
 * bench/deploy_speed.sh, bench/fmnist_agreement.sh, tests/cli_onnxruntime.sh). Models run through the
 * public C API of include/kiln/kiln.h; MODEL is a .kiln file, or an .onnx file brought in by kiln's ONNX
 * importer. Data sets are read by kiln's training data loaders.
 *
 *   kiln_driver inputs MODEL BATCH SEED OUT_DIR
 *       writes one .npy per model input, at batch BATCH, of seeded uniform values in [-1, 1), as
 *       OUT_DIR/<input name>.npy (OUT_DIR is made if missing), and prints their paths in input order
 *   kiln_driver run MODEL OUT_DIR INPUT.npy...
 *       runs the model on the inputs (the batch is theirs) and writes OUT_DIR/<output name>.npy
 *       (OUT_DIR is made if missing)
 *   kiln_driver dataset MODEL.kiln DATA OUT_DIR PART
 *       writes the inputs of DATA (fashion-mnist:test ...) as `kiln eval` reads them for the model (CSV
 *       features standardised with its statistics, kiln_model_input_norm), shaped as the model's input,
 *       in parts of PART samples as OUT_DIR/part-<first sample>.npy, and prints their paths in order
 *   kiln_driver agree MODEL DATA
 *       runs DATA (loaded as `kiln eval` loads it) through the optimized graph and through the graph as
 *       saved (no optimizer: for a quantized model the f32 QDQ reference, where the optimized one runs
 *       the integer layers), 1 thread, batches of 250, and prints one JSON line: samples, how many get
 *       the same predicted class, the largest output difference and each path's accuracy
 *   kiln_driver time MODEL BATCH THREADS WARMUP ITERS [PROFILE_TOP]
 *       times ITERS runs after WARMUP untimed ones on seeded random inputs at batch BATCH, and prints
 *       one JSON line: median, min and p90 latency (ms) and the median's throughput (samples/s).
 *       With PROFILE_TOP > 0 the runtime's profiler is on (its clock reads are then in the times too)
 *       and the time per op and the PROFILE_TOP slowest nodes go to stderr.
 *
 * File names are the input / output names with every character outside [A-Za-z0-9._-] made '_', as
 * bench/ort_run.js names them. .npy files are format 1.0, little-endian float32, C order.
 */
#include <kiln/kiln.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/rng.h"
#include "core/status.h"
#include "format/onnx/onnx_import.h"
#include "runtime/runtime.h"
#include "train/data.h"

static int fail(const char *what, const char *why) {
    fprintf(stderr, "kiln_driver: %s: %s\n", what, why);
    return 1;
}

static int fail_kiln(const char *what) { return fail(what, kiln_last_error()); }

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static kiln_status load_model(const char *path, kiln_model **model) {
    if (!has_suffix(path, ".onnx"))
        return kiln_model_load_file(path, model);
    kn_graph g;
    kiln_status st = kn_onnx_import_file(path, &g);
    if (st == KILN_OK)
        return kn_model_from_graph(&g, model); // takes g over, success or not
    kn_graph_free(&g);
    return st;
}

static kiln_status open_session(const char *path, int threads, int profiling, kiln_session **session) {
    kiln_model *model;
    KN_TRY(load_model(path, &model));
    kiln_session_options *options = kiln_session_options_create();
    kiln_status st = options ? KILN_OK : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_options_set_threads(options, threads);
    if (st == KILN_OK)
        st = kiln_session_options_set_profiling(options, profiling);
    if (st == KILN_OK)
        st = kiln_session_create(model, options, session);
    kiln_session_options_free(options);
    kiln_model_free(model); // the session keeps its own reference
    return st;
}

/* OUT_DIR/<name with unsafe characters made '_'>.npy */
static void npy_path(const char *dir, const char *name, char *path, size_t size) {
    int n = snprintf(path, size, "%s/", dir);
    for (const char *c = name; *c && n + 5 < (int)size; c++) {
        int safe = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                   *c == '.' || *c == '_' || *c == '-';
        path[n++] = safe ? *c : '_';
    }
    snprintf(path + n, size - (size_t)n, ".npy");
}

/* ---- .npy ---------------------------------------------------------------------------------------- */

static int npy_write(const char *path, int ndim, const int64_t *dims, const float *data, size_t count) {
    char header[256];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%lld%s", (long long)dims[i],
                      ndim == 1 || i + 1 < ndim ? ", " : "");
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    // The 10 bytes of magic, version and length, then the header, padded so the data starts 64-aligned.
    int padded = ((10 + n + 1 + 63) / 64) * 64 - 10;
    memset(header + n, ' ', (size_t)(padded - 1 - n));
    header[padded - 1] = '\n';
    unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(padded & 0xff),
                                (unsigned char)(padded >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f)
        return fail(path, strerror(errno));
    int ok = fwrite(prefix, 1, sizeof prefix, f) == sizeof prefix &&
             fwrite(header, 1, (size_t)padded, f) == (size_t)padded &&
             fwrite(data, sizeof(float), count, f) == count;
    if (fclose(f) != 0 || !ok)
        return fail(path, "cannot write the file");
    return 0;
}

typedef struct npy_array {
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    float *data; // malloc'ed
    size_t count;
} npy_array;

static int npy_parse_header(const char *path, const char *header, npy_array *a) {
    if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False"))
        return fail(path, "only little-endian float32 arrays in C order are supported");
    const char *p = strstr(header, "'shape': (");
    if (!p)
        return fail(path, "the header has no shape");
    p += strlen("'shape': (");
    a->ndim = 0;
    a->count = 1;
    while (*p != ')') {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p || d < 0 || a->ndim == KILN_MAX_DIMS)
            return fail(path, "bad shape in the header");
        a->dims[a->ndim++] = d;
        a->count *= (size_t)d;
        p = end;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return 0;
}

static int npy_read(const char *path, npy_array *a) {
    a->data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(path, strerror(errno));
    unsigned char prefix[10];
    char header[1024];
    int st = 0;
    size_t length = 0;
    if (fread(prefix, 1, sizeof prefix, f) != sizeof prefix || memcmp(prefix, "\x93NUMPY\x01", 7) != 0)
        st = fail(path, "not a version 1 .npy file");
    else
        length = (size_t)prefix[8] | (size_t)prefix[9] << 8;
    if (!st && (length >= sizeof header || fread(header, 1, length, f) != length))
        st = fail(path, "truncated or oversized header");
    if (!st) {
        header[length] = '\0';
        st = npy_parse_header(path, header, a);
    }
    if (!st && !(a->data = malloc(sizeof(float) * (a->count ? a->count : 1))))
        st = fail(path, "out of memory");
    if (!st && (fread(a->data, sizeof(float), a->count, f) != a->count || fgetc(f) != EOF))
        st = fail(path, "the data does not match the header's shape");
    fclose(f);
    if (st) {
        free(a->data);
        a->data = NULL;
    }
    return st;
}

/* ---- commands ------------------------------------------------------------------------------------ */

/* Input `index` at batch `batch` (other open dims at 1). */
static kiln_status resize_batch(kiln_session *s, int index, int64_t batch) {
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    KN_TRY(kiln_session_input_shape(s, index, &ndim, dims));
    if (ndim > 0)
        dims[0] = batch;
    return kiln_session_resize_input(s, index, ndim, dims);
}

/* Every input at batch `batch`, filled with seeded uniform values in [-1, 1) (f32 inputs only). */
static int fill_random_inputs(kiln_session *s, int64_t batch, uint64_t seed) {
    for (int i = 0; i < kiln_session_input_count(s); i++)
        if (resize_batch(s, i, batch) != KILN_OK)
            return fail_kiln("resize");
    for (int i = 0; i < kiln_session_input_count(s); i++) {
        kiln_dtype dtype;
        float *x;
        size_t bytes;
        if (kiln_session_input_dtype(s, i, &dtype) != KILN_OK ||
            kiln_session_input_data(s, i, (void **)&x, &bytes) != KILN_OK)
            return fail_kiln("input");
        if (dtype != KILN_DTYPE_F32)
            return fail(kiln_session_input_name(s, i), "only f32 inputs are filled with random values");
        kn_rng rng = kn_rng_seeded(seed + (uint64_t)i);
        for (size_t k = 0; k < bytes / sizeof(float); k++)
            x[k] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    }
    return 0;
}

static int cmd_inputs(const char *model, int64_t batch, uint64_t seed, const char *dir) {
    kiln_session *s;
    if (open_session(model, 1, 0, &s) != KILN_OK)
        return fail_kiln(model);
    int st = fill_random_inputs(s, batch, seed);
    if (!st && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = fail(dir, strerror(errno));
    for (int i = 0; !st && i < kiln_session_input_count(s); i++) {
        int ndim;
        int64_t dims[KILN_MAX_DIMS];
        void *x;
        size_t bytes;
        char path[4096];
        npy_path(dir, kiln_session_input_name(s, i), path, sizeof path);
        if (kiln_session_input_shape(s, i, &ndim, dims) != KILN_OK ||
            kiln_session_input_data(s, i, &x, &bytes) != KILN_OK)
            st = fail_kiln("input");
        else if (!(st = npy_write(path, ndim, dims, x, bytes / sizeof(float))))
            printf("%s\n", path);
    }
    kiln_session_free(s);
    return st;
}

static int set_inputs(kiln_session *s, int count, char **files) {
    if (count != kiln_session_input_count(s))
        return fail("run", "the number of input files is not the model's number of inputs");
    for (int i = 0; i < count; i++) {
        npy_array a;
        if (npy_read(files[i], &a))
            return 1;
        kiln_status st = kiln_session_resize_input(s, i, a.ndim, a.dims);
        if (st == KILN_OK)
            st = kiln_session_set_input(s, i, KILN_DTYPE_F32, a.data, a.count * sizeof(float));
        free(a.data);
        if (st != KILN_OK)
            return fail_kiln(files[i]);
    }
    return 0;
}

static int write_outputs(kiln_session *s, const char *dir) {
    for (int i = 0; i < kiln_session_output_count(s); i++) {
        int ndim;
        int64_t dims[KILN_MAX_DIMS];
        kiln_dtype dtype;
        const void *y;
        size_t bytes;
        char path[4096];
        if (kiln_session_output_shape(s, i, &ndim, dims) != KILN_OK ||
            kiln_session_output_dtype(s, i, &dtype) != KILN_OK ||
            kiln_session_output(s, i, &y, &bytes) != KILN_OK)
            return fail_kiln("output");
        if (dtype != KILN_DTYPE_F32)
            return fail(kiln_session_output_name(s, i), "only f32 outputs are written");
        npy_path(dir, kiln_session_output_name(s, i), path, sizeof path);
        if (npy_write(path, ndim, dims, y, bytes / sizeof(float)))
            return 1;
    }
    return 0;
}

static int cmd_run(const char *model, const char *dir, int count, char **files) {
    kiln_session *s;
    if (open_session(model, 0, 0, &s) != KILN_OK)
        return fail_kiln(model);
    int st = set_inputs(s, count, files);
    if (!st && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = fail(dir, strerror(errno));
    if (!st && kiln_session_run(s) != KILN_OK)
        st = fail_kiln("run");
    if (!st)
        st = write_outputs(s, dir);
    kiln_session_free(s);
    return st;
}

/* Samples [first, first + count) of ds, each of shape sample[0..ndim), as OUT_DIR/part-<first>.npy;
 * prints the path. */
static int write_part(const kn_dataset *ds, int ndim, const int64_t *sample, int64_t first, int64_t count,
                      const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/part-%06lld.npy", dir, (long long)first);
    int64_t dims[KILN_MAX_DIMS] = {count};
    memcpy(dims + 1, sample, sizeof(int64_t) * (size_t)ndim);
    if (npy_write(path, ndim + 1, dims, ds->x + first * ds->sample_size, (size_t)(count * ds->sample_size)))
        return 1;
    printf("%s\n", path);
    return 0;
}

/* DATA loaded as `kiln eval` loads it for the model, in parts shaped as the model's input. */
static int cmd_dataset(const char *path, const char *data, const char *dir, int64_t part) {
    kiln_model *model;
    kiln_session *s = NULL;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    if (load_model(path, &model) != KILN_OK)
        return fail_kiln(path);
    const float *mean, *std;
    kn_data_options options = {.quiet = true};
    options.feature_count = kiln_model_input_norm(model, &mean, &std);
    options.feature_mean = mean;
    options.feature_std = std;
    kn_dataset ds = {0};
    int st = 0;
    if (kiln_session_create(model, NULL, &s) != KILN_OK ||
        kiln_session_input_shape(s, 0, &ndim, dims) != KILN_OK)
        st = fail_kiln(path);
    else if (kn_dataset_load(data, &options, &ds) != KILN_OK)
        st = fail_kiln(data);
    kiln_session_free(s);
    kiln_model_free(model);
    int64_t per_sample = 1;
    for (int d = 1; !st && d < ndim; d++)
        per_sample *= dims[d];
    if (!st && per_sample != ds.sample_size)
        st = fail(data, "its samples are not the size of the model's input");
    if (!st && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = fail(dir, strerror(errno));
    for (int64_t first = 0; !st && first < ds.count; first += part) {
        int64_t count = ds.count - first < part ? ds.count - first : part;
        st = write_part(&ds, ndim - 1, dims + 1, first, count, dir);
    }
    kn_dataset_free(&ds);
    return st;
}

/* A session of `model` on 1 thread, optimized or as saved. */
static kiln_status agree_session(const kiln_model *model, int optimize, kiln_session **s) {
    kiln_session_options *options = kiln_session_options_create();
    kiln_status st = options ? KILN_OK : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_options_set_threads(options, 1);
    if (st == KILN_OK)
        st = kiln_session_options_set_optimize(options, optimize);
    if (st == KILN_OK)
        st = kiln_session_create(model, options, s);
    kiln_session_options_free(options);
    return st;
}

/* Runs samples [first, first + count) of ds through s; returns output 0 (classes floats per sample). */
static const float *agree_run(kiln_session *s, const kn_dataset *ds, int ndim, int64_t *dims, int64_t first,
                              int64_t count) {
    void *in;
    const void *out;
    size_t bytes;
    dims[0] = count;
    if (kiln_session_resize_input(s, 0, ndim, dims) != KILN_OK ||
        kiln_session_input_data(s, 0, &in, &bytes) != KILN_OK)
        return NULL;
    memcpy(in, ds->x + first * ds->sample_size, bytes);
    if (kiln_session_run(s) != KILN_OK || kiln_session_output(s, 0, &out, &bytes) != KILN_OK)
        return NULL;
    return out;
}

static int64_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

static int cmd_agree(const char *path, const char *data) {
    kiln_model *model;
    if (load_model(path, &model) != KILN_OK)
        return fail_kiln(path);
    const float *mean, *std;
    kn_data_options options = {.quiet = true};
    options.feature_count = kiln_model_input_norm(model, &mean, &std);
    options.feature_mean = mean;
    options.feature_std = std;
    kn_dataset ds = {0};
    kiln_session *fast = NULL, *ref = NULL;
    int ndim, st = 0;
    int64_t dims[KILN_MAX_DIMS], same = 0, right_fast = 0, right_ref = 0;
    double max_diff = 0;
    if (agree_session(model, 1, &fast) != KILN_OK || agree_session(model, 0, &ref) != KILN_OK ||
        kiln_session_input_shape(fast, 0, &ndim, dims) != KILN_OK)
        st = fail_kiln(path);
    else if (kn_dataset_load(data, &options, &ds) != KILN_OK)
        st = fail_kiln(data);
    for (int64_t first = 0; !st && first < ds.count; first += 250) {
        int64_t count = ds.count - first < 250 ? ds.count - first : 250;
        const float *y_fast = agree_run(fast, &ds, ndim, dims, first, count);
        size_t bytes = 0;
        const void *out;
        if (y_fast)
            kiln_session_output(fast, 0, &out, &bytes);
        int64_t classes = (int64_t)(bytes / sizeof(float)) / count;
        float *copy = y_fast ? malloc(bytes) : NULL; // (count, classes): the optimized outputs
        if (copy)
            memcpy(copy, y_fast, bytes);
        const float *y_ref = copy ? agree_run(ref, &ds, ndim, dims, first, count) : NULL;
        if (!y_ref) {
            st = fail_kiln("run");
        } else {
            for (int64_t n = 0; n < count; n++) {
                int64_t a = argmax(copy + n * classes, classes), b = argmax(y_ref + n * classes, classes);
                same += a == b;
                if (a != b && getenv("KILN_AGREE_VERBOSE"))
                    fprintf(stderr, "sample %lld: optimized class %lld (%g vs %g), reference %lld (%g vs %g)\n",
                            (long long)(first + n), (long long)a, copy[n * classes + a], copy[n * classes + b],
                            (long long)b, y_ref[n * classes + b], y_ref[n * classes + a]);
                if (ds.labels) {
                    right_fast += a == ds.labels[first + n];
                    right_ref += b == ds.labels[first + n];
                }
                for (int64_t k = 0; k < classes; k++) {
                    double d = fabs((double)copy[n * classes + k] - y_ref[n * classes + k]);
                    max_diff = d > max_diff ? d : max_diff;
                }
            }
        }
        free(copy);
    }
    if (!st)
        printf("{\"samples\": %lld, \"same_class\": %lld, \"max_output_diff\": %.6g, \"accuracy_optimized\": %.4f, "
               "\"accuracy_reference\": %.4f}\n", (long long)ds.count, (long long)same, max_diff,
               (double)right_fast / (double)ds.count, (double)right_ref / (double)ds.count);
    kn_dataset_free(&ds);
    kiln_session_free(fast);
    kiln_session_free(ref);
    kiln_model_free(model);
    return st;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int by_seconds(const void *a, const void *b) {
    double x = ((const kiln_profile_entry *)a)->seconds, y = ((const kiln_profile_entry *)b)->seconds;
    return (x < y) - (x > y);
}

/* Profile entries grouped by `by`, slowest first; NULL when out of memory. */
static kiln_profile_entry *sorted_profile(kiln_session *s, kiln_profile_by by, int *count) {
    *count = kiln_session_profile_count(s, by);
    kiln_profile_entry *e = calloc((size_t)(*count ? *count : 1), sizeof *e);
    for (int i = 0; e && i < *count; i++)
        kiln_session_profile_entry(s, by, i, &e[i]);
    if (e)
        qsort(e, (size_t)*count, sizeof *e, by_seconds);
    return e;
}

static void print_profile(kiln_session *s, int top) {
    int n_ops, n_nodes;
    kiln_profile_entry *ops = sorted_profile(s, KILN_PROFILE_BY_OP, &n_ops);
    kiln_profile_entry *nodes = sorted_profile(s, KILN_PROFILE_BY_NODE, &n_nodes);
    double total = 0;
    for (int i = 0; ops && i < n_ops; i++)
        total += ops[i].seconds;
    fprintf(stderr, "%-24s %6s %10s %6s %8s\n", "op", "nodes", "ms/run", "share", "GFLOP/s");
    for (int i = 0; ops && i < n_ops; i++) {
        double ms = ops[i].seconds * 1e3 / (double)ops[i].runs;
        fprintf(stderr, "%-24s %6d %10.3f %5.1f%% %8.1f\n", ops[i].op, ops[i].nodes, ms,
                100.0 * ops[i].seconds / total, (double)ops[i].flops / (ms * 1e6));
    }
    fprintf(stderr, "\n%-40s %-16s %10s %8s\n", "slowest nodes", "op", "ms/run", "GFLOP/s");
    for (int i = 0; nodes && i < n_nodes && i < top; i++) {
        double ms = nodes[i].seconds * 1e3 / (double)nodes[i].runs;
        fprintf(stderr, "%-40s %-16s %10.3f %8.1f\n", nodes[i].name, nodes[i].op, ms,
                (double)nodes[i].flops / (ms * 1e6));
    }
    free(ops);
    free(nodes);
}

/* `warmup` untimed runs, then the latency of `iters` runs (ms each) into times; the profile, when on,
 * covers the timed runs only. Nonzero on failure. */
static int time_runs(kiln_session *s, int warmup, int iters, double *times) {
    for (int i = 0; i < warmup; i++)
        if (kiln_session_run(s) != KILN_OK)
            return fail_kiln("run");
    kiln_session_profile_reset(s);
    for (int i = 0; i < iters; i++) {
        double start = now_ms();
        if (kiln_session_run(s) != KILN_OK)
            return fail_kiln("run");
        times[i] = now_ms() - start;
    }
    return 0;
}

static int cmd_time(const char *model, int64_t batch, int threads, int warmup, int iters, int top) {
    kiln_session *s;
    if (open_session(model, threads, top > 0, &s) != KILN_OK)
        return fail_kiln(model);
    double *times = malloc(sizeof(double) * (size_t)iters);
    int st = times ? fill_random_inputs(s, batch, 1) : fail("time", "out of memory");
    if (!st)
        st = time_runs(s, warmup, iters, times);
    if (!st) {
        qsort(times, (size_t)iters, sizeof(double), by_value);
        double median = iters % 2 ? times[iters / 2] : 0.5 * (times[iters / 2 - 1] + times[iters / 2]);
        printf("{\"batch\": %lld, \"threads\": %d, \"iterations\": %d, \"median_ms\": %.4f, "
               "\"min_ms\": %.4f, \"p90_ms\": %.4f, \"samples_per_second\": %.1f}\n",
               (long long)batch, threads, iters, median, times[0], times[(iters * 9) / 10],
               (double)batch * 1e3 / median);
        if (top > 0)
            print_profile(s, top);
    }
    free(times);
    kiln_session_free(s);
    return st;
}

static int parse_int(const char *s, long long lo, long long *value) {
    char *end;
    errno = 0;
    *value = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *value >= lo;
}

int main(int argc, char **argv) {
    long long a, b, c, d, e = 0;
    if (argc == 6 && strcmp(argv[1], "inputs") == 0 && parse_int(argv[3], 1, &a) && parse_int(argv[4], 0, &b))
        return cmd_inputs(argv[2], a, (uint64_t)b, argv[5]);
    if (argc == 6 && strcmp(argv[1], "dataset") == 0 && parse_int(argv[5], 1, &a))
        return cmd_dataset(argv[2], argv[3], argv[4], a);
    if (argc >= 4 && strcmp(argv[1], "run") == 0)
        return cmd_run(argv[2], argv[3], argc - 4, argv + 4);
    if (argc == 4 && strcmp(argv[1], "agree") == 0)
        return cmd_agree(argv[2], argv[3]);
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "time") == 0 && parse_int(argv[3], 1, &a) &&
        parse_int(argv[4], 0, &b) && parse_int(argv[5], 0, &c) && parse_int(argv[6], 1, &d) &&
        (argc == 7 || parse_int(argv[7], 0, &e)))
        return cmd_time(argv[2], a, (int)b, (int)c, (int)d, (int)e);
    return fail("usage", "kiln_driver inputs MODEL BATCH SEED OUT_DIR | run MODEL OUT_DIR INPUT.npy... | "
                         "dataset MODEL.kiln DATA OUT_DIR PART | agree MODEL DATA | "
                         "time MODEL BATCH THREADS WARMUP ITERS [PROFILE_TOP]");
}
