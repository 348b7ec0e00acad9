/* Post-training quantization against the NumPy reference of tests/ref/make_quant_fixtures.py: every
 * bit width, granularity, symmetric and asymmetric, min-max and MSE clipping, binary and log2 levels,
 * f16 and bf16, on a tensor with an all-zero channel, a constant channel, exact ties and an outlier;
 * non-finite weights refused; each calibration method's range on fixed histograms; and kiln_quantize
 * through the public API on a briefly trained MLP (accuracy kept, file ~4x smaller). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "support/graph_ids.h"
#include "compress/calibrate.h"
#include "compress/quantize.h"
#include "kiln/compress.h"
#include "ops/op.h"
#include "support/fixture.h"
#include "train/api.h"

/* A graph holding one weight value with the fixture's data. */
static int graph_with(kn_graph *g, const fixture_tensor *t) {
    kn_graph_init(g);
    int id = test_add_value(g, "w", KN_VALUE_PARAM, KN_F32, &t->shape);
    memcpy(g->values[id].data, t->data, sizeof(float) * (size_t)kn_shape_numel(&t->shape));
    return id;
}

/* Quantizes the fixture tensor `input` as q and compares with the reference `expected`, bit for bit. */
static void check_weight_case(const fixture *f, const char *input, const char *expected, const kn_weight_quant *q) {
    const fixture_tensor *x = fixture_find(f, input), *want = fixture_find(f, expected);
    CHECK_MSG(x && want, "fixture %s or %s missing", input, expected);
    if (!x || !want)
        return;
    kn_graph g;
    int id = graph_with(&g, x);
    kn_quant_stat stat;
    kiln_status st = kn_quant_weight(&g, id, q, &stat);
    CHECK_MSG(st == KILN_OK, "%s: %s", expected, kiln_last_error());
    int64_t n = kn_shape_numel(&x->shape), wrong = 0, first = -1;
    const float *got = g.values[id].data;
    for (int64_t i = 0; i < n && st == KILN_OK; i++)
        if (memcmp(&got[i], &want->data[i], sizeof(float)) != 0 && !(got[i] == 0 && want->data[i] == 0)) {
            wrong++;
            first = first < 0 ? i : first;
        }
    CHECK_MSG(st == KILN_OK && wrong == 0 && g.values[id].storage, "%s: %lld of %lld differ (first %lld: %.9g vs %.9g)",
              expected, (long long)wrong, (long long)n, (long long)first, first >= 0 ? got[first] : 0.0,
              first >= 0 ? want->data[first] : 0.0);
    kn_graph_free(&g);
}

static void check_weights(const fixture *f) {
    static const int bits[] = {8, 4, 2};
    static const char *grans[] = {"tensor", "channel", "block:4"};
    int cases = 0;
    for (int b = 0; b < 3; b++)
        for (int gi = 0; gi < 3; gi++)
            for (int sym = 1; sym >= 0; sym--)
                for (int mse = 0; mse <= 1; mse++) {
                    char name[96];
                    snprintf(name, sizeof name, "w/%d/%s/%s/%s", bits[b], grans[gi], sym ? "sym" : "asym",
                             mse ? "mse" : "minmax");
                    kn_weight_quant q = {.bits = bits[b], .symmetric = sym, .axis = gi == 1 ? 0 : -1,
                                         .block = gi == 2 ? 4 : 0, .mse_clip = mse};
                    check_weight_case(f, "w", name, &q);
                    cases++;
                }
    for (int gi = 0; gi < 2; gi++) {
        char name[64];
        snprintf(name, sizeof name, "w/1/%s/binary", grans[gi]);
        check_weight_case(f, "w", name, &(kn_weight_quant){.bits = 1, .axis = gi ? 0 : -1});
        snprintf(name, sizeof name, "w/4/%s/log2", grans[gi]);
        check_weight_case(f, "w", name, &(kn_weight_quant){.bits = 4, .axis = gi ? 0 : -1, .log2 = true});
        cases += 2;
    }
    check_weight_case(f, "w", "w/16/f16", &(kn_weight_quant){.bits = 16, .axis = -1});
    check_weight_case(f, "w", "w/16/bf16", &(kn_weight_quant){.bits = 16, .bf16 = true, .axis = -1});
    check_weight_case(f, "k", "k/4/channel/sym/mse",
                      &(kn_weight_quant){.bits = 4, .symmetric = true, .axis = 0, .mse_clip = true});
    check_weight_case(f, "k", "k/8/channel/asym/minmax", &(kn_weight_quant){.bits = 8, .axis = 0});
    printf("weights: %d cases against NumPy\n", cases + 4);
}

