/* Pruning: through the public kiln_prune, and the kn_ functions under it.
 * - unstructured: exactly round(amount * n) zeros, and they are the smallest |w| (per layer, or under
 *   one threshold with global scope); l2 chooses the same weights as l1;
 * - taylor scores against |w * dL/dw| with dL/dw from central finite differences of the loss;
 * - sparse storage makes the saved file smaller and loads back to the same weights;
 * - fine-tuning keeps the pruned weights exactly zero, and a run resumed from its checkpoint ends with
 *   the same weights, bit for bit, as one that never stopped;
 * - AGP reaches the final sparsity on Zhu & Gupta's cubic schedule;
 * - structured: amount 0 leaves the outputs bit for bit; a pruned residual CNN computes what the
 *   masked dense one does, its block input and shortcut keep the same channels, FLOPs and file shrink;
 *   through a PyTorch Concat of two conv branches and the input, the BatchNormalization and the next
 *   conv follow the Concat's pieces (the same two checks); a transformer's MLP block loses neurons
 *   (fc1's outputs, its separate bias Add, fc2's inputs) and nothing on its residual stream; a
 *   depthwise conv passes its input's channels on and loses the matching filters and groups;
 * - sensitivity: the chosen per-layer amounts remove the asked-for fraction of weights;
 * - bad input: an amount out of range, an unknown method, a model with nothing to prune. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "compress/prune.h"
#include "compress/prune_structured.h"
#include "compress/summary.h"
#include "format/kiln_file.h"
#include "kiln/compress.h"
#include "train/api.h"
#include "train/evaluate.h"
#include "train/spec.h"
#include "train/tape.h"

static const char mlp_spec[] = "input 12\ndense 16\nrelu\ndense 10\nrelu\ndense 3\n";
static const char cnn_spec[] = "input 3 8 8\n"
                               "conv 8 3 pad=1\nbatchnorm\nrelu\n"
                               "residual\nconv 8 3 pad=1\nbatchnorm\nrelu\nconv 8 3 pad=1\nbatchnorm\nend\n"
                               "relu\nmaxpool 2\nflatten\ndense 12\nrelu\ndense 3\n";

/* n samples of the model's input size, labels from the sign pattern of a few features. */
static void make_data(kn_dataset *ds, const kn_shape *sample, int64_t n, int classes) {
    memset(ds, 0, sizeof *ds);
    ds->count = n;
    ds->sample_shape = *sample;
    ds->sample_size = kn_shape_numel(sample);
    ds->x = malloc(sizeof(float) * (size_t)(n * ds->sample_size));
    ds->labels = malloc(sizeof(int64_t) * (size_t)n);
    ds->class_count = classes;
    ds->source = strdup("synthetic");
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < ds->sample_size; j++)
            ds->x[i * ds->sample_size + j] = (float)((i * 37 + j * 11) % 23) / 11.0f - 1.0f;
        ds->labels[i] = (ds->x[i * ds->sample_size] > 0) + (ds->x[i * ds->sample_size + 1] > 0.5f);
    }
}

static void parse(const char *spec, uint64_t seed, kn_graph *g) {
    kiln_status st = kn_spec_parse(spec, "test", seed, g);
    if (st != KILN_OK) {
        fprintf(stderr, "spec: %s\n", kiln_last_error());
        exit(1);
    }
}

static kn_shape input_shape(const kn_graph *g) {
    kn_shape s = g->values[g->inputs[0]].shape;
    for (int d = 0; d < s.ndim - 1; d++)
        s.d[d] = s.d[d + 1];
    s.ndim--;
    return s;
}

/* The model's outputs on the first n samples (inference mode) into out (n, classes). */
static void forward(kn_graph *g, const kn_dataset *ds, int64_t n, float *out) {
    kn_tape t;
    CHECK_OK(kn_tape_init(&t, g, n, false));
    memcpy(kn_tape_input(&t, 0)->data, ds->x, sizeof(float) * (size_t)(n * ds->sample_size));
    CHECK_OK(kn_tape_forward(&t, false));
    const kn_tensor *y = kn_tape_output(&t, 0);
    memcpy(out, y->data, sizeof(float) * (size_t)kn_numel(y));
    kn_tape_free(&t);
}

