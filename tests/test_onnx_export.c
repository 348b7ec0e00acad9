/* ONNX export: kiln graph -> ONNX -> kiln graph.
 *
 * For the example specs (MLP; CNN with BatchNorm and Dropout; ViT with Gelu, LayerNorm, Transpose,
 * Reshape, ReduceMean), a spec of the other layers, the importer's PyTorch fixtures and a hand-built
 * graph of the ops whose kiln form is not ONNX's (Cast, ConstantOfShape, reductions with an axes
 * input): export -> import -> run gives the original's outputs (training tape in inference mode, at
 * batch 1 and 7), and export -> import -> export gives the same bytes. An input standardisation becomes
 * Sub/Div at the input (run on raw inputs, the import matches the original on standardised ones), or,
 * with norm_as_metadata, metadata that comes back. Metadata comes back, hostile
 * metadata is refused, optimized graphs are refused, files are replaced atomically, and onnx.checker
 * (python3-onnx, when installed) accepts every exported file.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "support/graph_ids.h"
#include "format/onnx/onnx_export.h"
#include "format/onnx/onnx_import.h"
#include "format/onnx/onnx_internal.h"
#include "runtime/optimize.h"
#include "support/runtime_models.h"
#include "train/tape.h"

#define EXPORT_DIR "onnx_export" /* under the test's working directory, build/tests */

/* Outputs must agree to this fraction of their largest magnitude. */
static const double REL_TOLERANCE = 1e-6;

/* Every file written, for onnx.checker at the end. */
static char exported[16][256];
static int n_exported;

/* ---- running graphs ---- */

enum { MAX_OUTPUTS = 4 };

typedef struct outputs {
    double *v[MAX_OUTPUTS];
    int64_t n[MAX_OUTPUTS];
    int count;
} outputs;

static void outputs_free(outputs *o) {
    for (int k = 0; k < o->count; k++)
        free(o->v[k]);
    memset(o, 0, sizeof *o);
}

static double element(const kn_tensor *t, int64_t i) {
    switch (t->dtype) {
    case KN_F32: return ((const float *)t->data)[i];
    case KN_I64: return (double)((const int64_t *)t->data)[i];
    case KN_I32: return ((const int32_t *)t->data)[i];
    case KN_U8: case KN_BOOL: return ((const uint8_t *)t->data)[i];
    case KN_I8: return ((const int8_t *)t->data)[i];
    default: return NAN;
    }
}

/* x = (x - mean) / std over a batch, with the value of each sample's element k standardised by
 * mean/std[k / (sample size / n_norm)] (per feature, or per channel of an image), in double and rounded
 * once, as kiln's data loaders do. */
static void standardize(float *x, int64_t numel, int64_t batch, const kn_graph *g) {
    int64_t sample = numel / batch, per = sample / g->n_norm;
    for (int64_t i = 0; i < numel; i++) {
        int64_t k = (i % sample) / per;
        x[i] = (float)(((double)x[i] - g->input_mean[k]) / g->input_std[k]);
    }
}

/* g run by the training tape in inference mode at `batch`, every input (f32) filled with seeded
 * numbers in [-1, 1) (the first standardised by g's mean/std when `standardized`); each output's
 * elements as doubles. */
static bool run_graph(kn_graph *g, int64_t batch, uint64_t seed, bool standardized, outputs *o) {
    memset(o, 0, sizeof *o);
    kn_tape t;
    kiln_status st = kn_tape_init(&t, g, batch, false);
    for (int i = 0; st == KILN_OK && i < g->n_inputs; i++) {
        kn_tensor *x = kn_tape_input(&t, i);
        rt_fill(x->data, kn_numel(x), seed + (uint64_t)i);
        if (i == 0 && standardized)
            standardize(x->data, kn_numel(x), batch, g);
    }
    if (st == KILN_OK)
        st = kn_tape_forward(&t, false);
    for (int k = 0; st == KILN_OK && k < g->n_outputs && k < MAX_OUTPUTS; k++) {
        const kn_tensor *y = kn_tape_output(&t, k);
        o->n[k] = kn_numel(y);
        o->v[k] = malloc(sizeof(double) * (size_t)(o->n[k] + 1));
        for (int64_t i = 0; i < o->n[k]; i++)
            o->v[k][i] = element(y, i);
        o->count++;
    }
    CHECK_MSG(st == KILN_OK, "running at batch %lld: %s", (long long)batch, kiln_last_error());
    kn_tape_free(&t); /* also fine after a failed kn_tape_init, which leaves the tape zeroed */
    return st == KILN_OK;
}

