/* Compact storage through ONNX: affine weights export as QDQ (int8/uint8 initializers, scales, zero
 * points and a DequantizeLinear), f16 weights as an f16 initializer and a Cast, the other encodings as
 * their decoded f32; importing folds DequantizeLinear and Cast back into storage, so a quantized model
 * goes .kiln -> .onnx -> .kiln with the same values and stays compact. onnx.checker (python3-onnx) and
 * onnxruntime (bench/node_modules) check the exported files when they are installed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/graph.h"
#include "core/rng.h"
#include "format/kiln_file.h"
#include "format/onnx/onnx_export.h"
#include "format/onnx/onnx_import.h"
#include "format/storage.h"
#include "ops/op.h"

typedef struct weight_case {
    const char *name;
    kn_storage_spec spec;
    const char *imported;  /* kn_storage_describe of the storage after the round trip; NULL: plain f32 */
} weight_case;

/* One Gemm (x (4, 16) -> y (4, 8), weight (8, 16) transB, bias (8)) per case, chained by Add of their
 * outputs, so every weight is read. */
static const weight_case cases[] = {
    {"i8 channel", {.encoding = KN_ENC_AFFINE_I8, .axis = 0}, "affine i8 per-channel"},
    {"i8 tensor sym", {.encoding = KN_ENC_AFFINE_I8, .symmetric = true, .axis = -1}, "affine i8 per-tensor"},
    {"u8 tensor", {.encoding = KN_ENC_AFFINE_U8, .axis = -1}, "affine u8 per-tensor"},
    {"u8 channel 1", {.encoding = KN_ENC_AFFINE_U8, .axis = 1}, "affine u8 per-channel"},
    {"i4 channel sym", {.encoding = KN_ENC_AFFINE_I4, .symmetric = true, .axis = 0}, "affine i8 per-channel"},
    {"i2 tensor", {.encoding = KN_ENC_AFFINE_I2, .axis = -1}, "affine i8 per-tensor"},
    {"i1 tensor", {.encoding = KN_ENC_AFFINE_I1, .axis = -1}, "affine u8 per-tensor"},
    {"i8 one block a row", {.encoding = KN_ENC_AFFINE_I8, .axis = -1, .block = 16}, "affine i8 per-channel"},
    {"i4 blocks", {.encoding = KN_ENC_AFFINE_I4, .axis = -1, .block = 4}, NULL},
    {"f16", {.encoding = KN_ENC_F16}, "f16"},
    {"bf16", {.encoding = KN_ENC_BF16}, NULL},
    {"codebook", {.encoding = KN_ENC_CODEBOOK, .axis = -1, .bits = 4, .seed = 3}, NULL},
    {"sparse", {.encoding = KN_ENC_SPARSE_BITMASK, .values = KN_ENC_AFFINE_I8}, NULL},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static void build(kn_graph *g) {
    kn_graph_init(g);
    kn_shape xs = kn_shape_of(2, (int64_t[]){4, 16}), none = {0};
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &xs);
    g->inputs[g->n_inputs++] = x;
    kn_rng rng = kn_rng_seeded(21);
    int sum = -1;
    for (int c = 0; c < N_CASES; c++) {
        char name[64];
        snprintf(name, sizeof name, "w %s", cases[c].name);
        int w = test_add_value(g, name, KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {8, 16}});
        snprintf(name, sizeof name, "b %s", cases[c].name);
        int b = test_add_value(g, name, KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {8}});
        float *wd = g->values[w].data, *bd = g->values[b].data;
        for (int i = 0; i < 128; i++)
            wd[i] = kn_encoding_is_sparse(cases[c].spec.encoding) && i % 3 ? 0.0f : kn_rng_normal(&rng);
        for (int i = 0; i < 8; i++)
            bd[i] = kn_rng_normal(&rng);
        CHECK_MSG(kn_value_compress(g, w, &cases[c].spec) == KILN_OK, "%s: %s", cases[c].name, kiln_last_error());
        snprintf(name, sizeof name, "y %s", cases[c].name);
        int y = test_add_value(g, name, KN_VALUE_ACT, KN_F32, &none);
        int n = test_add_node(g, "Gemm", name, 3, (int[]){x, w, b}, 1, &y);
        kn_node_set_int(g, n, "transB", 1);
        if (sum >= 0) {
            snprintf(name, sizeof name, "sum %d", c);
            int s = test_add_value(g, name, KN_VALUE_ACT, KN_F32, &none);
            test_add_node(g, "Add", name, 2, (int[]){sum, y}, 1, &s);
            y = s;
        }
        sum = y;
    }
    g->outputs[g->n_outputs++] = sum;
    CHECK_OK(kn_graph_infer_shapes(g));
}

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op->name, op) == 0;
    return n;
}