/* Copies of the prunable layers' weights. */
static float **copy_weights(const kn_graph *g, const kn_prune_layer *layers, int n) {
    float **w = malloc(sizeof *w * (size_t)n);
    for (int l = 0; l < n; l++) {
        const kn_value *v = &g->values[layers[l].weight];
        size_t bytes = sizeof(float) * (size_t)kn_shape_numel(&v->shape);
        w[l] = malloc(bytes);
        memcpy(w[l], v->data, bytes);
    }
    return w;
}

static void free_weights(float **w, int n) {
    for (int l = 0; l < n; l++)
        free(w[l]);
    free(w);
}

/* Largest |w| pruned and smallest |w| kept, over layers [from, to). */
static void pruned_range(const kn_graph *g, const kn_prune_layer *layers, float **before, int from, int to,
                         float *max_pruned, float *min_kept, int64_t *zeros) {
    *max_pruned = 0;
    *min_kept = INFINITY;
    *zeros = 0;
    for (int l = from; l < to; l++) {
        const kn_value *v = &g->values[layers[l].weight];
        const float *x = v->data;
        for (int64_t i = 0; i < kn_shape_numel(&v->shape); i++) {
            if (x[i] == 0.0f) {
                (*zeros)++;
                *max_pruned = fmaxf(*max_pruned, fabsf(before[l][i]));
            } else {
                *min_kept = fminf(*min_kept, fabsf(before[l][i]));
                CHECK(x[i] == before[l][i]); /* kept weights are untouched */
            }
        }
    }
}

static void test_unstructured_public(void) {
    kn_prune_config all = kn_prune_config_default();
    kn_prune_layer layers[8];
    int n;
    for (int global = 0; global < 2; global++) {
        kiln_graph net;
        parse(mlp_spec, 3, &net.g);
        CHECK_OK(kn_prune_layers(&net.g, &all, layers, 8, &n));
        CHECK(n == 3);
        float **before = copy_weights(&net.g, layers, n);
        kiln_prune_config c = kiln_prune_config_default();
        c.amount = 0.6;
        c.global = global;
        CHECK_OK(kiln_prune(&net, NULL, NULL, &c));
        float max_pruned, min_kept;
        int64_t zeros, total = 0;
        if (global) {
            pruned_range(&net.g, layers, before, 0, n, &max_pruned, &min_kept, &zeros);
            for (int l = 0; l < n; l++)
                total += kn_shape_numel(&net.g.values[layers[l].weight].shape);
            CHECK_MSG(zeros == llround(0.6 * (double)total), "%lld zeros of %lld", (long long)zeros, (long long)total);
            CHECK_MSG(max_pruned <= min_kept, "global: pruned %g > kept %g", max_pruned, min_kept);
        } else {
            for (int l = 0; l < n; l++) {
                pruned_range(&net.g, layers, before, l, l + 1, &max_pruned, &min_kept, &zeros);
                int64_t count = kn_shape_numel(&net.g.values[layers[l].weight].shape);
                CHECK_MSG(zeros == llround(0.6 * (double)count), "layer %d: %lld zeros of %lld", l, (long long)zeros,
                          (long long)count);
                CHECK_MSG(max_pruned <= min_kept, "layer %d: pruned %g > kept %g", l, max_pruned, min_kept);
            }
        }
        /* Biases are not prunable: none became zero. */
        for (int v = 0; v < net.g.n_values; v++)
            if (strstr(net.g.values[v].name, "bias"))
                for (int64_t i = 0; i < kn_shape_numel(&net.g.values[v].shape); i++)
                    CHECK(((float *)net.g.values[v].data)[i] != 0.0f);
        /* Stored sparse: a smaller file that loads back to the same weights. */
        void *buf;
        size_t size;
        CHECK_OK(kn_kiln_save_buffer(&net.g, NULL, 0, &buf, &size));
        kn_graph dense;
        parse(mlp_spec, 3, &dense);
        void *dense_buf;
        size_t dense_size;
        CHECK_OK(kn_kiln_save_buffer(&dense, NULL, 0, &dense_buf, &dense_size));
        CHECK_MSG(size < dense_size, "sparse file %zu bytes, dense %zu", size, dense_size);
        for (int l = 0; l < n; l++)
            CHECK(net.g.values[layers[l].weight].storage != NULL);
        kn_graph back;
        CHECK_OK(kn_kiln_load_buffer(buf, size, &back, NULL, NULL));
        for (int l = 0; l < n; l++) {
            const kn_value *a = &net.g.values[layers[l].weight], *b = &back.values[kn_graph_find_value(&back, a->name)];
            CHECK(memcmp(a->data, b->data, sizeof(float) * (size_t)kn_shape_numel(&a->shape)) == 0);
        }
        free(buf);
        free(dense_buf);
        kn_graph_free(&back);
        kn_graph_free(&dense);
        free_weights(before, n);
        kn_graph_free(&net.g);
    }
    /* l2 ranks single weights like l1. */
    kn_graph a, b;
    parse(mlp_spec, 5, &a);
    parse(mlp_spec, 5, &b);
    kn_prune_config c = kn_prune_config_default();
    c.amount = 0.4;
    CHECK_OK(kn_prune_unstructured(&a, NULL, &c));
    c.method = KN_PRUNE_L2;
    CHECK_OK(kn_prune_unstructured(&b, NULL, &c));
    CHECK_OK(kn_prune_layers(&a, &all, layers, 8, &n));
    for (int l = 0; l < n; l++)
        CHECK(memcmp(a.values[layers[l].weight].data, b.values[layers[l].weight].data,
                     sizeof(float) * (size_t)kn_shape_numel(&a.values[layers[l].weight].shape)) == 0);
    kn_graph_free(&a);
    kn_graph_free(&b);
}