/* The original's and the round trip's outputs: same counts, max difference within REL_TOLERANCE of
 * the largest magnitude. */
static void compare_outputs(const char *label, int64_t batch, const outputs *want, const outputs *got) {
    CHECK_MSG(want->count == got->count, "%s: %d outputs, round trip %d", label, want->count, got->count);
    for (int k = 0; k < want->count && k < got->count; k++) {
        CHECK_MSG(want->n[k] == got->n[k], "%s output %d: %lld elements, round trip %lld", label, k,
                  (long long)want->n[k], (long long)got->n[k]);
        double diff = 0, scale = 0;
        for (int64_t i = 0; i < want->n[k] && want->n[k] == got->n[k]; i++) {
            diff = fmax(diff, fabs(want->v[k][i] - got->v[k][i]));
            scale = fmax(scale, fabs(want->v[k][i]));
        }
        printf("  %-12s batch %lld output %d: max |original - round trip| = %.3g (outputs up to %.3g)\n",
               label, (long long)batch, k, diff, scale);
        CHECK_MSG(diff <= REL_TOLERANCE * scale, "%s batch %lld output %d differs by %g", label,
                  (long long)batch, k, diff);
    }
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *bytes = NULL;
    if (f && fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        bytes = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (bytes && fseek(f, 0, SEEK_SET) == 0 && fread(bytes, 1, (size_t)n, f) == (size_t)n)
            *size = (size_t)n;
        else {
            free(bytes);
            bytes = NULL;
        }
    }
    if (f)
        fclose(f);
    return bytes;
}

/* Node names the graph uses more than once (onnxruntime refuses such files). */
static int duplicate_node_names(const kn_graph *g) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        for (int j = 0; j < i; j++)
            n += *g->nodes[i].name && strcmp(g->nodes[i].name, g->nodes[j].name) == 0;
    return n;
}

/* export -> import -> run at batch 1 and 7 against g, and export -> import -> export, byte for byte.
 * The export is also written to EXPORT_DIR/<label>.onnx (checked to hold the same bytes) for
 * onnx.checker. The imported graph is left in *back (freed by the caller, also on failure). */
static void round_trip(const char *label, kn_graph *g, const kn_onnx_export_options *options, kn_graph *back) {
    kn_graph_init(back);
    void *first = NULL, *second = NULL;
    size_t first_size = 0, second_size = 0;
    kiln_status st = kn_onnx_export_buffer_with(g, &first, &first_size, options);
    CHECK_MSG(st == KILN_OK, "%s: export: %s", label, kiln_last_error());
    if (st == KILN_OK) {
        st = kn_onnx_import_buffer(first, first_size, NULL, back);
        CHECK_MSG(st == KILN_OK, "%s: import of the export: %s", label, kiln_last_error());
        CHECK_MSG(duplicate_node_names(back) == 0, "%s: the file names %d nodes twice", label,
                  duplicate_node_names(back));
    }
    for (int64_t batch = 1; st == KILN_OK && batch <= 7; batch += 6) {
        outputs want = {0}, got = {0};
        if (run_graph(g, batch, 11, false, &want) && run_graph(back, batch, 11, false, &got))
            compare_outputs(label, batch, &want, &got);
        outputs_free(&want);
        outputs_free(&got);
    }
    if (st == KILN_OK) {
        st = kn_onnx_export_buffer_with(back, &second, &second_size, options);
        CHECK_MSG(st == KILN_OK, "%s: export of the import: %s", label, kiln_last_error());
        bool same = st == KILN_OK && first_size == second_size && memcmp(first, second, first_size) == 0;
        printf("  %-12s %zu bytes, %d nodes -> %d nodes; export -> import -> export %s\n", label, first_size,
               g->n_nodes, back->n_nodes, same ? "gives the same bytes" : "DIFFERS");
        CHECK_MSG(same, "%s: the second export (%zu bytes) differs from the first (%zu bytes)", label,
                  second_size, first_size);
    }
    if (st == KILN_OK && n_exported < (int)(sizeof exported / sizeof exported[0])) {
        char *path = exported[n_exported];
        snprintf(path, sizeof exported[0], EXPORT_DIR "/%s.onnx", label);
        CHECK_OK(kn_onnx_export_file_with(g, path, options));
        size_t size = 0;
        unsigned char *bytes = read_file(path, &size);
        CHECK_MSG(bytes && size == first_size && memcmp(bytes, first, size) == 0,
                  "%s: the file export differs from the buffer export", path);
        free(bytes);
        n_exported++;
    }
    free(first);
    free(second);
}

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op->name, op) == 0;
    return n;
}

