/* The ONNX backend conformance tests (Debian libonnx-testdata) run the way a user runs a model: through
 * the public C API alone.
 *
 * Every test directory holds model.onnx and test_data_set_N/{input,output}_K.pb. The model is loaded
 * with kiln_model_load_onnx, a session made with kiln_session_create, and for each data set every input
 * is given exactly as the data holds it (kiln_session_resize_input to its shape, kiln_session_set_input
 * with its dtype and bytes), the session run, and every output read back with kiln_session_output_*
 * and compared with the expected one as onnx's backend runner compares (numpy assert_allclose with
 * rtol 1e-3, atol 1e-7, NaN equal to NaN; the dtype and shape must be the expected ones). Nothing else:
 * no test reaches past the API, so what passes here runs for a user too.
 *
 * A Dropout in training mode draws its mask at random, and the data holds numpy's draw, which nothing
 * else reproduces (onnx's own runner compares it by value all the same; backends list such tests as
 * expected failures). When its values differ, the runner checks what does not depend on the draw
 * (dropout_draw_consistent) and counts the test passed when that holds, listing it as such.
 *
 * Each test ends in one of three ways: passed; failed (a wrong answer: the run succeeded but an output
 * differs); errored (kiln refused: a load, input or run error with its message). Tests whose model has
 * values that are not tensors (sequences, optionals) are not counted: the API has no way to pass them.
 *
 * The run fails when a test gives a wrong answer that tests/onnx_backend_exclusions.txt does not list
 * with a reason, when an exclusion matches no test that fails or errors (so the list stays honest), or
 * when fewer tests pass than MIN_PASSED (a ratchet: raise it as kiln passes more).
 *
 * Usage: test_onnx_backend [-v] [DATA_DIR]   (default /usr/share/libonnx-testdata/data)
 *   -v lists every test with its outcome and message.
 */
#include <dirent.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/half.h"
#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"
#include "kiln/kiln.h"
#include "kiln/train.h"

#define DEFAULT_DATA_DIR "/usr/share/libonnx-testdata/data"
#define EXCLUSIONS_FILE KILN_SOURCE_DIR "/tests/onnx_backend_exclusions.txt"

static const char *const suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
/* onnx/backend/test/loader: the tolerances of every test of these suites. */
static const double RTOL = 1e-3, ATOL = 1e-7;
/* Tests that pass at least: fewer is a regression. */
enum { MIN_PASSED = 995 };

static bool verbose;

/* dir/name into buf; false when it does not fit. */
static bool join_path(char *buf, size_t size, const char *dir, const char *name) {
    int n = snprintf(buf, size, "%s/%s", dir, name);
    return n >= 0 && (size_t)n < size;
}

/* ---- small lists ---- */

typedef struct str_list {
    char **items;
    int count, cap;
} str_list;

static void list_add(str_list *l, const char *s) {
    if (l->count == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->items = realloc(l->items, (size_t)l->cap * sizeof *l->items);
        if (!l->items) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    l->items[l->count] = strdup(s);
    if (!l->items[l->count++]) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
}

static void list_free(str_list *l) {
    for (int i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in `dir` starting with `prefix`, sorted. */
static void list_dir(const char *dir, const char *prefix, str_list *out) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            list_add(out, e->d_name);
    closedir(d);
    qsort(out->items, (size_t)out->count, sizeof *out->items, compare_strings);
}

/* Counts per kind of error, for the summary. */
typedef struct tally {
    str_list keys;
    int *counts;
} tally;

static void tally_add(tally *t, const char *key) {
    for (int i = 0; i < t->keys.count; i++) {
        if (strcmp(t->keys.items[i], key) == 0) {
            t->counts[i]++;
            return;
        }
    }
    list_add(&t->keys, key);
    t->counts = realloc(t->counts, (size_t)t->keys.cap * sizeof *t->counts);
    if (!t->counts) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    t->counts[t->keys.count - 1] = 1;
}

static void tally_free(tally *t) {
    list_free(&t->keys);
    free(t->counts);
}

/* ---- exclusions ---- */

typedef struct exclusion {
    char pattern[128];
    char reason[256];
    int matched;
} exclusion;

static int load_exclusions(exclusion *ex, int max) {
    FILE *f = fopen(EXCLUSIONS_FILE, "r");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || !*p)
            continue;
        size_t len = strcspn(p, " \t\n");
        if (len == 0 || len >= sizeof ex[n].pattern)
            continue;
        memcpy(ex[n].pattern, p, len);
        ex[n].pattern[len] = '\0';
        p += len;
        p += strspn(p, " \t");
        snprintf(ex[n].reason, sizeof ex[n].reason, "%.*s", (int)strcspn(p, "\n"), p);
        ex[n].matched = 0;
        n++;
    }
    fclose(f);
    return n;
}