static double mean_loss(kn_graph *g, const kn_dataset *ds) {
    kn_loss loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN};
    kn_eval_result r;
    CHECK_OK(kn_evaluate(g, ds, &loss, 256, &r));
    double mean = r.loss;
    kn_eval_result_free(&r);
    return mean;
}

static void test_taylor_scores(void) {
    kn_graph g;
    parse(mlp_spec, 7, &g);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 32, 3);
    kn_prune_config c = kn_prune_config_default();
    c.method = KN_PRUNE_TAYLOR;
    c.calib_batches = 1;
    c.calib_batch = 32; /* one batch of every sample: its mean loss is the evaluation's */
    kn_prune_layer layers[8];
    int n;
    CHECK_OK(kn_prune_layers(&g, &c, layers, 8, &n));
    float *scores[8];
    for (int l = 0; l < n; l++)
        scores[l] = malloc(sizeof(float) * (size_t)kn_shape_numel(&g.values[layers[l].weight].shape));
    CHECK_OK(kn_prune_scores(&g, layers, n, &c, &ds, scores));
    float *hessian[8];
    c.method = KN_PRUNE_HESSIAN;
    for (int l = 0; l < n; l++)
        hessian[l] = malloc(sizeof(float) * (size_t)kn_shape_numel(&g.values[layers[l].weight].shape));
    CHECK_OK(kn_prune_scores(&g, layers, n, &c, &ds, hessian));
    double h = 1e-3;
    for (int l = 0; l < n; l++) {
        float *w = g.values[layers[l].weight].data;
        for (int64_t i = 0; i < 6; i++) {
            int64_t at = i * 7 % kn_shape_numel(&g.values[layers[l].weight].shape);
            float saved = w[at];
            w[at] = saved + (float)h;
            double up = mean_loss(&g, &ds);
            w[at] = saved - (float)h;
            double down = mean_loss(&g, &ds);
            w[at] = saved;
            double grad = (up - down) / (2 * h);
            CHECK_NEAR(scores[l][at], fabs(saved * grad), 2e-4 + 2e-2 * fabs(saved * grad));
            /* OBD with the squared gradient of the one batch as the Hessian's diagonal. */
            CHECK_NEAR(hessian[l][at], 0.5 * grad * grad * saved * saved, 2e-5 + 5e-2 * 0.5 * grad * grad * saved * saved);
        }
        free(scores[l]);
        free(hessian[l]);
    }
    kn_dataset_free(&ds);
    kn_graph_free(&g);
}