/* ---- the example specs ---- */

/* Names that need JSON escapes: quotes, backslashes, control characters and UTF-8. */
static const char *const class_names[10] = {
    "T-shirt/top", "Trouser", "say \"hi\"", "back\\slash", "tab\there\nnewline", "Sandal",
    "na\xc3\xafve \xe2\x98\x83", "Sneaker", "\x01 control", "Ankle boot"};

static void set_metadata(kn_graph *g, int64_t n_norm) {
    g->class_names = kn_arena_alloc(&g->arena, sizeof class_names);
    memcpy(g->class_names, class_names, sizeof class_names);
    g->n_classes = 10;
    g->input_mean = kn_arena_alloc(&g->arena, sizeof(float) * (size_t)n_norm);
    g->input_std = kn_arena_alloc(&g->arena, sizeof(float) * (size_t)n_norm);
    for (int64_t i = 0; i < n_norm; i++) {
        g->input_mean[i] = 0.2860402f + 0.01f * (float)i;
        g->input_std[i] = 0.35302424f / (float)(i + 1);
    }
    g->n_norm = n_norm;
    CHECK_OK(kn_graph_set_meta(g, "train.optimizer", "adamw"));
    CHECK_OK(kn_graph_set_meta(g, "producer", "kiln " KILN_VERSION_STRING));
}

static void check_metadata(const kn_graph *want, const kn_graph *got) {
    CHECK_MSG(got->n_classes == want->n_classes, "%d class names came back, not %d", got->n_classes,
              want->n_classes);
    for (int i = 0; i < want->n_classes && i < got->n_classes; i++)
        CHECK_MSG(strcmp(want->class_names[i], got->class_names[i]) == 0, "class %d: '%s' came back as "
                  "'%s'", i, want->class_names[i], got->class_names[i]);
    CHECK(got->n_norm == want->n_norm && got->input_mean && got->input_std);
    for (int64_t i = 0; i < want->n_norm && i < got->n_norm; i++)
        CHECK(got->input_mean[i] == want->input_mean[i] && got->input_std[i] == want->input_std[i]);
    for (int i = 0; i < want->n_meta; i++) {
        const char *value = kn_graph_meta(got, want->meta[i].key);
        CHECK_MSG(value && strcmp(value, want->meta[i].value) == 0, "note '%s' came back as '%s'",
                  want->meta[i].key, value ? value : "(none)");
    }
}

