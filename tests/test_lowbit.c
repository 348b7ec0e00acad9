/* 4-bit and 2-bit weights used in place (kernels/lowbit.h, ops/lowbit_gemm.c, KN_KILN_LOAD_PACKED):
 *  - kernels: every build this CPU has (generic, AVX2) against the product in double over the weight
 *    kn_storage_decode writes, on shapes with tails, both layouts, every granularity, 1, 2 and 5 rows;
 *  - the sliver layout (4-bit, a scale per column of W, per tensor or per block down the columns): bit
 *    for bit kn_sgemm over the decoded weight for more than two rows of A, within the bound for one or
 *    two;
 *  - the user's path: a model saved with 4-bit (and 2-bit) weights, loaded with kiln_model_load_file
 *    (or kiln_model_load_memory), gives the outputs of the same model saved with those weights decoded
 *    to f32, holds no f32 copy of them (the graph as loaded has none, and kiln_session_memory reports
 *    the packed bytes), and a session of the graph as loaded decodes for itself;
 *  - a 4-bit conv (which no LowbitGemm takes) folds its BatchNormalization and gives the f32 model's
 *    bits.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "support/graph_ids.h"
#include "core/cpu.h"
#include "core/rng.h"
#include "core/threads.h"
#include "format/kiln_file.h"
#include "format/storage.h"
#include "kernels/gemm.h"
#include "kernels/lowbit.h"
#include "kiln/kiln.h"
#include "runtime/runtime.h"

static void fill_uniform(float *x, int64_t n, kn_rng *rng) {
    for (int64_t i = 0; i < n; i++)
        x[i] = 2.0f * kn_rng_uniform(rng) - 1.0f;
}

typedef struct granularity {
    const char *name;
    bool symmetric;
    int axis; /* of the stored matrix */
    int64_t block;
} granularity;

static const granularity granularities[] = {
    {"tensor", false, -1, 0}, {"tensor sym", true, -1, 0}, {"rows", false, 0, 0},    {"rows sym", true, 0, 0},
    {"columns", false, 1, 0}, {"block 32", false, -1, 32}, {"block 64 sym", true, -1, 64}, {"block 5", false, -1, 5},
};

/* The kernels' product against double over the decoded weight, for one shape and granularity. The
 * bound: the vector builds' terms are x (u - sign - zero point) with |u| + sign + |zero point| <= 3 *
 * 2^(bits - 1), each run summed in float, so K * eps * that * sum |x| * scale, with room to spare. */
static void check_product(const kn_lowbit_kernels *k, int bits, bool transposed, int64_t K, int64_t N, int64_t M,
                          const granularity *gr, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    int64_t rows = transposed ? N : K, cols = transposed ? K : N;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols)), *wd = malloc(sizeof(float) * (size_t)(rows * cols));
    float *a = malloc(sizeof(float) * (size_t)(M * K)), *bias = malloc(sizeof(float) * (size_t)N);
    float *y = malloc(sizeof(float) * (size_t)(M * N));
    fill_uniform(w, rows * cols, &rng);
    fill_uniform(a, M * K, &rng);
    fill_uniform(bias, N, &rng);
    kn_arena arena = {0};
    kn_storage *st = NULL;
    kn_shape shape = kn_shape_of(2, (int64_t[]){rows, cols});
    kn_storage_spec spec = {.encoding = bits == 4 ? KN_ENC_AFFINE_I4 : KN_ENC_AFFINE_I2, .symmetric = gr->symmetric,
                            .axis = gr->axis, .block = gr->block};
    CHECK_OK(kn_storage_encode(&arena, w, &shape, &spec, &st));
    if (!st)
        goto done;
    kn_storage_decode(st, wd);
    kn_lowbit_matrix m = {.codes = st->payload, .scale = st->scale, .zero_point = st->zero_point, .bits = bits,
                          .rows = rows, .cols = cols, .transposed = transposed, .axis = st->axis, .block = st->block};
    float s_max = 0.0f;
    for (int64_t g = 0; g < kn_storage_group_count(st); g++)
        s_max = fmaxf(s_max, st->scale[g]);
    size_t ws_bytes = kn_lowbit_workspace(&m, M);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64 + 64);
    const float *bias_used = seed % 2 ? bias : NULL; /* with and without a bias */
    kn_lowbit_matmul(k, &m, M, a, bias_used, y, ws);
    int bad = 0;
    double worst = 0.0;
    for (int64_t r = 0; r < M; r++) {
        double abs_x = 0.0;
        for (int64_t c = 0; c < K; c++)
            abs_x += fabs(a[r * K + c]);
        double tol = 4.0 * (double)K * FLT_EPSILON * 3.0 * (1 << (bits - 1)) * abs_x * s_max + 1e-6;
        for (int64_t j = 0; j < N; j++) {
            double want = bias_used ? bias[j] : 0.0;
            for (int64_t c = 0; c < K; c++)
                want += (double)a[r * K + c] * wd[transposed ? j * K + c : c * N + j];
            double err = fabs(y[r * N + j] - want);
            worst = fmax(worst, err / tol);
            bad += !(err <= tol);
        }
    }
    CHECK_MSG(bad == 0, "%s i%d %s K %lld N %lld M %lld %s: %d outputs off, worst %.3g of the bound", k->name, bits,
              transposed ? "(N, K)" : "(K, N)", (long long)K, (long long)N, (long long)M, gr->name, bad, worst);
    free(ws);
