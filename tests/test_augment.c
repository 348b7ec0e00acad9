/* Image augmentation in training (train/augment.h, kiln_train_config.augment, --augment):
 *
 * 1. The text form: every accepted spelling reads back to itself; a bad one is refused with one line.
 * 2. The views against a reference written another way (pad by N, mirror, crop at (N - dy, N - dx)): a
 *    shift moves every pixel exactly, a flip mirrors, what moves in is 0. A one-pixel image lands where
 *    the view says. The draws cover [-N, N] and flip about half the samples, and depend on the seed,
 *    the epoch and the sample, nothing else.
 * 3. Through the trainer: every batch the model trains on is, sample by sample, the reference view of
 *    the dataset sample the batcher picked for that epoch; the dataset is left as it was; the same seed
 *    gives the same weights, another seed other ones; off gives the weights of a run without the option.
 * 4. Only images (C, H, W) with room for the shift are taken, with a clear error otherwise.
 * 5. Distillation with augmentation: the teacher labels every augmented batch (runs every step) and keeps
 *    no logits.
 * 6. mixup:A: the weights have the moments of Beta(A, A); a mixed batch equals the reference (views, then
 *    lambda_i v_i + (1 - lambda_i) v_{n-1-i}); through the trainer every batch is that mix and the loss is
 *    lambda CE(z, y_i) + (1 - lambda) CE(z, y_partner) computed here; same seed same weights; mixup leaves
 *    the views as they were; any samples (tabular too) can be mixed; the teacher labels every mixed batch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "compress/distill.h"
#include "core/rng.h"
#include "kiln/kiln.h"
#include "kiln/train.h"
#include "train/api.h"
#include "train/augment.h"
#include "train/spec.h"
#include "train/trainer.h"

static void test_parse(void) {
    const char *good[][2] = {{"none", "none"},   {"", "none"},           {"flip", "flip"},
                             {"shift:2", "shift:2"}, {"shift:3,flip", "shift:3,flip"}, {"flip,shift:1", "shift:1,flip"},
                             {"mixup:1", "mixup:1"}, {"mixup:0.2,shift:1", "shift:1,mixup:0.2"},
                             {"flip,mixup:2.5,shift:4096", "shift:4096,flip,mixup:2.5"}, {"mixup:1e2", "mixup:100"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        kn_augment a;
        char text[KN_AUGMENT_TEXT_MAX];
        CHECK_OK(kn_augment_parse(good[i][0], &a));
        kn_augment_format(&a, text, sizeof text);
        CHECK_MSG(strcmp(text, good[i][1]) == 0, "'%s' reads as '%s'", good[i][0], text);
    }
    kn_augment a;
    CHECK_OK(kn_augment_parse(NULL, &a));
    CHECK(!kn_augment_on(&a));
    const char *bad[] = {"shift:0", "shift:", "shift:x", "shift:-1", "shift:99999", "shift:2,shift:1",
                         "flip,flip", "rotate", "flip,", "shift:2;flip", "mixup:0",
                         "mixup:", "mixup", "mixup:-1", "mixup:nan", "mixup:inf", "mixup:101", "mixup:1x",
                         "mixup:1,mixup:2", "mixup:0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_status st = kn_augment_parse(bad[i], &a);
        CHECK_MSG(st == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "--augment") &&
                      !strchr(kiln_last_error(), '\n'),
                  "'%s': %s", bad[i], kiln_last_error());
    }
}

/* The view of one (C, H, W) image the long way round: mirror (when asked) into a zero canvas padded by
 * `pad` on every side, then crop H x W at (pad - dy, pad - dx). */
static void reference_view(const float *in, float *out, int64_t c, int64_t h, int64_t w, int64_t pad,
                           const kn_augment_view *v) {
    int64_t ph = h + 2 * pad, pw = w + 2 * pad;
    float *canvas = calloc((size_t)(c * ph * pw), sizeof(float)); // (C, H + 2 pad, W + 2 pad)
    for (int64_t k = 0; k < c; k++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++)
                canvas[(k * ph + y + pad) * pw + x + pad] = in[(k * h + y) * w + (v->flip ? w - 1 - x : x)];
    for (int64_t k = 0; k < c; k++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++)
                out[(k * h + y) * w + x] = canvas[(k * ph + y + pad - v->dy) * pw + x + pad - v->dx];
    free(canvas);
}

