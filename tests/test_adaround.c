/* AdaRound (kiln_quantize_config.adaround) through include/kiln/compress.h on a small CNN over
 * Fashion-MNIST images:
 *  - every stored level is floor(w / s) or floor(w / s) + 1 (plus the zero point, clamped) on the grid
 *    nearest rounding chose (same scales and zero points), for every bit width and granularity,
 *    symmetric and asymmetric, and some levels differ from nearest rounding's;
 *  - each layer's output on the calibration data, the model run by the ordinary executor with all weights
 *    quantized, is closer to the float model's with learned rounding than with nearest rounding (the
 *    quantity AdaRound minimises, measured independently of its own bookkeeping);
 *  - without calibration data, or with codebook levels, it is a one-line error that changes nothing. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "compress/calibrate.h"
#include "compress/quantize.h"
#include "core/quant.h"
#include "core/status.h"
#include "kiln/compress.h"
#include "train/api.h"

static const char spec_text[] = "input 1 28 28\n"
                                "conv 8 3 pad=1\n"
                                "relu\n"
                                "maxpool 2\n"
                                "conv 8 3 pad=1\n"
                                "relu\n"
                                "flatten\n"
                                "dense 10\n";

enum { CALIB = 128 };

static char spec_path[64];

static kiln_graph *cnn(void) {
    kiln_graph *net = NULL;
    CHECK_OK(kiln_graph_load(spec_path, 7, &net)); /* the same seeded weights every time */
    return net;
}

/* Every stored level of each quantized weight of q is floor or ceil of the float weight / scale (with
 * the zero point, clamped), on nearest's grid; returns how many levels differ from nearest's. */
static int64_t check_levels(const kn_graph *f32, const kn_graph *q, const kn_graph *nearest, const char *what) {
    int64_t off_grid = 0, other_grid = 0, flipped = 0, checked = 0;
    for (int v = 0; v < q->n_values; v++) {
        const kn_storage *s = q->values[v].storage, *ns = nearest->values[v].storage;
        if (!s || !kn_encoding_is_affine(s->encoding) || !ns)
            continue;
        const float *w = f32->values[v].data;
        bool is_signed = s->encoding != KN_ENC_AFFINE_U8 && s->encoding != KN_ENC_AFFINE_I1;
        kn_quant_range r = kn_quant_range_of(s->bits, is_signed);
        for (int64_t i = 0; i < kn_shape_numel(&s->shape); i++) {
            int64_t k = kn_storage_group_of(s, i);
            float scale = s->scale[k];
            int z = kn_storage_zero_point(s, k), level = kn_storage_level(s, i);
            int down = (int)kn_quant_clamp(floorf(w[i] / scale) + (float)z, r);
            int up = (int)kn_quant_clamp(floorf(w[i] / scale) + 1.0f + (float)z, r);
            off_grid += level != down && level != up;
            other_grid += scale != ns->scale[k] || z != kn_storage_zero_point(ns, k);
            flipped += level != kn_storage_level(ns, i);
            checked++;
        }
    }
    CHECK_MSG(checked > 0 && off_grid == 0 && other_grid == 0, "%s: %lld of %lld levels neither floor nor ceil, "
              "%lld on another grid", what, (long long)off_grid, (long long)checked, (long long)other_grid);
    return flipped;
}

typedef struct sq_error {
    const float *const *reference; /* per watched value: its float outputs, or NULL while collecting them */
    float **collected;
    int64_t *filled;
    double *sum;
} sq_error;

static kiln_status visit_outputs(void *ctx, int k, const kn_tensor *x) {
    sq_error *e = ctx;
    int64_t n = kn_shape_numel(&x->shape);
    const float *v = x->data;
    if (!e->reference) {
        memcpy(e->collected[k] + e->filled[k], v, sizeof(float) * (size_t)n);
    } else {
        for (int64_t i = 0; i < n; i++) {
            double d = (double)v[i] - e->reference[k][e->filled[k] + i];
            e->sum[k] += d * d;
        }
    }
    e->filled[k] += n;
    return KILN_OK;
}

/* The outputs of every quantizable layer of g on `calib`: collected into out[l] (reference NULL), or
 * their squared error against reference[l] summed into sum[l]. */
static void layer_outputs(kn_graph *g, const kn_dataset *calib, const float *const *reference, float **out, double *sum,
                          int *n_layers) {
    kn_quant_layer *layers = NULL;
    CHECK_OK(kn_quant_layers_find(g, &layers, n_layers));
    int values[8];
    int64_t filled[8] = {0};
    for (int l = 0; l < *n_layers && l < 8; l++) {
        values[l] = g->nodes[layers[l].node].out[0];
        if (!reference)
            out[l] = malloc(sizeof(float) * (size_t)(calib->count * 28 * 28 * 8)); /* the largest output */
    }
    sq_error e = {reference, out, filled, sum};
    CHECK_OK(kn_calib_run(g, calib, values, *n_layers, visit_outputs, &e));
    free(layers);
}