done:
    kn_arena_free(&arena);
    free(w);
    free(wd);
    free(a);
    free(bias);
    free(y);
}

static void test_kernels(void) {
    const kn_lowbit_kernels *builds[2] = {&kn_lowbit_generic, NULL};
    int n_builds = 1;
    if (kn_lowbit_best() != &kn_lowbit_generic)
        builds[n_builds++] = kn_lowbit_best();
    static const int64_t shapes[][2] = {{64, 96}, {37, 50}, {100, 33}, {256, 64}, {1, 7}, {31, 1}, {48, 40}};
    static const int64_t row_counts[] = {1, 2, 5};
    uint64_t seed = 1;
    for (int b = 0; b < n_builds; b++)
        for (int bits = 2; bits <= 4; bits += 2)
            for (int t = 0; t < 2; t++)
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                    for (size_t gi = 0; gi < sizeof granularities / sizeof granularities[0]; gi++)
                        for (size_t m = 0; m < sizeof row_counts / sizeof row_counts[0]; m++)
                            check_product(builds[b], bits, t == 1, shapes[s][0], shapes[s][1], row_counts[m],
                                          &granularities[gi], seed++);
    /* Large enough for the parallel loops (K N >= KN_PARALLEL_MIN_GEMM), on 2 threads: each thread its
     * own rows, columns and sweep buffers. */
    kn_threads_set(2);
    for (int b = 0; b < n_builds; b++)
        for (int t = 0; t < 2; t++)
            for (size_t gi = 0; gi < sizeof granularities / sizeof granularities[0]; gi += 5)
                check_product(builds[b], 4, t == 1, 1000, 300, 1, &granularities[gi], seed++);
    kn_threads_set(1);
    printf("kernels: %s%s%s\n", builds[0]->name, n_builds > 1 ? " and " : "", n_builds > 1 ? builds[1]->name : "");
}

/* The sliver layout (kn_lowbit_slivers_write, kn_lowbit_matmul_slivers), for W = S (K, N) with a scale
 * per column or per tensor, and W = S^T with a scale per row of S:
 *  - more than two rows of A: the product is bit for bit kn_sgemm's over the weight kn_storage_decode
 *    writes, with S^T for a Gemm's S = (N, K) (the decoded slivers are its floats, and the micro-kernel
 *    or, for few rows or columns, the dot kernel sees the same operands), with every sliver build,
 *    ragged edges and threads included;
 *  - one or two rows: within the bound of check_product (fields of 0..15 against x, the zero points
 *    taken off once per column). */