/* Fine-tunes a pruned MLP for `epochs` (resuming from `ckpt` when not NULL); returns the graph. */
static void finetune(kn_graph *g, const kn_dataset *ds, int64_t epochs, const char *checkpoint, const char *resume) {
    kn_prune_config c = kn_prune_config_default();
    c.amount = 0.7;
    kn_train_options o = {.epochs = epochs, .batch = 8, .optim = kn_optim_defaults(KN_OPTIM_ADAM), .seed = 1,
                          .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN},
                          .checkpoint_path = checkpoint, .resume = resume != NULL};
    kn_named_tensor *state = NULL;
    int n_state = 0;
    if (resume) {
        CHECK_OK(kn_graph_load_path(resume, 1, g, &state, &n_state));
    } else {
        parse(mlp_spec, 11, g);
        CHECK_OK(kn_prune_unstructured(g, NULL, &c));
    }
    kn_train_result r;
    CHECK_OK(kn_prune_finetune(g, ds, NULL, &c, &o, state, n_state, &r));
    kn_named_tensors_free(state, n_state);
}

static void test_finetune_masks(void) {
    kn_graph pruned, straight, resumed;
    parse(mlp_spec, 11, &pruned);
    kn_prune_config c = kn_prune_config_default();
    c.amount = 0.7;
    CHECK_OK(kn_prune_unstructured(&pruned, NULL, &c));
    kn_dataset ds;
    kn_shape sample = input_shape(&pruned);
    make_data(&ds, &sample, 48, 3);
    char ckpt[64];
    snprintf(ckpt, sizeof ckpt, "/tmp/kiln_test_prune_%d.ckpt", (int)getpid());
    finetune(&straight, &ds, 2, NULL, NULL);
    finetune(&resumed, &ds, 1, ckpt, NULL);
    kn_graph_free(&resumed);
    finetune(&resumed, &ds, 2, NULL, ckpt);
    unlink(ckpt);
    kn_prune_layer layers[8];
    int n;
    CHECK_OK(kn_prune_layers(&pruned, &c, layers, 8, &n));
    int64_t held = 0, moved = 0;
    for (int l = 0; l < n; l++) {
        const kn_value *p = &pruned.values[layers[l].weight];
        const float *before = p->data, *after = straight.values[layers[l].weight].data;
        const float *again = resumed.values[kn_graph_find_value(&resumed, p->name)].data;
        for (int64_t i = 0; i < kn_shape_numel(&p->shape); i++) {
            if (before[i] == 0.0f) {
                held += after[i] == 0.0f && again[i] == 0.0f;
                CHECK_MSG(after[i] == 0.0f && again[i] == 0.0f, "%s[%lld] = %g / %g after fine-tuning", p->name,
                          (long long)i, after[i], again[i]);
            } else {
                moved += after[i] != before[i];
            }
            CHECK_MSG(memcmp(&after[i], &again[i], sizeof(float)) == 0, "%s[%lld]: %.9g straight, %.9g resumed",
                      p->name, (long long)i, after[i], again[i]);
        }
    }
    CHECK_MSG(held > 0 && moved > 0, "%lld held at zero, %lld trained", (long long)held, (long long)moved);
    kn_graph_free(&pruned);
    kn_graph_free(&straight);
    kn_graph_free(&resumed);
    kn_dataset_free(&ds);
}