static void test_spec(const char *file, const char *label, int64_t n_norm) {
    kn_graph g, back;
    kiln_status st = rt_spec_file(file, 7, &g);
    CHECK_MSG(st == KILN_OK, "%s: %s", file, kiln_last_error());
    if (st != KILN_OK)
        return;
    set_metadata(&g, n_norm);
    const kn_onnx_export_options as_metadata = {.norm_as_metadata = true};
    round_trip(label, &g, &as_metadata, &back);
    check_metadata(&g, &back);
    CHECK_MSG(count_op(&back, "Gelu") == 0 && count_op(&back, "Erf") == count_op(&g, "Gelu"),
              "%s: each Gelu is written with one Erf", label);
    if (count_op(&g, "Dropout")) {
        const kn_node *drop = NULL;
        for (int i = 0; i < back.n_nodes && !drop; i++)
            drop = strcmp(back.nodes[i].op->name, "Dropout") == 0 ? &back.nodes[i] : NULL;
        const kn_value *ratio = drop && drop->n_in == 2 ? &back.values[drop->in[1]] : NULL;
        CHECK_MSG(ratio && ratio->kind == KN_VALUE_CONST && *(const float *)ratio->data == 0.25f,
                  "%s: Dropout's ratio comes back as a constant input of 0.25", label);
    }
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* By default the export standardises its input in the graph (Sub/Div): the import, run on raw inputs,
 * gives what g gives on standardised ones, and its metadata has no mean/std for a caller (kiln run, the
 * importer) to apply a second time. */
static void test_standardization(const char *file, const char *label, int64_t n_norm) {
    kn_graph g, back;
    kn_graph_init(&back);
    kiln_status st = rt_spec_file(file, 7, &g);
    CHECK_MSG(st == KILN_OK, "%s: %s", file, kiln_last_error());
    if (st != KILN_OK)
        return;
    set_metadata(&g, n_norm);
    void *buf = NULL;
    size_t size = 0;
    st = kn_onnx_export_buffer(&g, &buf, &size);
    CHECK_MSG(st == KILN_OK, "%s: export: %s", label, kiln_last_error());
    if (st == KILN_OK)
        st = kn_onnx_import_buffer(buf, size, NULL, &back);
    CHECK_MSG(st == KILN_OK, "%s: import: %s", label, kiln_last_error());
    if (st == KILN_OK) {
        CHECK_MSG(back.n_norm == 0 && !back.input_mean, "%s: the export carries mean/std as metadata too", label);
        CHECK_MSG(count_op(&back, "Sub") == count_op(&g, "Sub") + 1 &&
                      count_op(&back, "Div") == count_op(&g, "Div") + 1,
                  "%s: the export standardises with one Sub and one Div", label);
        CHECK_MSG(strcmp(back.values[back.inputs[0]].name, g.values[g.inputs[0]].name) == 0,
                  "%s: the input keeps its name", label);
        CHECK_MSG(back.n_classes == g.n_classes, "%s: the class names still travel", label);
        for (int64_t batch = 1; batch <= 7; batch += 6) {
            outputs want = {0}, got = {0};
            char what[64];
            snprintf(what, sizeof what, "%s raw", label);
            if (run_graph(&g, batch, 11, true, &want) && run_graph(&back, batch, 11, false, &got))
                compare_outputs(what, batch, &want, &got);
            outputs_free(&want);
            outputs_free(&got);
        }
    }
    free(buf);
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* The spec layers the examples do not use, with gelu's tanh form. */
static const char *const other_layers =
    "input 3 8 8\n"
    "conv 8 3 pad=1\n"
    "batchnorm\n"
    "leakyrelu=0.2\n"
    "avgpool 2\n"
    "residual\n"
    "conv 8 3 pad=1 groups=2\n"
    "elu\n"
    "end\n"
    "sigmoid\n"
    "maxpool 2 stride=1\n"
    "globalavgpool\n"
    "dense 16\n"
    "tanh\n"
    "layernorm\n"
    "gelu=tanh\n"
    "dropout 0.1\n"
    "dense 5\n"
    "softmax\n";

static void test_other_layers(void) {
    kn_graph g, back;
    kiln_status st = rt_spec_text(other_layers, 5, &g);
    CHECK_MSG(st == KILN_OK, "%s", kiln_last_error());
    if (st != KILN_OK)
        return;
    round_trip("layers", &g, NULL, &back);
    CHECK_MSG(count_op(&back, "Tanh") == 2 && count_op(&back, "Gelu") == 0,
              "gelu=tanh is written with Tanh");
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* ---- the importer's PyTorch fixtures ---- */

static void test_torch_fixture(const char *name) {
    char path[1024], label[32];
    snprintf(path, sizeof path, "%s/tests/ref/data/onnx_%s.onnx", KILN_SOURCE_DIR, name);
    snprintf(label, sizeof label, "torch_%s", name);
    kn_graph g, back;
    kiln_status st = kn_onnx_import_file(path, &g);
    CHECK_MSG(st == KILN_OK, "%s: %s", path, kiln_last_error());
    if (st == KILN_OK) {
        round_trip(label, &g, NULL, &back);
        const char *producer = kn_graph_meta(&back, "onnx.producer");
        CHECK_MSG(producer && strcmp(producer, "kiln " KILN_VERSION_STRING) == 0,
                  "the export's producer is kiln, not %s", producer ? producer : "(none)");
        kn_graph_free(&back);
    }
    kn_graph_free(&g);
}

/* ---- ops whose kiln form is not ONNX's ---- */

static int add_act(kn_graph *g, const char *name) {
    kn_shape scalar = {0};
    return test_add_value(g, name, KN_VALUE_ACT, KN_F32, &scalar);
}

static int add_node1(kn_graph *g, const char *op, const char *name, int n_in, const int *in, int out) {
    return test_add_node(g, op, name, n_in, in, 1, &out);
}

/* x (N, 6) -> d = x - ReduceMax(x, axes input [1]); c = ConstantOfShape(Shape(x), 0.25);
 * k = Cast(ConstantOfShape(Shape(x), int 3, i64), f32); y = (d + c) * k;
 * outputs y, ReduceMean(y, axes input [1], keepdims 0) and Cast(y * 4, i64). */
static void build_rewritten_ops(kn_graph *g) {
    kn_graph_init(g);
    kn_shape x_shape = kn_shape_of(2, (int64_t[]){1, 6}), one = kn_shape_of(1, (int64_t[]){1});
    kn_shape scalar = {0};
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &x_shape);
    g->inputs[g->n_inputs++] = x;
    int axes = test_add_value(g, "axes", KN_VALUE_CONST, KN_I64, &one);
    *(int64_t *)g->values[axes].data = 1;
    int four = test_add_value(g, "four", KN_VALUE_CONST, KN_F32, &scalar);
    *(float *)g->values[four].data = 4.0f;
    int m = add_act(g, "m"), d = add_act(g, "d"), s = add_act(g, "s"), c = add_act(g, "c");
    int ki = add_act(g, "k_i64"), k = add_act(g, "k"), e = add_act(g, "e"), y = add_act(g, "y");
    int r = add_act(g, "r"), y4 = add_act(g, "y4"), yi = add_act(g, "y_i64");
    int node = add_node1(g, "ReduceMax", "max", 2, (int[]){x, axes}, m);
    kn_node_set_int(g, node, "keepdims", 1);
    add_node1(g, "Sub", "center", 2, (int[]){x, m}, d);
    add_node1(g, "Shape", "shape", 1, &x, s);
    node = add_node1(g, "ConstantOfShape", "quarter", 1, &s, c);
    kn_node_set_float(g, node, "value", 0.25f);
    node = add_node1(g, "ConstantOfShape", "three", 1, &s, ki);
    kn_node_set_int(g, node, "value", 3);
    kn_node_set_int(g, node, "dtype", KN_I64);
    node = add_node1(g, "Cast", "to_float", 1, &ki, k);
    kn_node_set_int(g, node, "to", KN_F32);
    add_node1(g, "Add", "shift", 2, (int[]){d, c}, e);
    add_node1(g, "Mul", "scale", 2, (int[]){e, k}, y);
    node = add_node1(g, "ReduceMean", "mean", 2, (int[]){y, axes}, r);
    kn_node_set_int(g, node, "keepdims", 0);
    add_node1(g, "Mul", "times_four", 2, (int[]){y, four}, y4);
    node = add_node1(g, "Cast", "to_int", 1, &y4, yi);
    kn_node_set_int(g, node, "to", KN_I64);
    g->outputs[g->n_outputs++] = y;
    g->outputs[g->n_outputs++] = r;
    g->outputs[g->n_outputs++] = yi;
    CHECK_OK(kn_graph_infer_shapes(g));
}

static void test_rewritten_ops(void) {
    kn_graph g, back;
    build_rewritten_ops(&g);
    round_trip("rewritten", &g, NULL, &back);
    const kn_value *yi = &back.values[back.outputs[2]];
    CHECK_MSG(yi->dtype == KN_I64, "Cast to i64 comes back as i64 (%s)", kn_dtype_name(yi->dtype));
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* kiln does not insist on unique value names, ONNX does: x and "y.1" in, y = Relu(x) and
 * y = y + "y.1" (a second "y") out. The second y is written as "y.2". */
static void test_duplicate_names(void) {
    kn_graph g, back;
    kn_graph_init(&g);
    kn_shape shape = kn_shape_of(2, (int64_t[]){1, 4});
    int x = test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &shape);
    int taken = test_add_value(&g, "y.1", KN_VALUE_INPUT, KN_F32, &shape);
    int y = add_act(&g, "y"), y_again = add_act(&g, "y");
    add_node1(&g, "Relu", "relu", 1, &x, y);
    add_node1(&g, "Add", "add", 2, (int[]){y, taken}, y_again);
    g.inputs[g.n_inputs++] = x;
    g.inputs[g.n_inputs++] = taken;
    g.outputs[g.n_outputs++] = y_again;
    CHECK_OK(kn_graph_infer_shapes(&g));
    round_trip("duplicates", &g, NULL, &back);
    int out = back.n_outputs ? back.outputs[0] : -1;
    CHECK_MSG(out >= 0 && strcmp(back.values[out].name, "y.2") == 0 && kn_graph_find_value(&back, "y") >= 0,
              "the second 'y' is written as 'y.2'");
    kn_graph_free(&back);
    kn_graph_free(&g);
}

/* ---- refusals ---- */

static void expect_refusal(const kn_graph *g, kiln_status want, const char *fragment, const char *what) {
    void *buf = NULL;
    size_t size;
    kiln_status st = kn_onnx_export_buffer(g, &buf, &size);
    CHECK_MSG(st == want, "%s: status %s, expected %s (%s)", what, kiln_status_name(st),
              kiln_status_name(want), kiln_last_error());
    CHECK_MSG(strstr(kiln_last_error(), fragment) != NULL, "%s: message '%s' lacks '%s'", what,
              kiln_last_error(), fragment);
    CHECK(buf == NULL);
    printf("  refused %-28s -> %s\n", what, kiln_last_error());
    free(buf);
}

static void test_refusals(void) {
    kn_graph g, opt;
    if (rt_spec_file("fmnist_cnn.txt", 3, &g) == KILN_OK &&
        kn_graph_optimize(&g, KN_OPT_ALL, &opt, NULL) == KILN_OK) {
        expect_refusal(&opt, KILN_ERR_UNSUPPORTED, "export the graph before optimizing it",
                       "fused activations");
        kn_graph_free(&opt);
    }
    kn_graph_free(&g);
    if (rt_spec_file("fmnist_vit.txt", 3, &g) == KILN_OK &&
        kn_graph_optimize(&g, KN_OPT_BIAS, &opt, NULL) == KILN_OK) {
        expect_refusal(&opt, KILN_ERR_UNSUPPORTED, "MatMul with a bias input", "MatMul with a bias");
        kn_graph_free(&opt);
    }
    kn_graph_free(&g);

    /* A reduction's axes computed at run time (here a graph input) need opset 18. */
    kn_graph_init(&g);
    kn_shape x_shape = kn_shape_of(2, (int64_t[]){1, 6}), one = kn_shape_of(1, (int64_t[]){1});
    int x = test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &x_shape);
    int axes = test_add_value(&g, "axes", KN_VALUE_INPUT, KN_I64, &one);
    int y = add_act(&g, "y");
    add_node1(&g, "ReduceMean", "mean", 2, (int[]){x, axes}, y);
    g.inputs[g.n_inputs++] = x;
    g.inputs[g.n_inputs++] = axes;
    g.outputs[g.n_outputs++] = y;
    expect_refusal(&g, KILN_ERR_UNSUPPORTED, "needs opset 18", "run-time reduction axes");

    kn_graph_free(&g);

    /* Notes may not use the keys of kiln's own metadata fields. */
    if (rt_spec_file("fmnist_mlp.txt", 3, &g) == KILN_OK) {
        kn_graph_set_meta(&g, "kiln.class_names", "[]");
        expect_refusal(&g, KILN_ERR_INVALID_ARG, "kiln.class_names", "a reserved metadata key");
    }
    kn_graph_free(&g);
}

/* ---- hostile metadata ---- */

/* The MLP's export with metadata entry `key` set to `value` (NULL: removed). */
static unsigned char *export_with_prop(const char *key, const char *value, size_t *size) {
    kn_graph g;
    void *buf = NULL;
    size_t n = 0;
    if (rt_spec_file("fmnist_mlp.txt", 3, &g) != KILN_OK || kn_onnx_export_buffer(&g, &buf, &n) != KILN_OK) {
        kn_graph_free(&g);
        return NULL;
    }
    kn_graph_free(&g);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    free(buf);
    Onnx__StringStringEntryProto entry = ONNX__STRING_STRING_ENTRY_PROTO__INIT, *entries[1] = {&entry};
    entry.key = (char *)key;
    entry.value = (char *)value;
    Onnx__StringStringEntryProto **kept = m->metadata_props;
    size_t n_kept = m->n_metadata_props;
    m->metadata_props = entries;
    m->n_metadata_props = 1;
    *size = onnx__model_proto__get_packed_size(m);
    unsigned char *bytes = malloc(*size);
    onnx__model_proto__pack(m, bytes);
    m->metadata_props = kept;
    m->n_metadata_props = n_kept;
    onnx__model_proto__free_unpacked(m, NULL);
    return bytes;
}

static void test_metadata_reader(void) {
    static const struct {
        const char *key, *value;
        kiln_status want;
    } cases[] = {
        {"kiln.class_names", "[\"a\", 3]", KILN_ERR_FORMAT},
        {"kiln.class_names", "[\"a\",]", KILN_ERR_FORMAT},
        {"kiln.class_names", "[\"unterminated]", KILN_ERR_FORMAT},
        {"kiln.class_names", "[\"\\ud800\"]", KILN_ERR_FORMAT},       /* lone surrogate */
        {"kiln.class_names", "[\"\\u0000\"]", KILN_ERR_FORMAT},       /* NUL */
        {"kiln.class_names", "[\"bad \\x escape\"]", KILN_ERR_FORMAT},
        {"kiln.class_names", "[\"a\"] trailing", KILN_ERR_FORMAT},
        {"kiln.input_mean", "[0.5]", KILN_ERR_FORMAT},                /* without kiln.input_std */
        {"kiln.class_names", " [ \"\\u00e9\\ud83d\\ude00\" , \"\\\"\\/\" ] ", KILN_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t size;
        unsigned char *bytes = export_with_prop(cases[i].key, cases[i].value, &size);
        kn_graph g;
        kiln_status st = bytes ? kn_onnx_import_buffer(bytes, size, NULL, &g) : KILN_ERR_INTERNAL;
        CHECK_MSG(st == cases[i].want, "%s = %s: %s (%s)", cases[i].key, cases[i].value,
                  kiln_status_name(st), kiln_last_error());
        if (st != KILN_OK)
            printf("  metadata %-46s -> %s\n", cases[i].value, kiln_last_error());
        else
            CHECK(g.n_classes == 2 && strcmp(g.class_names[0], "\xc3\xa9\xf0\x9f\x98\x80") == 0 &&
                  strcmp(g.class_names[1], "\"/") == 0);
        kn_graph_free(&g);
        free(bytes);
    }
    /* Numbers: strict JSON, finite floats, mean and std of one length. */
    size_t size;
    unsigned char *bytes = export_with_prop("kiln.input_std", "[1e999]", &size);
    Onnx__ModelProto *m = bytes ? onnx__model_proto__unpack(NULL, size, bytes) : NULL;
    CHECK(m != NULL);
    free(bytes);
    if (!m)
        return;
    static const struct {
        const char *mean, *std;
        kiln_status want;
    } numbers[] = {
        {"[0.5, -1.25e-3]", "[2, 0.125]", KILN_OK},
        {"[0.5]", "[1e999]", KILN_ERR_FORMAT},
        {"[0.5]", "[0x10]", KILN_ERR_FORMAT},
        {"[.5]", "[1]", KILN_ERR_FORMAT},
        {"[0.5]", "[1, 2]", KILN_ERR_FORMAT},
        {"[]", "[]", KILN_ERR_FORMAT},
    };
    Onnx__StringStringEntryProto mean = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    Onnx__StringStringEntryProto std = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
    Onnx__StringStringEntryProto *entries[2] = {&mean, &std}, **kept = m->metadata_props;
    size_t n_kept = m->n_metadata_props;
    m->metadata_props = entries;
    m->n_metadata_props = 2;
    mean.key = "kiln.input_mean";
    std.key = "kiln.input_std";
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        mean.value = (char *)numbers[i].mean;
        std.value = (char *)numbers[i].std;
        size = onnx__model_proto__get_packed_size(m);
        bytes = malloc(size);
        onnx__model_proto__pack(m, bytes);
        kn_graph g;
        kiln_status st = kn_onnx_import_buffer(bytes, size, NULL, &g);
        CHECK_MSG(st == numbers[i].want, "mean %s, std %s: %s (%s)", numbers[i].mean, numbers[i].std,
                  kiln_status_name(st), kiln_last_error());
        if (st != KILN_OK)
            printf("  metadata mean %-8s std %-10s -> %s\n", numbers[i].mean, numbers[i].std,
                   kiln_last_error());
        else
            CHECK(g.n_norm == 2 && g.input_mean[1] == -1.25e-3f && g.input_std[0] == 2.0f);
        kn_graph_free(&g);
        free(bytes);
    }
    m->metadata_props = kept;
    m->n_metadata_props = n_kept;
    onnx__model_proto__free_unpacked(m, NULL);
}

/* ---- files ---- */

static int count_temporary_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void test_files(void) {
    kn_graph mlp, cnn;
    kn_graph_init(&cnn);
    kiln_status st = rt_spec_file("fmnist_mlp.txt", 1, &mlp);
    if (st == KILN_OK)
        st = rt_spec_file("fmnist_cnn.txt", 1, &cnn);
    CHECK_OK(st);
    if (st != KILN_OK) {
        kn_graph_free(&mlp);
        kn_graph_free(&cnn);
        return;
    }
    /* A second export replaces the first whole. */
    const char *path = EXPORT_DIR "/replaced.onnx";
    CHECK_OK(kn_onnx_export_file(&mlp, path));
    CHECK_OK(kn_onnx_export_file(&cnn, path));
    void *want = NULL;
    size_t want_size = 0, size = 0;
    CHECK_OK(kn_onnx_export_buffer(&cnn, &want, &want_size));
    unsigned char *bytes = read_file(path, &size);
    CHECK_MSG(bytes && size == want_size && memcmp(bytes, want, size) == 0, "the file is the second export");
    free(bytes);
    free(want);
    CHECK(count_temporary_files(EXPORT_DIR) == 0);

    /* A failed write leaves nothing behind and names the path. */
    st = kn_onnx_export_file(&mlp, EXPORT_DIR "/no/such/dir/model.onnx");
    CHECK_MSG(st == KILN_ERR_IO && strstr(kiln_last_error(), "no/such/dir/model.onnx"), "%s: %s",
              kiln_status_name(st), kiln_last_error());
    printf("  unwritable path -> %s\n", kiln_last_error());
    CHECK(count_temporary_files(EXPORT_DIR) == 0);
    kn_graph_free(&mlp);
    kn_graph_free(&cnn);
}

/* ---- onnx.checker ---- */

static void run_onnx_checker(void) {
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("  onnx.checker: skipped (no /usr/bin/python3)\n");
        return;
    }
    char command[8192];
    int len = snprintf(command, sizeof command, "/usr/bin/python3 %s/tests/ref/check_onnx_export.py",
                       KILN_SOURCE_DIR);
    for (int i = 0; i < n_exported; i++)
        len += snprintf(command + len, sizeof command - (size_t)len, " %s", exported[i]);
    fflush(stdout);
    int status = system(command);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 77) {
        printf("  onnx.checker: skipped (python3-onnx is not installed)\n");
        return;
    }
    CHECK_MSG(code == 0, "onnx.checker rejected an exported file (exit status %d)", code);
}

int main(void) {
    mkdir(EXPORT_DIR, 0755);
    printf("example specs:\n");
    test_spec("fmnist_mlp.txt", "mlp", 784);
    test_spec("fmnist_cnn.txt", "cnn", 1);
    test_spec("fmnist_vit.txt", "vit", 1);
    printf("input standardisation in the graph:\n");
    test_standardization("fmnist_mlp.txt", "mlp", 784);
    test_standardization("fmnist_cnn.txt", "cnn", 1);
    test_other_layers();
    printf("PyTorch exports:\n");
    test_torch_fixture("mlp");
    test_torch_fixture("cnn");
    test_torch_fixture("vit");
    printf("ops rewritten on export:\n");
    test_rewritten_ops();
    test_duplicate_names();
    printf("refusals:\n");
    test_refusals();
    test_metadata_reader();
    printf("files:\n");
    test_files();
    printf("onnx.checker:\n");
    run_onnx_checker();
    return check_finish();
}