static void test_views(void) {
    enum { C = 2, H = 5, W = 7, N = 40 };
    kn_augment a = {.shift = 2, .flip = true};
    kn_shape shape = kn_shape_of(3, (int64_t[]){C, H, W});
    CHECK_OK(kn_augment_check(&a, &shape));
    float *x = malloc(sizeof(float) * N * C * H * W), *want = malloc(sizeof(float) * C * H * W); // (N, C, H, W)
    float *orig = malloc(sizeof(float) * N * C * H * W);
    kn_rng r = kn_rng_seeded(3);
    for (int i = 0; i < N * C * H * W; i++)
        orig[i] = 1.0f + kn_rng_uniform(&r); /* never 0, so a 0 in a view is fill */
    memcpy(x, orig, sizeof(float) * N * C * H * W);
    int64_t index[N];
    for (int i = 0; i < N; i++)
        index[i] = 1000 + 7 * i;
    CHECK_OK(kn_augment_batch(&a, x, N, &shape, 9, 4, index, NULL));
    int seen_dy[5] = {0}, seen_dx[5] = {0}, flips = 0, mismatches = 0;
    for (int i = 0; i < N; i++) {
        kn_augment_view v = kn_augment_view_of(&a, 9, 4, index[i]);
        CHECK(v.dy >= -2 && v.dy <= 2 && v.dx >= -2 && v.dx <= 2);
        if (v.dy < -2 || v.dy > 2 || v.dx < -2 || v.dx > 2)
            continue;
        seen_dy[v.dy + 2]++;
        seen_dx[v.dx + 2]++;
        flips += v.flip;
        reference_view(orig + i * C * H * W, want, C, H, W, 2, &v);
        mismatches += memcmp(want, x + i * C * H * W, sizeof(float) * C * H * W) != 0;
        /* What moved in is fill: as many zeros as rows and columns left the image. */
        int zeros = 0;
        for (int k = 0; k < C * H * W; k++)
            zeros += x[i * C * H * W + k] == 0.0f;
        int64_t kept = (H - llabs(v.dy)) * (W - llabs(v.dx));
        CHECK(zeros == C * (H * W - kept));
    }
    CHECK_MSG(mismatches == 0, "%d of %d views differ from the reference", mismatches, N);
    for (int d = 0; d < 5; d++)
        CHECK_MSG(seen_dy[d] > 0 && seen_dx[d] > 0, "move %d never drawn", d - 2);
    CHECK_MSG(flips > N / 5 && flips < N - N / 5, "%d of %d flipped", flips, N);

    /* One lit pixel at (2, 2) of a 5 x 7 image: it lands at (2 + dy, 2 + dx), or (2 + dy, 4 + dx) mirrored. */
    kn_shape single = kn_shape_of(3, (int64_t[]){1, H, W});
    int landed = 0;
    for (int64_t at = 0; at < 20; at++) {
        kn_augment_view v = kn_augment_view_of(&a, 9, 4, at);
        float one[H * W] = {0};
        one[2 * W + 2] = 5.0f;
        CHECK_OK(kn_augment_batch(&a, one, 1, &single, 9, 4, &at, NULL));
        int64_t y = 2 + v.dy, x0 = (v.flip ? W - 1 - 2 : 2) + v.dx;
        float sum = 0;
        for (int k = 0; k < H * W; k++)
            sum += one[k];
        landed += one[y * W + x0] == 5.0f && sum == 5.0f;
    }
    CHECK_MSG(landed == 20, "%d of 20 lit pixels landed where their view says", landed);

    /* Shift only never mirrors; flip only never moves. */
    kn_augment shift_only = {.shift = 1}, flip_only = {.flip = true};
    int moved = 0, mirrored = 0;
    for (int64_t i = 0; i < 200; i++) {
        kn_augment_view s = kn_augment_view_of(&shift_only, 1, 0, i), f = kn_augment_view_of(&flip_only, 1, 0, i);
        CHECK(!s.flip && f.dy == 0 && f.dx == 0);
        moved += s.dy != 0 || s.dx != 0;
        mirrored += f.flip;
    }
    CHECK(moved > 100 && mirrored > 60 && mirrored < 140);

    /* A view is a function of (seed, epoch, index): the same again, and another for each changed part. */
    int differ_seed = 0, differ_epoch = 0, differ_index = 0;
    for (int64_t i = 0; i < 50; i++) {
        kn_augment_view p = kn_augment_view_of(&a, 9, 4, i), q = kn_augment_view_of(&a, 9, 4, i);
        CHECK(p.dy == q.dy && p.dx == q.dx && p.flip == q.flip);
        kn_augment_view s = kn_augment_view_of(&a, 10, 4, i), e = kn_augment_view_of(&a, 9, 5, i);
        kn_augment_view n = kn_augment_view_of(&a, 9, 4, i + 50);
        differ_seed += s.dy != p.dy || s.dx != p.dx || s.flip != p.flip;
        differ_epoch += e.dy != p.dy || e.dx != p.dx || e.flip != p.flip;
        differ_index += n.dy != p.dy || n.dx != p.dx || n.flip != p.flip;
    }
    CHECK(differ_seed > 30 && differ_epoch > 30 && differ_index > 30);
    free(x);
    free(want);
    free(orig);
}