/* The exclusion matching `test`. A pattern covers the function-expanded form of a test
 * (test_X_expanded, built from other ops) only when it says "expanded": excluding an op's attribute
 * must not hide failures of the ops its expansion uses. */
static exclusion *find_exclusion(exclusion *ex, int n, const char *test) {
    size_t len = strlen(test), suffix = strlen("_expanded");
    bool expanded = len > suffix && strcmp(test + len - suffix, "_expanded") == 0;
    for (int i = 0; i < n; i++)
        if (fnmatch(ex[i].pattern, test, 0) == 0 && (!expanded || strstr(ex[i].pattern, "expanded")))
            return &ex[i];
    return NULL;
}

/* ---- one test ---- */

typedef enum outcome { PASSED, FAILED, ERRORED, NOT_COUNTED } outcome;

/* What the runner learns about one test besides its outcome. */
typedef struct test_facts {
    bool ops_listed;  /* every node's op is one kiln lists (for the report on listed ops) */
    bool random_mask; /* the model is one Dropout given its training_mode: its mask may be drawn at random */
    bool draw_only;   /* it passed on what does not depend on the random draw (dropout_draw_consistent) */
} test_facts;

static const char *const outcome_names[] = {"pass", "FAIL", "error", "not counted"};

/* Whether every graph input and output of the model is a tensor (the C API passes nothing else); sets
 * facts->ops_listed and facts->random_mask. */
static bool model_has_only_tensors(const char *model_path, test_facts *facts) {
    unsigned char *bytes;
    size_t n_bytes;
    bool *ops_listed = &facts->ops_listed;
    *ops_listed = false;
    if (kn_onnx_read_whole_file(model_path, &bytes, &n_bytes) != KILN_OK)
        return true; /* the load reports it */
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n_bytes, bytes);
    free(bytes);
    if (!m || !m->graph) {
        if (m)
            onnx__model_proto__free_unpacked(m, NULL);
        return true;
    }
    const Onnx__GraphProto *gp = m->graph;
    bool tensors = true;
    for (size_t i = 0; i < gp->n_input; i++)
        tensors &= gp->input[i]->type && gp->input[i]->type->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    for (size_t i = 0; i < gp->n_output; i++)
        tensors &= gp->output[i]->type && gp->output[i]->type->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    *ops_listed = true;
    for (size_t i = 0; i < gp->n_node; i++) {
        const char *domain = gp->node[i]->domain ? gp->node[i]->domain : "";
        *ops_listed &= (!*domain || strcmp(domain, "ai.onnx") == 0) &&
                       kn_onnx_op_supported(gp->node[i]->op_type ? gp->node[i]->op_type : "", KN_ONNX_MAX_OPSET);
    }
    facts->random_mask = gp->n_node == 1 && gp->node[0]->op_type && strcmp(gp->node[0]->op_type, "Dropout") == 0 &&
                         gp->node[0]->n_input >= 3 && gp->node[0]->input[2][0];
    onnx__model_proto__free_unpacked(m, NULL);
    return tensors;
}