static void check_slivers(const kn_lowbit_sliver_kernels *k, bool transposed, int64_t K, int64_t N, int64_t M,
                          bool symmetric, bool per_tensor, int64_t block, uint64_t seed) {
    kn_rng rng = kn_rng_seeded(seed);
    int64_t rows = transposed ? N : K, cols = transposed ? K : N;
    float *w = malloc(sizeof(float) * (size_t)(K * N)), *wd = malloc(sizeof(float) * (size_t)(K * N));
    float *wkn = malloc(sizeof(float) * (size_t)(K * N)), *a = malloc(sizeof(float) * (size_t)(M * K));
    float *bias = malloc(sizeof(float) * (size_t)N), *y = malloc(sizeof(float) * (size_t)(M * N));
    float *want = malloc(sizeof(float) * (size_t)(M * N));
    fill_uniform(w, K * N, &rng);
    fill_uniform(a, M * K, &rng);
    fill_uniform(bias, N, &rng);
    kn_arena arena = {0};
    kn_storage *st = NULL;
    kn_shape shape = kn_shape_of(2, (int64_t[]){rows, cols});
    kn_storage_spec spec = {.encoding = KN_ENC_AFFINE_I4, .symmetric = symmetric,
                            .axis = per_tensor || block ? -1 : transposed ? 0 : 1, .block = block};
    CHECK_OK(kn_storage_encode(&arena, w, &shape, &spec, &st));
    uint8_t *codes = malloc(kn_lowbit_sliver_bytes(K, N));
    if (!st || !codes)
        goto done;
    kn_storage_decode(st, wd);
    for (int64_t kk = 0; kk < K; kk++) // W (K, N)
        for (int64_t n = 0; n < N; n++)
            wkn[kk * N + n] = transposed ? wd[n * K + kk] : wd[kk * N + n];
    kn_lowbit_matrix in_place = {.codes = st->payload, .scale = st->scale, .zero_point = st->zero_point, .bits = 4,
                                 .rows = rows, .cols = cols, .transposed = transposed, .axis = st->axis,
                                 .block = st->block};
    kn_lowbit_slivers_write(&in_place, codes);
    kn_lowbit_matrix m = {.codes = codes, .scale = st->scale, .zero_point = st->zero_point, .bits = 4, .rows = K,
                          .cols = N, .axis = per_tensor || block ? -1 : 1, .block = st->block, .slivers = true,
                          .from_rows = transposed};
    int64_t groups = kn_storage_group_count(st);
    float *block_scale = malloc(sizeof(float) * (size_t)groups);
    int8_t *block_zero_point = malloc((size_t)groups);
    if (block) { /* (blocks, N) from the storage's (N, blocks) */
        kn_lowbit_slivers_write_groups(&in_place, block_scale, st->zero_point ? block_zero_point : NULL);
        m.scale = block_scale;
        m.zero_point = st->zero_point ? block_zero_point : NULL;
    }
    void *ws = aligned_alloc(64, (kn_lowbit_workspace(&m, M) + 63) / 64 * 64 + 64);
    const float *bias_used = seed % 2 ? bias : NULL;
    kn_lowbit_matmul_slivers(k, &m, M, a, bias_used, y, ws);
    for (int64_t r = 0; r < M; r++)
        for (int64_t n = 0; n < N; n++)
            want[r * N + n] = bias_used ? bias[n] : 0.0f;
    const char *what = transposed ? "S^T" : "S";
    if (M > 2) { /* the f32 Gemm (transB) or MatMul over the decoded weight, dot products or tiles alike */
        if (transposed)
            kn_sgemm(false, true, M, N, K, 1.0f, a, K, wd, K, bias_used ? 1.0f : 0.0f, want, N);
        else
            kn_sgemm(false, false, M, N, K, 1.0f, a, K, wkn, N, bias_used ? 1.0f : 0.0f, want, N);
        CHECK_MSG(memcmp(y, want, sizeof(float) * (size_t)(M * N)) == 0,
                  "slivers %s W = %s K %lld N %lld M %lld block %lld: not kn_sgemm's bits over the decoded weight",
                  k->name, what, (long long)K, (long long)N, (long long)M, (long long)block);
    } else {
        float s_max = 0.0f;
        for (int64_t g = 0; g < kn_storage_group_count(st); g++)
            s_max = fmaxf(s_max, st->scale[g]);
        int bad = 0;
        for (int64_t r = 0; r < M; r++) {
            double abs_x = 0.0;
            for (int64_t c = 0; c < K; c++)
                abs_x += fabs(a[r * K + c]);
            double tol = 4.0 * (double)K * FLT_EPSILON * 31.0 * abs_x * s_max + 1e-6;
            for (int64_t n = 0; n < N; n++) {
                double sum = want[r * N + n];
                for (int64_t c = 0; c < K; c++)
                    sum += (double)a[r * K + c] * wkn[c * N + n];
                bad += !(fabs(y[r * N + n] - sum) <= tol);
            }
        }
        CHECK_MSG(bad == 0, "slivers %s W = %s K %lld N %lld M %lld block %lld: %d outputs off", k->name, what,
                  (long long)K, (long long)N, (long long)M, (long long)block, bad);
    }
    free(ws);
    free(block_scale);
    free(block_zero_point);
done:
    free(codes);
    kn_arena_free(&arena);
    free(w);
    free(wd);
    free(wkn);
    free(a);
    free(bias);
    free(y);
    free(want);
}