/* Mixing weights against Beta(A, A): mean 1/2, variance 1 / (4 (2A + 1)), all in [0, 1]; a function of
 * (seed, epoch, index). */
static void test_mix_weights(void) {
    const float shapes[] = {0.2f, 1.0f, 4.0f};
    enum { DRAWS = 20000 };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        kn_augment a = {.mixup = shapes[s]};
        double sum = 0, sum2 = 0;
        int outside = 0;
        for (int64_t i = 0; i < DRAWS; i++) {
            double l = kn_augment_mix_weight(&a, 3, i % 7, i);
            outside += !(l >= 0 && l <= 1);
            sum += l;
            sum2 += l * l;
        }
        double mean = sum / DRAWS, var = sum2 / DRAWS - mean * mean, want_var = 1.0 / (4.0 * (2.0 * shapes[s] + 1.0));
        /* Standard errors at 20,000 draws: the mean's sqrt(var / n) <= 0.0032; the variance's a few percent. */
        CHECK_MSG(outside == 0 && fabs(mean - 0.5) < 0.015 && fabs(var - want_var) < 0.05 * want_var,
                  "Beta(%g): mean %.4f, variance %.4f (want %.4f), %d outside [0, 1]", (double)shapes[s], mean, var,
                  want_var, outside);
    }
    kn_augment a = {.mixup = 1.0f}, off = {0};
    CHECK(kn_augment_mix_weight(&off, 3, 0, 5) == 1.0f);
    int differ_seed = 0, differ_epoch = 0;
    for (int64_t i = 0; i < 50; i++) {
        float l = kn_augment_mix_weight(&a, 9, 4, i);
        CHECK(l == kn_augment_mix_weight(&a, 9, 4, i));
        differ_seed += l != kn_augment_mix_weight(&a, 10, 4, i);
        differ_epoch += l != kn_augment_mix_weight(&a, 9, 5, i);
    }
    CHECK(differ_seed > 45 && differ_epoch > 45);
    /* Adding mixup leaves the views as they were. */
    kn_augment views = {.shift = 2, .flip = true}, mixed = {.shift = 2, .flip = true, .mixup = 1.0f};
    int same = 0;
    for (int64_t i = 0; i < 50; i++) {
        kn_augment_view v = kn_augment_view_of(&views, 9, 4, i), w = kn_augment_view_of(&mixed, 9, 4, i);
        same += v.dy == w.dy && v.dx == w.dx && v.flip == w.flip;
    }
    CHECK(same == 50);
}