static void test_agp(void) {
    CHECK_NEAR(kn_prune_agp_sparsity(0.9, 0, 10), 0, 1e-12);
    CHECK_NEAR(kn_prune_agp_sparsity(0.9, 5, 10), 0.9 * (1 - 0.125), 1e-12);
    CHECK_NEAR(kn_prune_agp_sparsity(0.9, 10, 10), 0.9, 1e-12);
    kn_graph g;
    parse(mlp_spec, 13, &g);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 64, 3);
    kn_prune_config c = kn_prune_config_default();
    c.amount = 0.8;
    c.schedule = KN_SCHEDULE_AGP;
    c.steps = 4;
    kn_train_options o = {.epochs = 2, .batch = 8, .optim = kn_optim_defaults(KN_OPTIM_ADAM), .seed = 1,
                          .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN}};
    kn_train_result r;
    CHECK_OK(kn_prune_finetune(&g, &ds, NULL, &c, &o, NULL, 0, &r));
    kn_prune_layer layers[8];
    int n;
    CHECK_OK(kn_prune_layers(&g, &c, layers, 8, &n));
    for (int l = 0; l < n; l++) {
        int64_t zeros, total;
        kn_prune_count(&g, &layers[l], 1, &zeros, &total);
        CHECK_MSG(zeros == llround(0.8 * (double)total), "layer %d: %lld of %lld zero after AGP", l,
                  (long long)zeros, (long long)total);
    }
    kn_graph_free(&g);
    kn_dataset_free(&ds);
}

static int64_t channels_of(const kn_graph *g, const char *weight) {
    return g->values[kn_graph_find_value(g, weight)].shape.d[0];
}

static void test_structured(void) {
    kn_graph g, pruned, masked;
    parse(cnn_spec, 17, &g);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 16, 3);
    /* Running statistics away from 0 and 1, so BatchNormalization's slicing matters. */
    for (int v = 0; v < g.n_values; v++)
        if (g.values[v].kind == KN_VALUE_STATE && g.values[v].dtype == KN_F32)
            for (int64_t i = 0; i < kn_shape_numel(&g.values[v].shape); i++)
                ((float *)g.values[v].data)[i] = strstr(g.values[v].name, "var") ? 0.5f + 0.1f * (float)(i % 5)
                                                                                 : 0.05f * (float)(i % 7);
    float before[16 * 3], after[16 * 3], oracle[16 * 3];
    forward(&g, &ds, 16, before);

    kn_prune_config c = kn_prune_config_default();
    c.structure = KN_PRUNE_CHANNEL;
    c.amount = 0;
    CHECK_OK(kn_prune_structured(&g, &ds, &c, false, NULL));
    forward(&g, &ds, 16, after);
    CHECK_MSG(memcmp(before, after, sizeof before) == 0, "amount 0 changed the outputs");

    kn_model_summary s_before, s_after;
    CHECK_OK(kn_model_summarize(&g, NULL, &s_before));
    void *buf;
    size_t size;
    CHECK_OK(kn_kiln_save_buffer(&g, NULL, 0, &buf, &size));
    CHECK_OK(kn_kiln_load_buffer(buf, size, &pruned, NULL, NULL));
    CHECK_OK(kn_kiln_load_buffer(buf, size, &masked, NULL, NULL));
    free(buf);
    c.amount = 0.5;
    kn_prune_structured_result r;
    CHECK_OK(kn_prune_structured(&pruned, &ds, &c, false, &r));
    CHECK_OK(kn_prune_structured(&masked, &ds, &c, true, NULL));
    forward(&pruned, &ds, 16, after);
    forward(&masked, &ds, 16, oracle);
    double worst = 0;
    for (int i = 0; i < 16 * 3; i++)
        worst = fmax(worst, fabs(after[i] - oracle[i]) / (1 + fabs(oracle[i])));
    CHECK_MSG(worst <= 1e-5, "pruned vs masked dense: worst relative difference %g", worst);
    CHECK_MSG(memcmp(after, before, sizeof before) != 0, "pruning 50%% of the channels changed nothing");
    /* The block's input (conv1) and its last conv (conv5) meet at the Add: one mask. */
    CHECK(r.n_layers == 3);
    CHECK_MSG(channels_of(&pruned, "conv1.weight") == channels_of(&pruned, "conv8.weight") &&
              channels_of(&pruned, "conv1.weight") == 4 && channels_of(&pruned, "conv5.weight") == 4,
              "channels %lld %lld %lld", (long long)channels_of(&pruned, "conv1.weight"),
              (long long)channels_of(&pruned, "conv5.weight"), (long long)channels_of(&pruned, "conv8.weight"));
    /* Flatten's column groups: the dense layer reads 4 channels of 4x4. */
    CHECK(pruned.values[kn_graph_find_value(&pruned, "dense14.weight")].shape.d[1] == 4 * 16);
    CHECK_OK(kn_model_summarize(&pruned, NULL, &s_after));
    CHECK_MSG(s_after.flops * 3 < s_before.flops && s_after.file_bytes < s_before.file_bytes,
              "FLOPs %lld -> %lld, file %lld -> %lld", (long long)s_before.flops, (long long)s_after.flops,
              (long long)s_before.file_bytes, (long long)s_after.file_bytes);

    /* Neurons: the hidden dense layer shrinks, the output layer (a graph output) does not. */
    c.structure = KN_PRUNE_NEURON;
    CHECK_OK(kn_prune_structured(&g, &ds, &c, false, &r));
    CHECK(r.n_layers == 2 && r.layers[0].after == 6 && r.layers[1].after == r.layers[1].before);
    kn_graph_free(&g);
    kn_graph_free(&pruned);
    kn_graph_free(&masked);
    kn_dataset_free(&ds);
}