static void test_slivers(void) {
    const kn_lowbit_sliver_kernels *builds[2] = {&kn_lowbit_slivers_generic, NULL};
    int n_builds = 1;
    if (kn_lowbit_slivers_best() != &kn_lowbit_slivers_generic)
        builds[n_builds++] = kn_lowbit_slivers_best();
    /* the GEMM's bits need its 32-column tiles; other CPUs never write the layout */
    bool gemm_fits = kn_lowbit_slivers_best() != &kn_lowbit_slivers_generic;
    static const int64_t shapes[][2] = {{64, 96}, {37, 50}, {300, 33}, {5, 1}, {1, 40}};
    static const int64_t row_counts[] = {1, 2, 5, 32};
    uint64_t seed = 100;
    for (int b = 0; b < n_builds; b++)
        for (int t = 0; t < 2; t++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (size_t r = 0; r < sizeof row_counts / sizeof row_counts[0]; r++)
                    for (int g = 0; g < 5; g++) /* per column, symmetric, per tensor, blocks of 32 and 5 */
                        if ((row_counts[r] <= 2 || gemm_fits) && (g < 3 || t == 1))
                            check_slivers(builds[b], t == 1, shapes[s][0], shapes[s][1], row_counts[r], g == 1, g == 2,
                                          g == 3 ? 32 : g == 4 ? 5 : 0, seed++);
    /* on 2 threads, each its own slivers and buffers */
    kn_threads_set(2);
    for (int b = 0; b < n_builds; b++)
        for (int i = 0; i < 4; i++) { /* GEMV, dot products, tiles, two blocks of rows (mc = 168) */
            int64_t M = (int64_t[]){1, 8, 40, 200}[i];
            if (M <= 2 || gemm_fits)
                check_slivers(builds[b], true, 784, 256, M, false, false, M == 1 ? 0 : 32, seed++);
        }
    kn_threads_set(1);
    printf("slivers: %s%s%s\n", builds[0]->name, n_builds > 1 ? " and " : "", n_builds > 1 ? builds[1]->name : "");
}

/* The level order the vector builds read: a permutation of each chunk, the same for x and the codes. */
static void test_order(void) {
    for (int bits = 2; bits <= 4; bits += 2) {
        int seen[KN_LOWBIT_CHUNK] = {0};
        for (int p = 0; p < KN_LOWBIT_CHUNK; p++)
            seen[kn_lowbit_order(bits, p)]++;
        int ok = 1;
        for (int c = 0; c < KN_LOWBIT_CHUNK; c++)
            ok &= seen[c] == 1;
        CHECK_MSG(ok, "kn_lowbit_order(%d, .) is not a permutation", bits);
    }
    CHECK(kn_lowbit_order(4, 1) == 2 && kn_lowbit_order(4, 8) == 1 && kn_lowbit_order(4, 16) == 16);
    CHECK(kn_lowbit_order(2, 1) == 4 && kn_lowbit_order(2, 8) == 1 && kn_lowbit_order(2, 9) == 5);
}

/* ---- through the public C API ---- */

enum { IN = 200, HIDDEN = 96, OUT = 10 };

/* x (B, IN) -> Gemm(w1 (HIDDEN, IN), transB) + Relu -> MatMul(w2 (HIDDEN, OUT)) + b2: both layouts. With
 * `spec`, the two weights are stored as it says; `decoded`: their data is what the storage decodes to,
 * kept as plain f32 (the reference model). */
static void build_mlp(kn_graph *g, const kn_storage_spec *spec, bool decoded) {
    kn_graph_init(g);
    kn_shape none = {0};
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &(kn_shape){2, {-1, IN}});
    int w1 = test_add_value(g, "w1", KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {HIDDEN, IN}});
    int b1 = test_add_value(g, "b1", KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {HIDDEN}});
    int w2 = test_add_value(g, "w2", KN_VALUE_PARAM, KN_F32, &(kn_shape){2, {HIDDEN, OUT}});
    int b2 = test_add_value(g, "b2", KN_VALUE_PARAM, KN_F32, &(kn_shape){1, {OUT}});
    int h = test_add_value(g, "h", KN_VALUE_ACT, KN_F32, &none);
    int r = test_add_value(g, "r", KN_VALUE_ACT, KN_F32, &none);
    int p = test_add_value(g, "p", KN_VALUE_ACT, KN_F32, &none);
    int y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &none);
    int n = test_add_node(g, "Gemm", "fc1", 3, (int[]){x, w1, b1}, 1, &h);
    kn_node_set_int(g, n, "transB", 1);
    test_add_node(g, "Relu", "relu", 1, &h, 1, &r);
    test_add_node(g, "MatMul", "fc2", 2, (int[]){r, w2}, 1, &p);
    test_add_node(g, "Add", "fc2_bias", 2, (int[]){p, b2}, 1, &y);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = y;
    kn_rng rng = kn_rng_seeded(5);
    int params[] = {w1, b1, w2, b2};
    for (int i = 0; i < 4; i++)
        fill_uniform(g->values[params[i]].data, kn_shape_numel(&g->values[params[i]].shape), &rng);
    for (int i = 0; i < 2; i++) {
        int v = i ? w2 : w1;
        CHECK_OK(kn_value_compress(g, v, spec));
        if (decoded)
            kn_value_drop_storage(&g->values[v]);
    }
}

