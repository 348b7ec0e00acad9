/* The ONNX backend conformance tests (Debian libonnx-testdata) through kiln's importer.
 *
 * Every test directory holds model.onnx and test_data_set_N/{input,output}_K.pb. A test is skipped
 * when its model needs something kiln does not have at all — an op, an opset outside 7-17, a data
 * type — and otherwise imported, run forward for each data set and compared with the expected
 * outputs (|got - want| <= 1e-5 + 1e-3 |want| like onnx's backend test; exact for integers and bool).
 *
 * The rule this test enforces is the issue's: an op kiln lists as supported passes all of its node
 * tests. A failing test of the "node" suite fails the run unless tests/onnx_backend_exclusions.txt
 * lists it with a reason (an attribute or dtype of a supported op kiln documents as unsupported); an
 * exclusion that matches no failing test fails the run too, so the list stays honest. The other
 * suites (converted PyTorch models) are reported, not enforced.
 *
 * Usage: test_onnx_backend [-v] [DATA_DIR]   (default /usr/share/libonnx-testdata/data)
 */
#include <dirent.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"
#include "train/tape.h"

#define DEFAULT_DATA_DIR "/usr/share/libonnx-testdata/data"
#define EXCLUSIONS_FILE KILN_SOURCE_DIR "/tests/onnx_backend_exclusions.txt"

static const char *const suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};
static const double RTOL = 1e-3, ATOL = 1e-5;

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

/* Counts per reason ("op Abs", "dtype DOUBLE"), for the skip summary. */
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

static void tally_print(const tally *t, const char *title) {
    if (!t->keys.count)
        return;
    printf("  %s:", title);
    for (int i = 0; i < t->keys.count; i++)
        printf("%s %s (%d)", i ? "," : "", t->keys.items[i], t->counts[i]);
    printf("\n");
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

typedef enum outcome { PASSED, FAILED, SKIPPED } outcome;

/* Why a model cannot run on kiln at all (an op, opset or dtype kiln lacks), in `why`; false when it
 * can be tried. */
static bool model_out_of_scope(const char *model_path, char *why, size_t size) {
    unsigned char *bytes;
    size_t n_bytes;
    if (kn_onnx_read_whole_file(model_path, &bytes, &n_bytes) != KILN_OK)
        return false; /* the import reports it */
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n_bytes, bytes);
    free(bytes);
    if (!m || !m->graph) {
        if (m)
            onnx__model_proto__free_unpacked(m, NULL);
        return false;
    }
    bool out = false;
    int64_t opset = 0;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const char *domain = m->opset_import[i]->domain ? m->opset_import[i]->domain : "";
        if (!*domain || strcmp(domain, "ai.onnx") == 0)
            opset = m->opset_import[i]->version;
    }
    const Onnx__GraphProto *gp = m->graph;
    for (size_t i = 0; i < gp->n_node && !out; i++) {
        const char *domain = gp->node[i]->domain ? gp->node[i]->domain : "";
        const char *op = gp->node[i]->op_type ? gp->node[i]->op_type : "";
        if (*domain && strcmp(domain, "ai.onnx") != 0) {
            snprintf(why, size, "op %s.%s", domain, op);
            out = true;
        } else if (!kn_onnx_op_supported(op, KN_ONNX_MAX_OPSET)) {
            snprintf(why, size, "op %s", op);
            out = true;
        } else if (!kn_onnx_op_supported(op, opset)) {
            snprintf(why, size, "opset %lld (%s changed since)", (long long)opset, op);
            out = true;
        }
    }
    const Onnx__ValueInfoProto *const *lists[] = {(const Onnx__ValueInfoProto *const *)gp->input,
                                                   (const Onnx__ValueInfoProto *const *)gp->output};
    size_t counts[] = {gp->n_input, gp->n_output};
    for (int l = 0; l < 2 && !out; l++) {
        for (size_t i = 0; i < counts[l] && !out; i++) {
            const Onnx__TypeProto *tp = lists[l][i]->type;
            kn_dtype dtype;
            char buf[32];
            if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
                snprintf(why, size, "non-tensor value (sequence, map, optional)");
                out = true;
            } else if (!kn_onnx_dtype_to_kiln(tp->tensor_type->elem_type, &dtype)) {
                snprintf(why, size, "dtype %s",
                         kn_onnx_dtype_name(tp->tensor_type->elem_type, buf, sizeof buf));
                out = true;
            } else if (tp->tensor_type->shape && tp->tensor_type->shape->n_dim > KN_MAX_DIMS) {
                snprintf(why, size, "rank above %d", KN_MAX_DIMS);
                out = true;
            }
        }
    }
    onnx__model_proto__free_unpacked(m, NULL);
    return out;
}