/* Concat: PyTorch's two conv branches and the input itself side by side, then a BatchNormalization
 * and a conv reading all 13 channels (tests/ref/make_concat_onnx.py). The consumer's input channels
 * and the BatchNormalization follow the Concat's pieces; the input's 3 channels stay. */
static void test_structured_concat(void) {
    kn_graph g, pruned, masked;
    const char *path = KILN_SOURCE_DIR "/tests/ref/data/concat_branches.onnx";
    CHECK_OK(kn_graph_load_path(path, 1, &g, NULL, NULL));
    CHECK_OK(kn_graph_load_path(path, 1, &pruned, NULL, NULL));
    CHECK_OK(kn_graph_load_path(path, 1, &masked, NULL, NULL));
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 8, 3);
    float before[8 * 3], after[8 * 3], oracle[8 * 3];
    forward(&g, &ds, 8, before);

    kn_prune_config c = kn_prune_config_default();
    c.structure = KN_PRUNE_CHANNEL;
    c.amount = 0;
    CHECK_OK(kn_prune_structured(&g, &ds, &c, false, NULL));
    forward(&g, &ds, 8, after);
    CHECK_MSG(memcmp(before, after, sizeof before) == 0, "concat: amount 0 changed the outputs");

    c.amount = 0.5;
    kn_prune_structured_result r;
    CHECK_OK(kn_prune_structured(&pruned, &ds, &c, false, &r));
    CHECK_OK(kn_prune_structured(&masked, &ds, &c, true, NULL));
    forward(&pruned, &ds, 8, after);
    forward(&masked, &ds, 8, oracle);
    double worst = 0;
    for (int i = 0; i < 8 * 3; i++)
        worst = fmax(worst, fabs(after[i] - oracle[i]) / (1 + fabs(oracle[i])));
    CHECK_MSG(worst <= 1e-5, "concat: pruned vs masked dense: worst relative difference %g", worst);
    CHECK_MSG(memcmp(after, before, sizeof before) != 0, "concat: pruning 50%% of the channels changed nothing");
    /* conv_a 6 -> 3, conv_b 4 -> 2, conv_c 5 -> 2 (round(2.5) removed); the concat carries 3 + 2 + 3. */
    CHECK(r.n_layers == 3 && r.layers[0].after == 3 && r.layers[1].after == 2 && r.layers[2].after == 2);
    int64_t read = pruned.values[kn_graph_find_value(&pruned, "conv_c.weight")].shape.d[1];
    CHECK_MSG(read == 8, "conv_c reads %lld channels", (long long)read);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "bn_cat.running_var")].shape.d[0] == 8);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "fc.weight")].shape.d[1] == 2);
    kn_graph_free(&g);
    kn_graph_free(&pruned);
    kn_graph_free(&masked);
    kn_dataset_free(&ds);
}