static char test_dir[] = "/tmp/kiln_lowbit_test.XXXXXX";

/* Saves g and loads it back with kiln_model_load_file, or from memory (kiln_model_load_memory, which
 * keeps packed weights packed too). */
static kiln_model *save_and_load(const kn_graph *g, const char *name, bool from_memory) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.kiln", test_dir, name);
    CHECK_OK(kn_kiln_save(path, g, NULL, 0));
    kiln_model *model = NULL;
    if (!from_memory) {
        CHECK_OK(kiln_model_load_file(path, &model));
        return model;
    }
    void *buf = NULL;
    size_t size = 0;
    CHECK_OK(kn_kiln_save_buffer(g, NULL, 0, &buf, &size));
    CHECK_OK(kiln_model_load_memory(buf, size, &model));
    free(buf); /* the model holds copies */
    return model;
}

/* Runs `batch` rows of a fixed input; out gets (batch, OUT); *weights the session's weight bytes. */
static void run(kiln_model *model, bool optimize, int64_t batch, float *out, size_t *weights) {
    kiln_session_options *o = kiln_session_options_create();
    kiln_session *s = NULL;
    CHECK_OK(kiln_session_options_set_optimize(o, optimize));
    CHECK_OK(kiln_session_options_set_threads(o, 1));
    CHECK_OK(kiln_session_create(model, o, &s));
    kiln_session_options_free(o);
    if (!s)
        return;
    int64_t dims[2] = {batch, IN};
    CHECK_OK(kiln_session_resize_input(s, 0, 2, dims));
    float x[4 * IN];
    kn_rng rng = kn_rng_seeded(9);
    fill_uniform(x, batch * IN, &rng);
    CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof(float) * (size_t)(batch * IN)));
    CHECK_OK(kiln_session_run(s));
    const void *y = NULL;
    size_t bytes = 0;
    CHECK_OK(kiln_session_output(s, 0, &y, &bytes));
    if (y && bytes == sizeof(float) * (size_t)(batch * OUT))
        memcpy(out, y, bytes);
    kiln_memory_info info = {0};
    CHECK_OK(kiln_session_memory(s, &info));
    *weights = info.weight_bytes;
    kiln_session_free(s);
}

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op->name, op) == 0;
    return n;
}