static double element_as_float(const kn_tensor *t, int64_t i) {
    switch (t->dtype) {
    case KN_F32: return ((const float *)t->data)[i];
    case KN_F64: return ((const double *)t->data)[i];
    case KN_BF16: {
        uint32_t bits = (uint32_t)((const uint16_t *)t->data)[i] << 16;
        float v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }
    case KN_F16: {
        uint16_t h = ((const uint16_t *)t->data)[i];
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                          : ldexpf((float)(m | 0x400), e - 25);
        return (h >> 15) ? -v : v;
    }
    default: return 0;
    }
}

/* Compares one output; false with the first mismatch in `why`. */
static bool outputs_match(const kn_tensor *got, const kn_tensor *want, char *why, size_t size,
                          double *max_diff) {
    char a[96], b[96];
    if (got->dtype != want->dtype) {
        snprintf(why, size, "dtype %s, expected %s", kn_dtype_name(got->dtype),
                 kn_dtype_name(want->dtype));
        return false;
    }
    if (!kn_shape_equal(&got->shape, &want->shape)) {
        snprintf(why, size, "shape %s, expected %s", kn_shape_str(&got->shape, a, sizeof a),
                 kn_shape_str(&want->shape, b, sizeof b));
        return false;
    }
    int64_t n = kn_numel(want);
    if (want->dtype == KN_F32 || want->dtype == KN_F16 || want->dtype == KN_F64 ||
        want->dtype == KN_BF16) {
        for (int64_t i = 0; i < n; i++) {
            double x = element_as_float(got, i), y = element_as_float(want, i);
            if (isnan(x) && isnan(y))
                continue;
            double diff = x == y ? 0 : fabs((double)x - (double)y);
            if (diff > *max_diff)
                *max_diff = diff;
            if (!(diff <= ATOL + RTOL * fabs((double)y))) {
                snprintf(why, size, "element %lld: %.7g, expected %.7g", (long long)i, x, y);
                return false;
            }
        }
        return true;
    }
    size_t elem = kn_dtype_size(want->dtype);
    for (int64_t i = 0; i < n; i++) {
        if (memcmp((const char *)got->data + i * elem, (const char *)want->data + i * elem, elem) != 0) {
            snprintf(why, size, "element %lld differs (%s)", (long long)i, kn_dtype_name(want->dtype));
            return false;
        }
    }
    return true;
}

static void free_tensors(kn_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        free(t[i].data);
}

/* Loads dir/<prefix>_K.pb for K = 0, 1, ... into t (at most max); -1 with *status and `why` set on
 * failure. */
static int load_tensors(const char *dir, const char *prefix, kn_tensor *t, int max, kiln_status *status,
                        char *why, size_t size) {
    int n = 0;
    for (; n < max; n++) {
        char file[64], path[PATH_MAX];
        struct stat st;
        snprintf(file, sizeof file, "%s_%d.pb", prefix, n);
        if (!join_path(path, sizeof path, dir, file) || stat(path, &st) != 0)
            break;
        if ((*status = kn_onnx_read_tensor_file(path, &t[n], NULL)) != KILN_OK) {
            snprintf(why, size, "%s", kiln_last_error());
            free_tensors(t, n);
            return -1;
        }
    }
    return n;
}


