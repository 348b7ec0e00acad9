/* kiln run: runs a model on .npy, image or CSV inputs; prints the top classes of each sample (or a summary
 * of each output) and optionally writes every output as <name>.npy. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/status.h"
#include "inputs.h"
#include "runtime/runtime.h"
#include "train/npy.h"

static const char usage[] = "M.kiln|M.onnx [[NAME=]INPUT...] [--top K] [--out DIR] [--batch-dim] [--json]";

typedef struct run_args {
    const char *model, *label, *out_dir;
    const char **inputs;
    int n_inputs;
    int64_t top, threads;
    bool batch_dim, json;
} run_args;

/* One output of the run. */
typedef struct run_output {
    const char *name;
    kn_tensor t;        /* points into the session */
    bool classes;       /* (batch, classes) scores: shown as the top classes of each sample */
    char file[4096];    /* where --out wrote it, or "" */
} run_output;

/* ---- inputs ------------------------------------------------------------------------------------- */

/* Reads every INPUT into the batch of its model input: "NAME=PATH" names the input; otherwise a model with
 * one input takes all files, and a model with several takes the i-th unnamed file as its i-th input. */
static kiln_status read_inputs(const run_args *a, kiln_session *s, const kiln_model *model, cli_batch *batches) {
    const kn_graph *g = kn_model_graph(model, false);
    int n = kiln_session_input_count(s);
    for (int i = 0; i < n; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        kn_shape declared = kn_graph_input_declared(g, i);
        cli_batch_init(&batches[i], v->name, &declared, v->dtype);
    }
    cli_input_options options = {.batch_dim = a->batch_dim, .label = a->label};
    options.n_norm = kiln_model_input_norm(model, &options.mean, &options.std);
    options.columns = kiln_model_metadata(model, "train.columns");
    int unnamed = 0;
    for (int f = 0; f < a->n_inputs; f++) {
        const char *arg = a->inputs[f], *path = arg, *eq = strchr(arg, '=');
        int index;
        if (eq && cli_file_size(arg) < 0) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
            if ((index = kiln_session_input_index(s, name)) < 0)
                return KILN_ERR_INVALID_ARG;
            path = eq + 1;
        } else if ((index = n == 1 ? 0 : unnamed++) >= n) {
            return kn_fail(KILN_ERR_INVALID_ARG, "more unnamed input files than the model's %d inputs (give one "
                           "per input, in order, or name them: NAME=PATH)", n);
        }
        KN_TRY(cli_batch_add_file(&batches[index], path, &options));
    }
    for (int i = 0; i < n; i++) {
        if (!batches[i].first_path)
            return kn_fail(KILN_ERR_INVALID_ARG, "input '%s' (input %d of %d) got no file", batches[i].input_name,
                           i + 1, n);
        kn_shape shape = cli_batch_shape(&batches[i]);
        kiln_status st = kiln_session_resize_input(s, i, shape.ndim, shape.d);
        if (st != KILN_OK) {
            kn_error_prefix("%s: ", batches[i].first_path);
            return st;
        }
    }
    // Set once every input has its shape: the session plans the memory for all of them at the first.
    for (int i = 0; i < n; i++) {
        const cli_batch *b = &batches[i];
        kiln_status st = kiln_session_set_input(s, i, (kiln_dtype)b->dtype, b->data, b->bytes);
        if (st != KILN_OK) {
            kn_error_prefix("%s: ", b->first_path);
            return st;
        }
    }
    return KILN_OK;
}

/* ---- outputs ------------------------------------------------------------------------------------ */