static void test_model(const char *name, const kn_storage_spec *spec, double max_ratio, bool from_memory) {
    kn_graph packed_g, f32_g;
    build_mlp(&packed_g, spec, false);
    build_mlp(&f32_g, spec, true);
    kiln_model *packed = save_and_load(&packed_g, name, from_memory), *f32 = save_and_load(&f32_g, "f32", false);
    kn_graph_free(&packed_g);
    kn_graph_free(&f32_g);
    if (!packed || !f32) {
        kiln_model_free(packed);
        kiln_model_free(f32);
        return;
    }
    const kn_graph *source = kn_model_graph(packed, false), *opt = kn_model_graph(packed, true);
    int undecoded = 0;
    for (int v = 0; v < source->n_values; v++)
        undecoded += source->values[v].storage && !source->values[v].data;
    CHECK_MSG(undecoded == 2, "%s: %d weights kept packed by the model, want 2", name, undecoded);
    CHECK_MSG(count_op(opt, "LowbitGemm") == 2, "%s: %d LowbitGemm nodes, want 2", name, count_op(opt, "LowbitGemm"));
    /* one of the two layers has a scale per column of W (fc1's per row of S with axis 0, fc2's with axis 1)
     * or per block down its columns (fc1's, S = (N, K)): where the sliver kernels are fast, the optimizer
     * writes that one in their layout */
    int sliver_layers = 0, want_slivers = kn_lowbit_slivers_best() != &kn_lowbit_slivers_generic &&
                                          spec->encoding == KN_ENC_AFFINE_I4 && (spec->axis >= 0 || spec->block > 0);
    for (int i = 0; i < opt->n_nodes; i++)
        sliver_layers += kn_node_int(&opt->nodes[i], "kn_slivers", 0) != 0;
    CHECK_MSG(sliver_layers == want_slivers, "%s: %d layers in the sliver layout, want %d", name, sliver_layers,
              want_slivers);
    for (int64_t batch = 1; batch <= 4; batch += 3) {
        float want[4 * OUT] = {0}, got[4 * OUT] = {0}, saved[4 * OUT] = {0};
        size_t f32_bytes = 0, packed_bytes = 0, saved_bytes = 0;
        run(f32, true, batch, want, &f32_bytes);
        run(packed, true, batch, got, &packed_bytes);
        run(packed, false, batch, saved, &saved_bytes);
        double worst = 0.0, worst_saved = 0.0;
        for (int i = 0; i < batch * OUT; i++) {
            worst = fmax(worst, fabs(got[i] - want[i]) / (1.0 + fabs(want[i])));
            worst_saved = fmax(worst_saved, fabs(saved[i] - want[i]) / (1.0 + fabs(want[i])));
        }
        /* 200 and 96 terms of magnitude about 1: float rounding is a few 1e-6 */
        CHECK_MSG(worst < 1e-4, "%s batch %lld: packed and f32 models differ by %g", name, (long long)batch, worst);
        CHECK_MSG(worst_saved < 1e-4, "%s batch %lld: the graph as loaded differs by %g", name, (long long)batch,
                  worst_saved);
        double ratio = (double)packed_bytes / (double)f32_bytes;
        CHECK_MSG(ratio < max_ratio, "%s: weights take %zu bytes against %zu in f32 (%.3f, want < %.3f)", name,
                  packed_bytes, f32_bytes, ratio, max_ratio);
        if (batch == 1)
            printf("%s: session weights %zu bytes, f32 %zu (%.3f); the graph as loaded decodes: %zu\n", name,
                   packed_bytes, f32_bytes, ratio, saved_bytes);
    }
    kiln_model_free(packed);
    kiln_model_free(f32);
}