static void check_reconstruction(const kiln_dataset *data) {
    kiln_graph *f32 = cnn(), *nearest = cnn(), *learned = cnn();
    if (!f32 || !nearest || !learned)
        return;
    kiln_quantize_config config = kiln_quantize_config_default();
    config.bits = 4;
    config.weights_only = 1;
    config.calib_samples = CALIB;
    CHECK_OK(kiln_quantize(nearest, data, &config));
    config.adaround = 1;
    config.adaround_iters = 300;
    CHECK_OK(kiln_quantize(learned, data, &config));
    int64_t flipped = check_levels(&f32->g, &learned->g, &nearest->g, "int4 per channel");
    CHECK_MSG(flipped > 0, "AdaRound rounded no weight differently from nearest rounding");

    kn_dataset calib = data->d;
    calib.count = CALIB;
    float *reference[8] = {0};
    double err_nearest[8] = {0}, err_learned[8] = {0};
    int n = 0, n2 = 0, n3 = 0;
    layer_outputs(&f32->g, &calib, NULL, reference, NULL, &n);
    layer_outputs(&nearest->g, &calib, (const float *const *)reference, NULL, err_nearest, &n2);
    layer_outputs(&learned->g, &calib, (const float *const *)reference, NULL, err_learned, &n3);
    CHECK(n == 3 && n2 == 3 && n3 == 3);
    for (int l = 0; l < n; l++) {
        printf("layer %d: squared output error on %d calibration images: nearest %.6g, AdaRound %.6g\n", l, CALIB,
               err_nearest[l], err_learned[l]);
        CHECK_MSG(err_learned[l] < err_nearest[l], "layer %d: AdaRound %.6g is not below nearest %.6g", l,
                  err_learned[l], err_nearest[l]);
        free(reference[l]);
    }
    kiln_graph_free(f32);
    kiln_graph_free(nearest);
    kiln_graph_free(learned);
}

/* Every bit width and granularity affine weights have, symmetric and asymmetric: levels on the grid. */
static void check_every_form(const kiln_dataset *data) {
    static const int bits[] = {8, 4, 2};
    static const char *grans[] = {"tensor", "channel", "block:4"};
    for (int b = 0; b < 3; b++)
        for (int gi = 0; gi < 3; gi++)
            for (int sym = 0; sym <= 1; sym++) {
                kiln_graph *f32 = cnn(), *nearest = cnn(), *learned = cnn();
                kiln_quantize_config config = kiln_quantize_config_default();
                config.bits = bits[b];
                config.granularity = grans[gi];
                config.symmetric = sym;
                config.weights_only = 1;
                config.calib_samples = 32;
                config.adaround_iters = 20;
                char what[64];
                snprintf(what, sizeof what, "%d-bit %s %s", bits[b], grans[gi], sym ? "symmetric" : "asymmetric");
                if (f32 && nearest && learned) {
                    CHECK_OK(kiln_quantize(nearest, data, &config));
                    config.adaround = 1;
                    kiln_status st = kiln_quantize(learned, data, &config);
                    CHECK_MSG(st == KILN_OK, "%s: %s", what, kiln_last_error());
                    if (st == KILN_OK)
                        check_levels(&f32->g, &learned->g, &nearest->g, what);
                }
                kiln_graph_free(f32);
                kiln_graph_free(nearest);
                kiln_graph_free(learned);
            }
}

static void check_bad_input(const kiln_dataset *data) {
    kiln_graph *net = cnn();
    if (!net)
        return;
    kiln_quantize_config config = kiln_quantize_config_default();
    config.weights_only = 1;
    config.adaround = 1;
    CHECK(kiln_quantize(net, NULL, &config) == KILN_ERR_INVALID_ARG);
    const char *msg = kiln_last_error();
    CHECK_MSG(strstr(msg, "--adaround needs calibration data") && !strchr(msg, '\n'), "message: %s", msg);
    config.codebook = 16;
    CHECK(kiln_quantize(net, data, &config) == KILN_ERR_INVALID_ARG);
    config.codebook = 0;
    config.adaround_lr = -1; /* the default */
    config.adaround_lambda = -1;
    config.adaround_iters = 0;
    config.bits = 16;
    CHECK(kiln_quantize(net, data, &config) == KILN_ERR_INVALID_ARG);
    bool untouched = true;
    for (int v = 0; v < net->g.n_values; v++)
        untouched &= net->g.values[v].storage == NULL;
    CHECK_MSG(untouched, "a refused AdaRound changed the model");
    kiln_graph_free(net);
}

int main(void) {
    snprintf(spec_path, sizeof spec_path, "/tmp/kiln_adaround_%d.txt", (int)getpid());
    FILE *f = fopen(spec_path, "w");
    CHECK(f && fputs(spec_text, f) >= 0);
    if (f)
        fclose(f);
    kiln_graph *net = cnn();
    kiln_dataset *data = NULL;
    if (net)
        CHECK_OK(kiln_dataset_load("fashion-mnist:test", net, &data));
    kiln_graph_free(net);
    if (data) {
        check_reconstruction(data);
        check_every_form(data);
        check_bad_input(data);
    }
    kiln_dataset_free(data);
    remove(spec_path);
    return check_finish();
}