/* The reference mix of a batch of views v (n, size): lambda_i v_i + (1 - lambda_i) v_{n-1-i}. */
static void reference_mix(const float *v, float *out, int64_t n, int64_t size, const float *lambda) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < size; j++)
            out[i * size + j] = lambda[i] * v[i * size + j] + (1.0f - lambda[i]) * v[(n - 1 - i) * size + j];
}

static void test_mixed_batch(void) {
    enum { C = 2, H = 5, W = 7, N = 9, S = C * H * W };
    kn_augment a = {.shift = 1, .flip = true, .mixup = 0.5f};
    kn_shape shape = kn_shape_of(3, (int64_t[]){C, H, W});
    static float orig[N * S], x[N * S], views[N * S], want[N * S];
    float lambda[N], got_lambda[N];
    kn_rng r = kn_rng_seeded(5);
    for (int i = 0; i < N * S; i++)
        orig[i] = kn_rng_uniform(&r);
    memcpy(x, orig, sizeof x);
    int64_t index[N];
    for (int i = 0; i < N; i++) {
        index[i] = 300 + 11 * i;
        kn_augment_view v = kn_augment_view_of(&a, 2, 1, index[i]);
        reference_view(orig + i * S, views + i * S, C, H, W, 1, &v);
        lambda[i] = kn_augment_mix_weight(&a, 2, 1, index[i]);
    }
    reference_mix(views, want, N, S, lambda);
    CHECK_OK(kn_augment_batch(&a, x, N, &shape, 2, 1, index, got_lambda));
    double worst = 0;
    for (int i = 0; i < N * S; i++)
        worst = fmax(worst, fabs(x[i] - want[i]));
    CHECK_MSG(worst <= 1e-6, "the mixed batch differs from the reference by %.3g", worst);
    CHECK(memcmp(lambda, got_lambda, sizeof lambda) == 0);
    /* The middle sample of an odd batch is its own partner: it stays its view. */
    for (int j = 0; j < S; j++)
        CHECK_NEAR(x[(N / 2) * S + j], views[(N / 2) * S + j], 1e-6);
    /* Mixing works on any samples: a (4) feature vector needs no image shape. */
    kn_augment mix_only = {.mixup = 1.0f};
    kn_shape features = kn_shape_of(1, (int64_t[]){4});
    CHECK_OK(kn_augment_check(&mix_only, &features));
    float rows[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8}, w[2];
    int64_t at[2] = {0, 1};
    CHECK_OK(kn_augment_batch(&mix_only, rows, 2, &features, 1, 0, at, w));
    for (int j = 0; j < 4; j++)
        CHECK_NEAR(rows[j], w[0] * (float)(1 + j) + (1 - w[0]) * (float)(5 + j), 1e-6);
}

static void test_refusals(void) {
    kn_augment a = {.shift = 2};
    kn_shape features = kn_shape_of(1, (int64_t[]){16});
    CHECK(kn_augment_check(&a, &features) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "(C, H, W)") &&
          strstr(kiln_last_error(), "(16)"));
    kn_shape small = kn_shape_of(3, (int64_t[]){1, 2, 9});
    CHECK(kn_augment_check(&a, &small) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "leaves nothing"));
    kn_augment off = {0};
    CHECK_OK(kn_augment_check(&off, &features));
}

/* ---- through the trainer ---- */

/* A graph from spec text, as kiln_graph_load makes one from a spec file. */
static kiln_graph *spec_graph(const char *text, uint64_t seed) {
    kiln_graph *net = calloc(1, sizeof *net);
    CHECK_OK(kn_spec_parse(text, "spec", seed, &net->g));
    return net;
}

enum { IMG_C = 1, IMG_H = 6, IMG_W = 5, IMG = IMG_C * IMG_H * IMG_W, COUNT = 50, BATCH = 16, EPOCHS = 2 };
static const char image_spec[] = "input 1 6 5\nconv 2 3 pad=1\nrelu\nflatten\ndense 3\n";