/* x (B, 2, 8, 8) -> Conv(w (8, 2, 3, 3), 4 bits per channel, pads 1) -> BatchNormalization -> y: the conv's
 * weight, which no LowbitGemm takes, is decoded before the optimizer's passes, so the BatchNormalization
 * folds into it as in the f32 model (and the conv goes Winograd), and the outputs are the f32 model's. */
static void build_conv_bn(kn_graph *g, bool decoded) {
    kn_graph_init(g);
    kn_shape none = {0}, channels = {1, {8}};
    int x = test_add_value(g, "x", KN_VALUE_INPUT, KN_F32, &(kn_shape){4, {-1, 2, 8, 8}});
    int w = test_add_value(g, "w", KN_VALUE_PARAM, KN_F32, &(kn_shape){4, {8, 2, 3, 3}});
    int bn[4];
    for (int i = 0; i < 4; i++)
        bn[i] = test_add_value(g, (const char *[]){"gamma", "beta", "mean", "var"}[i],
                               i < 2 ? KN_VALUE_PARAM : KN_VALUE_STATE, KN_F32, &channels);
    int h = test_add_value(g, "h", KN_VALUE_ACT, KN_F32, &none), y = test_add_value(g, "y", KN_VALUE_ACT, KN_F32, &none);
    int conv = test_add_node(g, "Conv", "conv", 2, (int[]){x, w}, 1, &h);
    kn_node_set_ints(g, conv, "pads", 4, (int64_t[]){1, 1, 1, 1});
    test_add_node(g, "BatchNormalization", "bn", 5, (int[]){h, bn[0], bn[1], bn[2], bn[3]}, 1, &y);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = y;
    kn_rng rng = kn_rng_seeded(11);
    fill_uniform(g->values[w].data, 8 * 2 * 3 * 3, &rng);
    for (int i = 0; i < 4; i++) {
        float *v = g->values[bn[i]].data;
        fill_uniform(v, 8, &rng);
        for (int c = 0; c < 8 && i == 3; c++)
            v[c] = 0.5f + fabsf(v[c]); /* a variance */
    }
    CHECK_OK(kn_value_compress(g, w, &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I4, .axis = 0}));
    if (decoded)
        kn_value_drop_storage(&g->values[w]);
}

static void test_conv_batchnorm(void) {
    kn_graph packed_g, f32_g;
    build_conv_bn(&packed_g, false);
    build_conv_bn(&f32_g, true);
    kiln_model *packed = save_and_load(&packed_g, "conv_bn", false), *f32 = save_and_load(&f32_g, "conv_f32", false);
    kn_graph_free(&packed_g);
    kn_graph_free(&f32_g);
    if (!packed || !f32) {
        kiln_model_free(packed);
        kiln_model_free(f32);
        return;
    }
    const kn_graph *opt = kn_model_graph(packed, true), *opt_f32 = kn_model_graph(f32, true);
    CHECK_MSG(count_op(opt, "BatchNormalization") == 0 && count_op(opt_f32, "BatchNormalization") == 0,
              "a 4-bit conv keeps %d BatchNormalization nodes, the f32 one %d", count_op(opt, "BatchNormalization"),
              count_op(opt_f32, "BatchNormalization"));
    CHECK_MSG(opt->n_nodes == opt_f32->n_nodes && strcmp(opt->nodes[0].op->name, opt_f32->nodes[0].op->name) == 0,
              "the 4-bit conv became %s (%d nodes), the f32 one %s (%d)", opt->nodes[0].op->name, opt->n_nodes,
              opt_f32->nodes[0].op->name, opt_f32->n_nodes);
    float want[2 * 8 * 64], got[2 * 8 * 64], x[2 * 2 * 64];
    kn_rng rng = kn_rng_seeded(3);
    fill_uniform(x, 2 * 2 * 64, &rng);
    kiln_model *models[2] = {f32, packed};
    float *outs[2] = {want, got};
    for (int i = 0; i < 2; i++) {
        kiln_session *s = NULL;
        CHECK_OK(kiln_session_create(models[i], NULL, &s));
        if (!s)
            continue;
        CHECK_OK(kiln_session_resize_input(s, 0, 4, (int64_t[]){2, 2, 8, 8}));
        CHECK_OK(kiln_session_set_input(s, 0, KILN_DTYPE_F32, x, sizeof x));
        CHECK_OK(kiln_session_run(s));
        const void *y = NULL;
        size_t bytes = 0;
        CHECK_OK(kiln_session_output(s, 0, &y, &bytes));
        if (y && bytes == sizeof want)
            memcpy(outs[i], y, bytes);
        kiln_session_free(s);
    }
    CHECK_MSG(memcmp(want, got, sizeof want) == 0, "the 4-bit conv's outputs are not the f32 model's");
    kiln_model_free(packed);
    kiln_model_free(f32);
}