static void check_non_finite_refused(void) {
    const float bad[] = {INFINITY, -INFINITY, NAN};
    for (int k = 0; k < 3; k++) {
        kn_graph g;
        fixture_tensor t = {.shape = {2, {2, 2}}, .data = (float[]){0.5f, -1.0f, 0.25f, 2.0f}};
        int id = graph_with(&g, &t);
        ((float *)g.values[id].data)[2] = bad[k];
        kiln_status st = kn_quant_weight(&g, id, &(kn_weight_quant){.bits = 8, .axis = 0, .symmetric = true}, NULL);
        CHECK(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "finite"));
        CHECK(!g.values[id].storage && ((float *)g.values[id].data)[3] == 2.0f);
        kn_graph_free(&g);
    }
    kn_graph g;
    fixture_tensor t = {.shape = {1, {4}}, .data = (float[]){1, 2, 3, 4}};
    int id = graph_with(&g, &t);
    CHECK(kn_quant_weight(&g, id, &(kn_weight_quant){.bits = 3, .axis = -1}, NULL) == KILN_ERR_INVALID_ARG);
    kn_graph_free(&g);
}

/* A calibration histogram from the fixture. */
/* A pruned weight (sparse storage) quantized to 8 bits stays sparse: the zeros exact and not stored, the
 * kept values affine per tensor, each within half a scale of itself. */