/* COUNT random images, labelled by which third of the image is brightest. */
static void make_images(kn_dataset *ds, float *x, int64_t *labels) {
    kn_rng r = kn_rng_seeded(11);
    for (int i = 0; i < COUNT * IMG; i++)
        x[i] = kn_rng_uniform(&r);
    for (int i = 0; i < COUNT; i++) {
        labels[i] = i % 3;
        for (int k = 0; k < 2 * IMG_W; k++)
            x[i * IMG + labels[i] * 2 * IMG_W + k] += 1.0f;
    }
    *ds = (kn_dataset){.count = COUNT, .sample_shape = kn_shape_of(3, (int64_t[]){IMG_C, IMG_H, IMG_W}),
                       .sample_size = IMG, .x = x, .labels = labels, .class_count = 3, .source = "images"};
}

/* Every batch the trainer trains on, as the tape's input holds it at the loss. */
typedef struct batch_log {
    float *x; /* (EPOCHS * COUNT, IMG) in step order */
    int64_t rows;
} batch_log;

static kiln_status log_batch(void *user, kn_tape *tape, const int64_t *labels, double *loss) {
    (void)labels;
    (void)loss;
    batch_log *b = user;
    const kn_tensor *in = kn_tape_input(tape, 0);
    int64_t n = in->shape.d[0];
    if (b->rows + n <= EPOCHS * COUNT)
        memcpy(b->x + b->rows * IMG, in->data, sizeof(float) * (size_t)(n * IMG));
    b->rows += n;
    return KILN_OK;
}

/* Every batch and its loss as the trainer gives them to the loss hook (before any hook changes them). */
typedef struct mix_log {
    float *x;       /* (EPOCHS * COUNT, IMG) in step order */
    float *logits;  /* (EPOCHS * COUNT, 3) */
    double *loss;   /* (steps) */
    int64_t rows, steps;
} mix_log;

static kiln_status log_mixed(void *user, kn_tape *tape, const int64_t *labels, double *loss) {
    (void)labels;
    mix_log *b = user;
    const kn_tensor *in = kn_tape_input(tape, 0), *z = kn_tape_output(tape, 0);
    int64_t n = in->shape.d[0];
    if (b->rows + n <= EPOCHS * COUNT) {
        memcpy(b->x + b->rows * IMG, in->data, sizeof(float) * (size_t)(n * IMG));
        memcpy(b->logits + b->rows * 3, z->data, sizeof(float) * (size_t)(n * 3));
        b->loss[b->steps] = *loss;
    }
    b->rows += n;
    b->steps++;
    return KILN_OK;
}

static kn_train_options image_options(const kn_augment *a, uint64_t seed, const kn_train_hooks *hooks) {
    kn_train_options o = {.epochs = EPOCHS, .batch = BATCH, .optim = kn_optim_defaults(KN_OPTIM_ADAM), .seed = seed,
                          .loss = {.kind = KN_LOSS_CE, .reduction = KN_REDUCTION_MEAN}, .hooks = hooks};
    o.augment = *a;
    return o;
}

/* The parameters of `spec` trained on ds with augmentation a and seed; *params (count) is malloc'ed. */
static float *train_params(const kn_dataset *ds, const kn_augment *a, uint64_t seed, int64_t *count) {
    kiln_graph *net = NULL;
    net = spec_graph(image_spec, 1);
    kn_train_options o = image_options(a, seed, NULL);
    kn_train_result r;
    CHECK_OK(kn_train(&net->g, ds, NULL, &o, NULL, 0, &r));
    *count = kn_graph_param_count(&net->g);
    float *params = malloc(sizeof(float) * (size_t)*count), *at = params;
    for (int v = 0; v < net->g.n_values; v++) {
        const kn_value *val = &net->g.values[v];
        if (val->kind != KN_VALUE_PARAM)
            continue;
        int64_t n = kn_shape_numel(&val->shape);
        memcpy(at, val->data, sizeof(float) * (size_t)n);
        at += n;
    }
    kiln_graph_free(net);
    return params;
}