/* Element i of a float output as a double. */
static double float_element(kiln_dtype dtype, const void *data, int64_t i) {
    switch (dtype) {
    case KILN_DTYPE_F16: return kn_f16_to_f32(((const uint16_t *)data)[i]);
    case KILN_DTYPE_F64: return ((const double *)data)[i];
    case KILN_DTYPE_BF16: {
        uint32_t bits = (uint32_t)((const uint16_t *)data)[i] << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    default: return ((const float *)data)[i];
    }
}

/* numpy.testing.assert_allclose for one element: |got - want| <= atol + rtol |want|, NaN equals NaN,
 * an infinity only itself. */
static bool close_enough(double got, double want) {
    if (isnan(got) || isnan(want))
        return isnan(got) && isnan(want);
    if (isinf(got) || isinf(want))
        return got == want;
    return fabs(got - want) <= ATOL + RTOL * fabs(want);
}

/* Output `index` of the session's last run against `want`; false with the first difference in `why`. */
static bool output_matches(kiln_session *s, int index, const kn_tensor *want, char *why, size_t size) {
    kiln_dtype dtype;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    const void *data;
    size_t bytes;
    if (kiln_session_output_dtype(s, index, &dtype) != KILN_OK ||
        kiln_session_output_shape(s, index, &ndim, dims) != KILN_OK ||
        kiln_session_output(s, index, &data, &bytes) != KILN_OK) {
        snprintf(why, size, "output %d: %s", index, kiln_last_error());
        return false;
    }
    char a[96], b[96];
    if ((int)dtype != (int)want->dtype) {
        snprintf(why, size, "output %d is %s, expected %s", index, kiln_dtype_name(dtype),
                 kn_dtype_name(want->dtype));
        return false;
    }
    kn_shape got_shape = kn_shape_of(ndim, dims);
    if (!kn_shape_equal(&got_shape, &want->shape)) {
        snprintf(why, size, "output %d has shape %s, expected %s", index, kn_shape_str(&got_shape, a, sizeof a),
                 kn_shape_str(&want->shape, b, sizeof b));
        return false;
    }
    int64_t n = kn_numel(want);
    if (dtype == KILN_DTYPE_F32 || dtype == KILN_DTYPE_F16 || dtype == KILN_DTYPE_F64 || dtype == KILN_DTYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            double x = float_element(dtype, data, i), y = float_element(dtype, want->data, i);
            if (!close_enough(x, y)) {
                snprintf(why, size, "output %d element %lld: %.9g, expected %.9g", index, (long long)i, x, y);
                return false;
            }
        }
        return true;
    }
    if (dtype == KILN_DTYPE_STRING) { /* both as the API passes strings: a pointer per element */
        const char *const *got = data, *const *expect = want->data;
        for (int64_t i = 0; i < n; i++) {
            if (strcmp(got[i], expect[i]) != 0) {
                snprintf(why, size, "output %d element %lld: \"%.40s\", expected \"%.40s\"", index, (long long)i,
                         got[i], expect[i]);
                return false;
            }
        }
        return true;
    }
    size_t elem = kiln_dtype_size(dtype);
    for (int64_t i = 0; i < n; i++) {
        if (memcmp((const char *)data + i * elem, (const char *)want->data + i * elem, elem) != 0) {
            snprintf(why, size, "output %d element %lld differs (%s)", index, (long long)i, kiln_dtype_name(dtype));
            return false;
        }
    }
    return true;
}

static void free_tensors(kn_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        free(t[i].data);
}

/* Reads dir/<prefix>_K.pb for K = 0, 1, ... into t (at most max); -1 with `why` set when one cannot be
 * read (a dtype kiln does not have). */
static int load_tensors(const char *dir, const char *prefix, kn_tensor *t, int max, char *why, size_t size) {
    int n = 0;
    for (; n < max; n++) {
        char file[64], path[PATH_MAX];
        struct stat st;
        snprintf(file, sizeof file, "%s_%d.pb", prefix, n);
        if (!join_path(path, sizeof path, dir, file) || stat(path, &st) != 0)
            break;
        if (kn_onnx_read_tensor_file(path, &t[n], NULL) != KILN_OK) {
            snprintf(why, size, "%s %d: %s", prefix, n, kiln_last_error());
            free_tensors(t, n);
            return -1;
        }
    }
    return n;
}

/* A Dropout in training mode with a ratio above 0 draws its mask at random. The data's expected outputs
 * hold numpy's draw (np.random with the test's seed), which no other generator reproduces: onnx's
 * backend runner compares them by value all the same, so they pass only where numpy draws, and
 * backends list them as expected failures (onnxruntime's filter list does). What does not depend on the
 * draw is checked instead, from the data set's x (input 0), ratio (input 1) and training_mode (input
 * 2): y has x's shape and dtype, and each element is 0 or x / (1 - ratio) (within the tolerances); the
 * mask, when asked for, has x's shape, is bool, and is true exactly where y kept x; and the share
 * dropped is within 5 standard deviations of the ratio (a draw that keeps or drops everything fails).
 * False, with why, when the data set is not such a draw or any of this does not hold. */
