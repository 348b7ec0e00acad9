/* Quantization-aware training through the public API (kiln_qat_prepare, kiln_train, kiln_qat_finalize):
 *
 * 1. A small CNN with BatchNormalization, prepared at W4A8 with learned scales, trains a few steps (the
 *    scales move, the loss stays finite), and the finalized model computes exactly the fake-quantized
 *    model's outputs (both through core/quant.h): weights stored as affine i4 per channel at the levels
 *    the fake quantization gave them, activations as QuantizeLinear/DequantizeLinear. Saved and loaded
 *    again, it still does.
 * 2. Prepared (before training) the model stays close to the float model with its BatchNormalization:
 *    folding is exact, 8-bit quantization close.
 * 3. Binary weights become a 2-entry codebook per channel holding +-alpha; int2 weights affine i2.
 * 4. Bad input: --bits 3, activation bits other than 8, activations without calibration data, a model
 *    without weights to quantize, preparing twice.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compress/qat.h"
#include "core/rng.h"
#include "format/storage.h"
#include "kiln/compress.h"
#include "train/api.h"
#include "train/tape.h"

static const char spec[] = "input 1 8 8\n"
                           "conv 6 3 pad=1\n"
                           "batchnorm\n"
                           "relu\n"
                           "maxpool 2\n"
                           "flatten\n"
                           "dense 16\n"
                           "relu\n"
                           "dense 4\n";

enum { N_SAMPLES = 96, N_EVAL = 16 };

static kiln_graph *load_spec(void) {
    const char *path = "test_qat_spec.txt";
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(spec, f);
    fclose(f);
    kiln_graph *g = NULL;
    CHECK_OK(kiln_graph_load(path, 5, &g));
    /* Running statistics away from (0, 1), so that folding them has something to get right. */
    for (int v = 0; v < g->g.n_values; v++) {
        kn_value *val = &g->g.values[v];
        if (val->kind != KN_VALUE_STATE)
            continue;
        bool is_var = strstr(val->name, "var") != NULL;
        for (int64_t i = 0; i < kn_shape_numel(&val->shape); i++)
            ((float *)val->data)[i] = is_var ? 0.5f + 0.1f * (float)i : 0.05f * (float)i - 0.1f;
    }
    return g;
}

/* Images whose class is the quadrant with the brightest mean, plus noise. */
static void make_dataset(kiln_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    kn_dataset *d = &ds->d;
    d->count = N_SAMPLES;
    d->sample_shape = kn_shape_of(3, (int64_t[]){1, 8, 8});
    d->sample_size = 64;
    d->x = malloc(sizeof(float) * N_SAMPLES * 64);
    d->labels = malloc(sizeof(int64_t) * N_SAMPLES);
    d->class_count = 4;
    d->source = strdup("synthetic");
    kn_rng rng = kn_rng_seeded(11);
    for (int s = 0; s < N_SAMPLES; s++) {
        int label = s % 4;
        d->labels[s] = label;
        for (int i = 0; i < 64; i++) {
            int quadrant = (i / 8 >= 4) * 2 + (i % 8 >= 4);
            d->x[s * 64 + i] = (quadrant == label ? 1.0f : 0.0f) + 0.5f * (kn_rng_uniform(&rng) - 0.5f);
        }
    }
}

/* The graph's inference outputs for the first N_EVAL samples (N_EVAL x 4, malloc'd). */
static float *infer(kiln_graph *g, const kiln_dataset *ds) {
    kn_tape tape;
    float *out = NULL;
    kiln_status st = kn_tape_init(&tape, &g->g, N_EVAL, false);
    CHECK_OK(st);
    if (st != KILN_OK)
        return calloc(N_EVAL * 4, sizeof(float));
    memcpy(kn_tape_input(&tape, 0)->data, ds->d.x, sizeof(float) * N_EVAL * 64);
    CHECK_OK(kn_tape_forward(&tape, false));
    out = malloc(sizeof(float) * N_EVAL * 4);
    memcpy(out, kn_tape_output(&tape, 0)->data, sizeof(float) * N_EVAL * 4);
    kn_tape_free(&tape);
    return out;
}

static int count_ops(const kiln_graph *g, const char *op) {
    int n = 0;
    for (int i = 0; i < g->g.n_nodes; i++)
        n += strcmp(g->g.nodes[i].op->name, op) == 0;
    return n;
}

static int count_encoding(const kiln_graph *g, kn_encoding e) {
    int n = 0;
    for (int v = 0; v < g->g.n_values; v++)
        n += g->g.values[v].storage && g->g.values[v].storage->encoding == e;
    return n;
}