static void test_trainer_batches(void) {
    static float x[COUNT * IMG], before[COUNT * IMG], logged[EPOCHS * COUNT * IMG], want[IMG];
    int64_t labels[COUNT];
    kn_dataset ds;
    make_images(&ds, x, labels);
    memcpy(before, x, sizeof x);
    kn_augment a = {.shift = 1, .flip = true};
    batch_log log = {.x = logged};
    kn_train_hooks hooks = {.user = &log, .on_loss = log_batch};
    kiln_graph *net = NULL;
    net = spec_graph(image_spec, 1);
    kn_train_options o = image_options(&a, 5, &hooks);
    kn_train_result r;
    CHECK_OK(kn_train(&net->g, &ds, NULL, &o, NULL, 0, &r));
    kiln_graph_free(net);
    CHECK(log.rows == EPOCHS * COUNT);
    CHECK_MSG(memcmp(x, before, sizeof x) == 0, "training changed the dataset");
    int mismatches = 0, unchanged = 0;
    for (int64_t e = 0; e < EPOCHS; e++) {
        kn_batcher order;
        CHECK_OK(kn_batcher_init(&order, &ds, BATCH, true, 5, e));
        for (int64_t k = 0; k < COUNT; k++) {
            int64_t index = order.order[k];
            kn_augment_view v = kn_augment_view_of(&a, 5, e, index);
            reference_view(x + index * IMG, want, IMG_C, IMG_H, IMG_W, 1, &v);
            const float *got = logged + (e * COUNT + k) * IMG;
            mismatches += memcmp(want, got, sizeof want) != 0;
            unchanged += memcmp(x + index * IMG, got, sizeof want) == 0;
        }
        kn_batcher_free(&order);
    }
    CHECK_MSG(mismatches == 0, "%d of %d trained samples are not their reference view", mismatches, EPOCHS * COUNT);
    CHECK_MSG(unchanged < EPOCHS * COUNT / 4, "%d of %d samples trained as they are", unchanged, EPOCHS * COUNT);

    /* Off: the batches are the dataset's samples as they are. */
    kn_augment off = {0};
    log.rows = 0;
    net = spec_graph(image_spec, 1);
    o = image_options(&off, 5, &hooks);
    CHECK_OK(kn_train(&net->g, &ds, NULL, &o, NULL, 0, &r));
    kiln_graph_free(net);
    kn_batcher order;
    CHECK_OK(kn_batcher_init(&order, &ds, BATCH, true, 5, 0));
    int differ = 0;
    for (int64_t k = 0; k < COUNT; k++)
        differ += memcmp(x + order.order[k] * IMG, logged + k * IMG, sizeof want) != 0;
    kn_batcher_free(&order);
    CHECK(differ == 0);
}

/* -log softmax(z)_y in double. */
static double ce_of(const float *z, int64_t k, int64_t y) {
    double mx = z[0], sum = 0;
    for (int64_t j = 1; j < k; j++)
        mx = fmax(mx, z[j]);
    for (int64_t j = 0; j < k; j++)
        sum += exp(z[j] - mx);
    return mx + log(sum) - z[y];
}