/* Runs one data set through the bound tape. */
static outcome run_data_set(kn_graph *g, kn_tape *tape, bool *bound, const char *set_dir, char *why,
                            size_t size, double *max_diff) {
    kn_tensor inputs[16], expected[16];
    kiln_status st = KILN_OK;
    int n_in = load_tensors(set_dir, "input", inputs, 16, &st, why, size);
    if (n_in < 0)
        return st == KILN_ERR_UNSUPPORTED ? SKIPPED : FAILED;
    int n_out = load_tensors(set_dir, "output", expected, 16, &st, why, size);
    if (n_out < 0) {
        free_tensors(inputs, n_in);
        return st == KILN_ERR_UNSUPPORTED ? SKIPPED : FAILED;
    }
    outcome result = FAILED;
    kn_shape shapes[16];
    if (n_in != g->n_inputs || n_out != g->n_outputs) {
        snprintf(why, size, "%d inputs and %d outputs in the data set; the model has %d and %d", n_in,
                 n_out, g->n_inputs, g->n_outputs);
        goto done;
    }
    /* ONNX's test data holds bfloat16 tensors as UINT16 bit patterns (numpy has no bfloat16). */
    for (int i = 0; i < n_in; i++)
        if (inputs[i].dtype == KN_U16 && g->values[g->inputs[i]].dtype == KN_BF16)
            inputs[i].dtype = KN_BF16;
    for (int i = 0; i < n_out; i++)
        if (expected[i].dtype == KN_U16 && g->values[g->outputs[i]].dtype == KN_BF16)
            expected[i].dtype = KN_BF16;
    for (int i = 0; i < n_in; i++) {
        shapes[i] = inputs[i].shape;
        if (inputs[i].dtype != g->values[g->inputs[i]].dtype) {
            snprintf(why, size, "input %d is %s; the model declares %s", i,
                     kn_dtype_name(inputs[i].dtype), kn_dtype_name(g->values[g->inputs[i]].dtype));
            goto done;
        }
    }
    /* These tests feed values that decide output shapes (a Reshape target, Resize scales, Range
     * bounds) as inputs. Like a runtime given its inputs before it runs, the runner lets shape
     * inference read the data of small inputs. */
    for (int i = 0; i < n_in; i++) {
        kn_value *v = &g->values[g->inputs[i]];
        if (kn_numel(&inputs[i]) <= KN_INFER_DATA_MAX_ELEMS) {
            v->data = inputs[i].data;
            v->data_from_inference = true;
        }
    }
    st = *bound ? kn_tape_set_input_shapes(tape, shapes) : kn_tape_init_shapes(tape, g, shapes, false);
    if (st != KILN_OK) {
        snprintf(why, size, "bind: %s", kiln_last_error());
        goto done;
    }
    *bound = true;
    for (int i = 0; i < n_in; i++) {
        size_t bytes;
        kn_shape_bytes(&inputs[i].shape, inputs[i].dtype, &bytes);
        if (bytes && kn_tape_input(tape, i)->data != inputs[i].data)
            memcpy(kn_tape_input(tape, i)->data, inputs[i].data, bytes);
    }
    if (kn_tape_forward(tape, false) != KILN_OK) {
        snprintf(why, size, "run: %s", kiln_last_error());
        goto done;
    }
    result = PASSED;
    for (int i = 0; i < n_out && result == PASSED; i++) {
        char detail[256];
        if (!outputs_match(kn_tape_output(tape, i), &expected[i], detail, sizeof detail, max_diff)) {
            snprintf(why, size, "output %d: %s", i, detail);
            result = FAILED;
        }
    }
done:
    for (int i = 0; i < g->n_inputs; i++) {
        g->values[g->inputs[i]].data = NULL;
        g->values[g->inputs[i]].data_from_inference = false;
    }
    free_tensors(inputs, n_in);
    free_tensors(expected, n_out);
    return result;
}