/* Runs `command`; 0 when it succeeded, 77 when it reports a missing tool, else its status. */
static int run(const char *command) {
    int status = system(command);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(void) {
    kn_graph g, back;
    build(&g);
    void *onnx;
    size_t onnx_size;
    CHECK_OK(kn_onnx_export_buffer(&g, &onnx, &onnx_size));
    CHECK_OK(kn_onnx_import_buffer(onnx, onnx_size, NULL, &back));

    /* Every weight comes back with the same values, and the storage the exporter could express. */
    int wrong_data = 0, wrong_storage = 0;
    for (int c = 0; c < N_CASES; c++) {
        char name[64], got[64] = "plain f32";
        snprintf(name, sizeof name, "w %s", cases[c].name);
        const kn_value *a = &g.values[kn_graph_find_value(&g, name)];
        int id = kn_graph_find_value(&back, name);
        CHECK_MSG(id >= 0, "'%s' is missing after the round trip", name);
        if (id < 0)
            continue;
        const kn_value *b = &back.values[id];
        bool same = b->data && memcmp(a->data, b->data, 128 * sizeof(float)) == 0;
        if (b->storage)
            kn_storage_describe(b->storage, got, sizeof got);
        bool storage_ok = cases[c].imported ? b->storage && strcmp(got, cases[c].imported) == 0 : !b->storage;
        wrong_data += !same;
        wrong_storage += !storage_ok;
        printf("  %-20s exported and imported as %-22s values %s\n", cases[c].name, got,
               same ? "bit-identical" : "DIFFER");
    }
    CHECK_MSG(wrong_data == 0 && wrong_storage == 0, "%d weights changed, %d came back stored otherwise",
              wrong_data, wrong_storage);
    /* The ONNX graph's extra nodes and initializers are folded away again. */
    CHECK(back.n_nodes == g.n_nodes && back.n_values == g.n_values);
    CHECK(count_op(&back, "DequantizeLinear") == 0 && count_op(&back, "Cast") == 0);

    /* .kiln -> .onnx -> .kiln keeps the file compact. */
    void *kiln_a, *kiln_b;
    size_t size_a, size_b;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &kiln_a, &size_a));
    CHECK_OK(kn_kiln_save_buffer(&back, NULL, 0, &kiln_b, &size_b));
    printf("files: .kiln %zu bytes, its ONNX export %zu bytes, imported back to .kiln %zu bytes\n", size_a,
           onnx_size, size_b);
    CHECK(size_b <= size_a + size_a / 4);

    /* The exported file on disk for onnx.checker and onnxruntime. */
    char dir[] = "/tmp/kiln_qdq_test.XXXXXX", path[128], kiln_path[128], command[1024];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/qdq.onnx", dir);
    snprintf(kiln_path, sizeof kiln_path, "%s/qdq.kiln", dir);
    CHECK_OK(kn_onnx_export_file(&g, path));
    CHECK_OK(kn_kiln_save(kiln_path, &g, NULL, 0));
    snprintf(command, sizeof command, "/usr/bin/python3 %s/tests/ref/check_onnx_export.py %s", KILN_SOURCE_DIR, path);
    int checker = access("/usr/bin/python3", X_OK) == 0 ? run(command) : 77;
    CHECK_MSG(checker == 0 || checker == 77, "onnx.checker rejected the QDQ export (status %d)", checker);
    printf("onnx.checker: %s\n", checker == 77 ? "skipped (python3-onnx is not installed)" : "passed");

    snprintf(command, sizeof command, "[ -f %s/bench/node_modules/onnxruntime-node/package.json ] && command -v node "
             ">/dev/null", KILN_SOURCE_DIR);
    if (run(command) == 0) {
        snprintf(command, sizeof command, "driver=$(bash %s/bench/build_driver.sh %s) && "
                 "bash %s/bench/compare_one.sh \"$driver\" %s %s 1 %s && "
                 "bash %s/bench/compare_one.sh \"$driver\" %s %s 5 %s", KILN_SOURCE_DIR, KILN_BINARY_DIR,
                 KILN_SOURCE_DIR, kiln_path, path, dir, KILN_SOURCE_DIR, kiln_path, path, dir);
        CHECK_MSG(run(command) == 0, "kiln's .kiln model and onnxruntime on its QDQ export disagree");
    } else {
        printf("onnxruntime: skipped (no node or bench/node_modules/onnxruntime-node)\n");
    }
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
    free(onnx);
    free(kiln_a);
    free(kiln_b);
    kn_graph_free(&back);
    kn_graph_free(&g);
    return check_finish();
}