static void test_trainer_mixup(void) {
    static float x[COUNT * IMG], logged[EPOCHS * COUNT * IMG], logits[EPOCHS * COUNT * 3];
    static float views[BATCH * IMG], want[BATCH * IMG];
    static double losses[EPOCHS * COUNT];
    int64_t labels[COUNT];
    kn_dataset ds;
    make_images(&ds, x, labels);
    kn_augment a = {.shift = 1, .mixup = 1.0f};
    mix_log log = {.x = logged, .logits = logits, .loss = losses};
    kn_train_hooks hooks = {.user = &log, .on_loss = log_mixed};
    kiln_graph *net = spec_graph(image_spec, 1);
    kn_train_options o = image_options(&a, 5, &hooks);
    kn_train_result r;
    CHECK_OK(kn_train(&net->g, &ds, NULL, &o, NULL, 0, &r));
    kiln_graph_free(net);
    CHECK(log.rows == EPOCHS * COUNT);
    int mismatches = 0, loss_off = 0;
    double worst_loss = 0;
    int64_t row = 0, step = 0;
    for (int64_t e = 0; e < EPOCHS; e++) {
        kn_batcher order;
        CHECK_OK(kn_batcher_init(&order, &ds, BATCH, true, 5, e));
        for (int64_t start = 0; start < COUNT; start += BATCH, step++) {
            int64_t n = COUNT - start < BATCH ? COUNT - start : BATCH;
            float lambda[BATCH];
            for (int64_t i = 0; i < n; i++) {
                int64_t index = order.order[start + i];
                kn_augment_view v = kn_augment_view_of(&a, 5, e, index);
                reference_view(x + index * IMG, views + i * IMG, IMG_C, IMG_H, IMG_W, 1, &v);
                lambda[i] = kn_augment_mix_weight(&a, 5, e, index);
            }
            reference_mix(views, want, n, IMG, lambda);
            double loss = 0;
            for (int64_t i = 0; i < n; i++, row++) {
                for (int k = 0; k < IMG; k++)
                    mismatches += fabsf(logged[row * IMG + k] - want[i * IMG + k]) > 1e-6f;
                int64_t y = labels[order.order[start + i]], yp = labels[order.order[start + n - 1 - i]];
                loss += lambda[i] * ce_of(logits + row * 3, 3, y) + (1.0 - lambda[i]) * ce_of(logits + row * 3, 3, yp);
            }
            loss /= (double)n;
            double rel = fabs(loss - losses[step]) / loss;
            worst_loss = fmax(worst_loss, rel);
            loss_off += rel > 1e-6;
        }
        kn_batcher_free(&order);
    }
    CHECK_MSG(mismatches == 0, "%d pixels of the trained batches differ from the reference mix", mismatches);
    CHECK_MSG(loss_off == 0, "%d steps' losses differ from the mixed-target cross-entropy (worst %.3g relative)",
              loss_off, worst_loss);
}

static void test_trainer_repeats(void) {
    static float x[COUNT * IMG];
    int64_t labels[COUNT];
    kn_dataset ds;
    make_images(&ds, x, labels);
    kn_augment a = {.shift = 2, .flip = true}, off = {0};
    int64_t n1, n2, n3, n4;
    float *p1 = train_params(&ds, &a, 7, &n1), *p2 = train_params(&ds, &a, 7, &n2);
    float *p3 = train_params(&ds, &a, 8, &n3), *p4 = train_params(&ds, &off, 7, &n4);
    CHECK(n1 == n2 && n1 == n3 && n1 == n4);
    CHECK_MSG(memcmp(p1, p2, sizeof(float) * (size_t)n1) == 0, "the same seed trained other weights");
    CHECK(memcmp(p1, p3, sizeof(float) * (size_t)n1) != 0);
    CHECK(memcmp(p1, p4, sizeof(float) * (size_t)n1) != 0);
    kn_augment mix = {.mixup = 1.0f};
    int64_t n5, n6;
    float *p5 = train_params(&ds, &mix, 7, &n5), *p6 = train_params(&ds, &mix, 7, &n6);
    CHECK(n5 == n1 && n6 == n1);
    CHECK_MSG(memcmp(p5, p6, sizeof(float) * (size_t)n1) == 0, "mixup: the same seed trained other weights");
    CHECK(memcmp(p5, p4, sizeof(float) * (size_t)n1) != 0);
    free(p1);
    free(p2);
    free(p3);
    free(p4);
    free(p5);
    free(p6);
}

/* The public API: config.augment NULL and "none" train the same weights; a bad text and tabular data are
 * refused; a trained model records the augmentation. */