static bool dropout_draw_consistent(kiln_session *s, const kn_tensor *in, int n_in, int n_out, char *why,
                                    size_t size) {
    if (n_in < 3 || in[0].dtype != KN_F32 || in[1].dtype != KN_F32 || in[2].dtype != KN_BOOL ||
        kn_numel(&in[1]) != 1 || kn_numel(&in[2]) != 1)
        return false;
    double ratio = *(const float *)in[1].data;
    if (!*(const bool *)in[2].data || !(ratio > 0 && ratio < 1))
        return false; /* no draw: the values must match */
    const float *x = in[0].data;
    int64_t n = kn_numel(&in[0]);
    const void *out[2] = {NULL, NULL};
    for (int k = 0; k < n_out && k < 2; k++) {
        kiln_dtype dtype;
        int ndim;
        int64_t dims[KILN_MAX_DIMS];
        bool read = kiln_session_output_dtype(s, k, &dtype) == KILN_OK &&
                    kiln_session_output_shape(s, k, &ndim, dims) == KILN_OK &&
                    kiln_session_output(s, k, &out[k], NULL) == KILN_OK;
        if (!read)
            return false;
        kn_shape shape = kn_shape_of(ndim, dims);
        if (dtype != (k ? KILN_DTYPE_BOOL : KILN_DTYPE_F32) || !kn_shape_equal(&shape, &in[0].shape)) {
            snprintf(why, size, "random mask: output %d is not %s of x's shape", k, k ? "bool" : "f32");
            return false;
        }
    }
    const float *y = out[0];
    const bool *mask = out[1];
    double scale = 1.0 / (1.0 - ratio);
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        bool kept = y[i] != 0 || x[i] == 0;
        if ((kept && !close_enough(y[i], x[i] * scale)) || (mask && mask[i] != kept)) {
            snprintf(why, size, "random mask: element %lld is %.9g (mask %d) for x %.9g and ratio %g", (long long)i,
                     y[i], mask ? mask[i] : -1, x[i], ratio);
            return false;
        }
        dropped += !kept;
    }
    double spread = 5 * sqrt((double)n * ratio * (1 - ratio));
    if (fabs((double)dropped - (double)n * ratio) > spread) {
        snprintf(why, size, "random mask: %lld of %lld dropped at ratio %g", (long long)dropped, (long long)n, ratio);
        return false;
    }
    return true;
}

/* Gives each input as the data set holds it, runs, compares every output (for a random mask, what does
 * not depend on the draw: facts->draw_only says so). */
static outcome run_data_set(kiln_session *s, const char *set_dir, test_facts *facts, char *why, size_t size) {
    kn_tensor inputs[16], expected[16];
    int n_in = load_tensors(set_dir, "input", inputs, 16, why, size);
    if (n_in < 0)
        return ERRORED;
    int n_out = load_tensors(set_dir, "output", expected, 16, why, size);
    if (n_out < 0) {
        free_tensors(inputs, n_in);
        return ERRORED;
    }
    outcome result = ERRORED;
    if (n_in != kiln_session_input_count(s) || n_out != kiln_session_output_count(s)) {
        snprintf(why, size, "the data set has %d inputs and %d outputs; the session %d and %d", n_in, n_out,
                 kiln_session_input_count(s), kiln_session_output_count(s));
        goto done;
    }
    /* ONNX's test data holds bfloat16 tensors as UINT16 bit patterns (numpy has no bfloat16). */
    kiln_dtype declared;
    for (int i = 0; i < n_in; i++)
        if (inputs[i].dtype == KN_U16 && kiln_session_input_dtype(s, i, &declared) == KILN_OK &&
            declared == KILN_DTYPE_BF16)
            inputs[i].dtype = KN_BF16;
    for (int i = 0; i < n_out; i++)
        if (expected[i].dtype == KN_U16 && kiln_session_output_dtype(s, i, &declared) == KILN_OK &&
            declared == KILN_DTYPE_BF16)
            expected[i].dtype = KN_BF16;
    /* Every shape first: a resize may plan the memory again, which would drop data set before it. */
    for (int i = 0; i < n_in; i++) {
        if (kiln_session_resize_input(s, i, inputs[i].shape.ndim, inputs[i].shape.d) != KILN_OK) {
            snprintf(why, size, "input %d: %s", i, kiln_last_error());
            goto done;
        }
    }
    for (int i = 0; i < n_in; i++) {
        size_t bytes = (size_t)kn_numel(&inputs[i]) * kiln_dtype_size((kiln_dtype)inputs[i].dtype);
        if (kiln_session_set_input(s, i, (kiln_dtype)inputs[i].dtype, inputs[i].data ? inputs[i].data : "",
                                   bytes) != KILN_OK) {
            snprintf(why, size, "input %d: %s", i, kiln_last_error());
            goto done;
        }
    }
    if (kiln_session_run(s) != KILN_OK) {
        snprintf(why, size, "run: %s", kiln_last_error());
        goto done;
    }
    result = PASSED;
    for (int i = 0; i < n_out && result == PASSED; i++)
        if (!output_matches(s, i, &expected[i], why, size))
            result = FAILED;
    if (result == FAILED && facts->random_mask && dropout_draw_consistent(s, inputs, n_in, n_out, why, size)) {
        result = PASSED;
        facts->draw_only = true;
    }
done:
    free_tensors(inputs, n_in);
    free_tensors(expected, n_out);
    return result;
}