/* Neurons of a transformer's MLP block: fc1's outputs (a MatMul on (batch, tokens, features), its bias
 * a separate Add, then Gelu) shrink with fc2's input rows; everything on the residual stream meets a
 * LayerNormalization and stays, as do the attention projections (Reshape to heads). */
static void test_structured_vit(void) {
    static const char vit_spec[] = "input 1 8 8\npatchify 4\ndense 16\nposembed\ntransformer 16 2 32\n"
                                   "layernorm\nmeanpool\ndense 3\n";
    kn_graph g, pruned, masked;
    parse(vit_spec, 23, &g);
    parse(vit_spec, 23, &pruned);
    parse(vit_spec, 23, &masked);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 8, 3);
    float before[8 * 3], after[8 * 3], oracle[8 * 3];
    forward(&g, &ds, 8, before);

    kn_prune_config c = kn_prune_config_default();
    c.structure = KN_PRUNE_NEURON;
    c.amount = 0;
    CHECK_OK(kn_prune_structured(&g, &ds, &c, false, NULL));
    forward(&g, &ds, 8, after);
    CHECK_MSG(memcmp(before, after, sizeof before) == 0, "vit: amount 0 changed the outputs");

    c.amount = 0.5;
    kn_prune_structured_result r;
    CHECK_OK(kn_prune_structured(&pruned, &ds, &c, false, &r));
    CHECK_OK(kn_prune_structured(&masked, &ds, &c, true, NULL));
    forward(&pruned, &ds, 8, after);
    forward(&masked, &ds, 8, oracle);
    double worst = 0;
    for (int i = 0; i < 8 * 3; i++)
        worst = fmax(worst, fabs(after[i] - oracle[i]) / (1 + fabs(oracle[i])));
    CHECK_MSG(worst <= 1e-5, "vit: pruned vs masked dense: worst relative difference %g", worst);
    CHECK_MSG(memcmp(after, before, sizeof before) != 0, "vit: pruning half the MLP neurons changed nothing");
    int64_t shrunk = 0;
    for (int l = 0; l < r.n_layers; l++)
        shrunk += r.layers[l].after < r.layers[l].before;
    CHECK_MSG(shrunk == 1, "vit: %lld layers shrank, expected fc1 alone", (long long)shrunk);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "transformer4.fc1.weight")].shape.d[1] == 16);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "transformer4.fc1.bias")].shape.d[0] == 16);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "transformer4.fc2.weight")].shape.d[0] == 16);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "transformer4.fc2.weight")].shape.d[1] == 16);
    kn_graph_free(&g);
    kn_graph_free(&pruned);
    kn_graph_free(&masked);
    kn_dataset_free(&ds);
}

/* A depthwise conv between a 1x1 expansion and a 1x1 projection (mobilenet_v2's block): the expansion's
 * channels pass through it, and it loses the matching filters and groups. */