static void check_sparse_stays_sparse(void) {
    enum { ROWS = 8, COLS = 16 };
    float w[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        w[i] = i % 5 == 0 ? 0.05f * (float)((i * 7) % 23 - 11) : 0.0f; /* 80% zeros */
    kn_graph g;
    fixture_tensor t = {.shape = {2, {ROWS, COLS}}, .data = w};
    int id = graph_with(&g, &t);
    CHECK_OK(kn_value_compress(&g, id, &(kn_storage_spec){.encoding = KN_ENC_SPARSE_BITMASK, .values = KN_ENC_F32}));
    kn_quant_stat stat;
    CHECK_OK(kn_quant_weight(&g, id, &(kn_weight_quant){.bits = 8, .axis = 0, .symmetric = true}, &stat));
    const kn_storage *st = g.values[id].storage;
    CHECK(st && st->encoding == KN_ENC_SPARSE_BITMASK && st->values->encoding == KN_ENC_AFFINE_I8);
    CHECK(stat.bits == 8);
    float scale = st && st->values ? st->values->scale[0] : 0;
    float worst = 0;
    for (int i = 0; i < ROWS * COLS; i++) {
        float q = ((const float *)g.values[id].data)[i];
        if (w[i] == 0.0f)
            CHECK(q == 0.0f);
        worst = fmaxf(worst, fabsf(q - w[i]));
    }
    CHECK_MSG(worst <= 0.5f * scale * 1.0001f, "error %g, scale %g", (double)worst, (double)scale);
    printf("pruned weight at 8 bits: %s, worst error %.3g of scale %.3g\n", stat.encoding, (double)worst,
           (double)scale);
    kn_graph_free(&g);
}

static bool hist_load(const fixture *f, const char *name, kn_calib_hist *h) {
    char key[64];
    snprintf(key, sizeof key, "hist/%s/bins", name);
    const fixture_tensor *bins = fixture_find(f, key);
    snprintf(key, sizeof key, "hist/%s/abs_bins", name);
    const fixture_tensor *abs_bins = fixture_find(f, key);
    snprintf(key, sizeof key, "hist/%s/range", name);
    const fixture_tensor *range = fixture_find(f, key);
    if (!bins || !abs_bins || !range)
        return false;
    memset(h, 0, sizeof *h);
    h->lo = range->data[0];
    h->hi = range->data[1];
    h->absmax = range->data[2];
    for (int b = 0; b < KN_CALIB_BINS; b++) {
        h->bins[b] = (int64_t)bins->data[b];
        h->abs_bins[b] = (int64_t)abs_bins->data[b];
        h->count += h->bins[b];
    }
    return true;
}

static const float *ref(const fixture *f, const char *hist, const char *what) {
    char key[64];
    snprintf(key, sizeof key, "hist/%s/%s", hist, what);
    const fixture_tensor *t = fixture_find(f, key);
    CHECK_MSG(t != NULL, "fixture %s missing", key);
    static const float missing[2] = {NAN, NAN};
    return t ? t->data : missing;
}

static void check_calibration(const fixture *f) {
    static kn_calib_hist h; /* 32 KiB: not on the stack */
    const char *names[] = {"relu", "signed"};
    for (int k = 0; k < 2; k++) {
        CHECK(hist_load(f, names[k], &h));
        double t128 = kn_calib_kl_threshold(h.abs_bins, KN_CALIB_BINS, h.absmax, 128);
        double t256 = kn_calib_kl_threshold(h.abs_bins, KN_CALIB_BINS, h.absmax, 256);
        CHECK_NEAR(t128, ref(f, names[k], "kl128")[0], 1e-6 * h.absmax);
        CHECK_NEAR(t256, ref(f, names[k], "kl256")[0], 1e-6 * h.absmax);
        double lo, hi;
        kn_calib_mse_range(h.bins, KN_CALIB_BINS, h.lo, h.hi, kn_quant_range_of(8, false), false, &lo, &hi);
        CHECK_NEAR(lo, ref(f, names[k], "mse_u8")[0], 1e-6 * h.absmax);
        CHECK_NEAR(hi, ref(f, names[k], "mse_u8")[1], 1e-6 * h.absmax);
        kn_calib_mse_range(h.bins, KN_CALIB_BINS, h.lo, h.hi, kn_quant_range_of(8, true), true, &lo, &hi);
        CHECK_NEAR(lo, ref(f, names[k], "mse_i8")[0], 1e-6 * h.absmax);
        CHECK_NEAR(hi, ref(f, names[k], "mse_i8")[1], 1e-6 * h.absmax);
        kn_calib_config pct;
        CHECK_OK(kn_calib_method_parse("percentile:99.9", &pct));
        kn_calib_choose_range(&h, &pct, 8, true, &lo, &hi);
        CHECK_NEAR(lo, ref(f, names[k], "pct99.9_sym")[0], 1e-6 * h.absmax);
        CHECK_NEAR(hi, ref(f, names[k], "pct99.9_sym")[1], 1e-6 * h.absmax);
        kn_calib_choose_range(&h, &pct, 8, false, &lo, &hi);
        CHECK_NEAR(lo, ref(f, names[k], "pct99.9_asym")[0], 1e-6 * h.absmax);
        CHECK_NEAR(hi, ref(f, names[k], "pct99.9_asym")[1], 1e-6 * h.absmax);
        printf("calibration %-6s: range [%.4g, %.4g], KL threshold %.4g (i8) %.4g (u8), MSE u8 [%.4g, %.4g]\n",
               names[k], h.lo, h.hi, t128, t256, ref(f, names[k], "mse_u8")[0], ref(f, names[k], "mse_u8")[1]);
        /* Clipping must cut something off these long-tailed histograms, or the test tests nothing. */
        CHECK(t128 < 0.9 * h.absmax);
    }
    kn_calib_config c;
    CHECK(kn_calib_method_parse("entropyy", &c) == KILN_ERR_INVALID_ARG);
    CHECK(kn_calib_method_parse("percentile:101", &c) == KILN_ERR_INVALID_ARG);
    CHECK(kn_calib_method_parse("percentile:", &c) == KILN_ERR_INVALID_ARG);
}

static int64_t file_size(const char *path) {
    struct stat s;
    return stat(path, &s) == 0 ? (int64_t)s.st_size : -1;
}

static int count_op(const kn_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op->name, op) == 0;
    return n;
}