/* Strips the model's path from a load error: the test's name says which file. */
static const char *without_path(const char *message, const char *path) {
    size_t len = strlen(path);
    return strncmp(message, path, len) == 0 && strncmp(message + len, ": ", 2) == 0 ? message + len + 2 : message;
}

static outcome run_test(const char *test_dir, char *why, size_t size, test_facts *facts) {
    char model_path[PATH_MAX];
    if (!join_path(model_path, sizeof model_path, test_dir, "model.onnx")) {
        snprintf(why, size, "path too long");
        return ERRORED;
    }
    if (!model_has_only_tensors(model_path, facts)) {
        snprintf(why, size, "sequence or optional values");
        return NOT_COUNTED;
    }
    kiln_model *model;
    if (kiln_model_load_onnx(model_path, &model) != KILN_OK) {
        snprintf(why, size, "load: %s", without_path(kiln_last_error(), model_path));
        return ERRORED;
    }
    kiln_session_options *options = kiln_session_options_create();
    kiln_session *s = NULL;
    kiln_status st = options ? kiln_session_options_set_threads(options, 1) : KILN_ERR_NOMEM;
    if (st == KILN_OK)
        st = kiln_session_create(model, options, &s);
    kiln_session_options_free(options);
    kiln_model_free(model);
    if (st != KILN_OK) {
        snprintf(why, size, "session: %s", kiln_last_error());
        return ERRORED;
    }
    str_list sets = {0};
    list_dir(test_dir, "test_data_set_", &sets);
    outcome result = sets.count ? PASSED : ERRORED;
    if (!sets.count)
        snprintf(why, size, "no test data sets");
    for (int i = 0; i < sets.count && result == PASSED; i++) {
        char set_dir[PATH_MAX];
        if (!join_path(set_dir, sizeof set_dir, test_dir, sets.items[i])) {
            snprintf(why, size, "path too long");
            result = ERRORED;
            break;
        }
        result = run_data_set(s, set_dir, facts, why, size);
    }
    kiln_session_free(s);
    list_free(&sets);
    return result;
}

/* ---- suites ---- */

typedef struct suite_result {
    int counted[4];        /* by outcome */
    int unexcused;         /* wrong answers no exclusion lists */
    int listed;            /* counted node tests using only listed ops */
    int listed_not_passed; /* of which fail or error */
} suite_result;

/* An error message with quoted names and numbers blanked, so that errors of one kind tally together. */
static void error_kind(const char *why, char *kind, size_t size) {
    size_t k = 0;
    bool quoted = false;
    for (const char *c = why; *c && k + 1 < size && k < 110; c++) {
        if (*c == '\'') {
            quoted = !quoted;
            if (quoted)
                kind[k++] = '*';
        } else if (!quoted && !(*c >= '0' && *c <= '9')) {
            kind[k++] = *c;
        }
    }
    kind[k] = '\0';
}