static outcome run_test(const char *test_dir, char *why, size_t size, double *max_diff) {
    char model[PATH_MAX];
    if (!join_path(model, sizeof model, test_dir, "model.onnx")) {
        snprintf(why, size, "path too long");
        return FAILED;
    }
    if (model_out_of_scope(model, why, size))
        return SKIPPED;
    kn_graph g;
    if (kn_onnx_import_file(model, &g) != KILN_OK) {
        const char *message = kiln_last_error();
        size_t model_len = strlen(model);
        if (strncmp(message, model, model_len) == 0 && strncmp(message + model_len, ": ", 2) == 0)
            message += model_len + 2; /* the test's name says which file */
        snprintf(why, size, "import: %s", message);
        kn_graph_free(&g);
        return FAILED;
    }
    str_list sets = {0};
    list_dir(test_dir, "test_data_set_", &sets);
    outcome result = sets.count ? PASSED : FAILED;
    if (!sets.count)
        snprintf(why, size, "no test data sets");
    kn_tape tape;
    bool bound = false;
    for (int s = 0; s < sets.count && result == PASSED; s++) {
        char set_dir[PATH_MAX];
        if (!join_path(set_dir, sizeof set_dir, test_dir, sets.items[s])) {
            snprintf(why, size, "path too long");
            result = FAILED;
            break;
        }
        result = run_data_set(&g, &tape, &bound, set_dir, why, size, max_diff);
    }
    if (bound)
        kn_tape_free(&tape);
    list_free(&sets);
    kn_graph_free(&g);
    return result;
}

/* ---- suites ---- */

typedef struct suite_result {
    int passed, failed, skipped, enforced_failures;
} suite_result;

static suite_result run_suite(const char *data_dir, const char *suite, exclusion *ex, int n_ex) {
    suite_result r = {0};
    char dir[PATH_MAX];
    if (!join_path(dir, sizeof dir, data_dir, suite))
        return r;
    str_list tests = {0};
    list_dir(dir, "test_", &tests);
    tally skips = {0};
    str_list failures = {0};
    bool enforced = strcmp(suite, "node") == 0;
    for (int i = 0; i < tests.count; i++) {
        char test_dir[PATH_MAX], why[512] = "";
        double max_diff = 0;
        outcome o = join_path(test_dir, sizeof test_dir, dir, tests.items[i])
                        ? run_test(test_dir, why, sizeof why, &max_diff)
                        : (snprintf(why, sizeof why, "path too long"), FAILED);
        if (verbose)
            printf("  %-60s %s %s (max diff %.3g)\n", tests.items[i],
                   o == PASSED ? "pass" : o == FAILED ? "FAIL" : "skip", why, max_diff);
        if (o == PASSED) {
            r.passed++;
        } else if (o == SKIPPED) {
            r.skipped++;
            tally_add(&skips, why);
        } else {
            r.failed++;
            exclusion *e = enforced ? find_exclusion(ex, n_ex, tests.items[i]) : NULL;
            char line[800];
            snprintf(line, sizeof line, "%s%s: %s", e ? "(excluded) " : "", tests.items[i], why);
            list_add(&failures, line);
            if (e)
                e->matched++;
            else if (enforced)
                r.enforced_failures++;
        }
    }
    printf("%-18s %4d passed, %4d failed, %4d skipped\n", suite, r.passed, r.failed, r.skipped);
    for (int i = 0; i < failures.count; i++)
        printf("  FAIL %s\n", failures.items[i]);
    tally_print(&skips, "skipped (what kiln lacks)");
    tally_free(&skips);
    list_free(&failures);
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
        printf("ONNX backend test data not found at %s (Debian package libonnx-testdata): skipped\n",
               data_dir);
        return 0;
    }
    exclusion ex[64];
    int n_ex = load_exclusions(ex, 64);
    printf("exclusions (%s):\n", EXCLUSIONS_FILE);
    for (int i = 0; i < n_ex; i++)
        printf("  %-44s %s\n", ex[i].pattern, ex[i].reason);

    int enforced_failures = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++)
        enforced_failures += run_suite(data_dir, suites[s], ex, n_ex).enforced_failures;

    int stale = 0;
    for (int i = 0; i < n_ex; i++) {
        if (!ex[i].matched) {
            printf("stale exclusion: '%s' matches no failing node test; remove it\n", ex[i].pattern);
            stale++;
        }
    }
    if (enforced_failures)
        printf("%d node test(s) of supported ops fail and are not excluded\n", enforced_failures);
    printf("%s\n", enforced_failures || stale ? "FAILED" : "OK");
    return enforced_failures || stale ? 1 : 0;
}