static kiln_status get_output(const run_args *a, kiln_session *s, const kiln_model *model, int i, run_output *o) {
    kiln_dtype dtype;
    const void *data;
    memset(o, 0, sizeof *o);
    o->name = kiln_session_output_name(s, i);
    KN_TRY(kiln_session_output_shape(s, i, &o->t.shape.ndim, o->t.shape.d));
    KN_TRY(kiln_session_output_dtype(s, i, &dtype));
    KN_TRY(kiln_session_output(s, i, &data, NULL));
    o->t.dtype = (kn_dtype)dtype;
    o->t.data = (void *)data;
    // Scores of two or more classes per sample, unless the model was trained to regress them.
    const char *loss = kiln_model_metadata(model, "train.loss");
    bool regression = loss && (strcmp(loss, "mse") == 0 || strcmp(loss, "mae") == 0);
    o->classes = o->t.dtype == KN_F32 && o->t.shape.ndim == 2 && o->t.shape.d[1] >= 2 && !regression;
    if (!a->out_dir)
        return KILN_OK;
    // The file name is the output's name with anything unsafe in a path replaced.
    char safe[256];
    snprintf(safe, sizeof safe, "%s", o->name[0] ? o->name : "output");
    for (char *c = safe; *c; c++)
        if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') && !(*c >= '0' && *c <= '9') && *c != '-' &&
            *c != '_' && !(*c == '.' && c > safe))
            *c = '_';
    if (snprintf(o->file, sizeof o->file, "%s/%s.npy", a->out_dir, safe) >= (int)sizeof o->file)
        return kn_fail(KILN_ERR_INVALID_ARG, "--out path '%s' is too long", a->out_dir);
    return kn_npy_write(o->file, &o->t);
}

/* A class and its probability, for ranking. */
typedef struct ranked_class {
    double p;
    int64_t c;
} ranked_class;