static suite_result run_suite(const char *data_dir, const char *suite, exclusion *ex, int n_ex) {
    suite_result r = {0};
    char dir[PATH_MAX];
    if (!join_path(dir, sizeof dir, data_dir, suite))
        return r;
    str_list tests = {0}, wrong = {0}, listed = {0}, draw_only = {0};
    list_dir(dir, "test_", &tests);
    tally errors = {0};
    for (int i = 0; i < tests.count; i++) {
        char test_dir[PATH_MAX], why[512] = "";
        test_facts facts = {0};
        outcome o = join_path(test_dir, sizeof test_dir, dir, tests.items[i])
                        ? run_test(test_dir, why, sizeof why, &facts)
                        : (snprintf(why, sizeof why, "path too long"), ERRORED);
        r.counted[o]++;
        bool listed_node = facts.ops_listed && strcmp(suite, "node") == 0 && o != NOT_COUNTED;
        r.listed += listed_node;
        if (verbose)
            printf("  %-60s %-5s %s\n", tests.items[i], outcome_names[o], facts.draw_only ? "random mask" : why);
        if (o == PASSED && facts.draw_only)
            list_add(&draw_only, tests.items[i]);
        if (o == PASSED || o == NOT_COUNTED)
            continue;
        exclusion *e = find_exclusion(ex, n_ex, tests.items[i]);
        if (e)
            e->matched++;
        char line[800];
        snprintf(line, sizeof line, "%s%s: %s", e ? "(excluded) " : "", tests.items[i], why);
        if (o == FAILED) {
            list_add(&wrong, line);
            r.unexcused += !e;
        } else {
            char kind[128];
            error_kind(why, kind, sizeof kind);
            tally_add(&errors, kind);
        }
        if (listed_node) {
            list_add(&listed, line);
            r.listed_not_passed++;
        }
    }
    printf("%-18s %4d passed, %4d failed (wrong answer), %4d errored", suite, r.counted[PASSED],
           r.counted[FAILED], r.counted[ERRORED]);
    if (r.counted[NOT_COUNTED])
        printf(" (%d not counted: sequence or optional values)", r.counted[NOT_COUNTED]);
    printf("\n");
    for (int i = 0; i < wrong.count; i++)
        printf("  WRONG %s\n", wrong.items[i]);
    if (draw_only.count) {
        printf("  passed on what does not depend on a random draw (Dropout's mask; dropout_draw_consistent):");
        for (int i = 0; i < draw_only.count; i++)
            printf(" %s", draw_only.items[i]);
        printf("\n");
    }
    if (r.listed)
        printf("  node tests of ops kiln lists: %d of %d pass\n", r.listed - r.listed_not_passed, r.listed);
    if (listed.count)
        printf("  node tests of ops kiln lists that do not pass: %d%s\n", listed.count, verbose ? ":" : " (-v lists them)");
    for (int i = 0; verbose && i < listed.count; i++)
        printf("    %s\n", listed.items[i]);
    if (errors.keys.count) {
        printf("  errors by kind:\n");
        for (int i = 0; i < errors.keys.count; i++)
            printf("    %4d  %s\n", errors.counts[i], errors.keys.items[i]);
    }
    tally_free(&errors);
    list_free(&wrong);
    list_free(&listed);
    list_free(&draw_only);
    list_free(&tests);
    return r;
}

int main(int argc, char **argv) {
    const char *data_dir = DEFAULT_DATA_DIR;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else
            data_dir = argv[i];
    }
    struct stat st;
    if (stat(data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("ONNX backend test data not found at %s (Debian package libonnx-testdata): skipped\n", data_dir);
        return 0;
    }
    exclusion ex[64];
    int n_ex = load_exclusions(ex, 64);
    printf("exclusions (%s):\n", EXCLUSIONS_FILE);
    for (int i = 0; i < n_ex; i++)
        printf("  %-44s %s\n", ex[i].pattern, ex[i].reason);

    suite_result total = {0};
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        suite_result r = run_suite(data_dir, suites[s], ex, n_ex);
        for (int o = 0; o < 4; o++)
            total.counted[o] += r.counted[o];
        total.unexcused += r.unexcused;
    }
    int counted = total.counted[PASSED] + total.counted[FAILED] + total.counted[ERRORED];
    printf("all suites: %d of %d passed, %d failed (wrong answer), %d errored\n", total.counted[PASSED], counted,
           total.counted[FAILED], total.counted[ERRORED]);

    int stale = 0;
    for (int i = 0; i < n_ex; i++) {
        if (!ex[i].matched) {
            printf("stale exclusion: '%s' matches no test that fails or errors; remove it\n", ex[i].pattern);
            stale++;
        }
    }
    if (total.unexcused)
        printf("%d test(s) give a wrong answer without an error and are not excluded\n", total.unexcused);
    bool regressed = total.counted[PASSED] < MIN_PASSED;
    if (regressed)
        printf("%d tests pass, fewer than the %d this runner last recorded (MIN_PASSED)\n", total.counted[PASSED],
               MIN_PASSED);
    bool ok = !total.unexcused && !stale && !regressed;
    printf("%s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