/* A file can name LowbitGemm itself: shape inference checks the counts against the attributes (a short
 * codes tensor, a scale per group, the bits) before forward trusts them. */
static void test_hostile_node(void) {
    static const struct {
        int64_t code_bytes, scales, bits, axis;
        kiln_status want;
    } cases[] = {
        {48, 8, 4, 0, KILN_OK},           /* 8 x 12 codes of 4 bits, a scale per row */
        {47, 8, 4, 0, KILN_ERR_INVALID_ARG}, /* one byte short */
        {48, 7, 4, 0, KILN_ERR_INVALID_ARG}, /* a scale short */
        {48, 8, 3, 0, KILN_ERR_INVALID_ARG}, /* 3 bits */
        {48, 8, 4, 2, KILN_ERR_INVALID_ARG}, /* axis 2 of a matrix */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kn_graph g;
        kn_graph_init(&g);
        kn_shape none = {0};
        int x = test_add_value(&g, "x", KN_VALUE_INPUT, KN_F32, &(kn_shape){2, {1, 12}});
        int codes = test_add_value(&g, "codes", KN_VALUE_CONST, KN_U8, &(kn_shape){1, {cases[c].code_bytes}});
        int scale = test_add_value(&g, "scale", KN_VALUE_CONST, KN_F32, &(kn_shape){1, {cases[c].scales}});
        int y = test_add_value(&g, "y", KN_VALUE_ACT, KN_F32, &none);
        int n = test_add_node(&g, "LowbitGemm", "lowbit", 3, (int[]){x, codes, scale}, 1, &y);
        kn_node_set_int(&g, n, "kn_bits", cases[c].bits);
        kn_node_set_int(&g, n, "kn_rows", 8);
        kn_node_set_int(&g, n, "kn_cols", 12);
        kn_node_set_int(&g, n, "kn_transposed", 1);
        kn_node_set_int(&g, n, "kn_axis", cases[c].axis);
        g.inputs[g.n_inputs++] = x;
        g.outputs[g.n_outputs++] = y;
        kiln_status st = kn_graph_infer_shapes(&g);
        CHECK_MSG(st == cases[c].want, "case %zu: status %d, want %d (%s)", c, (int)st, (int)cases[c].want,
                  kiln_last_error());
        if (st == KILN_OK)
            CHECK(g.values[y].shape.ndim == 2 && g.values[y].shape.d[1] == 8);
        kn_graph_free(&g);
    }
}

int main(void) {
    test_hostile_node();
    test_order();
    test_kernels();
    test_slivers();
    if (!mkdtemp(test_dir)) {
        perror("mkdtemp");
        return 1;
    }
    /* f32: (200 * 96 + 96 * 10) * 4 bytes of weights + 106 * 4 of biases; 4 bits take an eighth, plus
     * scales */
    test_conv_batchnorm();
    test_model("i4 channel", &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I4, .symmetric = true, .axis = 0}, 0.16,
               false);
    test_model("i4 block 32", &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I4, .axis = -1, .block = 32}, 0.2, false);
    test_model("i2 tensor", &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I2, .axis = -1}, 0.1, false);
    test_model("i4 channel from memory", &(kn_storage_spec){.encoding = KN_ENC_AFFINE_I4, .axis = 1}, 0.16, true);
    char cmd[sizeof test_dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", test_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", test_dir);
    return check_finish();
}