/* Most probable first, ties by class index, NaN last. */
static int by_probability(const void *a, const void *b) {
    const ranked_class *x = a, *y = b;
    bool x_nan = isnan(x->p), y_nan = isnan(y->p);
    if (x_nan != y_nan)
        return x_nan - y_nan;
    if (!x_nan && x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return (x->c > y->c) - (x->c < y->c);
}

/* The classes of one row of scores, most probable first. The probabilities are the scores themselves
 * when they already form a distribution (a Softmax output), a sigmoid per class for a model trained with
 * bce, a softmax otherwise. */
static void rank_classes(const float *scores, int64_t n, const char *loss, ranked_class *ranked) {
    double sum = 0, max = scores[0];
    bool distribution = true;
    for (int64_t c = 0; c < n; c++) {
        sum += scores[c];
        distribution &= scores[c] >= 0 && scores[c] <= 1;
        max = scores[c] > max ? scores[c] : max;
    }
    bool as_is = distribution && fabs(sum - 1) < 1e-3, sigmoid = loss && strcmp(loss, "bce") == 0;
    sum = 0;
    for (int64_t c = 0; c < n; c++) {
        double p = as_is ? scores[c] : sigmoid ? 1 / (1 + exp(-(double)scores[c])) : exp(scores[c] - max);
        ranked[c] = (ranked_class){p, c};
        sum += p;
    }
    for (int64_t c = 0; c < n && !as_is && !sigmoid; c++)
        ranked[c].p /= sum;
    qsort(ranked, (size_t)n, sizeof *ranked, by_probability);
}

/* Element i as a double; false for f16, which is only stored. */
static bool element(const kn_tensor *t, int64_t i, double *v) {
    switch (t->dtype) {
    case KN_F32: *v = ((const float *)t->data)[i]; return true;
    case KN_I64: *v = (double)((const int64_t *)t->data)[i]; return true;
    case KN_I32: *v = ((const int32_t *)t->data)[i]; return true;
    case KN_U8: *v = ((const uint8_t *)t->data)[i]; return true;
    case KN_I8: *v = ((const int8_t *)t->data)[i]; return true;
    case KN_BOOL: *v = ((const uint8_t *)t->data)[i]; return true;
    default: return false;
    }
}

/* Min, max and mean of an output; false when its dtype has no numbers to show. */
static bool summarize(const kn_tensor *t, double *min, double *max, double *mean) {
    int64_t n = kn_shape_numel(&t->shape);
    double v = 0, sum = 0;
    if (n == 0 || !element(t, 0, min))
        return false;
    *max = *min;
    for (int64_t i = 0; i < n; i++) {
        element(t, i, &v);
        *min = v < *min ? v : *min;
        *max = v > *max ? v : *max;
        sum += v;
    }
    *mean = sum / (double)n;
    return true;
}

/* ---- printing ----------------------------------------------------------------------------------- */

static const char *class_name(const kiln_model *model, int64_t c, int64_t classes) {
    return kiln_model_class_count(model) == classes ? kiln_model_class_name(model, (int)c) : NULL;
}

static void print_classes_text(const run_args *a, const kiln_model *model, const run_output *o,
                               char *const *labels, int64_t n_labels, ranked_class *ranked) {
    int64_t rows = o->t.shape.d[0], classes = o->t.shape.d[1], k = a->top < classes ? a->top : classes;
    const char *loss = kiln_model_metadata(model, "train.loss");
    for (int64_t r = 0; r < rows; r++) {
        const float *scores = (const float *)o->t.data + r * classes;
        rank_classes(scores, classes, loss, ranked);
        printf("%s\n", r < n_labels ? labels[r] : "");
        for (int64_t i = 0; i < k; i++) {
            int64_t c = ranked[i].c;
            const char *name = class_name(model, c, classes);
            char shown[64];
            if (name)
                snprintf(shown, sizeof shown, "%s", name);
            else
                snprintf(shown, sizeof shown, "class %lld", (long long)c);
            printf("  %lld. %-16s %.4f   (class %lld, score %.4g)\n", (long long)i + 1, shown, ranked[i].p,
                   (long long)c, (double)scores[c]);
        }
    }
}

static void print_text(const run_args *a, const kiln_model *model, const run_output *outputs, int n_outputs,
                       const cli_batch *first, double seconds, ranked_class *ranked) {
    printf("%s: %lld sample%s in %.3f ms\n", a->model, (long long)first->count, first->count == 1 ? "" : "s",
           seconds * 1e3);
    for (int i = 0; i < n_outputs; i++) {
        const run_output *o = &outputs[i];
        char shape[96];
        double min, max, mean;
        printf("output '%s' %s %s", o->name, kn_shape_str(&o->t.shape, shape, sizeof shape),
               kn_dtype_name(o->t.dtype));
        if (o->classes) {
            printf(": top %lld of %lld classes\n", (long long)(a->top < o->t.shape.d[1] ? a->top : o->t.shape.d[1]),
                   (long long)o->t.shape.d[1]);
            print_classes_text(a, model, o, first->labels, first->count, ranked);
        } else if (summarize(&o->t, &min, &max, &mean)) {
            printf(": min %.6g, max %.6g, mean %.6g\n", min, max, mean);
        } else {
            printf("\n");
        }
        if (o->file[0])
            printf("  written to %s\n", o->file);
    }
}

static void print_json_classes(const run_args *a, const kiln_model *model, const run_output *o,
                               ranked_class *ranked) {
    int64_t rows = o->t.shape.d[0], classes = o->t.shape.d[1], k = a->top < classes ? a->top : classes;
    const char *loss = kiln_model_metadata(model, "train.loss");
    printf(",\"top\":[");
    for (int64_t r = 0; r < rows; r++) {
        const float *scores = (const float *)o->t.data + r * classes;
        rank_classes(scores, classes, loss, ranked);
        printf(r ? ",[" : "[");
        for (int64_t i = 0; i < k; i++) {
            int64_t c = ranked[i].c;
            const char *name = class_name(model, c, classes);
            printf("%s{\"class\":%lld,\"name\":", i ? "," : "", (long long)c);
            if (name)
                cli_json_string(stdout, name);
            else
                printf("null");
            printf(",\"probability\":%.6g,\"score\":%.6g}", ranked[i].p, (double)scores[c]);
        }
        printf("]");
    }
    printf("]");
}

static void print_json(const run_args *a, const kiln_model *model, const run_output *outputs, int n_outputs,
                       const cli_batch *first, double seconds, ranked_class *ranked) {
    printf("{\"command\":\"run\",\"model\":");
    cli_json_string(stdout, a->model);
    printf(",\"batch\":%lld,\"seconds\":%.6f,\"samples\":[", (long long)first->count, seconds);
    for (int64_t i = 0; i < first->count; i++) {
        printf(i ? "," : "");
        cli_json_string(stdout, first->labels[i]);
    }
    printf("],\"outputs\":[");
    for (int i = 0; i < n_outputs; i++) {
        const run_output *o = &outputs[i];
        double min, max, mean;
        printf("%s{\"name\":", i ? "," : "");
        cli_json_string(stdout, o->name);
        printf(",\"shape\":[");
        for (int d = 0; d < o->t.shape.ndim; d++)
            printf("%s%lld", d ? "," : "", (long long)o->t.shape.d[d]);
        printf("],\"dtype\":\"%s\"", kn_dtype_name(o->t.dtype));
        if (o->classes)
            print_json_classes(a, model, o, ranked);
        else if (summarize(&o->t, &min, &max, &mean))
            printf(",\"min\":%.9g,\"max\":%.9g,\"mean\":%.9g", min, max, mean);
        if (o->file[0]) {
            printf(",\"file\":");
            cli_json_string(stdout, o->file);
        }
        printf("}");
    }
    printf("]}\n");
}

/* ---- the command -------------------------------------------------------------------------------- */

static kiln_status make_out_dir(const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return kn_fail(KILN_ERR_IO, "--out %s: %s", dir, strerror(errno));
    return KILN_OK;
}

static int run(const run_args *a) {
    kiln_model *model;
    kiln_status st = cli_open_model(a->model, &model);
    if (st != KILN_OK)
        return cli_fail("run", st);
    kiln_session_options *options = kiln_session_options_create();
    kiln_session *s = NULL;
    cli_batch batches[16];
    int n_inputs = 0, n_outputs = 0;
    run_output outputs[16];
    double seconds = 0;
    st = options ? kiln_session_options_set_threads(options, (int)a->threads) : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_create(model, options, &s);
    if (st == KILN_OK) {
        n_inputs = kiln_session_input_count(s);
        st = read_inputs(a, s, model, batches);
    }
    if (st == KILN_OK && a->out_dir)
        st = make_out_dir(a->out_dir);
    if (st == KILN_OK) {
        double start = cli_now();
        st = kiln_session_run(s);
        seconds = cli_now() - start;
    }
    for (int i = 0; st == KILN_OK && i < kiln_session_output_count(s); i++, n_outputs++)
        st = get_output(a, s, model, i, &outputs[i]);
    // Room to rank one row of classes of the widest output.
    int64_t widest = 1;
    for (int i = 0; i < n_outputs; i++)
        widest = outputs[i].classes && outputs[i].t.shape.d[1] > widest ? outputs[i].t.shape.d[1] : widest;
    ranked_class *ranked = st == KILN_OK ? malloc(sizeof(ranked_class) * (size_t)widest) : NULL;
    if (st == KILN_OK && !ranked)
        st = kn_fail(KILN_ERR_NOMEM, "out of memory for %lld classes", (long long)widest);
    cli_batch none = {0}; // the samples of a model without inputs
    const cli_batch *first = n_inputs ? &batches[0] : &none;
    if (st == KILN_OK && a->json)
        print_json(a, model, outputs, n_outputs, first, seconds, ranked);
    else if (st == KILN_OK)
        print_text(a, model, outputs, n_outputs, first, seconds, ranked);
    int rc = st == KILN_OK ? 0 : cli_fail("run", st);
    free(ranked);
    for (int i = 0; i < n_inputs; i++)
        cli_batch_free(&batches[i]);
    kiln_session_free(s);
    kiln_session_options_free(options);
    kiln_model_free(model);
    return rc;
}

int cmd_run(int argc, char **argv) {
    run_args a = {.top = 5};
    const cli_option options[] = {
        {"--top", CLI_INT, &a.top, "classes to show per sample (default 5)"},
        {"--out", CLI_STRING, &a.out_dir, "write each output to DIR/<output name>.npy"},
        {"--batch-dim", CLI_FLAG, &a.batch_dim, ".npy inputs hold a batch (first dimension) of samples"},
        {"--label", CLI_STRING, &a.label, "CSV: the target column to skip (default: the last, if extra)"},
        {"--threads", CLI_INT, &a.threads, "threads (default: all cores)"},
        {"--json", CLI_FLAG, &a.json, "print one JSON object with the results"},
    };
    const int n_options = (int)(sizeof options / sizeof options[0]);
    const char **positional = malloc(sizeof(char *) * (size_t)argc);
    if (!positional)
        return cli_fail_msg("run", "out of memory");
    int n_pos;
    int rc = 0;
    if (!cli_parse("run", usage, argc, argv, 2, options, n_options, positional, argc, &n_pos)) {
        rc = 2;
    } else if (n_pos < 1) { // a model without inputs runs with no INPUT files
        fprintf(stderr, "kiln run: error: a model is required\n");
        cli_print_help(stderr, "run", usage, options, n_options);
        rc = 2;
    } else if (a.top < 1 || a.threads < 0) {
        fprintf(stderr, "kiln run: error: %s\n", a.top < 1 ? "--top must be at least 1" : "--threads must be >= 0");
        rc = 2;
    }
    if (rc == 0) {
        a.model = positional[0];
        a.inputs = positional + 1;
        a.n_inputs = n_pos - 1;
        rc = run(&a);
    }
    free(positional);
    return rc;
}