/* kiln_quantize through include/kiln/compress.h on an MLP trained for one epoch. */
static void check_public_api(void) {
    kiln_graph *net = NULL;
    kiln_dataset *data = NULL;
    CHECK_OK(kiln_graph_load(KILN_SOURCE_DIR "/examples/specs/fmnist_mlp.txt", 1, &net));
    CHECK_OK(kiln_dataset_load("fashion-mnist:test", net, &data));
    if (!net || !data) {
        kiln_graph_free(net);
        kiln_dataset_free(data);
        return;
    }
    kiln_train_config train = kiln_train_config_default();
    train.epochs = 1;
    train.threads = 2;
    CHECK_OK(kiln_train(net, data, NULL, &train, NULL));
    char dir[] = "/tmp/kiln_quantize_test.XXXXXX", f32_path[128], q_path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(f32_path, sizeof f32_path, "%s/f32.kiln", dir);
    snprintf(q_path, sizeof q_path, "%s/int8.kiln", dir);
    CHECK_OK(kiln_graph_save(net, f32_path));
    kiln_metrics before, after;
    CHECK_OK(kiln_evaluate(net, data, 0, &before));

    kiln_quantize_config bad = kiln_quantize_config_default();
    bad.bits = 3;
    CHECK(kiln_quantize(net, data, &bad) == KILN_ERR_INVALID_ARG);
    bad = kiln_quantize_config_default();
    CHECK(kiln_quantize(net, NULL, &bad) == KILN_ERR_INVALID_ARG); /* activations need calibration data */
    bad.calib_method = "median";
    CHECK(kiln_quantize(net, data, &bad) == KILN_ERR_INVALID_ARG);
    CHECK(count_op(&net->g, "QuantizeLinear") == 0); /* the refusals changed nothing */

    kiln_quantize_config config = kiln_quantize_config_default();
    config.calib_samples = 256;
    config.calib_method = "kl";
    CHECK_OK(kiln_quantize(net, data, &config));
    CHECK_OK(kiln_evaluate(net, data, 0, &after));
    CHECK_OK(kiln_graph_save(net, q_path));
    int64_t f32_bytes = file_size(f32_path), q_bytes = file_size(q_path);
    printf("kiln_quantize int8 W+A: accuracy %.4f -> %.4f, file %lld -> %lld bytes (%.2fx)\n", before.accuracy,
           after.accuracy, (long long)f32_bytes, (long long)q_bytes, (double)f32_bytes / (double)q_bytes);
    CHECK(before.accuracy > 0.7 && after.accuracy > before.accuracy - 0.01);
    CHECK(q_bytes > 0 && (double)f32_bytes / (double)q_bytes > 3.7);
    CHECK(count_op(&net->g, "QuantizeLinear") >= 2 && count_op(&net->g, "DequantizeLinear") >= 2);

    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
    kiln_graph_free(net);
    kiln_dataset_free(data);
}

int main(void) {
    fixture f;
    CHECK(fixture_load("quant.bin", &f));
    if (f.count) {
        check_weights(&f);
        check_calibration(&f);
        fixture_free(&f);
    }
    check_non_finite_refused();
    check_sparse_stays_sparse();
    check_public_api();
    return check_finish();
}