static double max_abs_diff(const float *a, const float *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void test_w4a8_train_finalize(const kiln_dataset *ds) {
    kiln_graph *g = load_spec();
    float *float_out = infer(g, ds);
    kiln_qat_config c = {.weight_bits = 8, .act_bits = 8, .lsq = 1, .calib = ds, .calib_samples = 64};
    CHECK_OK(kiln_qat_prepare(g, &c));
    CHECK(count_ops(g, "BatchNormalization") == 0);
    CHECK(count_ops(g, "FakeQuantize") == 6); /* 3 weights, 3 activation inputs */
    float *prepared_out = infer(g, ds);
    double drift = max_abs_diff(float_out, prepared_out, N_EVAL * 4);
    CHECK_MSG(drift < 0.05, "8-bit fake quantization moved the outputs by %g", drift);
    kiln_graph_free(g);
    free(prepared_out);

    g = load_spec();
    c.weight_bits = 4;
    CHECK_OK(kiln_qat_prepare(g, &c));
    /* The first node quantizes the graph input, with a learned scale. */
    int scale = g->g.nodes[0].in[1];
    CHECK(strcmp(g->g.nodes[0].op->name, "FakeQuantize") == 0 && g->g.values[scale].kind == KN_VALUE_PARAM);
    char scale_name[256];
    snprintf(scale_name, sizeof scale_name, "%s", g->g.values[scale].name);
    float scale_before = scale >= 0 ? *(float *)g->g.values[scale].data : 0;
    kiln_train_config tc = kiln_train_config_default();
    tc.epochs = 2;
    tc.batch = 32;
    tc.threads = 1;
    kiln_metrics m;
    CHECK_OK(kiln_train(g, ds, NULL, &tc, &m));
    CHECK(isfinite(m.loss));
    scale = kn_graph_find_value(&g->g, scale_name);
    CHECK_MSG(scale >= 0 && *(float *)g->g.values[scale].data != scale_before, "the input's LSQ scale did not move");
    float *fake_out = infer(g, ds);
    CHECK_OK(kiln_qat_finalize(g));
    CHECK(count_ops(g, "FakeQuantize") == 0);
    CHECK(count_ops(g, "QuantizeLinear") == 3 && count_ops(g, "DequantizeLinear") == 3);
    CHECK(count_encoding(g, KN_ENC_AFFINE_I4) == 3);
    CHECK(kn_graph_find_value(&g->g, scale_name) < 0); /* the training-only values are gone */
    float *final_out = infer(g, ds);
    CHECK_MSG(memcmp(fake_out, final_out, sizeof(float) * N_EVAL * 4) == 0,
              "finalized outputs differ from the fake-quantized ones by up to %g",
              max_abs_diff(fake_out, final_out, N_EVAL * 4));
    CHECK_OK(kiln_graph_save(g, "test_qat_w4a8.kiln"));
    kiln_graph *loaded = NULL;
    CHECK_OK(kiln_graph_load("test_qat_w4a8.kiln", 0, &loaded));
    if (loaded) {
        CHECK(count_encoding(loaded, KN_ENC_AFFINE_I4) == 3);
        float *loaded_out = infer(loaded, ds);
        CHECK(memcmp(fake_out, loaded_out, sizeof(float) * N_EVAL * 4) == 0);
        free(loaded_out);
        kiln_graph_free(loaded);
    }
    remove("test_qat_w4a8.kiln");
    free(float_out);
    free(fake_out);
    free(final_out);
    kiln_graph_free(g);
}

/* Weights only, with min/max scales (binary: mean |w|) or learned ones. */
static void test_weights_only(const kiln_dataset *ds, int bits, int lsq, kn_encoding expect) {
    kiln_graph *g = load_spec();
    kiln_qat_config c = {.weight_bits = bits, .lsq = lsq};
    CHECK_OK(kiln_qat_prepare(g, &c));
    CHECK(count_ops(g, "FakeQuantize") == 3);
    float *fake_out = infer(g, ds);
    CHECK_OK(kiln_qat_finalize(g));
    CHECK_MSG(count_encoding(g, expect) == 3, "%d-bit weights: %d of 3 stored as %s", bits, count_encoding(g, expect),
              kn_encoding_name(expect));
    float *final_out = infer(g, ds);
    CHECK_MSG(memcmp(fake_out, final_out, sizeof(float) * N_EVAL * 4) == 0, "%d-bit: outputs differ by %g", bits,
              max_abs_diff(fake_out, final_out, N_EVAL * 4));
    if (bits == 1) {
        /* Every channel of the first conv holds two values, +-alpha. */
        int w = kn_graph_find_value(&g->g, g->g.values[g->g.nodes[0].in[1]].name);
        const float *data = g->g.values[w].data; // (6, 1, 3, 3)
        for (int ch = 0; ch < 6; ch++)
            for (int i = 0; i < 9; i++)
                CHECK(fabsf(data[ch * 9 + i]) == fabsf(data[ch * 9]));
    }
    free(fake_out);
    free(final_out);
    kiln_graph_free(g);
}

static void test_bad_input(const kiln_dataset *ds) {
    kiln_graph *g = load_spec();
    kiln_qat_config c = {.weight_bits = 3};
    CHECK(kiln_qat_prepare(g, &c) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "--bits 3"));
    c = (kiln_qat_config){.weight_bits = 4, .act_bits = 4, .calib = ds};
    CHECK(kiln_qat_prepare(g, &c) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "--act-bits 4"));
    c = (kiln_qat_config){.weight_bits = 4, .act_bits = 8};
    CHECK(kiln_qat_prepare(g, &c) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "calibration"));
    c = (kiln_qat_config){.weight_bits = 4};
    CHECK_OK(kiln_qat_prepare(g, &c));
    CHECK(kiln_qat_prepare(g, &c) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "already"));
    kiln_graph_free(g);

    FILE *f = fopen("test_qat_relu.txt", "w");
    fputs("input 4\nrelu\n", f);
    fclose(f);
    CHECK_OK(kiln_graph_load("test_qat_relu.txt", 1, &g));
    CHECK(kiln_qat_prepare(g, &c) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "no Conv, Gemm or MatMul"));
    kiln_graph_free(g);
    remove("test_qat_relu.txt");
}

int main(void) {
    kiln_dataset ds;
    make_dataset(&ds);
    test_w4a8_train_finalize(&ds);
    test_weights_only(&ds, 8, 0, KN_ENC_AFFINE_I8);
    test_weights_only(&ds, 4, 0, KN_ENC_AFFINE_I4);
    test_weights_only(&ds, 2, 1, KN_ENC_AFFINE_I2);
    test_weights_only(&ds, 1, 0, KN_ENC_CODEBOOK);
    test_weights_only(&ds, 1, 1, KN_ENC_CODEBOOK);
    test_bad_input(&ds);
    kn_dataset_free(&ds.d);
    remove("test_qat_spec.txt");
    return check_finish();
}