static void test_structured_depthwise(void) {
    static const char spec[] = "input 3 8 8\nconv 8 1\nrelu\nconv 8 3 pad=1 groups=8\nrelu\nconv 4 1\nrelu\n"
                               "flatten\ndense 3\n";
    kn_graph g, pruned, masked;
    parse(spec, 29, &g);
    parse(spec, 29, &pruned);
    parse(spec, 29, &masked);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 8, 3);
    float before[8 * 3], after[8 * 3], oracle[8 * 3];
    forward(&g, &ds, 8, before);
    kn_prune_config c = kn_prune_config_default();
    c.structure = KN_PRUNE_CHANNEL;
    c.amount = 0;
    CHECK_OK(kn_prune_structured(&g, &ds, &c, false, NULL));
    forward(&g, &ds, 8, after);
    CHECK_MSG(memcmp(before, after, sizeof before) == 0, "depthwise: amount 0 changed the outputs");

    c.amount = 0.5;
    kn_prune_structured_result r;
    CHECK_OK(kn_prune_structured(&pruned, &ds, &c, false, &r));
    CHECK_OK(kn_prune_structured(&masked, &ds, &c, true, NULL));
    forward(&pruned, &ds, 8, after);
    forward(&masked, &ds, 8, oracle);
    double worst = 0;
    for (int i = 0; i < 8 * 3; i++)
        worst = fmax(worst, fabs(after[i] - oracle[i]) / (1 + fabs(oracle[i])));
    CHECK_MSG(worst <= 1e-5, "depthwise: pruned vs masked dense: worst relative difference %g", worst);
    CHECK_MSG(memcmp(after, before, sizeof before) != 0, "depthwise: pruning changed nothing");
    /* conv1 8 -> 4 through the depthwise conv3 (4 filters, 4 groups) into conv5, itself 4 -> 2. */
    CHECK(r.n_layers == 2 && r.layers[0].after == 4 && r.layers[1].after == 2);
    const kn_value *dw = &pruned.values[kn_graph_find_value(&pruned, "conv3.weight")];
    CHECK(dw->shape.d[0] == 4 && dw->shape.d[1] == 1);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "conv3.bias")].shape.d[0] == 4);
    for (int i = 0; i < pruned.n_nodes; i++)
        if (pruned.nodes[i].n_in > 1 && pruned.nodes[i].in[1] == kn_graph_find_value(&pruned, "conv3.weight"))
            CHECK(kn_node_int(&pruned.nodes[i], "group", 1) == 4);
    CHECK(pruned.values[kn_graph_find_value(&pruned, "conv5.weight")].shape.d[1] == 4);
    kn_graph_free(&g);
    kn_graph_free(&pruned);
    kn_graph_free(&masked);
    kn_dataset_free(&ds);
}

static void test_sensitivity(void) {
    kn_graph g;
    parse(mlp_spec, 19, &g);
    kn_dataset ds;
    kn_shape sample = input_shape(&g);
    make_data(&ds, &sample, 64, 3);
    kn_prune_config c = kn_prune_config_default();
    c.amount = 0.55;
    kn_prune_sensitivity *s = malloc(sizeof *s);
    float out_before[64 * 3], out_after[64 * 3];
    forward(&g, &ds, 64, out_before);
    CHECK_OK(kn_prune_sensitivity_scan(&g, NULL, &ds, &c, s));
    forward(&g, &ds, 64, out_after);
    CHECK(memcmp(out_before, out_after, sizeof out_before) == 0); /* the scan leaves g as it was */
    double removed = 0, total = 0;
    for (int l = 0; l < s->n_layers; l++) {
        CHECK(s->chosen[l] >= 0 && s->chosen[l] <= 0.9 + 1e-9);
        removed += s->chosen[l] * (double)s->weights[l];
        total += (double)s->weights[l];
    }
    CHECK_NEAR(removed / total, 0.55, 1e-9);
    free(s);
    kn_graph_free(&g);
    kn_dataset_free(&ds);
}

static void test_bad_input(void) {
    kiln_graph net;
    parse(mlp_spec, 3, &net.g);
    kiln_prune_config c = kiln_prune_config_default();
    c.amount = 1.5;
    CHECK(kiln_prune(&net, NULL, NULL, &c) == KILN_ERR_INVALID_ARG);
    c.amount = 0.5;
    c.method = "magnitude";
    CHECK(kiln_prune(&net, NULL, NULL, &c) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(kiln_last_error(), "magnitude") != NULL);
    c.method = "taylor"; /* needs data */
    CHECK(kiln_prune(&net, NULL, NULL, &c) == KILN_ERR_INVALID_ARG);
    kn_graph_free(&net.g);
    parse("input 4\nrelu\n", 1, &net.g);
    c.method = "l1";
    CHECK(kiln_prune(&net, NULL, NULL, &c) == KILN_ERR_INVALID_ARG);
    CHECK(strstr(kiln_last_error(), "no prunable layer") != NULL);
    kn_graph_free(&net.g);
}

int main(void) {
    test_unstructured_public();
    test_taylor_scores();
    test_finetune_masks();
    test_agp();
    test_structured();
    test_structured_concat();
    test_structured_vit();
    test_structured_depthwise();
    test_sensitivity();
    test_bad_input();
    return check_finish();
}