static void test_public_api(void) {
    static float x[COUNT * IMG];
    int64_t labels[COUNT];
    kiln_dataset images = {0};
    make_images(&images.d, x, labels);
    kiln_graph *a = NULL, *b = NULL;
    a = spec_graph(image_spec, 1);
    b = spec_graph(image_spec, 1);
    kiln_train_config c = kiln_train_config_default();
    c.epochs = 1;
    c.threads = 1;
    CHECK_OK(kiln_train(a, &images, NULL, &c, NULL));
    c.augment = "none";
    CHECK_OK(kiln_train(b, &images, NULL, &c, NULL));
    void *fa = NULL, *fb = NULL;
    size_t sa = 0, sb = 0;
    CHECK_OK(kn_kiln_save_buffer(&a->g, NULL, 0, &fa, &sb));
    sa = sb;
    CHECK_OK(kn_kiln_save_buffer(&b->g, NULL, 0, &fb, &sb));
    CHECK_MSG(sa == sb && memcmp(fa, fb, sa) == 0, "augment \"none\" wrote another model file than no augment");
    CHECK(kn_graph_meta(&a->g, "train.augment") == NULL);
    free(fa);
    free(fb);

    c.augment = "shift:1,flip";
    CHECK_OK(kiln_train(b, &images, NULL, &c, NULL));
    const char *noted = kn_graph_meta(&b->g, "train.augment");
    CHECK(noted && strcmp(noted, "shift:1,flip") == 0);
    c.augment = "shift:1,spin";
    CHECK(kiln_train(b, &images, NULL, &c, NULL) == KILN_ERR_INVALID_ARG && strstr(kiln_last_error(), "spin"));
    kiln_graph_free(a);
    kiln_graph_free(b);

    float table[COUNT * 4] = {0};
    kiln_dataset tabular = {.d = {.count = COUNT, .sample_shape = kn_shape_of(1, (int64_t[]){4}), .sample_size = 4,
                                  .x = table, .labels = labels, .class_count = 3, .source = "table.csv"}};
    a = spec_graph("input 4\ndense 3\n", 1);
    c.augment = "flip";
    CHECK(kiln_train(a, &tabular, NULL, &c, NULL) == KILN_ERR_INVALID_ARG &&
          strstr(kiln_last_error(), "table.csv") && strstr(kiln_last_error(), "(C, H, W)"));
    c.augment = "mixup:1";
    CHECK_OK(kiln_train(a, &tabular, NULL, &c, NULL));
    noted = kn_graph_meta(&a->g, "train.augment");
    CHECK(noted && strcmp(noted, "mixup:1") == 0);
    kiln_graph_free(a);
}

/* Distillation with augmentation: the teacher runs on every batch (the augmented view) and keeps nothing. */
static void test_distill_views(void) {
    static float x[COUNT * IMG];
    int64_t labels[COUNT];
    kn_dataset ds;
    make_images(&ds, x, labels);
    kiln_graph *teacher = NULL, *student = NULL;
    teacher = spec_graph(image_spec, 3);
    student = spec_graph(image_spec, 4);
    kn_distill d;
    kn_distill_config c = {.temperature = 2, .alpha = 0.5f, .views_change = true};
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, BATCH));
    kn_train_hooks hooks = {.user = &d, .on_loss = kn_distill_on_loss};
    kn_augment a = {.shift = 1, .flip = true};
    kn_train_options o = image_options(&a, 5, &hooks);
    kn_train_result r;
    CHECK_OK(kn_train(&student->g, &ds, NULL, &o, NULL, 0, &r));
    CHECK_MSG(d.cache.misses == EPOCHS * COUNT && d.cache.hits == 0 && d.cache.count == 0,
              "teacher ran on %lld samples, cache served %lld and holds %lld", (long long)d.cache.misses,
              (long long)d.cache.hits, (long long)d.cache.count);
    kn_distill_free(&d);

    /* mixup alone changes every sample too: the teacher labels each mixed batch. */
    kn_augment mix = {.mixup = 1.0f};
    c.views_change = kn_augment_on(&mix);
    CHECK(c.views_change);
    CHECK_OK(kn_distill_init(&d, &teacher->g, &student->g, &c, BATCH));
    o = image_options(&mix, 5, &hooks);
    CHECK_OK(kn_train(&student->g, &ds, NULL, &o, NULL, 0, &r));
    CHECK(d.cache.misses == EPOCHS * COUNT && d.cache.hits == 0 && d.cache.count == 0);
    kn_distill_free(&d);
    kiln_graph_free(teacher);
    kiln_graph_free(student);
}

int main(void) {
    test_parse();
    test_views();
    test_mix_weights();
    test_mixed_batch();
    test_refusals();
    test_trainer_batches();
    test_trainer_mixup();
    test_trainer_repeats();
    test_public_api();
    test_distill_views();
    return check_finish();
}
